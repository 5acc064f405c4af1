/// Runs a graph on an OpenCL device: the forward pass, and in training mode the backward pass the
/// graph derives (`Graph.backwardSteps`), with parameters and their gradients in one arena each.
///
/// Activations and their gradients share one arena laid out by `MemoryPlan`, so only the values
/// in `keep` can be read after a step. Work runs on one in-order queue; scheduling over several
/// queues is not done yet (see the graph issue).
public final class Executor: @unchecked Sendable {
    // Not safe to run from two threads at once: a step mutates the buffers it owns.
    public let graph: Graph
    public let context: Context
    public let queue: CommandQueue
    /// Training runs batch norm with batch statistics, dropout, and allows `backward`.
    public let training: Bool

    private let values: [Tensor]
    private let gradients: [Tensor?]
    /// The activation arena's layout.
    public let plan: MemoryPlan
    private let kept: Set<Value>
    private let parameterArena: Buffer
    private let parameterViews: [Tensor]
    private let gradientViews: [Tensor?]
    private let workspace: Tensor?
    private var nodeWorkspaces: [Int: Tensor] = [:]
    private var poolIndices: [Int: Buffer] = [:]
    private let labels: Buffer?
    private var lossResult: Tensor?
    private var stepSeed: UInt32 = 0

    /// Allocates every buffer the graph needs. Parameters start at torchvision's neutral values
    /// for norms (weight 1, bias 0, running variance 1) and zero elsewhere; set them with
    /// `setParameter`.
    public init(graph: Graph, context: Context, training: Bool, keep: Set<Value> = []) throws(CLNetError) {
        self.graph = graph
        self.context = context
        self.training = training
        queue = try context.makeQueue()
        if training && graph.lossNode == nil {
            throw .invalidShape(operation: "Executor", message: "training needs a graph with a loss node")
        }
        var keepAll = keep
        if let loss = graph.lossNode { keepAll.insert(graph.nodes[loss].output) }
        kept = keepAll
        plan = MemoryPlan(graph: graph, training: training, keep: keepAll)
        guard plan.peakBytes <= context.device.info.maxAllocationBytes else {
            throw .invalidShape(operation: "Executor", message: """
                the activation arena needs \(plan.peakBytes >> 20) MiB in one buffer but \(context.device.info.name) \
                allows \(context.device.info.maxAllocationBytes >> 20) MiB; use a smaller batch
                """)
        }
        let arena = try context.buffer(floats: max(plan.arenaFloats, 1))
        var vals: [Tensor?] = Array(repeating: nil, count: graph.shapes.count)
        var grads: [Tensor?] = Array(repeating: nil, count: graph.shapes.count)
        for slot in plan.slots {
            let t = try Tensor(buffer: arena, shape: graph.shapes[slot.value.index], offset: slot.offset)
            if slot.isGradient { grads[slot.value.index] = t } else { vals[slot.value.index] = t }
        }
        let total = max(1, graph.parameters.reduce(0) { $0 + $1.shape.count })
        parameterArena = try context.buffer(floats: total)
        let gradientArena = training ? try context.buffer(floats: total) : nil
        var views: [Tensor] = [], gviews: [Tensor?] = [], offset = 0
        for p in graph.parameters {
            views.append(try Tensor(buffer: parameterArena, shape: p.shape, offset: offset))
            gviews.append(try gradientArena.map { b throws(CLNetError) in try Tensor(buffer: b, shape: p.shape, offset: offset) })
            offset += p.shape.count
        }
        values = vals.map { $0! }
        gradients = grads
        parameterViews = views
        gradientViews = gviews
        var wsCount = 0
        for (k, node) in graph.nodes.enumerated() {
            let x = graph.shape(of: node.inputs[0])
            switch node.operation {
            case let .conv(conv, _):
                wsCount = max(wsCount, try conv.workspaceCount(x))
            case .batchNorm:
                nodeWorkspaces[k] = try Tensor(context: context, shape: [BatchNorm.workspaceCount(x)])
            case let .groupNorm(groups, _, _):
                nodeWorkspaces[k] = try Tensor(context: context, shape: [GroupNorm.workspaceCount(x, groups: groups)])
            case .maxPool:
                poolIndices[k] = try context.buffer(bytes: graph.shape(of: node.output).count * 4)
            case .softmaxCrossEntropy:
                nodeWorkspaces[k] = try Tensor(context: context, shape: [SoftmaxCrossEntropy.workspaceCount(batch: x.n)])
                lossResult = try Tensor(context: context, shape: [2])
            default:
                break
            }
        }
        workspace = wsCount > 0 ? try Tensor(context: context, shape: [wsCount]) : nil
        if let loss = graph.lossNode {
            labels = try context.buffer(bytes: graph.shape(of: graph.nodes[loss].inputs[0]).n * 4)
        } else {
            labels = nil
        }
        for (i, p) in graph.parameters.enumerated() {
            let neutral: Float = p.role == .normWeight || p.role == .runningVar ? 1 : 0
            try queue.fill(parameterViews[i].buffer, with: neutral, offset: parameterViews[i].offset, count: p.shape.count)
        }
    }

