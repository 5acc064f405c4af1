// Batch norm and group norm on the device, optionally fused with the ReLU that follows.
// CPU reference: Reference/NormReference.swift; kernels: Kernels/Norm.cl.

/// Batch normalisation (Ioffe & Szegedy 2015) over NCHW, per channel.
///
/// Training mode normalises with the batch's statistics and updates the running statistics as
/// PyTorch does (`running = (1 - momentum) * running + momentum * stat`, with the unbiased
/// variance); inference mode normalises with the running statistics. `relu` fuses the ReLU that
/// follows, so that the pair reads and writes each tensor once per pass.
public enum BatchNorm {
    /// Floats of workspace a training forward on `x` needs, kept for its backward.
    public static func workspaceCount(_ x: Shape) -> Int { NormKernels.workspaceCount(x, groups: 0) }

    /// Training forward: normalises with the batch's statistics and updates the running ones.
    /// With `known`, an earlier norm's statistics serve x's first channels (`KnownStatistics`).
    /// With `written`, the convolution that made x has already written its statistics as it
    /// stored x (`WrittenStatistics`), so x is read once, to normalise it.
    @discardableResult
    public static func forwardTraining(_ q: CommandQueue, x: Tensor, gamma: Tensor, beta: Tensor,
                                       runningMean: Tensor, runningVar: Tensor, y: Tensor, workspace: Tensor,
                                       relu: Bool = false, eps: Float = 1e-5, momentum: Float = 0.1,
                                       synchronizedOver communicator: Communicator? = nil,
                                       known: KnownStatistics? = nil, written: WrittenStatistics? = nil,
                                       waitFor: [Event] = []) throws(CLNetError) -> Event {
        let op = relu ? "BatchNorm+ReLU" : "BatchNorm"
        try NormKernels.check(op, x: x, y: y, gamma: gamma, beta: beta, groups: 0)
        try NormKernels.checkVector(op, "running mean", runningMean, x.shape.c)
        try NormKernels.checkVector(op, "running variance", runningVar, x.shape.c)
        try NormKernels.checkWorkspace(op, workspace, x.shape, groups: 0)
        if let written {
            guard known == nil else {
                throw .invalidArgument("\(op): statistics come from an earlier norm (known) or from the convolution (written), not both")
            }
            try written.check(op, channels: x.shape.c)
        }
        guard x.shape.n * x.shape.h * x.shape.w > 1 else {
            throw .invalidShape(operation: op, message: """
                training needs more than one value per channel to estimate a variance; x has shape \(x.shape)
                """)
        }
        if let known {
            guard communicator == nil else {
                throw .invalidArgument("\(op): known statistics are local to this replica; synchronised batch norm must measure its own")
            }
            guard known.channels >= 1, known.channels <= x.shape.c, known.workspace.isDense,
                  known.workspace.shape.count >= 3 * known.channels else {
                throw .invalidShape(operation: op, message: """
                    known statistics of \(known.channels) channels in a workspace of shape \(known.workspace.shape) \
                    do not fit x \(x.shape): 1 to \(x.shape.c) channels are needed, and 3 floats of workspace per channel
                    """)
            }
        }
        var stats = try NormKernels.stats(q, x: x, workspace: workspace, running: communicator == nil ? (runningMean, runningVar) : nil,
                                          groups: 0, eps: eps, momentum: momentum, known: known, written: written,
                                          waitFor: waitFor)
        if let communicator {
            stats = try synchronize(q, x.shape, workspace: workspace, runningMean: runningMean, runningVar: runningVar, eps: eps,
                                    momentum: momentum, communicator)
        }
        return try NormKernels.apply(q, x: x, gamma: gamma, beta: beta, mean: workspace,
                                     second: try workspace.vector(offset: x.shape.c, count: x.shape.c),
                                     fromRunning: false, y: y, groups: 0, eps: eps, relu: relu, waitFor: [stats])
    }

