/// Runs a graph on an OpenCL device: the forward pass, and in training mode the backward pass the
/// graph derives (`Graph.backwardSteps`), with parameters and their gradients in one arena each.
///
/// Activations and their gradients share one arena laid out by `MemoryPlan`, so only the values
/// in `keep` can be read after a step. The work is the fixed list of tasks of a `TaskSchedule`,
/// spread over in-order queues, where a task waits through events only for the tasks of other
/// queues whose memory it shares; a host read waits for every queue.
///
/// The executor's parts: this file holds its state, its allocation and the step's entry points;
/// Executor+Values.swift reads and writes parameters and results; Executor+Dispatch.swift runs
/// each node's kernels; Executor+DataParallel.swift the gradient buckets of data-parallel
/// training; Executor+Profiling.swift device times and the loss read-back; StepBackup.swift the
/// copy that makes a training step all or nothing.
public final class Executor: @unchecked Sendable {
    // Not safe to run from two threads at once: a step mutates the buffers it owns.
    public let graph: Graph
    public let context: Context
    /// Queue 0 runs the critical path; the others run side branches and weight gradients.
    public let queues: [CommandQueue]
    /// Training runs batch norm with batch statistics, dropout, and allows `backward`.
    public let training: Bool
    /// The activation arena's layout.
    public let plan: MemoryPlan
    /// Device memory this executor allocated: the activation arena, parameters, gradients,
    /// momentum, the step backup, workspaces and per-node buffers.
    public let deviceBytes: Int
    /// The optimizer applied by `backward`, each parameter as soon as its gradient is final.
    public var optimizer: SGD?
    /// Synchronised batch norm: training batch norm normalises with the statistics of the whole
    /// batch across the communicator's ranks (each holding an equal share), as PyTorch's
    /// SyncBatchNorm; the host waits for the queue at every batch norm, forward and backward.
    public var batchNormCommunicator: Communicator?
    /// With an optimizer: leave batch-norm scales and shifts and all biases undecayed.
    public let decayOnlyWeights: Bool
    /// With an optimizer: the L1 prior that pulls every PReLU slope to 1 (`SGD.prior`), making
    /// channels linear: the partially linear networks (`Graph.pathLength`). It takes the place
    /// of the optimizer's own prior for the slopes. 0: none.
    public var linearityPrior: Float = 0
    /// Training forwards run so far; saved as batch norm's `num_batches_tracked`.
    public internal(set) var stepsTaken: Int64 = 0
    /// The format activations and their gradients are stored in (mixed precision below fp32).
    public let precision: Precision
    /// Dynamic loss scaling, for training at fp16 with an optimizer (nil otherwise): the loss
    /// gradient is multiplied by its scale, the update divides it out, and a step whose
    /// gradients overflow is undone (Executor+Precision.swift).
    public internal(set) var lossScaler: LossScaler?
    /// Whether the last training step was undone because its scaled gradients overflowed.
    public internal(set) var lastStepOverflowed = false

    var queue: CommandQueue { queues[0] }
    let kept: Set<Value>
    let values: [Tensor]
    let gradients: [Tensor?]
    let parameterArena: Buffer
    let parameterViews: [Tensor]
    /// Mixed precision: the 16-bit copy of each weight the kernels read in the activations'
    /// storage (`OperationFlags.readsStoredWeight`), by parameter index.
    let weightCopies: [Int: Tensor]
    /// Mixed precision with loss scaling: set to nonzero by an update that met a gradient that
    /// is not finite.
    let overflowFlag: Buffer?
    let gradientViews: [Tensor?]
    let gradientArena: Buffer?
    let momentumArena: Buffer?
    /// One convolution scratch buffer per queue, so that tasks on different queues never share one.
    let scratch: [Tensor?]
    /// Each convolution node's algorithms (`Conv2D.choose`), by node index.
    public let convChoices: [Int: ConvChoice]
    let nodeWorkspaces: [Int: Tensor]
    /// The statistics a convolution writes and the batch norm after it reads, under both nodes
    /// (`MemoryPlan.convolutionStatistics`), where the convolution's algorithm can write them.
    let writtenStatistics: [Int: WrittenStatistics]
    let poolIndices: [Int: Buffer]
    let labels: Buffer?
    let lossResult: Tensor?
    /// Per shared parameter, where a later use's step writes its share of the gradient before
    /// adding it to the parameter's (see `ParameterGradients`).
    let sharedGradientAddends: [Int: Tensor]
    var schedule: TaskSchedule
    /// Data-parallel steps read and write gradients here, beside the step's own queues.
    let transferQueue: CommandQueue?
    /// The state at the start of the current training step; nil for inference.
    let backup: StepBackup?