    // MARK: Parameters

    private func index(_ name: String) throws(CLNetError) -> Int {
        guard let i = graph.parameterIndex(name) else {
            throw .invalidShape(operation: "parameter \(name)", message: "is not a parameter of this graph")
        }
        return i
    }

    public func setParameter(_ name: String, _ values: [Float]) throws(CLNetError) {
        try queue.write(values, to: parameterViews[try index(name)])
    }

    public func parameter(_ name: String) throws(CLNetError) -> [Float] {
        try queue.read(parameterViews[try index(name)])
    }

    /// The gradient of a trainable parameter after `backward`.
    public func gradient(_ name: String) throws(CLNetError) -> [Float] {
        let i = try index(name)
        guard graph.parameters[i].trainable, let g = gradientViews[i] else {
            throw .invalidShape(operation: "parameter \(name)", message: "has no gradient (not trainable, or not training)")
        }
        return try queue.read(g)
    }

    /// A kept value after `forward` (see `init(keep:)`).
    public func read(_ v: Value) throws(CLNetError) -> [Float] {
        try checkKept(v)
        return try queue.read(values[v.index])
    }

    /// A kept value's gradient after `backward`, or nil where none is computed.
    public func readGradient(_ v: Value) throws(CLNetError) -> [Float]? {
        try checkKept(v)
        return try gradients[v.index].map { t throws(CLNetError) in try queue.read(t) }
    }

    private func checkKept(_ v: Value) throws(CLNetError) {
        guard kept.contains(v) else {
            throw .invalidShape(operation: "Executor", message: "value \(v) was not kept (init(keep:)); its memory is reused")
        }
    }

    /// The mean loss and the number of correct top-1 predictions of the last forward.
    public func loss() throws(CLNetError) -> (loss: Float, correct: Int) {
        guard let lossResult else { throw .invalidShape(operation: "loss", message: "the graph has no loss node") }
        let r = try queue.read(lossResult)
        return (r[0], r[1].isFinite ? Int(r[1]) : 0)
    }

    // MARK: Running

    /// Uploads `inputs` (and `labels` for the loss) and enqueues the forward pass. `seed` fixes
    /// dropout's masks for this step (the backward uses the same).
    public func forward(_ inputs: [String: [Float]], labels: [Int] = [], seed: UInt32 = 0) throws(CLNetError) {
        for (name, v) in graph.inputs {
            guard let x = inputs[name] else { throw .invalidShape(operation: "input \(name)", message: "was not given") }
            try queue.write(x, to: values[v.index])
        }
        if let loss = graph.lossNode, let labelBuffer = self.labels {
            try ReferenceExecutor.checkLabels(labels, graph.shape(of: graph.nodes[loss].inputs[0]))
            try queue.write(labels.map { Int32($0) }, to: labelBuffer)
        }
        stepSeed = seed
        for (k, node) in graph.nodes.enumerated() { try forward(k, node) }
        try queue.flush()
    }