    @discardableResult
    public static func forwardInference(_ q: CommandQueue, x: Tensor, gamma: Tensor, beta: Tensor,
                                        runningMean: Tensor, runningVar: Tensor, y: Tensor, relu: Bool = false,
                                        eps: Float = 1e-5, waitFor: [Event] = []) throws(CLNetError) -> Event {
        let op = relu ? "BatchNorm+ReLU (inference)" : "BatchNorm (inference)"
        try NormKernels.check(op, x: x, y: y, gamma: gamma, beta: beta, groups: 0)
        try NormKernels.checkVector(op, "running mean", runningMean, x.shape.c)
        try NormKernels.checkVector(op, "running variance", runningVar, x.shape.c)
        return try NormKernels.apply(q, x: x, gamma: gamma, beta: beta, mean: runningMean, second: runningVar,
                                     fromRunning: true, y: y, groups: 0, eps: eps, relu: relu, waitFor: waitFor)
    }

    /// Gradients after a training forward whose `workspace` is passed back. Any of dx, dgamma and
    /// dbeta may be nil; dgamma and dbeta come together. With `consumer`, dy is the gradient of
    /// the ReLU or addition after the norm, whose backward this one does too (see
    /// `NormConsumer`).
    @discardableResult
    public static func backward(_ q: CommandQueue, x: Tensor, gamma: Tensor, beta: Tensor, workspace: Tensor,
                                dy: Tensor, dx: Tensor?, dgamma: Tensor?, dbeta: Tensor?, relu: Bool = false,
                                consumer: NormConsumer? = nil, accumulate: Bool = false,
                                synchronizedOver communicator: Communicator? = nil,
                                waitFor: [Event] = []) throws(CLNetError) -> Event {
        try NormKernels.backward(q, op: relu ? "BatchNorm+ReLU backward" : "BatchNorm backward", x: x, gamma: gamma,
                                 beta: beta, workspace: workspace, dy: dy, dx: dx, dgamma: dgamma, dbeta: dbeta,
                                 groups: 0, relu: relu, consumer: consumer, accumulate: accumulate,
                                 synchronizedOver: communicator, waitFor: waitFor)
    }

    /// Synchronised batch norm (PyTorch's SyncBatchNorm): the statistics of the whole batch
    /// across every rank, each holding an equal share. The local means and variances are
    /// combined exactly (mean of means, then the mean of variance plus squared deviation of
    /// each rank's mean), written back for the normalisation, and folded into the running
    /// statistics with the whole batch's unbiased variance. The host waits for the queue here.
    static func synchronize(_ q: CommandQueue, _ x: Shape, workspace: Tensor, runningMean: Tensor, runningVar: Tensor,
                            eps: Float, momentum: Float, _ communicator: Communicator) throws(CLNetError) -> Event {
        let c = x.c, size = Float(communicator.size)
        let local = try q.read(workspace.buffer, count: 3 * c, offset: workspace.offset)
        var mean = Array(local[0..<c])
        try communicator.allReduceSum(&mean)
        mean = mean.map { $0 / size }
        var variance = (0..<c).map { i in local[2 * c + i] + (local[i] - mean[i]) * (local[i] - mean[i]) }
        try communicator.allReduceSum(&variance)
        variance = variance.map { $0 / size }
        try q.write(mean + variance.map { 1 / ($0 + eps).squareRoot() }, to: workspace.buffer, offset: workspace.offset)
        let n = Float(x.n * x.h * x.w) * size
        let rm = try q.read(runningMean.buffer, count: c, offset: runningMean.offset)
        let rv = try q.read(runningVar.buffer, count: c, offset: runningVar.offset)
        try q.write((0..<c).map { (1 - momentum) * rm[$0] + momentum * mean[$0] }, to: runningMean.buffer, offset: runningMean.offset)
        try q.write((0..<c).map { (1 - momentum) * rv[$0] + momentum * variance[$0] * n / (n - 1) }, to: runningVar.buffer,
                    offset: runningVar.offset)
        return try q.marker()
    }
}

