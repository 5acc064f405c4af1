/// Runs a graph on an OpenCL device: the forward pass, and in training mode the backward pass the
/// graph derives (`Graph.backwardSteps`), with parameters and their gradients in one arena each.
///
/// Activations and their gradients share one arena laid out by `MemoryPlan`, so only the values
/// in `keep` can be read after a step. The work is a fixed list of tasks (forward nodes; backward
/// steps, with a convolution's or linear layer's weight gradient as a task of its own) spread over
/// in-order queues: the critical path on queue 0; a side branch (a second consumer of a value and
/// the single-input nodes after it, such as a projection shortcut) and its backward on another
/// queue; weight gradients and their optimizer updates round the other queues. A task waits, through events, only for earlier tasks on other
/// queues whose memory it shares (read after write, and the reuse of planned memory); a host read
/// waits for every queue. The kernels a task enqueues do not depend on the number of queues, so
/// neither do the results.
public final class Executor: @unchecked Sendable {
    // Not safe to run from two threads at once: a step mutates the buffers it owns.
    public let graph: Graph
    public let context: Context
    /// Queue 0 runs the critical path; the others run weight gradients.
    public let queues: [CommandQueue]
    /// Training runs batch norm with batch statistics, dropout, and allows `backward`.
    public let training: Bool
    /// The activation arena's layout.
    public let plan: MemoryPlan
    /// Device memory this executor allocated: the activation arena, parameters, gradients,
    /// momentum, workspaces and per-node buffers.
    public let deviceBytes: Int

    private var queue: CommandQueue { queues[0] }
    private let kept: Set<Value>
    private let values: [Tensor]
    private let gradients: [Tensor?]
    private let parameterArena: Buffer
    private let parameterViews: [Tensor]
    private let gradientViews: [Tensor?]
    private let workspaces: [Tensor?]
    private var nodeWorkspaces: [Int: Tensor] = [:]
    private var poolIndices: [Int: Buffer] = [:]
    private let labels: Buffer?
    private var lossResult: Tensor?
    private var stepSeed: UInt32 = 0
    private var backwardSteps: [BackwardStep] = []
    private var tasks: [Task] = []
    private var forwardTaskCount = 0
    private var events: [Event?] = []
    /// A marker at the end of each queue but 0 after the last forward or backward, which the next step waits for.
    private var pending: [Event] = []
    /// The optimizer applied by `backward`, each parameter as soon as its gradient is final.
    public var optimizer: SGD?
    /// Synchronised batch norm: training batch norm normalises with the statistics of the whole
    /// batch across the communicator's ranks (each holding an equal share), as PyTorch's
    /// SyncBatchNorm; the host waits for the queue at every batch norm, forward and backward.
    public var batchNormCommunicator: Communicator?
    /// With an optimizer: leave batch-norm scales and shifts and all biases undecayed.
    public let decayOnlyWeights: Bool
    private let momentumArena: Buffer?
    private let gradientArena: Buffer?
    /// Data-parallel steps read and write gradients here, beside the step's own queues.
    private let transferQueue: CommandQueue?