    /// The seed of the current step's random draws (dropout, stochastic depth).
    var stepSeed: UInt32 = 0
    /// The event each task of the current step recorded, where a later task waits for it.
    var events: [Event?] = []
    /// A marker at the end of each queue but 0 after the last forward or backward, which the next step waits for.
    var pending: [Event] = []
    /// Input copies still in flight; each frees its staging memory when done.
    var uploads: [Upload] = []
    var lastLoss: LossReading?
    /// A training forward has run and its backward has not.
    var forwardPending = false
    /// A failed step could not be undone: the parameters are unusable.
    var parametersLost = false

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
    ///
    /// `fusions` are the passes the memory plan may merge (all by default); tests turn them off
    /// to compare, and results agree to rounding.
    ///
    /// `precision` below fp32 stores activations, their gradients and the saved values in 16
    /// bits, with float32 arithmetic (see `Precision`); fp16 training with an optimizer scales
    /// the loss (`lossScaler`).
    public init(graph: Graph, context: Context, training: Bool, keep: Set<Value> = [], queues: Int? = nil,
                optimizer: SGD? = nil, decayOnlyWeights: Bool = false, gradientTransfers: Bool = false,
                fusions: MemoryPlan.Fusions = .all, precision: Precision = .fp32) throws(CLNetError) {
        let queues = queues ?? Self.defaultQueueCount(for: context.device)
        self.graph = graph
        self.precision = precision
        self.context = context
        self.training = training
        self.optimizer = optimizer
        self.decayOnlyWeights = decayOnlyWeights
        guard (1...16).contains(queues) else { throw .invalidArgument("an executor runs on 1 to 16 queues, not \(queues)") }
        if training && graph.lossNode == nil {
            throw .invalidGraph("Executor: training needs a graph with a loss node")
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
        var keepAll = keep
        if let loss = graph.lossNode { keepAll.insert(graph.nodes[loss].output) }
        kept = keepAll
        let plan = MemoryPlan(graph: graph, training: training, keep: keepAll, fusions: fusions)
        self.plan = plan
        let memory = try ExecutorMemory(graph: graph, plan: plan, training: training, queues: queues, momentum: optimizer != nil,
                                        device: context.device, precision: precision)
        try memory.check(on: context.device)
        deviceBytes = memory.totalBytes
        // Timed before the arenas exist, so that the measurement's tensors never add to them.
        var choices: [Int: ConvChoice] = [:]
        for (k, node) in graph.nodes.enumerated() {
            guard case let .conv(conv, _) = node.operation else { continue }
            choices[k] = try conv.choose(on: context, input: graph.shape(of: node.inputs[0]), training: training,
                                         storage: precision)
        }
        convChoices = choices
        var written: [Int: WrittenStatistics] = [:]
        let partials = memory.statisticsFloats > 0 ? try Tensor(context: context, shape: [memory.statisticsFloats]) : nil
        for (j, k) in plan.convolutionStatistics {
            guard let partials, case let .conv(conv, _) = graph.nodes[j].operation else { continue }
            let x = graph.shape(of: graph.nodes[j].inputs[0])
            let algorithm = choices[j]?.forward ?? conv.algorithm(on: context.device)
            guard let parts = try conv.statisticsParts(x, algorithm: algorithm, on: context.device) else { continue }
            written[j] = WrittenStatistics(partials: partials, parts: parts)
            written[k] = written[j]
        }
        writtenStatistics = written
        var made: [CommandQueue] = []
        for _ in 0..<queues { made.append(try context.makeQueue()) }
        self.queues = made

        let arena = try context.buffer(bytes: memory.arenaBytes)
        func tensor(_ v: Value, gradient: Bool) throws(CLNetError) -> Tensor? {
            guard let (offset, stride) = plan.placement(of: v, gradient: gradient, in: graph) else { return nil }
            return try Tensor(buffer: arena, shape: graph.shape(of: v), offset: offset, batchStride: stride, storage: precision)
        }
        var vals: [Tensor] = [], grads: [Tensor?] = []
        for i in graph.shapes.indices {
            guard let t = try tensor(Value(index: i), gradient: false) else {
                throw .invalidState("Executor: the memory plan placed no memory for value %\(i)")
            }
            vals.append(t)
            grads.append(try tensor(Value(index: i), gradient: true))
        }
        values = vals
        gradients = grads

        let total = max(1, memory.parameterFloats)
        parameterArena = try context.buffer(floats: total)
        gradientArena = training ? try context.buffer(floats: total) : nil
        transferQueue = gradientTransfers && training ? try context.makeQueue() : nil
        // Buckets span the gaps of parameters without gradients (running statistics): zeros.
        if let gradientArena, gradientTransfers { try made[0].fill(gradientArena, with: 0) }
        momentumArena = training && optimizer != nil ? try context.buffer(floats: total) : nil
        if let momentumArena { try made[0].fill(momentumArena, with: 0) }
        backup = training ? try StepBackup(context: context, parameterArena: parameterArena, momentumArena: momentumArena) : nil
        var views: [Tensor] = [], gviews: [Tensor?] = [], offset = 0
        for p in graph.parameters {
            views.append(try Tensor(buffer: parameterArena, shape: p.shape, offset: offset))
            gviews.append(try gradientArena.map { b throws(CLNetError) in try Tensor(buffer: b, shape: p.shape, offset: offset) })
            offset += p.shape.count
        }
        parameterViews = views
        gradientViews = gviews
        var copies: [Int: Tensor] = [:]
        if memory.weightCopyElements > 0 {
            let copyArena = try context.buffer(bytes: memory.weightCopyElements * precision.bytes)
            var at = 0
            for i in memory.weightCopies.sorted() {
                copies[i] = try Tensor(buffer: copyArena, shape: graph.parameters[i].shape, offset: at, storage: precision)
                at += graph.parameters[i].shape.count
            }
        }
        weightCopies = copies
        overflowFlag = memory.overflowFlag ? try context.buffer(bytes: 4) : nil
        lossScaler = memory.overflowFlag ? LossScaler() : nil

        var workspaces: [Int: Tensor] = [:], indices: [Int: Buffer] = [:], result: Tensor? = nil
        for (k, m) in memory.nodes.enumerated() {
            if m.workspace > 0 { workspaces[k] = try Tensor(context: context, shape: [m.workspace]) }
            if m.indices > 0 { indices[k] = try context.buffer(bytes: 4 * m.indices) }
            if m.result > 0 { result = try Tensor(context: context, shape: [m.result]) }
        }
        nodeWorkspaces = workspaces
        poolIndices = indices
        lossResult = result
        var ws: [Tensor?] = []
        for _ in 0..<queues { ws.append(memory.scratchFloats > 0 ? try Tensor(context: context, shape: [memory.scratchFloats]) : nil) }
        scratch = ws
        labels = memory.labelCount > 0 ? try context.buffer(bytes: 4 * memory.labelCount) : nil
        var addends: [Int: Tensor] = [:]
        for i in memory.sharedParameters { addends[i] = try Tensor(context: context, shape: graph.parameters[i].shape) }
        sharedGradientAddends = addends

        for (i, p) in graph.parameters.enumerated() {
            let neutral: Float = p.role == .normWeight || p.role == .runningVar ? 1 : p.role == .slope ? 0.25 : 0
            try made[0].fill(parameterViews[i].buffer, with: neutral, offset: parameterViews[i].offset, count: p.shape.count)
        }
        schedule = TaskSchedule(graph: graph, plan: plan, queues: queues, training: training, updates: momentumArena != nil)
        try refreshWeightCopies(made[0])
        // A bucket's read waits for the tasks that write its gradients.
        if transferQueue != nil { schedule.signalGradientWriters() }
    }

    /// The number of queues an executor uses unless told: two wherever the device has more than
    /// one compute unit (weight gradients and side branches overlap the critical path; measured
    /// 1.0-1.2x on PoCL and an H100), else one.
    public static func defaultQueueCount(for device: Device) -> Int {
        device.info.computeUnits > 1 ? 2 : 1
    }

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
            // Half holds magnitudes to 65,504; beyond, an input would become infinite unseen.
            if precision == .fp16, let bad = x.firstIndex(where: { abs($0) > 65504 }) {
                throw .invalidShape(operation: "input \(name)", message: "value \(bad) is \(x[bad]), beyond fp16's range (65,504); normalise the inputs or use bf16")
            }
            checked.append((t, x))
        }
        if let loss = graph.lossNode {
            try graph.nodes[loss].operation.checkLabels(labels, input: graph.shape(of: graph.nodes[loss].inputs[0]))
        }
        backup?.invalidate()
        do {
            // The last step's weight gradients on other queues may still read memory this one
            // reuses. Nothing here waits on the host: inputs are staged and copied without blocking.
            try queue.barrier(waitFor: pending)
            pending = []
            uploads.removeAll { (try? $0.event.isComplete()) ?? true }
            try backup?.take(queue, parameterArena: parameterArena, momentumArena: momentumArena, step: stepsTaken)
            if let overflowFlag { try queue.fill(overflowFlag, with: 0) }
            for (t, x) in checked { uploads.append(try queue.writeAsync(x, to: t)) }
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
            events = Array(repeating: nil, count: schedule.tasks.count)
            for t in 0..<schedule.forwardTaskCount { try run(t) }
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
        try startBackward("backward")
        do {
            for t in schedule.forwardTaskCount..<schedule.tasks.count { try run(t) }
            try markOtherQueues()
            for q in queues { try q.flush() }
        } catch {
            try rollBack(after: error)
        }
        try finishScaledStep()
    }