/// Group normalisation (Wu & He 2018): statistics per sample over groups of channels, a learned
/// scale and shift per channel. It behaves the same in training and inference.
public enum GroupNorm {
    /// Floats of workspace the forward on `x` needs and its backward reads.
    public static func workspaceCount(_ x: Shape, groups: Int) -> Int { NormKernels.workspaceCount(x, groups: groups) }

    @discardableResult
    public static func forward(_ q: CommandQueue, x: Tensor, gamma: Tensor, beta: Tensor, groups: Int, y: Tensor,
                               workspace: Tensor, relu: Bool = false, eps: Float = 1e-5,
                               waitFor: [Event] = []) throws(CLNetError) -> Event {
        let op = relu ? "GroupNorm+ReLU" : "GroupNorm"
        try NormKernels.check(op, x: x, y: y, gamma: gamma, beta: beta, groups: groups)
        let sets = x.shape.n * groups
        try NormKernels.checkWorkspace(op, workspace, x.shape, groups: groups)
        let stats = try NormKernels.stats(q, x: x, workspace: workspace, running: nil, groups: groups, eps: eps,
                                          momentum: 0, waitFor: waitFor)
        return try NormKernels.apply(q, x: x, gamma: gamma, beta: beta, mean: workspace,
                                     second: try workspace.vector(offset: sets, count: sets), fromRunning: false,
                                     y: y, groups: groups, eps: eps, relu: relu, waitFor: [stats])
    }

    /// Gradients, as `BatchNorm.backward`'s.
    @discardableResult
    public static func backward(_ q: CommandQueue, x: Tensor, gamma: Tensor, beta: Tensor, groups: Int,
                                workspace: Tensor, dy: Tensor, dx: Tensor?, dgamma: Tensor?, dbeta: Tensor?,
                                relu: Bool = false, consumer: NormConsumer? = nil, accumulate: Bool = false,
                                waitFor: [Event] = []) throws(CLNetError) -> Event {
        try NormKernels.backward(q, op: relu ? "GroupNorm+ReLU backward" : "GroupNorm backward", x: x, gamma: gamma,
                                 beta: beta, workspace: workspace, dy: dy, dx: dx, dgamma: dgamma, dbeta: dbeta,
                                 groups: groups, relu: relu, consumer: consumer, accumulate: accumulate, waitFor: waitFor)
    }
}

/// Batch statistics that another training batch norm has already measured: that norm read the
/// same values as this one's first `channels` channels (a DenseNet block's buffer, which each
/// layer's norm reads a longer prefix of), and its forward has run. This norm then measures only
/// its other channels and takes the mean and variance of those from the other's workspace, which
/// must not have been used for a backward pass since. Its own workspace and running statistics
/// come out as if it had measured everything, to rounding.
public struct KnownStatistics: Sendable {
    /// The other norm's workspace (its `BatchNorm.workspaceCount` floats).
    public var workspace: Tensor
    /// The other norm's channel count: x's channels 0..<channels are what it read.
    public var channels: Int

    public init(workspace: Tensor, channels: Int) {
        self.workspace = workspace
        self.channels = channels
    }
}

/// Batch statistics of a convolution's output that the convolution wrote as it stored it
/// (`Conv2D.forward(written:)`), for the training batch norm that reads that output
/// (`BatchNorm.forwardTraining(written:)`): for each output channel, `parts` partial results
/// (count, mean, M2) of 3 floats, part p of channel c at `3 * (p * channels + c)` in `partials`:
/// part by part, so that each work item of the convolution writes its channels' side by side
/// (set by set, neighbouring work items shared cache lines). The memory plan
/// pairs them (`MemoryPlan.convolutionStatistics`); `Conv2D.statisticsParts` says which
/// algorithms can, and how many parts they write.
public struct WrittenStatistics: Sendable {
    /// The (count, mean, M2) triples, at least `count(channels:parts:)` dense floats.
    public var partials: Tensor
    /// Parts per channel, as `Conv2D.statisticsParts` gives for the convolution that writes them.
    public var parts: Int

    public init(partials: Tensor, parts: Int) {
        self.partials = partials
        self.parts = parts
    }