    private func param(_ node: Node, _ i: Int) -> Tensor { parameterViews[node.parameters[i]] }
    private func grad(_ node: Node, _ i: Int) -> Tensor? { gradientViews[node.parameters[i]] }

    private func forward(_ k: Int, _ node: Node) throws(CLNetError) {
        let x = values[node.inputs[0].index], y = values[node.output.index]
        switch node.operation {
        case let .conv(conv, bias):
            try conv.forward(queue, x: x, weight: param(node, 0), bias: bias ? param(node, 1) : nil, y: y, workspace: workspace)
        case let .batchNorm(relu, eps, momentum):
            if training {
                try BatchNorm.forwardTraining(queue, x: x, gamma: param(node, 0), beta: param(node, 1),
                                              runningMean: param(node, 2), runningVar: param(node, 3), y: y,
                                              workspace: nodeWorkspaces[k]!, relu: relu, eps: eps, momentum: momentum)
            } else {
                try BatchNorm.forwardInference(queue, x: x, gamma: param(node, 0), beta: param(node, 1),
                                               runningMean: param(node, 2), runningVar: param(node, 3), y: y,
                                               relu: relu, eps: eps)
            }
        case let .groupNorm(groups, relu, eps):
            try GroupNorm.forward(queue, x: x, gamma: param(node, 0), beta: param(node, 1), groups: groups, y: y,
                                  workspace: nodeWorkspaces[k]!, relu: relu, eps: eps)
        case .relu:
            try ReLU.forward(queue, x: x, y: y)
        case let .add(relu):
            try Add.forward(queue, a: x, b: values[node.inputs[1].index], y: y, relu: relu)
        case let .maxPool(window):
            try MaxPool.forward(queue, x: x, y: y, indices: poolIndices[k]!, window: window)
        case let .avgPool(window):
            try AvgPool.forward(queue, x: x, y: y, window: window)
        case .globalAvgPool:
            try GlobalAvgPool.forward(queue, x: x, y: y)
        case .concat:
            try Concat.forward(queue, inputs: node.inputs.map { values[$0.index] }, y: y)
        case let .linear(_, bias):
            try Linear.forward(queue, x: x, weight: param(node, 0), bias: bias ? param(node, 1) : nil, y: y)
        case let .dropout(p):
            if training {
                try Dropout.forward(queue, x: x, y: y, p: p, seed: ReferenceExecutor.dropoutSeed(stepSeed, node: k))
            } else {
                try Concat.copy(queue, from: x, to: y)
            }
        case let .softmaxCrossEntropy(smoothing):
            try SoftmaxCrossEntropy.forward(queue, logits: x, labels: labels!, result: lossResult!,
                                            workspace: nodeWorkspaces[k]!, labelSmoothing: smoothing)
            try Concat.copy(queue, from: try lossResult!.vector(offset: 0, count: 1), to: y)
        }
    }

    /// Enqueues the backward pass of the last forward: every trainable parameter's gradient, and
    /// the gradient of every value that needs one.
    public func backward() throws(CLNetError) {
        guard training else { throw .invalidShape(operation: "backward", message: "the executor was made for inference") }
        for step in graph.backwardSteps { try backward(step, graph.nodes[step.node]) }
        try queue.flush()
    }