    /// Checks that a backward pass may run now, and marks the forward as consumed.
    func startBackward(_ call: String) throws(CLNetError) {
        guard !parametersLost else { throw Self.lostError }
        guard training else { throw .invalidState("\(call): the executor was made for inference") }
        // The backward pass reads what the last forward saved, and the memory plan lets it
        // overwrite some of that; a second backward would read gradients instead of activations.
        guard forwardPending else {
            throw .invalidState("\(call): needs a forward pass since the last backward; call forward first")
        }
        forwardPending = false
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

    /// What the next step waits for: the end of every queue but 0 so far.
    func markOtherQueues() throws(CLNetError) {
        pending = []
        for q in queues.dropFirst() { pending.append(try q.marker()) }
    }

    // MARK: Undoing a step

    /// After a failed call: waits for what was enqueued, puts the parameters, running statistics
    /// and momentum back from the copy taken at the step's start, and throws `error`.
    func rollBack(after error: CLNetError) throws(CLNetError) -> Never {
        // Every queue is flushed before any is waited for: queue 0 may wait on events of others.
        for q in queues { try? q.flush() }
        for q in queues { try? q.finish() }
        pending = []
        uploads = []
        forwardPending = false
        events = Array(repeating: nil, count: schedule.tasks.count)
        if let backup, backup.isValid {
            do {
                stepsTaken = try backup.restore(queue, parameterArena: parameterArena, momentumArena: momentumArena)
                try refreshWeightCopies(queue)
                try queue.finish()
            } catch {
                // Nothing is left to restore from: refuse further steps rather than train on
                // half-updated weights.
                parametersLost = true
            }
        }
        throw error
    }

    /// Puts the parameters, running statistics and momentum back as they were before the last
    /// training step's forward: to drop a step whose loss turned out not finite.
    public func undoLastStep() throws(CLNetError) {
        guard let backup, backup.isValid, !forwardPending else {
            throw .invalidState("undoLastStep needs a training step (forward and backward) since the last undo")
        }
        try synchronize()
        stepsTaken = try backup.restore(queue, parameterArena: parameterArena, momentumArena: momentumArena)
        try refreshWeightCopies(queue)
    }

    static let lostError = CLNetError.invalidState("""
        a failed step could not restore this executor's parameters (the device failed again while \
        copying them back); make a new executor and load the last checkpoint
        """)
}

/// The device memory an executor of a graph needs, counted before anything is allocated. The
/// executor allocates exactly this, `checkMemory` refuses what does not fit, and `deviceBytes`
/// reports it: one count for all three.
struct ExecutorMemory {
    /// Each node's own buffers (see `Operation.memory`).
    let nodes: [NodeMemory]
    /// The activation arena's bytes, and the floats of the parameter arena, of which training
    /// keeps `parameterCopies`: the values, their gradients, the momentum with an optimizer,
    /// and the step backup of values and momentum.
    let arenaBytes, parameterFloats, parameterCopies: Int
    /// Floats of the largest convolution scratch, of which each of the `queues` has one; and
    /// the loss's labels, one 32-bit integer per sample.
    let scratchFloats, queues, labelCount: Int
    /// Floats of the packed operands CLNet's GEMM keeps per queue (0 where CLBlast runs the products).
    let packingFloats: Int
    /// The parameters that several steps add gradients to, and the floats of their addend buffers.
    let sharedParameters: Set<Int>
    let sharedGradientFloats: Int
    /// Floats of the partial statistics convolutions write for the norms after them: the most
    /// that any pair's algorithms might write (`MemoryPlan.convolutionStatistics`).
    let statisticsFloats: Int