    /// Floats of `partials` for `channels` channels.
    public static func count(channels: Int, parts: Int) -> Int { 3 * channels * parts }

    func check(_ op: String, channels: Int) throws(CLNetError) {
        let need = Self.count(channels: channels, parts: parts)
        guard parts >= 1, partials.isDense, partials.shape.count >= need else {
            throw .invalidShape(operation: op, message: """
                written statistics of \(parts) parts per channel for \(channels) channels need \(need) dense floats; \
                the partials have shape \(partials.shape)
                """)
        }
    }
}

/// The node after a norm whose backward the norm's backward takes over, when the memory plan
/// fuses them (`Fusions.normBackward`): a ReLU, or a residual addition with or without ReLU.
/// The norm's backward then starts from that node's output gradient, masks it by the node's
/// ReLU, and writes the result to the addition's other input as it goes. Unfused, the node's
/// backward writes the masked gradient once per input, and the norm reads it back.
public struct NormConsumer: Sendable {
    /// The node's output, where it has a ReLU: the gradient passes only where it is positive.
    public var mask: Tensor?
    /// The gradient of the addition's other input (overwritten); nil for a ReLU, or where that
    /// input needs none.
    public var shortcut: Tensor?

    public init(mask: Tensor?, shortcut: Tensor?) {
        self.mask = mask
        self.shortcut = shortcut
    }
}

/// The launches batch norm and group norm share (`groups` 0 means batch norm).
enum NormKernels {
    static func check(_ op: String, x: Tensor, y: Tensor, gamma: Tensor, beta: Tensor,
                      groups: Int) throws(CLNetError) {
        try checkRank(op, "x", x.shape, 4)
        try checkSameShape(op, ["x": x.shape, "y": y.shape])
        try checkVector(op, "gamma", gamma, x.shape.c)
        try checkVector(op, "beta", beta, x.shape.c)
        if groups != 0 {
            guard groups > 0, x.shape.c % groups == 0 else {
                throw .invalidShape(operation: op, message: "\(x.shape.c) channels of x \(x.shape) are not divisible into \(groups) groups")
            }
        }
        try checkIndexable(op, [x, y])
    }

    static func sets(_ x: Shape, _ groups: Int) -> Int { groups == 0 ? x.c : x.n * groups }

    /// How a reduction over a set's `rows` runs of `length` floats is split into parts (see
    /// Norm.cl): about 4,096 floats a part, at most 64 parts, whole rows where there are enough.
    struct Split {
        var rowsPerPart: Int, slicesPerRow: Int, parts: Int

        /// `perRow`: no part spans two rows (group norm's parameter sums, whose rows have their
        /// own statistics).
        init(rows: Int, length: Int, perRow: Bool = false) {
            let target = max(1, min(64, rows * length / 4096))
            if target <= rows && !perRow {
                rowsPerPart = (rows + target - 1) / target
                slicesPerRow = 1
                parts = (rows + rowsPerPart - 1) / rowsPerPart
            } else {
                rowsPerPart = 1
                slicesPerRow = max(1, min(length, (target + rows - 1) / rows))
                parts = rows * slicesPerRow
            }
        }

        var arguments: [KernelArgument] {
            get throws(CLNetError) { [try .count(rowsPerPart), try .count(slicesPerRow), try .count(parts)] }
        }
    }

    /// Batch norm's sets are `n` rows of a plane; group norm's one run of its channels' planes.
    static func statSplit(_ x: Shape, _ groups: Int) -> Split {
        groups == 0 ? Split(rows: x.n, length: x.h * x.w) : Split(rows: 1, length: x.c / max(groups, 1) * x.h * x.w)
    }
    static func paramSplit(_ x: Shape, _ groups: Int) -> Split { Split(rows: x.n, length: x.h * x.w, perRow: groups != 0) }
    static func tiles(_ x: Shape) -> Int { CommandQueue.tiles(x.h * x.w) }

    static func workspaceCount(_ x: Shape, groups: Int) -> Int {
        let s = sets(x, groups)
        return 4 * s + max(3 * s * statSplit(x, groups).parts, 2 * x.c * paramSplit(x, groups).parts)
    }

