/// The work of one executor step as a fixed list of tasks spread over in-order queues, and the
/// events each task must wait for. It is a value computed from the graph, its memory plan and
/// the queue count alone, so it can be built and checked without a device.
///
/// - The critical path runs on queue 0. A side branch (a second consumer of a value and the
///   single-input nodes after it, such as a projection shortcut) and its backward run on another
///   queue; weight gradients and their optimizer updates go round the other queues.
/// - A task waits only for the latest earlier task of each other queue whose memory it shares
///   (read after write, write after read, and the reuse of planned memory): tasks of one queue
///   run in order, so one event covers the earlier ones.
/// - The kernels a task enqueues do not depend on the number of queues, so neither do results.
public struct TaskSchedule: Sendable {
    /// A memory region that tasks touch.
    public enum Space: Hashable, Sendable {
        /// The activation arena (activations and their gradients, offsets in floats).
        case activations
        /// The parameter arena.
        case parameters
        /// The parameter-gradient arena (laid out as the parameters).
        case gradients
        /// Node k's own buffers (norm workspaces, pool indices, the loss's result).
        case node(Int)
        /// The partial batch statistics a convolution writes for the norm after it
        /// (`MemoryPlan.convolutionStatistics`), one buffer for every such pair.
        case statistics
    }

    /// A range of floats of one space that a task reads or writes.
    public struct Access: Sendable, Equatable {
        public let space: Space
        public let lo: Int, hi: Int
        public let write: Bool

        func conflicts(_ o: Access) -> Bool {
            space == o.space && lo < o.hi && o.lo < hi && (write || o.write)
        }
    }

    /// Which part of a backward step a task runs: all of it, or (operations that split their
    /// parameter gradient) the input gradient and the parameter gradients as two tasks.
    public enum Part: Sendable { case whole, inputs, parameters }

    public enum Kind: Sendable, Equatable {
        /// Node k's forward pass.
        case forward(Int)
        /// Backward step i (of `backwardSteps`), or a part of it.
        case backward(Int, Part)
        /// The optimizer's update of node k's trainable parameters.
        case update(Int)
    }

    public struct Task: Sendable {
        public let kind: Kind
        public let queue: Int
        public let accesses: [Access]
        /// Earlier tasks of other queues that this one waits for.
        public internal(set) var dependencies: [Int] = []
        /// Some later task on another queue waits for it, so it records an event.
        public internal(set) var signals = false
    }

    public private(set) var tasks: [Task] = []
    /// The first `forwardTaskCount` tasks are the forward pass; the rest the backward pass and
    /// the updates.
    public let forwardTaskCount: Int
    /// The backward pass the tasks run (empty for inference).
    public let backwardSteps: [BackwardStep]
    /// Which steps write and which add to each parameter's gradient, and where it is final.
    public let parameterGradients: ParameterGradients