    /// Mixed precision: the parameters that get a 16-bit copy, and its elements; whether the
    /// updates report overflow (fp16 training with an optimizer).
    let weightCopies: Set<Int>
    let weightCopyElements: Int
    let overflowFlag: Bool
    let precision: Precision

    init(graph: Graph, plan: MemoryPlan, training: Bool, queues: Int, momentum: Bool, device: Device,
         precision: Precision = .fp32) throws(CLNetError) {
        let gemm = GEMMEngine.preferred(for: device)
        nodes = try graph.nodes.map { node throws(CLNetError) in
            try node.operation.memory(input: graph.shape(of: node.inputs[0]), output: graph.shape(of: node.output),
                                      training: training)
        }
        arenaBytes = precision.bytes * max(plan.arenaFloats, 1)
        self.precision = precision
        var copies = Set<Int>()
        for node in graph.nodes where precision != .fp32 && node.operation.flags.contains(.readsStoredWeight) {
            copies.insert(node.parameters[0])
        }
        weightCopies = copies
        weightCopyElements = copies.reduce(0) { $0 + graph.parameters[$1].shape.count }
        overflowFlag = precision.needsLossScaling && training && momentum
        parameterFloats = graph.parameters.reduce(0) { $0 + $1.shape.count }
        parameterCopies = 1 + (training ? 2 : 0) + (training && momentum ? 2 : 0)
        scratchFloats = nodes.map(\.scratch).max() ?? 0
        self.queues = queues
        labelCount = graph.lossNode.map { graph.nodes[$0].operation.labelCount(input: graph.shape(of: graph.nodes[$0].inputs[0])) } ?? 0
        sharedParameters = training ? ParameterGradients(graph: graph, steps: graph.backwardSteps).accumulatedParameters : []
        sharedGradientFloats = sharedParameters.reduce(0) { $0 + graph.parameters[$1].shape.count }
        // The operations that count multiply-adds (convolutions, linear layers) are the ones that call GEMM.
        let products = graph.nodes.contains { $0.operation.multiplyAdds(input: graph.shape(of: $0.inputs[0]),
                                                                         output: graph.shape(of: $0.output)) > 0 }
        packingFloats = gemm == .clnet && products ? GEMMPanels.packingFloats : 0
        var most = 0
        for j in plan.convolutionStatistics.keys {
            guard case let .conv(conv, _) = graph.nodes[j].operation else { continue }
            let x = graph.shape(of: graph.nodes[j].inputs[0])
            for algorithm in conv.applicableAlgorithms {
                let parts = try conv.statisticsParts(x, algorithm: algorithm, on: device) ?? 0
                most = max(most, WrittenStatistics.count(channels: conv.outChannels, parts: parts))
            }
        }
        statisticsFloats = most
    }