    static func checkWorkspace(_ op: String, _ t: Tensor, _ x: Shape, groups: Int) throws(CLNetError) {
        let need = workspaceCount(x, groups: groups)
        guard t.shape.count >= need, t.isDense else {
            throw .invalidShape(operation: op, message: "workspace has shape \(t.shape) but \(need) floats are needed (see workspaceCount)")
        }
    }

    static func checkVector(_ op: String, _ name: String, _ t: Tensor, _ count: Int) throws(CLNetError) {
        guard t.shape.count == count, t.isDense else {
            throw .invalidShape(operation: op, message: "\(name) has shape \(t.shape) but \(count) values are needed")
        }
    }

    static func geometry(_ x: Tensor, _ groups: Int) throws(CLNetError) -> [KernelArgument] {
        [try .count(x.shape.n), try .count(x.shape.c), try .count(x.shape.h * x.shape.w), try .count(groups)]
    }

    /// Mean and 1/sqrt(var + eps) per set into the workspace; `known` (batch norm only) gives
    /// those of the first channels.
    static func stats(_ q: CommandQueue, x: Tensor, workspace: Tensor, running: (Tensor, Tensor)?, groups: Int,
                      eps: Float, momentum: Float, known: KnownStatistics? = nil, written: WrittenStatistics? = nil,
                      waitFor: [Event]) throws(CLNetError) -> Event {
        let (rm, rv) = running ?? (workspace, workspace)
        let s = sets(x.shape, groups), split = statSplit(x.shape, groups), first = known?.channels ?? 0
        var wait = waitFor
        if first < s && written == nil {
            wait = [try q.launchRuns(.norm, "norm_stats_partial", x.arguments + workspace.vectorArguments + geometry(x, groups) +
                                     split.arguments + [.count(first)], waitFor: waitFor)]
        }
        let count = Float(x.shape.n * x.shape.h * x.shape.w)
        // norm_stats_partial's parts lie set by set, a convolution's part by part (WrittenStatistics).
        var partials = [KernelArgument.buffer(workspace.buffer)] + (try KernelArgument.counts([workspace.offset + 4 * s, split.parts, 1]))
        if let written { partials = try written.partials.vectorArguments + KernelArgument.counts([1, s]) }
        return try q.launch(.norm, "norm_stats_finish", workspace.vectorArguments + rm.vectorArguments + rv.vectorArguments +
                            [.count(s), .count(written?.parts ?? split.parts), .float(eps), .float(momentum),
                             .flag(running != nil)] + (known?.workspace ?? workspace).vectorArguments +
                            [.count(first), .count(first), .float(count)] + partials,
                            total: s, waitFor: wait)
    }

    static func apply(_ q: CommandQueue, x: Tensor, gamma: Tensor, beta: Tensor, mean: Tensor, second: Tensor,
                      fromRunning: Bool, y: Tensor, groups: Int, eps: Float, relu: Bool,
                      waitFor: [Event]) throws(CLNetError) -> Event {
        let tiles = tiles(x.shape)
        return try q.launchRuns(.norm, "norm_apply", x.arguments + gamma.vectorArguments + beta.vectorArguments +
                                mean.vectorArguments + second.vectorArguments + y.arguments + geometry(x, groups) +
                                [.flag(fromRunning), .float(eps), .flag(relu), .count(tiles)],
                                waitFor: waitFor)
    }