    /// Plans the tasks of `graph` laid out by `plan` on `queues` queues; with `updates`, each
    /// node's optimizer update follows its backward step.
    public init(graph: Graph, plan: MemoryPlan, queues: Int, training: Bool, updates: Bool) {
        var parameterOffsets: [Int] = [], offset = 0
        for p in graph.parameters {
            parameterOffsets.append(offset)
            offset += p.shape.count
        }
        func value(_ v: Value, gradient: Bool, write: Bool) -> Access {
            let (lo, stride) = plan.placement(of: v, gradient: gradient, in: graph)!
            let s = graph.shape(of: v)
            // A channel slice spans from its first sample to the end of its last.
            return Access(space: .activations, lo: lo, hi: lo + (s.n - 1) * stride + s.sampleCount, write: write)
        }
        func parameters(_ node: Node, gradient: Bool, write: Bool) -> [Access] {
            guard training || !gradient else { return [] }
            return node.parameters.map { i in
                Access(space: gradient ? .gradients : .parameters, lo: parameterOffsets[i],
                       hi: parameterOffsets[i] + graph.parameters[i].shape.count, write: write)
            }
        }
        let nodeQueue = Self.branchQueues(graph, queues: queues)
        var list: [Task] = []
        for (k, node) in graph.nodes.enumerated() {
            var a = node.inputs.map { value($0, gradient: false, write: false) }
            a.append(value(node.output, gradient: false, write: true))
            a += parameters(node, gradient: false, write: training && node.operation.flags.contains(.writesParametersInTraining))
            a.append(Access(space: .node(k), lo: 0, hi: 1, write: true))
            if let j = plan.sharedStatistics[k] { a.append(Access(space: .node(j), lo: 0, hi: 1, write: false)) }
            if plan.convolutionStatistics[k] != nil || plan.convolutionStatistics[k - 1] == k {
                a.append(Access(space: .statistics, lo: 0, hi: 1, write: true))
            }
            if let j = plan.epilogues[k] {
                a += graph.nodes[j].inputs.map { value($0, gradient: false, write: false) }
                a.append(value(graph.nodes[j].output, gradient: false, write: true))
            }
            list.append(Task(kind: .forward(k), queue: nodeQueue[k], accesses: a))
        }
        forwardTaskCount = list.count
        backwardSteps = training ? graph.backwardSteps : []
        parameterGradients = ParameterGradients(graph: graph, steps: backwardSteps)
        let finishing = parameterGradients.finishingNode
        var nextWeightQueue = 0
        for (i, step) in backwardSteps.enumerated() {
            let node = graph.nodes[step.node]
            // A ReLU or addition whose backward a norm does touches nothing; that norm starts
            // from the consumer's output gradient (masked by its output, where it has a ReLU)
            // and writes the gradient of the consumer's other input.
            var reads: [Access] = [], inputGradients: [Access] = []
            if !plan.absorbedBackward.contains(step.node) {
                let fusion = plan.normFusions[step.node], upstream = fusion.map { graph.nodes[$0.consumer] }
                reads = [value((upstream ?? node).output, gradient: true, write: false)]
                if let upstream, upstream.operation.hasReLU { reads.append(value(upstream.output, gradient: false, write: false)) }
                if let upstream, let s = fusion?.shortcutInput {
                    inputGradients.append(value(upstream.inputs[s], gradient: true, write: true))
                }
                reads += node.savedForBackward.map { value($0, gradient: false, write: false) }
                    + parameters(node, gradient: false, write: false)
                inputGradients += step.inputs.map { value(node.inputs[$0.input], gradient: true, write: true) }
            }
            let home = nodeQueue[step.node]
            var updateQueue = home
            if node.operation.flags.contains(.splitsParameterGradient) {
                // The weight gradient leaves the critical path.
                let q = queues == 1 ? 0 : 1 + nextWeightQueue % (queues - 1)
                nextWeightQueue += 1
                updateQueue = q
                list.append(Task(kind: .backward(i, .parameters), queue: q,
                                 accesses: reads + parameters(node, gradient: true, write: true)))
                if !step.inputs.isEmpty {
                    list.append(Task(kind: .backward(i, .inputs), queue: home, accesses: reads + inputGradients))
                }
            } else {
                let own = Access(space: .node(step.node), lo: 0, hi: 1, write: true)
                list.append(Task(kind: .backward(i, .whole), queue: home,
                                 accesses: reads + [own] + inputGradients + parameters(node, gradient: true, write: true)))
            }
            // The update follows the step's tasks, on the queue that made the gradient; the scan
            // below makes it wait for every task of other queues that still reads the old weights.
            // A shared parameter is updated once, after the last step that adds to its gradient.
            if updates && node.parameters.contains(where: { finishing[$0] == step.node }) {
                list.append(Task(kind: .update(step.node), queue: updateQueue,
                                 accesses: parameters(node, gradient: true, write: false)
                                     + parameters(node, gradient: false, write: true)))
            }
        }
        for t in list.indices {
            var latest = [Int?](repeating: nil, count: queues)
            for u in stride(from: t - 1, through: 0, by: -1) where list[u].queue != list[t].queue && latest[list[u].queue] == nil {
                if list[u].accesses.contains(where: { a in list[t].accesses.contains { a.conflicts($0) } }) {
                    latest[list[u].queue] = u
                }
            }
            list[t].dependencies = latest.compactMap { $0 }
            for u in list[t].dependencies { list[u].signals = true }
        }
        tasks = list
    }

    /// Makes every task that writes parameter gradients record an event, so that a reader on
    /// another queue (data-parallel transfers) can wait for exactly those tasks.
    public mutating func signalGradientWriters() {
        for t in tasks.indices where tasks[t].accesses.contains(where: { $0.space == .gradients && $0.write }) {
            tasks[t].signals = true
        }
    }

    /// The queue of each forward node: a second consumer of a value starts a branch on the next
    /// side queue, and a single-input node stays on its producer's queue. The loss stays on
    /// queue 0, where its result is read back.
    private static func branchQueues(_ graph: Graph, queues: Int) -> [Int] {
        var nodeQueue = [Int](repeating: 0, count: graph.nodes.count)
        guard queues > 1 else { return nodeQueue }
        var consumed: [Value: Int] = [:]
        var nextBranch = 0
        let loss = graph.lossNode
        for (k, node) in graph.nodes.enumerated() {
            if k == loss { continue }
            if node.inputs.count == 1 {
                let v = node.inputs[0]
                if consumed[v, default: 0] > 0 {
                    nodeQueue[k] = 1 + nextBranch % (queues - 1)
                    nextBranch += 1
                } else if let p = graph.producers[v.index] {
                    nodeQueue[k] = nodeQueue[p]
                }
            }
            for v in node.inputs { consumed[v, default: 0] += 1 }
        }
        return nodeQueue
    }
}