    var parameterBytes: Int { 4 * max(parameterFloats, 1) * parameterCopies }
    var workspaceBytes: Int {
        nodes.reduce(0) { $0 + $1.ownBytes } + 4 * (scratchFloats + packingFloats) * queues + 4 * labelCount
            + 4 * statisticsFloats + 4 * sharedGradientFloats
    }
    var totalBytes: Int { arenaBytes + parameterBytes + weightCopyElements * precision.bytes + workspaceBytes }

    /// Refuses a graph whose buffers cannot fit the device, before allocating any: OpenCL
    /// drivers often allocate lazily and fail later, in the middle of a step, or not at all and
    /// swap (PoCL).
    func check(on device: Device) throws(CLNetError) {
        func mib(_ b: Int) -> String { "\((b + (1 << 20) - 1) >> 20) MiB" }
        let available = device.info.globalMemoryBytes
        guard totalBytes <= available else {
            throw .outOfDeviceMemory(needed: totalBytes, available: available, device: device.info.name, message: """
                Executor: the graph needs \(mib(totalBytes)) of device memory (activations \(mib(arenaBytes)), parameters and \
                their copies \(mib(parameterBytes + weightCopyElements * precision.bytes)), workspaces \(mib(workspaceBytes))) but \
                \(device.info.name) has \(mib(available)); use a smaller batch or image size
                """)
        }
        let largest = device.info.maxAllocationBytes
        guard arenaBytes <= largest else {
            throw .outOfDeviceMemory(needed: arenaBytes, available: largest, device: device.info.name, message: """
                Executor: the activation arena needs \(arenaBytes >> 20) MiB in one buffer but \(device.info.name) \
                allows \(largest >> 20) MiB; use a smaller batch
                """)
        }
    }
}