    /// Allocates every buffer the graph needs. Parameters start at torchvision's neutral values
    /// for norms (weight 1, bias 0, running variance 1) and zero elsewhere; set them with
    /// `setParameter`. Values in `keep` (and the loss) can be read after a step.
    ///
    /// With an `optimizer`, `backward` also updates every trainable parameter, right after its
    /// gradient is final, keeping the momentum in an arena beside the parameters (zero at first).
    ///
    /// With `gradientTransfers`, the executor can also take data-parallel steps
    /// (`backwardForReduction`, `readGradients`, `writeGradients`, `applyUpdate`): gradients
    /// are read and written on a queue of their own as soon as the tasks that make them finish.
    public init(graph: Graph, context: Context, training: Bool, keep: Set<Value> = [], queues: Int? = nil,
                optimizer: SGD? = nil, decayOnlyWeights: Bool = false, gradientTransfers: Bool = false) throws(CLNetError) {
        let queues = queues ?? Self.defaultQueueCount(for: context.device)
        self.graph = graph
        self.context = context
        self.training = training
        self.optimizer = optimizer
        self.decayOnlyWeights = decayOnlyWeights
        guard (1...16).contains(queues) else { throw .invalidArgument("an executor runs on 1 to 16 queues, not \(queues)") }
        if training && graph.lossNode == nil {
            throw .invalidShape(operation: "Executor", message: "training needs a graph with a loss node")
        }
        // Batch statistics of a single value per channel have no variance: PyTorch refuses them
        // in training too ("Expected more than 1 value per channel").
        for node in graph.nodes where training {
            guard case .batchNorm = node.operation else { continue }
            let x = graph.shape(of: node.inputs[0])
            if x.n * x.h * x.w <= 1 {
                throw .invalidShape(operation: "batch norm \(node.name)",
                                    message: "input \(x) has one value per channel; training needs more (a larger batch or image)")
            }
        }
        var made: [CommandQueue] = []
        for _ in 0..<queues { made.append(try context.makeQueue()) }
        self.queues = made
        var keepAll = keep
        if let loss = graph.lossNode { keepAll.insert(graph.nodes[loss].output) }
        kept = keepAll
        plan = MemoryPlan(graph: graph, training: training, keep: keepAll)
        try Self.checkMemory(graph: graph, plan: plan, context: context, training: training, queues: queues,
                             momentum: optimizer != nil)
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
        for (value, _) in plan.inPlace {
            guard let offset = plan.offset(of: value) else { continue }
            vals[value.index] = try Tensor(buffer: arena, shape: graph.shapes[value.index], offset: offset)
        }
        for (value, view) in plan.views {
            let channels = view.channel..<view.channel + graph.shapes[value.index].c
            vals[value.index] = try vals[view.root.index]!.slice(channels: channels)
            if view.hasGradient { grads[value.index] = try grads[view.root.index]!.slice(channels: channels) }
        }
        values = vals.map { $0! }
        gradients = grads
        let total = max(1, graph.parameters.reduce(0) { $0 + $1.shape.count })
        parameterArena = try context.buffer(floats: total)
        let gradientArena = training ? try context.buffer(floats: total) : nil
        self.gradientArena = gradientArena
        transferQueue = gradientTransfers && training ? try context.makeQueue() : nil
        // Buckets span the gaps of parameters without gradients (running statistics): zeros.
        if let gradientArena, gradientTransfers { try made[0].fill(gradientArena, with: 0) }
        momentumArena = training && optimizer != nil ? try context.buffer(floats: total) : nil
        if let momentumArena { try made[0].fill(momentumArena, with: 0) }
        // Two buffers, so that neither exceeds the device's largest allocation when the
        // parameters alone fit.
        backupArena = training ? try context.buffer(bytes: parameterArena.byteCount) : nil
        momentumBackup = training ? try momentumArena.map { m throws(CLNetError) in try context.buffer(bytes: m.byteCount) } : nil
        var views: [Tensor] = [], gviews: [Tensor?] = [], offset = 0
        for p in graph.parameters {
            views.append(try Tensor(buffer: parameterArena, shape: p.shape, offset: offset))
            gviews.append(try gradientArena.map { b throws(CLNetError) in try Tensor(buffer: b, shape: p.shape, offset: offset) })
            offset += p.shape.count
        }
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
            case .stochasticDepth:
                nodeWorkspaces[k] = try Tensor(context: context, shape: [x.n * x.c])
            case .scalarAffine:
                nodeWorkspaces[k] = try Tensor(context: context, shape: [2 * ScalarAffine.partialGroups])
            case .maxPool:
                poolIndices[k] = try context.buffer(bytes: graph.shape(of: node.output).count * 4)
            case .softmaxCrossEntropy, .distillation:
                nodeWorkspaces[k] = try Tensor(context: context, shape: [SoftmaxCrossEntropy.workspaceCount(batch: x.n)])
                lossResult = try Tensor(context: context, shape: [2])
            default:
                break
            }
        }
        // One convolution workspace per queue, so that tasks on different queues never share one.
        var ws: [Tensor?] = []
        for _ in 0..<queues { ws.append(wsCount > 0 ? try Tensor(context: context, shape: [wsCount]) : nil) }
        workspaces = ws
        if let loss = graph.lossNode {
            labels = try context.buffer(bytes: graph.shape(of: graph.nodes[loss].inputs[0]).n * 4)
        } else {
            labels = nil
        }
        var bytes = arena.byteCount + parameterArena.byteCount * (1 + (training ? 1 : 0) + (momentumArena == nil ? 0 : 1))
            + (backupArena?.byteCount ?? 0) + (momentumBackup?.byteCount ?? 0)
        bytes += ws.reduce(0) { $0 + ($1?.buffer.byteCount ?? 0) } + (labels?.byteCount ?? 0) + (lossResult?.buffer.byteCount ?? 0)
        bytes += nodeWorkspaces.values.reduce(0) { $0 + $1.buffer.byteCount } + poolIndices.values.reduce(0) { $0 + $1.byteCount }
        deviceBytes = bytes
        for (i, p) in graph.parameters.enumerated() {
            let neutral: Float = p.role == .normWeight || p.role == .runningVar ? 1 : p.role == .slope ? 0.25 : 0
            try made[0].fill(parameterViews[i].buffer, with: neutral, offset: parameterViews[i].offset, count: p.shape.count)
        }
        schedule()
        if transferQueue != nil {
            // A bucket's read waits for the tasks that write its gradients.
            for t in tasks.indices where tasks[t].accesses.contains(where: { $0.space == 2 && $0.write }) { tasks[t].signals = true }
        }
    }

    /// Refuses a graph whose buffers cannot fit the device, before allocating any: OpenCL
    /// drivers often allocate lazily and fail later, in the middle of a step, or not at all and
    /// swap (PoCL).
    static func checkMemory(graph: Graph, plan: MemoryPlan, context: Context, training: Bool, queues: Int,
                            momentum: Bool) throws(CLNetError) {
        let parameterBytes = 4 * graph.parameters.reduce(0) { $0 + $1.shape.count }
        // Values, gradients, momentum, and the step's backup of values and momentum.
        let copies = 1 + (training ? 1 : 0) + (training && momentum ? 1 : 0) + (training ? 1 + (momentum ? 1 : 0) : 0)
        var workspaceFloats = 0, convolution = 0
        for node in graph.nodes {
            let x = graph.shape(of: node.inputs[0])
            switch node.operation {
            case let .conv(conv, _): convolution = max(convolution, (try? conv.workspaceCount(x)) ?? 0)
            case .batchNorm: workspaceFloats += BatchNorm.workspaceCount(x.rank == 2 ? [x.n, x.c, 1, 1] : x)
            case let .groupNorm(groups, _, _): workspaceFloats += GroupNorm.workspaceCount(x, groups: groups)
            case .maxPool: workspaceFloats += graph.shape(of: node.output).count
            default: break
            }
        }
        workspaceFloats += convolution * queues
        let needed = plan.peakBytes + parameterBytes * copies + 4 * workspaceFloats
        let available = context.device.info.globalMemoryBytes
        guard needed <= available else {
            func mib(_ b: Int) -> String { "\((b + (1 << 20) - 1) >> 20) MiB" }
            throw .invalidShape(operation: "Executor", message: """
                the graph needs \(mib(needed)) of device memory (activations \(mib(plan.peakBytes)), parameters and \
                their copies \(mib(parameterBytes * copies)), workspaces \(mib(4 * workspaceFloats))) but \
                \(context.device.info.name) has \(mib(available)); use a smaller batch or image size
                """)
        }
    }

    // MARK: Parameters and results

    private func index(_ name: String) throws(CLNetError) -> Int {
        guard let i = graph.parameterIndex(name) else {
            throw .invalidShape(operation: "parameter \(name)", message: "is not a parameter of this graph")
        }
        return i
    }

    /// Waits until every queue has finished its work. If the device reports a failure of the
    /// step's work, the step is undone as `forward` describes.
    public func synchronize() throws(CLNetError) {
        do {
            // Flushing every queue first: a queue that waits on another's events must not wait
            // for commands that were never sent to the device.
            for q in queues { try q.flush() }
            for q in queues { try q.finish() }
        } catch {
            try rollBack(after: error)
        }
        pending = []
        uploads = []
    }

    /// The number of queues an executor uses unless told: two wherever the device has more than
    /// one compute unit (weight gradients and side branches overlap the critical path; measured
    /// 1.0-1.2x on PoCL and an H100), else one.
    public static func defaultQueueCount(for device: Device) -> Int {
        device.info.computeUnits > 1 ? 2 : 1
    }

    public func setParameter(_ name: String, _ values: [Float]) throws(CLNetError) {
        try synchronize()
        // The last step can no longer be undone to a state these values were not part of.
        backupValid = false
        try queue.write(values, to: parameterViews[try index(name)])
    }

    public func parameter(_ name: String) throws(CLNetError) -> [Float] {
        try synchronize()
        return try queue.read(parameterViews[try index(name)])
    }

    /// The optimizer's momentum of a trainable parameter (zero before the first update).
    public func momentum(_ name: String) throws(CLNetError) -> [Float] {
        try queue.read(try momentumView(name))
    }

    /// Sets the optimizer's momentum of a trainable parameter, as when resuming from a checkpoint.
    public func setMomentum(_ name: String, _ values: [Float]) throws(CLNetError) {
        backupValid = false
        try queue.write(values, to: try momentumView(name))
    }

    private func momentumView(_ name: String) throws(CLNetError) -> Tensor {
        let i = try index(name)
        guard graph.parameters[i].trainable, let momentumArena else {
            throw .invalidShape(operation: "parameter \(name)", message: "has no momentum (not trainable, or no optimizer)")
        }
        try synchronize()
        return try Tensor(buffer: momentumArena, shape: graph.parameters[i].shape, offset: parameterViews[i].offset)
    }

    /// The gradient of a trainable parameter after `backward`.
    public func gradient(_ name: String) throws(CLNetError) -> [Float] {
        let i = try index(name)
        guard graph.parameters[i].trainable, let g = gradientViews[i] else {
            throw .invalidShape(operation: "parameter \(name)", message: "has no gradient (not trainable, or not training)")
        }
        try synchronize()
        return try queue.read(g)
    }

    /// A kept value after `forward` (see `init(keep:)`).
    public func read(_ v: Value) throws(CLNetError) -> [Float] {
        try checkKept(v)
        try synchronize()
        return try queue.read(values[v.index])
    }

    /// A kept value's gradient after `backward`, or nil where none is computed.
    public func readGradient(_ v: Value) throws(CLNetError) -> [Float]? {
        try checkKept(v)
        try synchronize()
        return try gradients[v.index].map { t throws(CLNetError) in try queue.read(t) }
    }

    private func checkKept(_ v: Value) throws(CLNetError) {
        guard kept.contains(v) else {
            throw .invalidShape(operation: "Executor", message: "value \(v) was not kept (init(keep:)); its memory is reused")
        }
    }

    /// The mean loss and the number of correct top-1 predictions of the last forward. Waits for
    /// that forward only, not for the backward or anything after it.
    public func loss() throws(CLNetError) -> (loss: Float, correct: Int) {
        guard let lastLoss else { throw .invalidShape(operation: "loss", message: "no forward with a loss has run") }
        return try lastLoss.value()
    }

    private var lastLoss: LossReading?
    /// A training forward has run and its backward has not.
    private var forwardPending = false
    /// The parameters (running statistics included) and momentum as they were at the start of
    /// the current training step, for `rollBack`; nil for inference.
    private let backupArena: Buffer?
    private let momentumBackup: Buffer?
    private var backupValid = false
    private var stepStart: Int64 = 0
    private var parametersLost = false
    /// Training forwards run so far; saved as batch norm's `num_batches_tracked`.
    public internal(set) var stepsTaken: Int64 = 0
    /// Input copies still in flight; each frees its staging memory when done.
    private var uploads: [Upload] = []

    // MARK: Running

    /// Uploads `inputs` (and `labels` for the loss) and enqueues the forward pass. `seed` fixes
    /// dropout's masks for this step (the backward uses the same).
    ///
    /// Returns the step's loss as a `LossReading` (nil without a loss node): it is copied back as
    /// soon as the forward pass is done, and can be read while the backward pass and later steps
    /// run.
    ///
    /// A training step is all or nothing: if an OpenCL call fails while forward or backward
    /// enqueue their work (or `synchronize` waits for it), the parameters, running statistics and
    /// momentum are put back as they were before this forward, and the error is thrown. The next
    /// step may then run as usual. The guarantee covers the work enqueued since the last forward:
    /// a failure of an earlier step that surfaces only now restores the state this step began
    /// with, which that earlier step's work may already have changed; call `synchronize` after
    /// each step where that matters.
    @discardableResult
    public func forward(_ inputs: [String: [Float]], labels: [Int] = [], seed: UInt32 = 0) throws(CLNetError) -> LossReading? {
        guard !parametersLost else { throw Self.lostError }
        // Inputs are checked before anything is enqueued, so that a bad one changes nothing.
        var checked: [(Tensor, [Float])] = []
        for (name, v) in graph.inputs {
            guard let x = inputs[name] else { throw .invalidShape(operation: "input \(name)", message: "was not given") }
            let t = values[v.index]
            guard x.count == t.shape.count else {
                throw .invalidShape(operation: "input \(name)", message: "needs \(t.shape.count) values of shape \(t.shape), got \(x.count)")
            }
            // x * 0 is NaN exactly for NaN and infinities; the sum vectorises, unlike a search.
            if !x.reduce(Float(0), { $0 + $1 * 0 }).isFinite, let bad = x.firstIndex(where: { !$0.isFinite }) {
                throw .invalidShape(operation: "input \(name)", message: "value \(bad) is \(x[bad]); inputs must be finite numbers")
            }
            checked.append((t, x))
        }
        if let loss = graph.lossNode, self.labels != nil {
            try ReferenceExecutor.checkLabels(labels, graph.shape(of: graph.nodes[loss].inputs[0]))
        }
        backupValid = false
        do {
            // The last step's weight gradients on other queues may still read memory this one
            // reuses. Nothing here waits on the host: inputs are staged and copied without blocking.
            try queue.barrier(waitFor: pending)
            pending = []
            uploads.removeAll { (try? $0.event.isComplete()) ?? true }
            if let backupArena {
                try queue.copy(from: parameterArena, to: backupArena, bytes: parameterArena.byteCount)
                if let momentumArena, let momentumBackup {
                    try queue.copy(from: momentumArena, to: momentumBackup, bytes: momentumArena.byteCount)
                }
                backupValid = true
                stepStart = stepsTaken
            }
            for (t, x) in checked { uploads.append(try queue.writeAsync(x, to: t.buffer, offset: t.offset)) }
            if graph.lossNode != nil, let labelBuffer = self.labels {
                uploads.append(try queue.writeAsync(labels.map { Int32($0) }, to: labelBuffer))
            }
            // The other queues start the step after queue 0's uploads (and so after everything of
            // the last step, which queue 0 waited for above).
            if queues.count > 1 {
                let start = try queue.marker()
                for q in queues.dropFirst() { try q.barrier(waitFor: [start]) }
            }
            stepSeed = seed
            if training { stepsTaken += 1 }
            forwardPending = training
            events = Array(repeating: nil, count: tasks.count)
            for t in 0..<forwardTaskCount { try run(t) }
            try markOtherQueues()
            if let lossResult {
                lastLoss = try LossReading(queue: queue, result: lossResult)
            }
            for q in queues { try q.flush() }
            return lastLoss
        } catch {
            try rollBack(after: error)
        }
    }

    /// Enqueues the backward pass of the last forward: every trainable parameter's gradient, and
    /// the gradient of every value that needs one (and, with an optimizer, the update).
    public func backward() throws(CLNetError) {
        guard !parametersLost else { throw Self.lostError }
        guard training else { throw .invalidShape(operation: "backward", message: "the executor was made for inference") }
        // The backward pass reads what the last forward saved, and the memory plan lets it
        // overwrite some of that; a second backward would read gradients instead of activations.
        guard forwardPending else {
            throw .invalidShape(operation: "backward", message: "needs a forward pass since the last backward; call forward first")
        }
        forwardPending = false
        do {
            for t in forwardTaskCount..<tasks.count { try run(t) }
            try markOtherQueues()
            for q in queues { try q.flush() }
        } catch {
            try rollBack(after: error)
        }
    }

    // MARK: Data-parallel steps

    /// A range of the gradient arena (in floats, parameters in graph order) whose gradients the
    /// backward pass finishes together, and the tasks that write them.
    public struct GradientBucket: Sendable, Equatable {
        public let range: Range<Int>
        let writers: [Int]
    }

    /// The gradient arena cut into buckets of at least `elements` floats (the last may be
    /// smaller), in the order the backward pass finishes them: the last layers' first, so that
    /// reducing one bucket overlaps the backward pass of the layers before it.
    public func gradientBuckets(elements: Int) -> [GradientBucket] {
        let total = parameterArena.byteCount / 4
        var cuts: [Int] = [], hi = total
        for t in forwardTaskCount..<tasks.count {
            // The backward steps run from the last node to the first, and parameters are laid
            // out in node order, so the written ranges descend.
            for a in tasks[t].accesses where a.space == 2 && a.write && hi - a.lo >= max(elements, 1) && a.lo < hi {
                cuts.append(a.lo)
                hi = a.lo
            }
        }
        var buckets: [GradientBucket] = []
        var top = total
        for lo in cuts + (hi > 0 ? [0] : []) where lo < top {
            let writers = (forwardTaskCount..<tasks.count).filter { t in
                tasks[t].accesses.contains { $0.space == 2 && $0.write && $0.lo < top && lo < $0.hi }
            }
            buckets.append(GradientBucket(range: lo..<top, writers: writers))
            top = lo
        }
        return buckets
    }

    /// Enqueues the backward pass of the last forward without the optimizer's update: the
    /// gradients are then read (`readGradients`), reduced across replicas, written back
    /// (`writeGradients`) and applied (`applyUpdate`). A failure undoes the step as `backward`.
    public func backwardForReduction() throws(CLNetError) {
        guard !parametersLost else { throw Self.lostError }
        guard training, transferQueue != nil else {
            throw .invalidShape(operation: "backwardForReduction", message: "the executor was not made for training with gradientTransfers")
        }
        guard forwardPending else {
            throw .invalidShape(operation: "backward", message: "needs a forward pass since the last backward; call forward first")
        }
        forwardPending = false
        do {
            for t in forwardTaskCount..<tasks.count {
                if case .update = tasks[t].kind { continue }
                try run(t)
            }
            for q in queues { try q.flush() }
        } catch {
            try rollBack(after: error)
        }
    }

    /// Bucket `b`'s gradients, once the tasks that write them have finished (the rest of the
    /// backward pass may still be running).
    public func readGradients(_ b: GradientBucket) throws(CLNetError) -> [Float] {
        guard let transferQueue, let gradientArena else { throw .invalidArgument("the executor was not made with gradientTransfers") }
        do {
            try transferQueue.barrier(waitFor: b.writers.compactMap { events[$0] })
            return try transferQueue.read(gradientArena, count: b.range.count, offset: b.range.lowerBound)
        } catch {
            try rollBack(after: error)
        }
    }

    /// Replaces bucket `b`'s gradients (with the reduced ones); returns when they are written.
    public func writeGradients(_ b: GradientBucket, _ values: [Float]) throws(CLNetError) {
        guard let transferQueue, let gradientArena else { throw .invalidArgument("the executor was not made with gradientTransfers") }
        guard values.count == b.range.count else {
            throw .invalidShape(operation: "writeGradients", message: "\(values.count) values for a bucket of \(b.range.count)")
        }
        do {
            try transferQueue.write(values, to: gradientArena, offset: b.range.lowerBound)
        } catch {
            try rollBack(after: error)
        }
    }

    /// Applies the optimizer's update to every trainable parameter from the (reduced)
    /// gradients, after every task of the backward pass.
    public func applyUpdate() throws(CLNetError) {
        do {
            var ends: [Event] = []
            for q in queues.dropFirst() { ends.append(try q.marker()) }
            try queue.barrier(waitFor: ends)
            for task in tasks { if case let .update(k) = task.kind { try update(graph.nodes[k], queue) } }
            try markOtherQueues()
            for q in queues { try q.flush() }
        } catch {
            try rollBack(after: error)
        }
    }

    /// After a failed call: waits for what was enqueued, puts the parameters, running statistics
    /// and momentum back from the copy taken at the step's start, and throws `error`.
    private func rollBack(after error: CLNetError) throws(CLNetError) -> Never {
        // Every queue is flushed before any is waited for: queue 0 may wait on events of others.
        for q in queues { try? q.flush() }
        for q in queues { try? q.finish() }
        pending = []
        uploads = []
        forwardPending = false
        events = Array(repeating: nil, count: tasks.count)
        if backupValid {
            do {
                try restoreBackup()
            } catch {
                // Nothing is left to restore from: refuse further steps rather than train on
                // half-updated weights.
                parametersLost = true
            }
        }
        throw error
    }

    private func restoreBackup() throws(CLNetError) {
        guard let backupArena else { return }
        try queue.copy(from: backupArena, to: parameterArena, bytes: parameterArena.byteCount)
        if let momentumArena, let momentumBackup {
            try queue.copy(from: momentumBackup, to: momentumArena, bytes: momentumArena.byteCount)
        }
        try queue.finish()
        stepsTaken = stepStart
        backupValid = false
    }

    /// Puts the parameters, running statistics and momentum back as they were before the last
    /// training step's forward: to drop a step whose loss turned out not finite.
    public func undoLastStep() throws(CLNetError) {
        guard backupValid, !forwardPending else {
            throw .invalidArgument("undoLastStep needs a training step (forward and backward) since the last undo")
        }
        try synchronize()
        try restoreBackup()
    }

    private static let lostError = CLNetError.invalidArgument("""
        a failed step could not restore this executor's parameters (the device failed again while \
        copying them back); make a new executor and load the last checkpoint
        """)

    // MARK: Profiling

    /// Records the device time of every command from now until `stopProfiling`, by node.
    public func startProfiling() {
        for q in queues { q.startRecording() }
    }

    /// Waits for the recorded commands and returns their device time by node (and phase).
    public func stopProfiling() throws(CLNetError) -> ExecutorProfile {
        var profile = ExecutorProfile(nodes: Array(repeating: .init(), count: graph.nodes.count))
        var first = UInt64.max, last = UInt64.min
        // Every queue stops recording before any event is queried, so that a failed query leaves none recording.
        let recorded = queues.map { $0.stopRecording() }
        for commands in recorded {
            for c in commands {
                let (start, end) = try c.event.startEndNanoseconds()
                first = min(first, start)
                last = max(last, end)
                let t = Double(end &- start) * 1e-9
                profile.commandSeconds += t
                profile.byCommand[c.command, default: 0] += t
                guard let scope = c.scope, scope < tasks.count else { profile.otherSeconds += t; continue }
                switch tasks[scope].kind {
                case let .forward(k):
                    profile.nodes[k].forwardSeconds += t
                    profile.nodes[k].commands += 1
                case let .backward(i, _):
                    profile.nodes[backwardSteps[i].node].backwardSeconds += t
                    profile.nodes[backwardSteps[i].node].commands += 1
                case let .update(k):
                    profile.nodes[k].updateSeconds += t
                    profile.nodes[k].commands += 1
                }
            }
        }
        profile.spanSeconds = first <= last ? Double(last - first) * 1e-9 : 0
        return profile
    }

    /// What the next step waits for: the end of every queue but 0 so far.
    private func markOtherQueues() throws(CLNetError) {
        pending = []
        for q in queues.dropFirst() { pending.append(try q.marker()) }
    }

    /// Enqueues task `t` on its queue after the events it depends on, and records its own.
    private func run(_ t: Int) throws(CLNetError) {
        let task = tasks[t]
        let q = queues[task.queue]
        try q.barrier(waitFor: task.dependencies.compactMap { events[$0] })
        q.setScope(t)
        defer { q.setScope(nil) }
        switch task.kind {
        case let .forward(k):
            try forward(k, graph.nodes[k], q, workspaces[task.queue])
        case let .backward(i, part):
            try backward(backwardSteps[i], graph.nodes[backwardSteps[i].node], part, q, workspaces[task.queue])
        case let .update(k):
            try update(graph.nodes[k], q)
        }
        if task.signals { events[t] = try q.marker() }
    }

    private func param(_ node: Node, _ i: Int) -> Tensor { parameterViews[node.parameters[i]] }

    /// Batch norm over [N, C] (PyTorch's BatchNorm1d) runs as [N, C, 1, 1]; other tensors pass.
    private func normView(_ node: Node, _ t: Tensor) throws(CLNetError) -> Tensor {
        guard case .batchNorm = node.operation, t.shape.rank == 2 else { return t }
        return try t.reshaped([t.shape.n, t.shape.c, 1, 1])
    }

    /// A scalar-affine node's scale and bias as one tensor: the builder adds them one after the
    /// other, so they sit side by side in the parameter (and gradient) arena.
    private func scalars(_ node: Node, gradient: Bool) throws(CLNetError) -> Tensor? {
        guard let first = gradient ? gradientViews[node.parameters[0]] : parameterViews[node.parameters[0]] else { return nil }
        return try Tensor(buffer: first.buffer, shape: [node.parameters.count], offset: first.offset)
    }
    private func grad(_ node: Node, _ i: Int) -> Tensor? { gradientViews[node.parameters[i]] }

    private func forward(_ k: Int, _ node: Node, _ queue: CommandQueue, _ workspace: Tensor?) throws(CLNetError) {
        let x = try normView(node, values[node.inputs[0].index]), y = try normView(node, values[node.output.index])
        switch node.operation {
        case let .conv(conv, bias):
            try conv.forward(queue, x: x, weight: param(node, 0), bias: bias ? param(node, 1) : nil, y: y, workspace: workspace,
                             epilogue: epilogue(after: k))
        case _ where plan.fusedNodes.contains(k):
            break
        case let .batchNorm(relu, eps, momentum):
            if training {
                try BatchNorm.forwardTraining(queue, x: x, gamma: param(node, 0), beta: param(node, 1),
                                              runningMean: param(node, 2), runningVar: param(node, 3), y: y,
                                              workspace: nodeWorkspaces[k]!, relu: relu, eps: eps, momentum: momentum,
                                              synchronizedOver: batchNormCommunicator)
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
            if !plan.freeConcats.contains(k) { try Concat.forward(queue, inputs: node.inputs.map { values[$0.index] }, y: y) }
        case let .linear(_, bias):
            try Linear.forward(queue, x: x, weight: param(node, 0), bias: bias ? param(node, 1) : nil, y: y)
        case let .stochasticDepth(p):
            if training {
                let scales = nodeWorkspaces[k]!
                uploads.append(try queue.writeAsync(ReferenceExecutor.stochasticDepthScales(x.shape, p: p, seed: ReferenceExecutor.dropoutSeed(stepSeed, node: k)),
                                                    to: scales.buffer, offset: scales.offset))
                try ChannelScale.forward(queue, x: x, scale: scales, y: y)
            } else {
                try Concat.copy(queue, from: x, to: y)
            }
        case let .dropout(p):
            if training {
                try Dropout.forward(queue, x: x, y: y, p: p, seed: ReferenceExecutor.dropoutSeed(stepSeed, node: k))
            } else {
                try Concat.copy(queue, from: x, to: y)
            }
        case let .padShortcut(op):
            try op.forward(queue, x: x, y: y)
        case .sigmoid:
            try Sigmoid.forward(queue, x: x, y: y)
        case .prelu:
            try PReLU.forward(queue, x: x, slope: param(node, 0), y: y)
        case .channelScale:
            try ChannelScale.forward(queue, x: x, scale: values[node.inputs[1].index], y: y)
        case let .selectiveSum(m):
            try SelectiveSum.forward(queue, branches: node.inputs.prefix(m).map { values[$0.index] },
                                     logits: values[node.inputs[m].index], y: y)
        case let .scalarAffine(hasScale, hasBias):
            try ScalarAffine.forward(queue, x: x, parameters: try scalars(node, gradient: false)!, hasScale: hasScale,
                                     hasBias: hasBias, y: y)
        case let .softmaxCrossEntropy(smoothing):
            try SoftmaxCrossEntropy.forward(queue, logits: x, labels: labels!, result: lossResult!,
                                            workspace: nodeWorkspaces[k]!, labelSmoothing: smoothing)
            try Concat.copy(queue, from: try lossResult!.vector(offset: 0, count: 1), to: y)
        case let .distillation(d):
            try d.forward(queue, logits: x, teacher: values[node.inputs[1].index], labels: labels!, result: lossResult!,
                          workspace: nodeWorkspaces[k]!)
            try Concat.copy(queue, from: try lossResult!.vector(offset: 0, count: 1), to: y)
        }
    }

    /// The addition or ReLU the plan fused into convolution `k`'s bias pass, if any.
    private func epilogue(after k: Int) -> ConvEpilogue? {
        guard let j = plan.epilogues[k] else { return nil }
        let next = graph.nodes[j], out = values[next.output.index]
        switch next.operation {
        case .relu:
            return ConvEpilogue(relu: true, output: out)
        case let .add(relu):
            let other = next.inputs[0] == graph.nodes[k].output ? next.inputs[1] : next.inputs[0]
            return ConvEpilogue(residual: values[other.index], relu: relu, output: out)
        default:
            return nil
        }
    }

    private func backward(_ step: BackwardStep, _ node: Node, _ part: Part, _ queue: CommandQueue,
                          _ workspace: Tensor?) throws(CLNetError) {
        let k = step.node
        let dy = try normView(node, gradients[node.output.index]!)
        // Where the node writes each input's gradient, and whether it adds to it.
        var target: [Int: (Tensor, Bool)] = [:]
        for g in step.inputs { target[g.input] = (try normView(node, gradients[node.inputs[g.input].index]!), g.accumulate) }
        let x = try normView(node, values[node.inputs[0].index]), y = try normView(node, values[node.output.index])
        let dx = target[0]?.0, accumulate = target[0]?.1 ?? false
        switch node.operation {
        case let .conv(conv, bias):
            // Parameter gradients overwrite; the input gradient may add (fan-out).
            if part == .parameters {
                try conv.backward(queue, x: x, weight: param(node, 0), dy: dy, dx: nil, dweight: grad(node, 0),
                                  dbias: bias ? grad(node, 1) : nil, workspace: workspace)
            } else if let dx {
                try conv.backward(queue, x: x, weight: param(node, 0), dy: dy, dx: dx, dweight: nil, dbias: nil,
                                  workspace: workspace, accumulate: accumulate)
            }
        case let .linear(_, bias):
            if part == .parameters {
                try Linear.backward(queue, x: x, weight: param(node, 0), dy: dy, dx: nil, dweight: grad(node, 0),
                                    dbias: bias ? grad(node, 1) : nil)
            } else if let dx {
                try Linear.backward(queue, x: x, weight: param(node, 0), dy: dy, dx: dx, dweight: nil, dbias: nil,
                                    accumulate: accumulate)
            }
        case .batchNorm(let relu, _, _), .groupNorm(_, let relu, _):
            var groups = 0
            if case let .groupNorm(g, _, _) = node.operation { groups = g }
            // Parameter gradients overwrite; when the input gradient adds, it is a second call.
            let calls: [(Tensor?, Bool, Bool)] = accumulate ? [(nil, true, false), (dx, false, true)] : [(dx, true, false)]
            for (d, params, acc) in calls {
                if groups == 0 {
                    try BatchNorm.backward(queue, x: x, gamma: param(node, 0), beta: param(node, 1),
                                           workspace: nodeWorkspaces[k]!, dy: dy, dx: d, dgamma: params ? grad(node, 0) : nil,
                                           dbeta: params ? grad(node, 1) : nil, relu: relu, accumulate: acc,
                                           synchronizedOver: batchNormCommunicator)
                } else {
                    try GroupNorm.backward(queue, x: x, gamma: param(node, 0), beta: param(node, 1), groups: groups,
                                           workspace: nodeWorkspaces[k]!, dy: dy, dx: d, dgamma: params ? grad(node, 0) : nil,
                                           dbeta: params ? grad(node, 1) : nil, relu: relu, accumulate: acc)
                }
            }
        case .relu:
            if let dx { try ReLU.backward(queue, y: y, dy: dy, dx: dx, accumulate: accumulate) }
        case let .add(relu):
            for i in target.keys.sorted() {
                let (d, acc) = target[i]!
                try Add.backward(queue, y: y, dy: dy, dx: d, relu: relu, accumulate: acc)
            }
        case let .maxPool(window):
            if let dx { try MaxPool.backward(queue, dy: dy, indices: poolIndices[k]!, dx: dx, window: window, accumulate: accumulate) }
        case let .avgPool(window):
            if let dx { try AvgPool.backward(queue, dy: dy, dx: dx, window: window, accumulate: accumulate) }
        case .globalAvgPool:
            if let dx { try GlobalAvgPool.backward(queue, dy: dy, dx: dx, accumulate: accumulate) }
        case .concat:
            if plan.freeConcats.contains(k) { break }
            var start = 0
            for (i, v) in node.inputs.enumerated() {
                let c = graph.shape(of: v).c
                if let (d, acc) = target[i] {
                    try Concat.copy(queue, from: try dy.slice(channels: start..<start + c), to: d, accumulate: acc)
                }
                start += c
            }
        case .stochasticDepth:
            if let dx { try ChannelScale.backward(queue, x: x, scale: nodeWorkspaces[k]!, dy: dy, dx: dx, dscale: nil, accumulate: accumulate) }
        case let .dropout(p):
            if let dx {
                try Dropout.backward(queue, dy: dy, dx: dx, p: p, seed: ReferenceExecutor.dropoutSeed(stepSeed, node: k),
                                     accumulate: accumulate)
            }
        case let .padShortcut(op):
            if let dx { try op.backward(queue, dy: dy, dx: dx, accumulate: accumulate) }
        case .sigmoid:
            if let dx { try Sigmoid.backward(queue, y: y, dy: dy, dx: dx, accumulate: accumulate) }
        case .prelu:
            // The slope's gradient overwrites; an input gradient that adds is a second call.
            let calls: [(Tensor?, Tensor?, Bool)] = accumulate ? [(nil, grad(node, 0), false), (dx, nil, true)]
                : [(dx, grad(node, 0), false)]
            for (d, dslope, acc) in calls where d != nil || dslope != nil {
                try PReLU.backward(queue, x: x, slope: param(node, 0), dy: dy, dx: d, dslope: dslope, accumulate: acc)
            }
        case .channelScale:
            let s = values[node.inputs[1].index]
            if let (d, acc) = target[0] { try ChannelScale.backward(queue, x: x, scale: s, dy: dy, dx: d, dscale: nil, accumulate: acc) }
            if let (d, acc) = target[1] { try ChannelScale.backward(queue, x: x, scale: s, dy: dy, dx: nil, dscale: d, accumulate: acc) }
        case let .selectiveSum(m):
            try SelectiveSum.backward(queue, branches: node.inputs.prefix(m).map { values[$0.index] },
                                      logits: values[node.inputs[m].index], dy: dy, dbranches: (0..<m).map { target[$0]?.0 },
                                      dlogits: target[m]?.0, accumulate: (0..<m).map { target[$0]?.1 ?? false },
                                      accumulateLogits: target[m]?.1 ?? false)
        case let .scalarAffine(hasScale, hasBias):
            try ScalarAffine.backward(queue, x: x, parameters: try scalars(node, gradient: false)!, hasScale: hasScale,
                                      hasBias: hasBias, dy: dy, dx: dx, dparameters: try scalars(node, gradient: true),
                                      workspace: nodeWorkspaces[k], accumulate: accumulate)
        case let .softmaxCrossEntropy(smoothing):
            if let dx {
                try SoftmaxCrossEntropy.backward(queue, logits: x, labels: labels!, dlogits: dx, labelSmoothing: smoothing,
                                                 accumulate: accumulate)
            }
        case let .distillation(d):
            if let dx {
                try d.backward(queue, logits: x, teacher: values[node.inputs[1].index], labels: labels!, dlogits: dx,
                               accumulate: accumulate)
            }
        }
    }

    // MARK: Scheduling

    /// Which part of a backward step a task runs: all of it, or (convolutions and linear layers)
    /// the input gradient and the parameter gradients as two tasks.
    enum Part { case whole, inputs, parameters }

    enum TaskKind {
        case forward(Int)
        case backward(Int, Part)
        /// The optimizer's update of node k's trainable parameters.
        case update(Int)
    }

    /// Updates node `k`'s trainable parameters from their gradients (one launch per parameter, as
    /// weight decay may differ between them).
    private func update(_ node: Node, _ queue: CommandQueue) throws(CLNetError) {
        guard var sgd = optimizer, let momentumArena else { return }
        let decay = sgd.weightDecay, rate = sgd.learningRate
        for i in node.parameters where graph.parameters[i].trainable {
            let p = parameterViews[i], g = gradientViews[i]!
            let m = try Tensor(buffer: momentumArena, shape: p.shape, offset: p.offset)
            sgd.weightDecay = decayOnlyWeights && graph.parameters[i].role != .weight ? 0 : decay
            sgd.learningRate = rate * graph.parameters[i].learningRateScale
            try sgd.step(queue, parameters: p, gradients: g, momentumBuffer: m)
        }
    }

    /// A memory range a task touches: `space` 0 is the activation arena, 1 the parameters, 2
    /// their gradients, 3 + k node k's own buffers (norm workspaces, pool indices, loss).
    struct Access {
        let space: Int, lo: Int, hi: Int
        let write: Bool

        func conflicts(_ o: Access) -> Bool {
            space == o.space && lo < o.hi && o.lo < hi && (write || o.write)
        }
    }

    struct Task {
        let kind: TaskKind
        let queue: Int
        let accesses: [Access]
        var dependencies: [Int] = []
        /// Some later task on another queue waits for it.
        var signals = false
    }

    private func valueAccess(_ v: Value, gradient: Bool, write: Bool) -> Access {
        let t = gradient ? gradients[v.index]! : values[v.index]
        // A channel slice spans from its first sample to the end of its last.
        return Access(space: 0, lo: t.offset, hi: t.offset + (t.shape.n - 1) * t.batchStride + t.shape.sampleCount, write: write)
    }

    private func parameterAccess(_ node: Node, gradient: Bool, write: Bool) -> [Access] {
        node.parameters.compactMap { i in
            guard let t = gradient ? gradientViews[i] : parameterViews[i] else { return nil }
            return Access(space: gradient ? 2 : 1, lo: t.offset, hi: t.offset + t.shape.count, write: write)
        }
    }

    /// Builds the task list and each task's dependencies on earlier tasks of other queues.
    private func schedule() {
        // Branch queues for forward nodes (and their backward steps).
        var nodeQueue = [Int](repeating: 0, count: graph.nodes.count)
        var consumed: [Value: Int] = [:]
        var nextBranch = 0
        for (k, node) in graph.nodes.enumerated() where queues.count > 1 {
            // The loss stays on queue 0, where its result is read back.
            if k == graph.lossNode { continue }
            if node.inputs.count == 1 {
                let v = node.inputs[0]
                if consumed[v, default: 0] > 0 {
                    nodeQueue[k] = 1 + nextBranch % (queues.count - 1)
                    nextBranch += 1
                } else if let p = graph.producers[v.index] {
                    nodeQueue[k] = nodeQueue[p]
                }
            }
            for v in node.inputs { consumed[v, default: 0] += 1 }
        }
        var list: [Task] = []
        for (k, node) in graph.nodes.enumerated() {
            var a = node.inputs.map { valueAccess($0, gradient: false, write: false) }
            a.append(valueAccess(node.output, gradient: false, write: true))
            // Batch norm in training writes its running statistics.
            var writesParameters = false
            if case .batchNorm = node.operation { writesParameters = training }
            a += parameterAccess(node, gradient: false, write: writesParameters)
            a.append(Access(space: 3 + k, lo: 0, hi: 1, write: true))
            if let j = plan.epilogues[k] {
                a += graph.nodes[j].inputs.map { valueAccess($0, gradient: false, write: false) }
                a.append(valueAccess(graph.nodes[j].output, gradient: false, write: true))
            }
            list.append(Task(kind: .forward(k), queue: nodeQueue[k], accesses: a))
        }
        forwardTaskCount = list.count
        backwardSteps = training ? graph.backwardSteps : []
        var nextWeightQueue = 0
        for (i, step) in backwardSteps.enumerated() {
            let node = graph.nodes[step.node]
            let reads = [valueAccess(node.output, gradient: true, write: false)]
                + MemoryPlan.savedForBackward(node).map { valueAccess($0, gradient: false, write: false) }
                + parameterAccess(node, gradient: false, write: false)
            let own = Access(space: 3 + step.node, lo: 0, hi: 1, write: true)
            let inputGradients = step.inputs.map { valueAccess(node.inputs[$0.input], gradient: true, write: true) }
            let home = nodeQueue[step.node]
            var updateQueue = home
            switch node.operation {
            case .conv, .linear:
                // The weight gradient leaves the critical path.
                let q = queues.count == 1 ? 0 : 1 + nextWeightQueue % (queues.count - 1)
                nextWeightQueue += 1
                updateQueue = q
                list.append(Task(kind: .backward(i, .parameters), queue: q,
                                 accesses: reads + parameterAccess(node, gradient: true, write: true)))
                if !step.inputs.isEmpty {
                    list.append(Task(kind: .backward(i, .inputs), queue: home, accesses: reads + inputGradients))
                }
            default:
                list.append(Task(kind: .backward(i, .whole), queue: home,
                                 accesses: reads + [own] + inputGradients + parameterAccess(node, gradient: true, write: true)))
            }
            // The update follows the step's tasks, on the queue that made the gradient; the scan
            // below makes it wait for every task of other queues that still reads the old weights.
            if momentumArena != nil && node.parameters.contains(where: { graph.parameters[$0].trainable }) {
                list.append(Task(kind: .update(step.node), queue: updateQueue,
                                 accesses: parameterAccess(node, gradient: true, write: false)
                                     + parameterAccess(node, gradient: false, write: true)))
            }
        }
        // For each task, the latest conflicting earlier task of every other queue: tasks of one
        // queue run in order, so that one event covers the earlier ones.
        for t in list.indices {
            var latest = [Int?](repeating: nil, count: queues.count)
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
}

/// One step's loss and correct count, copied to the host without blocking the device.
public final class LossReading: @unchecked Sendable {
    // The host memory is written by the driver until `event` completes; it is freed only after.
    private let event: Event
    private let storage: UnsafeMutablePointer<Float>

    init(queue: CommandQueue, result: Tensor) throws(CLNetError) {
        storage = UnsafeMutablePointer<Float>.allocate(capacity: 2)
        storage.initialize(repeating: .nan, count: 2)
        do {
            event = try queue.readAsync(result.buffer, offset: result.offset * 4, bytes: 8, into: UnsafeMutableRawPointer(storage))
        } catch {
            storage.deallocate()
            throw error
        }
    }

    deinit {
        try? event.wait()
        storage.deallocate()
    }

    /// Waits for this step's forward pass and returns its mean loss and correct top-1 count.
    public func value() throws(CLNetError) -> (loss: Float, correct: Int) {
        try event.wait()
        let correct = storage[1]
        return (storage[0], correct.isFinite ? Int(correct) : 0)
    }
}

/// Device time of the commands an executor enqueued while profiling (`Executor.startProfiling`),
/// from OpenCL's profiling events. Commands overlap when several queues run at once, so the sum
/// can exceed the span.
public struct ExecutorProfile: Sendable {
    /// One node's work: its forward pass, its backward pass (input and weight gradients), and
    /// the optimizer update of its parameters.
    public struct NodeTime: Sendable {
        public var forwardSeconds = 0.0
        public var backwardSeconds = 0.0
        public var updateSeconds = 0.0
        /// Commands recorded for the node (kernels, copies, the last kernel of each CLBlast call).
        public var commands = 0
        public var totalSeconds: Double { forwardSeconds + backwardSeconds + updateSeconds }

        public init() {}
    }

    public init(nodes: [NodeTime]) { self.nodes = nodes }

    /// Adds `other`'s times (of the same graph) to these; spans add too, as for consecutive steps.
    public mutating func add(_ other: ExecutorProfile) {
        for k in nodes.indices where k < other.nodes.count {
            nodes[k].forwardSeconds += other.nodes[k].forwardSeconds
            nodes[k].backwardSeconds += other.nodes[k].backwardSeconds
            nodes[k].updateSeconds += other.nodes[k].updateSeconds
            nodes[k].commands += other.nodes[k].commands
        }
        otherSeconds += other.otherSeconds
        commandSeconds += other.commandSeconds
        spanSeconds += other.spanSeconds
        for (name, t) in other.byCommand { byCommand[name, default: 0] += t }
    }

    /// Every time multiplied by `factor` (1 / steps: the mean per step).
    public func scaled(by factor: Double) -> ExecutorProfile {
        var p = self
        for k in p.nodes.indices {
            p.nodes[k].forwardSeconds *= factor
            p.nodes[k].backwardSeconds *= factor
            p.nodes[k].updateSeconds *= factor
        }
        p.otherSeconds *= factor
        p.commandSeconds *= factor
        p.spanSeconds *= factor
        p.byCommand = p.byCommand.mapValues { $0 * factor }
        return p
    }

    /// By node index of the graph.
    public var nodes: [NodeTime]
    /// Commands outside any node: input and label uploads, markers, the loss read-back.
    public var otherSeconds = 0.0
    /// Every command's device time, summed.
    public var commandSeconds = 0.0
    /// Device time by command name (kernel, copy, CLBlast routine).
    public var byCommand: [String: Double] = [:]
    /// From the first command's start to the last one's end, on the device clock.
    public var spanSeconds = 0.0
}