    static func backward(_ q: CommandQueue, op: String, x: Tensor, gamma: Tensor, beta: Tensor, workspace: Tensor,
                         dy: Tensor, dx: Tensor?, dgamma: Tensor?, dbeta: Tensor?, groups: Int, relu: Bool,
                         consumer: NormConsumer?, accumulate: Bool, synchronizedOver communicator: Communicator? = nil,
                         waitFor: [Event]) throws(CLNetError) -> Event {
        try check(op, x: x, y: dy, gamma: gamma, beta: beta, groups: groups)
        if let mask = consumer?.mask { try checkSameShape(op, ["x": x.shape, "consumer's output": mask.shape]) }
        if let shortcut = consumer?.shortcut { try checkSameShape(op, ["x": x.shape, "shortcut gradient": shortcut.shape]) }
        // Unused tensor arguments point at dy, which the kernels then never touch through them.
        let mask = consumer?.mask, shortcut = consumer?.shortcut
        let maskArguments = try (mask ?? dy).arguments + [KernelArgument.flag(mask != nil)]
        let shortcutArguments = try (shortcut ?? dy).arguments + [KernelArgument.flag(shortcut != nil)]
        let sets = sets(x.shape, groups)
        try checkWorkspace(op, workspace, x.shape, groups: groups)
        guard (dgamma == nil) == (dbeta == nil) else {
            throw .invalidShape(operation: op, message: "dgamma and dbeta are computed together; pass both or neither")
        }
        if let dgamma, let dbeta {
            try checkVector(op, "dgamma", dgamma, x.shape.c)
            try checkVector(op, "dbeta", dbeta, x.shape.c)
        }
        if let dx { try checkSameShape(op, ["x": x.shape, "dx": dx.shape]) }
        let common = try x.arguments + dy.arguments + gamma.vectorArguments + beta.vectorArguments + workspace.vectorArguments
        var last: [Event] = waitFor
        // The input gradient needs sums that the parameter pass makes: per channel for batch
        // norm, per row for group norm's sets.
        let split = paramSplit(x.shape, groups)
        _ = try q.launchRuns(.norm, "norm_params_partial", common + maskArguments + shortcutArguments + geometry(x, groups) +
                             [.flag(relu)] + split.arguments, waitFor: waitFor)
        if dgamma != nil || groups == 0 {
            let dg = dgamma ?? workspace, db = dbeta ?? workspace
            last = [try q.launch(.norm, "norm_params_finish", gamma.vectorArguments + workspace.vectorArguments +
                                 dg.vectorArguments + db.vectorArguments +
                                 [.count(x.shape.n), .count(x.shape.c), .count(groups), .count(split.parts),
                                  .flag(dgamma != nil), .flag(accumulate)], total: x.shape.c, waitFor: [])]
        }
        guard let dx else { return try q.marker(waitFor: last) }
        if let communicator, groups == 0 {
            // Synchronised batch norm: the input gradient's two sums over the whole batch. Each
            // rank's sums are over its share; their mean over ranks, divided by the local count
            // in the kernel, is the sum over everything divided by the whole batch's count.
            let c = x.shape.c, start = workspace.offset + 2 * sets
            var sums = try q.read(workspace.buffer, count: 2 * c, offset: start)
            try communicator.allReduceSum(&sums)
            try q.write(sums.map { $0 / Float(communicator.size) }, to: workspace.buffer, offset: start)
            last = []
        }
        if groups != 0 {
            last = [try q.launch(.norm, "norm_group_sums", gamma.vectorArguments + workspace.vectorArguments +
                                 [.count(x.shape.n), .count(x.shape.c), .count(groups), .count(split.slicesPerRow)],
                                 total: sets, waitFor: last)]
        }
        // The masked gradient, where the parameter pass wrote it to the shortcut, is read back
        // from there: one tensor instead of dy and the mask.
        let tiles = tiles(x.shape)
        let upstream = try (shortcut ?? dy).arguments + gamma.vectorArguments + beta.vectorArguments + workspace.vectorArguments
        return try q.launchRuns(.norm, "norm_backward_input", x.arguments + upstream +
                                (shortcut == nil ? maskArguments : dy.arguments + [.flag(false)]) + dx.arguments +
                                geometry(x, groups) + [.flag(relu), .flag(accumulate), .count(tiles)],
                                waitFor: last)
    }
}

extension Tensor {
    /// `count` floats of this dense tensor starting at element `offset`, as a vector.
    func vector(offset start: Int, count: Int) throws(CLNetError) -> Tensor {
        try Tensor(buffer: buffer, shape: [count], offset: offset + start)
    }
}