    private func backward(_ step: BackwardStep, _ node: Node) throws(CLNetError) {
        let k = step.node
        let dy = gradients[node.output.index]
        // Where the node writes each input's gradient, and whether it adds to it.
        let target: [Int: (Tensor, Bool)] = Dictionary(uniqueKeysWithValues: step.inputs.map {
            ($0.input, (gradients[node.inputs[$0.input].index]!, $0.accumulate))
        })
        let x = values[node.inputs[0].index], y = values[node.output.index]
        let dx = target[0]?.0, accumulate = target[0]?.1 ?? false
        switch node.operation {
        case let .conv(conv, bias):
            // Parameter gradients overwrite; the input gradient may add (fan-out).
            try conv.backward(queue, x: x, weight: param(node, 0), dy: dy!, dx: accumulate ? nil : dx,
                              dweight: grad(node, 0), dbias: bias ? grad(node, 1) : nil, workspace: workspace)
            if accumulate {
                try conv.backward(queue, x: x, weight: param(node, 0), dy: dy!, dx: dx, dweight: nil, dbias: nil,
                                  workspace: workspace, accumulate: true)
            }
        case let .batchNorm(relu, _, _), let .groupNorm(_, relu, _):
            let groups: Int
            if case let .groupNorm(g, _, _) = node.operation { groups = g } else { groups = 0 }
            func run(_ dx: Tensor?, _ params: Bool, _ acc: Bool) throws(CLNetError) {
                if groups == 0 {
                    try BatchNorm.backward(queue, x: x, gamma: param(node, 0), beta: param(node, 1), workspace: nodeWorkspaces[k]!,
                                           dy: dy!, dx: dx, dgamma: params ? grad(node, 0) : nil,
                                           dbeta: params ? grad(node, 1) : nil, relu: relu, accumulate: acc)
                } else {
                    try GroupNorm.backward(queue, x: x, gamma: param(node, 0), beta: param(node, 1), groups: groups,
                                           workspace: nodeWorkspaces[k]!, dy: dy!, dx: dx, dgamma: params ? grad(node, 0) : nil,
                                           dbeta: params ? grad(node, 1) : nil, relu: relu, accumulate: acc)
                }
            }
            if accumulate {
                try run(nil, true, false)
                try run(dx, false, true)
            } else {
                try run(dx, true, false)
            }
        case .relu:
            if let dx { try ReLU.backward(queue, y: y, dy: dy!, dx: dx, accumulate: accumulate) }
        case let .add(relu):
            for (_, (d, acc)) in target { try Add.backward(queue, y: y, dy: dy!, dx: d, relu: relu, accumulate: acc) }
        case let .maxPool(window):
            if let dx { try MaxPool.backward(queue, dy: dy!, indices: poolIndices[k]!, dx: dx, window: window, accumulate: accumulate) }
        case let .avgPool(window):
            if let dx { try AvgPool.backward(queue, dy: dy!, dx: dx, window: window, accumulate: accumulate) }
        case .globalAvgPool:
            if let dx { try GlobalAvgPool.backward(queue, dy: dy!, dx: dx, accumulate: accumulate) }
        case .concat:
            var start = 0
            for (i, v) in node.inputs.enumerated() {
                let c = graph.shape(of: v).c
                if let (d, acc) = target[i] {
                    try Concat.copy(queue, from: try dy!.slice(channels: start..<start + c), to: d, accumulate: acc)
                }
                start += c
            }
        case let .linear(_, bias):
            try Linear.backward(queue, x: x, weight: param(node, 0), dy: dy!, dx: accumulate ? nil : dx,
                                dweight: grad(node, 0), dbias: bias ? grad(node, 1) : nil)
            if accumulate, let dx {
                try Linear.backward(queue, x: x, weight: param(node, 0), dy: dy!, dx: dx, dweight: nil, dbias: nil,
                                    accumulate: true)
            }
        case let .dropout(p):
            if let dx {
                try Dropout.backward(queue, dy: dy!, dx: dx, p: p, seed: ReferenceExecutor.dropoutSeed(stepSeed, node: k),
                                     accumulate: accumulate)
            }
        case let .softmaxCrossEntropy(smoothing):
            if let dx {
                try SoftmaxCrossEntropy.backward(queue, logits: x, labels: labels!, dlogits: dx, labelSmoothing: smoothing,
                                                 accumulate: accumulate)
            }
        }
    }
}
