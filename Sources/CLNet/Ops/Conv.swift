// 2-D convolution on the device. CPU reference: Reference/ConvReference.swift; kernels:
// Kernels/Conv.cl (im2col, col2im, direct grouped and depthwise); matrix products through
// CLNet's GEMM or CLBlast (Device/GEMM.swift). Winograd: Conv+Winograd.swift and Kernels/Winograd.cl;
// implicit GEMM: Conv+ImplicitGEMM.swift and Kernels/ImplicitGEMM.cl; the choice by timing:
// Conv+Selection.swift.

/// What the pass after a convolution's GEMM does besides adding its bias: a residual block's
/// addition and ReLU, fused there by the executor when they directly follow a convolution with a
/// bias (a batch-norm-folded network), which saves a pass over the activation.
public struct ConvEpilogue: Sendable {
    /// Added after the bias (a residual block's shortcut); same shape as the output.
    public var residual: Tensor?
    /// max(., 0) last.
    public var relu: Bool
    /// Where the result goes (the convolution's output when nil); may be the residual itself.
    public var output: Tensor?

    public init(residual: Tensor? = nil, relu: Bool = false, output: Tensor? = nil) {
        self.residual = residual
        self.relu = relu
        self.output = output
    }
}

/// A 2-D convolution's hyper-parameters, with the weight layout of torchvision (OIHW:
/// `[out, in / groups, kH, kW]`) and an optional bias `[out]`.
public struct Conv2D: Sendable, Hashable, CustomStringConvertible {
    public var inChannels: Int
    public var outChannels: Int
    public var kernel: Pair
    public var stride: Pair
    public var padding: Pair
    public var dilation: Pair
    public var groups: Int

    /// A (height, width) pair.
    public struct Pair: Sendable, Hashable {
        public var h: Int
        public var w: Int
        public init(_ h: Int, _ w: Int) { self.h = h; self.w = w }
    }

    public init(inChannels: Int, outChannels: Int, kernel: Int, stride: Int = 1, padding: Int = 0, dilation: Int = 1,
                groups: Int = 1) {
        self.init(inChannels: inChannels, outChannels: outChannels, kernel: Pair(kernel, kernel),
                  stride: Pair(stride, stride), padding: Pair(padding, padding), dilation: Pair(dilation, dilation),
                  groups: groups)
    }

    public init(inChannels: Int, outChannels: Int, kernel: Pair, stride: Pair, padding: Pair, dilation: Pair, groups: Int) {
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.kernel = kernel
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.groups = groups
    }

    public var description: String {
        "conv \(inChannels)->\(outChannels) k\(kernel.h)x\(kernel.w) s\(stride.h) p\(padding.h) d\(dilation.h) g\(groups)"
    }

    /// `[out, in / groups, kH, kW]`.
    public var weightShape: Shape { [outChannels, inChannels / max(groups, 1), kernel.h, kernel.w] }

    /// How a convolution is computed. `Conv2D.algorithm(on:)` picks one per device; tests and
    /// bisections force one with `CLNET_CONV_ALGO` or the `algorithm:` argument.
    public enum Algorithm: String, Sendable, CaseIterable {
        /// 1x1, stride 1, no padding, one group: the convolution is a matrix product per sample.
        case gemm1x1 = "gemm-1x1"
        /// im2col, then GEMM (strided-batched over samples, or over groups when grouped).
        case im2col = "im2col+gemm"
        /// Winograd F(2x2, 3x3), for 3x3 stride-1 convolutions of one group (Conv+Winograd.swift).
        case winograd2x2 = "winograd-2x2"
        /// Winograd F(4x4, 3x3), for the same convolutions: 2.25 multiply-adds per output where F(2x2)
        /// needs 4, at a larger rounding error (`winograd4x4Bound`, Conv+Winograd.swift).
        case winograd4x4 = "winograd-4x4"
        /// Grouped with few input channels per group (depthwise included): a direct kernel, since
        /// per-group GEMMs of a few rows leave a GPU idle (ResNeXt's 32x4d 3x3 convolutions ran at
        /// 0.04 of the GEMM rate as batched GEMMs on an H100).
        case direct
        /// Grouped, for CPUs: every group and sample in one launch, each work item a register
        /// block of four output channels by eight pixels; the input gradient of a stride-1 layer
        /// too (as the convolution of dy with the filters turned), the rest by the direct kernels.
        case groupedBlocked = "grouped-blocked"
        /// Any convolution: the im2col gather inside the product kernel, into a tile in local
        /// memory, so that no column buffer is written (Conv+ImplicitGEMM.swift).
        case implicitGEMM = "implicit-gemm"
    }

    /// Groups of at most this many input channels use the direct kernel.
    static let directChannelsPerGroup = 16

    /// The algorithms that can compute this convolution, the default first.
    public var applicableAlgorithms: [Algorithm] {
        if groups > 1 && inChannels / groups <= Self.directChannelsPerGroup {
            return [.direct, .groupedBlocked, .im2col, .implicitGEMM]
        }
        if groups > 1 { return [.im2col, .groupedBlocked, .implicitGEMM] }
        if kernel == Pair(1, 1) && stride == Pair(1, 1) && padding == Pair(0, 0) && groups == 1 {
            return [.gemm1x1, .im2col, .implicitGEMM]
        }
        return winogradApplies ? [.winograd2x2, .winograd4x4, .im2col, .implicitGEMM] : [.implicitGEMM, .im2col]
    }

    /// The algorithm this convolution runs on `device` when nothing chose one (an executor times
    /// them instead, `choose(on:input:training:)`): `CLNET_CONV_ALGO` where it names one that
    /// applies; else, where CLNet's GEMM is the device's (CPUs), the 1x1 GEMM for 1x1 stride-1
    /// layers, Winograd for 3x3 stride-1 ones and implicit GEMM for the other ungrouped ones (on
    /// PoCL both measured faster than im2col, see Benchmarks/RESULTS.md), grouped-blocked for
    /// grouped ones; elsewhere im2col, whose products CLBlast runs, and the direct kernel for
    /// groups of few channels.
    public func algorithm(on device: Device) -> Algorithm {
        let options = applicableAlgorithms
        if let forced = Self.forcedAlgorithm, options.contains(forced) { return forced }
        let cpu = GEMMEngine.preferred(for: device) == .clnet
        if (options.contains(.winograd2x2) || options[0] == .implicitGEMM) && !cpu { return .im2col }
        if options.contains(.groupedBlocked) && cpu { return .groupedBlocked }
        return options[0]
    }

    private static var forcedAlgorithm: Algorithm? { algorithmSetting.flatMap(Algorithm.init(rawValue:)) }

    /// The algorithm `CLNET_CONV_ALGO` names, nil when unset; refuses a name that is none, rather
    /// than ignore what the user asked for.
    static func checkedSetting() throws(CLNetError) -> Algorithm? {
        guard let setting = algorithmSetting else { return nil }
        guard let forced = Algorithm(rawValue: setting) else {
            throw .invalidArgument("CLNET_CONV_ALGO is '\(setting)'; set it to one of \(Algorithm.allCases.map(\.rawValue).joined(separator: ", ")), or unset it")
        }
        return forced
    }

    /// The algorithm to run: `requested`, which must apply, or the device's choice.
    private func resolve(_ requested: Algorithm?, _ q: CommandQueue) throws(CLNetError) -> Algorithm {
        _ = try Self.checkedSetting()
        guard let requested else { return algorithm(on: q.context.device) }
        guard applicableAlgorithms.contains(requested) else {
            throw .invalidArgument("Conv2D(\(self)): the \(requested.rawValue) algorithm does not apply; these do: \(applicableAlgorithms.map(\.rawValue).joined(separator: ", "))")
        }
        return requested
    }

    /// The output shape for input `x`; throws naming the layer and both shapes when they do not fit.
    public func outputShape(_ x: Shape) throws(CLNetError) -> Shape {
        let op = "Conv2D(\(self))"
        try checkRank(op, "x", x, 4)
        guard inChannels > 0, outChannels > 0, groups > 0, inChannels % groups == 0, outChannels % groups == 0 else {
            throw .invalidShape(operation: op, message: "\(inChannels) input and \(outChannels) output channels must both be divisible by \(groups) groups")
        }
        guard x.c == inChannels else {
            throw .invalidShape(operation: op, message: "x \(x) has \(x.c) channels but the weight \(weightShape) expects \(inChannels)")
        }
        guard kernel.h > 0, kernel.w > 0, stride.h > 0, stride.w > 0, dilation.h > 0, dilation.w > 0 else {
            throw .invalidShape(operation: op, message: "kernel, stride and dilation must be positive")
        }
        guard padding.h >= 0, padding.w >= 0 else {
            throw .invalidShape(operation: op, message: "padding \(padding.h)x\(padding.w) must not be negative")
        }
        let ekh = (kernel.h - 1) * dilation.h + 1, ekw = (kernel.w - 1) * dilation.w + 1
        guard ekh <= x.h + 2 * padding.h, ekw <= x.w + 2 * padding.w else {
            throw .invalidShape(operation: op, message: """
                kernel \(ekh)x\(ekw) (with dilation) is larger than the padded input \(x.h + 2 * padding.h)x\(x.w + 2 * padding.w) of x \(x)
                """)
        }
        return [x.n, outChannels, (x.h + 2 * padding.h - ekh) / stride.h + 1, (x.w + 2 * padding.w - ekw) / stride.w + 1]
    }

    /// Floats per sample of the im2col buffer.
    func columnCount(_ x: Shape, _ y: Shape) -> Int { inChannels * kernel.h * kernel.w * y.h * y.w }

    /// Floats per sample of the workspace: the im2col columns, plus the output gradient laid out
    /// channel-major for the weight gradient's single GEMM per chunk.
    func workspacePerSample(_ x: Shape, _ y: Shape) -> Int { columnCount(x, y) + outChannels * y.h * y.w }

    /// Samples handled per chunk, so that the workspace holds what a chunk needs.
    func chunk(_ x: Shape, _ y: Shape, workspace: Int) -> Int {
        max(1, min(x.n, workspace / max(workspacePerSample(x, y), 1)))
    }

    /// Floats of the workspace's tail that hold split-K partial weight gradients (one group only).
    var partialsCount: Int { groups == 1 ? 1 << 20 : 0 }

    /// The workspace floats that forward and backward need for input `x` with `algorithm`, or
    /// with whichever applies when nil (so that a memory plan holds any device's choice): whole
    /// chunks of samples, up to about `budget` floats, and at least one sample, plus room for
    /// split-K partial sums. The direct, grouped-blocked and 1x1 algorithms need none.
    public func workspaceCount(_ x: Shape, budget: Int = 1 << 24, algorithm: Algorithm? = nil) throws(CLNetError) -> Int {
        var most = 0
        for option in algorithm.map({ [$0] }) ?? applicableAlgorithms {
            switch option {
            case .direct, .groupedBlocked, .gemm1x1: break
            case .implicitGEMM: most = max(most, try implicitWorkspaceCount(x))
            case .winograd2x2, .winograd4x4:
                most = max(most, try winogradWorkspaceCount(x, WinogradTile(option)!, budget: budget))
            case .im2col:
                let y = try outputShape(x)
                most = max(most, chunk(x, y, workspace: budget - partialsCount) * workspacePerSample(x, y) + partialsCount)
            }
        }
        return most
    }

    /// `activations`: y, or dy and dx, which every kernel reads and writes in x's storage.
    private func check(_ x: Tensor, _ weight: Tensor, _ y: Shape, _ bias: Tensor?, workspace: Tensor?,
                       needsWorkspace: Bool, _ label: String,
                       activations: KeyValuePairs<String, Tensor?>) throws(CLNetError) -> Shape {
        let op = "Conv2D(\(self))\(label)"
        let out = try outputShape(x.shape)
        guard weight.shape == weightShape, weight.isDense else {
            throw .invalidShape(operation: op, message: "weight has shape \(weight.shape) but \(weightShape) is needed")
        }
        guard y == out else { throw .invalidShape(operation: op, message: "output has shape \(y) but x \(x.shape) gives \(out)") }
        // The direct kernels read the weight as they read x (store_t).
        guard weight.storage == x.storage else {
            throw .invalidArgument("\(op): x is stored as \(x.storage) but the weight as \(weight.storage); a 16-bit convolution reads a 16-bit copy of its weight")
        }
        for case let (name, t?) in activations where t.storage != x.storage {
            throw .invalidArgument("\(op): x is stored as \(x.storage) but \(name) as \(t.storage); a convolution's activations share one storage")
        }
        if let bias, bias.shape.count != outChannels {
            throw .invalidShape(operation: op, message: "bias has shape \(bias.shape) but \(outChannels) values are needed")
        }
        if needsWorkspace {
            let least = workspacePerSample(x.shape, out)
            guard let workspace, workspace.isDense, workspace.shape.count >= least else {
                throw .invalidShape(operation: op, message: "needs a workspace of at least \(least) floats (see workspaceCount)")
            }
        }
        return out
    }

    /// The padding under which the input gradient of a stride-1 layer is the convolution of dy
    /// with the filters turned (D * (K - 1) - P on each axis), or nil where it is not one.
    var blockedInputGradientPadding: Pair? {
        let ph = dilation.h * (kernel.h - 1) - padding.h, pw = dilation.w * (kernel.w - 1) - padding.w
        guard stride == Pair(1, 1), ph >= 0, pw >= 0 else { return nil }
        return Pair(ph, pw)
    }

    /// grouped_blocked's constants for this layer (Conv.cl): its taps' loops unroll.
    private func blockedMacros(flip: Bool) -> [String: String] {
        ["GB_KH": "\(kernel.h)", "GB_KW": "\(kernel.w)", "GB_SW": flip ? "1" : "\(stride.w)", "GB_FLIP": flip ? "1" : "0"]
    }

    /// Input and output channels per group, for the direct kernels.
    private var groupArguments: [KernelArgument] {
        get throws(CLNetError) { try KernelArgument.counts([inChannels / groups, outChannels / groups]) }
    }

    private func geometry(_ x: Shape, _ y: Shape) throws(CLNetError) -> [KernelArgument] {
        try KernelArgument.counts([x.c, x.h, x.w, y.h, y.w, kernel.h, kernel.w, stride.h, stride.w, padding.h, padding.w,
                     dilation.h, dilation.w])
    }

    /// The parts per output channel in which `algorithm` can write the batch statistics of its
    /// output as it stores it, for the batch norm that follows (`WrittenStatistics`): the 1x1
    /// and im2col products on CLNet's GEMM (one part per sample and block of the GEMM's columns)
    /// and Winograd (one per sample and row of tiles). Nil for implicit GEMM, grouped, direct
    /// and CLBlast products, which write their output without them; the norm then measures it
    /// itself.
    public func statisticsParts(_ x: Shape, algorithm: Algorithm, on device: Device) throws(CLNetError) -> Int? {
        let out = try outputShape(x), plane = out.h * out.w
        let panels = GEMMPanels(device: device), clnet = GEMMEngine.preferred(for: device) == .clnet
        switch algorithm {
        case .gemm1x1 where clnet, .im2col where clnet && groups == 1:
            return x.n * ((plane + panels.nr - 1) / panels.nr)
        case .winograd2x2, .winograd4x4:
            return x.n * WinogradTile(algorithm)!.tiles(out.h)
        default:
            return nil
        }
    }

    /// y = conv(x, weight) + bias, by `algorithm` (which must apply) or the device's choice.
    /// `workspace` is needed by im2col and Winograd (`workspaceCount`).
    /// With an `epilogue`, the pass that adds the bias also adds its residual and applies its
    /// ReLU, and writes to its output (y then holds the convolution without the bias).
    /// With `written`, the kernels that store y also write its batch statistics there, for the
    /// training batch norm that reads y (`WrittenStatistics`, `statisticsParts`).
    @discardableResult
    public func forward(_ q: CommandQueue, x: Tensor, weight: Tensor, bias: Tensor?, y: Tensor, workspace: Tensor? = nil,
                        epilogue: ConvEpilogue? = nil, written: WrittenStatistics? = nil, algorithm requested: Algorithm? = nil,
                        waitFor: [Event] = []) throws(CLNetError) -> Event {
        let algorithm = try resolve(requested, q)
        let out = try check(x, weight, y.shape, bias, workspace: workspace, needsWorkspace: algorithm == .im2col, "",
                            activations: ["y": y])
        try checkIndexable("Conv2D", [x, y])
        var rows: RowStatistics? = nil
        if let written {
            let fits = bias == nil && epilogue == nil
            guard fits, let parts = try statisticsParts(x.shape, algorithm: algorithm, on: q.context.device) else {
                throw .invalidArgument("Conv2D(\(self)): the \(algorithm.rawValue) algorithm\(fits ? "" : " with a bias or an epilogue") "
                                       + "cannot write its output's statistics; let the batch norm measure them")
            }
            guard written.parts == parts else {
                throw .invalidArgument("Conv2D(\(self)): the \(algorithm.rawValue) algorithm writes \(parts) parts of statistics per channel, not \(written.parts) (statisticsParts)")
            }
            try written.check("Conv2D(\(self))", channels: outChannels)
            rows = RowStatistics(buffer: written.partials.buffer, offset: written.partials.offset)
        }
        var last: Event
        switch algorithm {
        case .winograd2x2, .winograd4x4:
            last = try winogradForward(q, WinogradTile(algorithm)!, x: x, weight: weight, y: y, workspace: workspace,
                                       statistics: rows, waitFor: waitFor)
        case .gemm1x1:
            let hw = x.shape.h * x.shape.w
            last = try q.gemmStridedBatched(m: outChannels, n: hw, k: inChannels, a: weight.buffer, aOffset: weight.offset,
                                            lda: inChannels, strideA: 0, b: x.buffer, bOffset: x.offset, ldb: hw,
                                            strideB: x.batchStride, c: y.buffer, cOffset: y.offset, ldc: hw,
                                            strideC: y.batchStride, batch: x.shape.n,
                                            storage: GEMMStorage(a: weight.storage, b: x.storage, c: y.storage),
                                            rowStatistics: rows, waitFor: waitFor)
        case .implicitGEMM:
            last = try implicitForward(q, x: x, weight: weight, y: y, workspace: workspace, waitFor: waitFor)
        case .groupedBlocked:
            last = try q.launchRuns(.conv, "grouped_blocked", x.arguments + weight.vectorArguments + y.arguments +
                                    geometry(x.shape, out) + groupArguments + KernelArgument.counts([0, x.shape.n, 0]),
                                    specialised: blockedMacros(flip: false), waitFor: waitFor)
        case .direct:
            last = try q.launch(.conv, "grouped_forward", x.arguments + weight.vectorArguments + y.arguments +
                                geometry(x.shape, out) + groupArguments + [.count(out.count)],
                                total: out.count, waitFor: waitFor)
        case .im2col:
            let ws = workspace!
            let kk = kernel.h * kernel.w, plane = out.h * out.w, perSample = columnCount(x.shape, out)
            let cg = inChannels / groups, og = outChannels / groups
            let step = groups == 1 ? chunk(x.shape, out, workspace: ws.shape.count) : 1
            var wait = waitFor
            last = try q.marker(waitFor: waitFor)
            for n0 in Swift.stride(from: 0, to: x.shape.n, by: step) {
                let count = min(step, x.shape.n - n0)
                _ = try im2col(q, x, out, ws, n0: n0, count: count, waitFor: wait)
                wait = []
                if groups == 1 {
                    // This chunk's samples' parts (`statisticsParts`: the same number for each sample).
                    var chunkRows = rows
                    chunkRows?.firstPart = n0 * (written?.parts ?? 0) / x.shape.n
                    last = try q.gemmStridedBatched(m: outChannels, n: plane, k: inChannels * kk, a: weight.buffer,
                                                    aOffset: weight.offset, lda: inChannels * kk, strideA: 0,
                                                    b: ws.buffer, bOffset: ws.offset, ldb: plane, strideB: perSample,
                                                    c: y.buffer, cOffset: y.offset + n0 * y.batchStride, ldc: plane,
                                                    strideC: y.batchStride, batch: count,
                                                    storage: GEMMStorage(a: weight.storage, c: y.storage), rowStatistics: chunkRows)
                } else {
                    last = try q.gemmStridedBatched(m: og, n: plane, k: cg * kk, a: weight.buffer, aOffset: weight.offset,
                                                    lda: cg * kk, strideA: og * cg * kk, b: ws.buffer, bOffset: ws.offset,
                                                    ldb: plane, strideB: cg * kk * plane, c: y.buffer,
                                                    cOffset: y.offset + n0 * y.batchStride, ldc: plane,
                                                    strideC: og * plane, batch: groups,
                                                    storage: GEMMStorage(a: weight.storage, c: y.storage))
                }
            }
        }
        if bias != nil || epilogue != nil {
            last = try Bias.epilogue(q, x: y, bias: bias, residual: epilogue?.residual, relu: epilogue?.relu ?? false,
                                     y: epilogue?.output ?? y, channels: outChannels, operation: "Conv2D(\(self)) epilogue",
                                     waitFor: [last])
        }
        return last
    }

    /// Gradients for the input, the weight and the bias; each may be nil. With `accumulate` they
    /// are added to what the tensors hold.
    @discardableResult
    public func backward(_ q: CommandQueue, x: Tensor, weight: Tensor, dy: Tensor, dx: Tensor?, dweight: Tensor?,
                         dbias: Tensor?, workspace: Tensor? = nil, accumulate: Bool = false,
                         algorithm requested: Algorithm? = nil, waitFor: [Event] = []) throws(CLNetError) -> Event {
        let algorithm = try resolve(requested, q)
        let out = try check(x, weight, dy.shape, dbias, workspace: workspace,
                            needsWorkspace: algorithm == .im2col, " backward", activations: ["dy": dy, "dx": dx])
        if let dx { try checkSameShape("Conv2D(\(self)) backward", ["x": x.shape, "dx": dx.shape]) }
        if let dweight, dweight.shape != weightShape || !dweight.isDense {
            throw .invalidShape(operation: "Conv2D(\(self)) backward", message: "dweight has shape \(dweight.shape) but \(weightShape) is needed")
        }
        let beta: Float = accumulate ? 1 : 0
        var last = try q.marker(waitFor: waitFor)
        if let dbias { last = try Bias.backward(q, dy: dy, dbias: dbias, channels: outChannels, accumulate: accumulate, waitFor: []) }
        let kk = kernel.h * kernel.w, plane = out.h * out.w
        switch algorithm {
        case .winograd2x2, .winograd4x4:
            last = try winogradBackward(q, WinogradTile(algorithm)!, x: x, weight: weight, dy: dy, dx: dx, dweight: dweight,
                                        workspace: workspace, accumulate: accumulate, waitFor: [])
        case .gemm1x1:
            let hw = plane
            if let dweight {
                // dW (+)= Σ_n dY_n X_n^T, a product per sample summed by beta: no copy of x or dy
                // into the wide layout (im2col+gemm's weight gradient makes one of each).
                for n in 0..<x.shape.n {
                    last = try q.gemm(transposeB: true, m: outChannels, n: inChannels, k: hw, a: dy.buffer,
                                      aOffset: dy.offset + n * dy.batchStride, lda: hw, b: x.buffer,
                                      bOffset: x.offset + n * x.batchStride, ldb: hw, beta: n == 0 ? beta : 1,
                                      c: dweight.buffer, cOffset: dweight.offset, ldc: inChannels,
                                      storage: GEMMStorage(a: dy.storage, b: x.storage))
                }
            }
            if let dx {
                last = try q.gemmStridedBatched(transposeA: true, m: inChannels, n: hw, k: outChannels, a: weight.buffer,
                                                aOffset: weight.offset, lda: inChannels, strideA: 0, b: dy.buffer,
                                                bOffset: dy.offset, ldb: hw, strideB: dy.batchStride, beta: beta,
                                                c: dx.buffer, cOffset: dx.offset, ldc: hw, strideC: dx.batchStride,
                                                batch: x.shape.n, storage: GEMMStorage(a: weight.storage, b: dy.storage, c: dx.storage))
            }
        case .implicitGEMM:
            last = try implicitBackward(q, x: x, weight: weight, dy: dy, dx: dx, dweight: dweight, workspace: workspace,
                                        accumulate: accumulate, waitFor: [])
        case .direct, .groupedBlocked:
            if let dweight {
                last = try q.reduce(.conv, "grouped_backward_weight", x.arguments + dy.arguments + dweight.vectorArguments +
                                    geometry(x.shape, out) + groupArguments + [.count(x.shape.n), .flag(accumulate)],
                                    groups: weightShape.count, waitFor: [])
            }
            if let dx, algorithm == .groupedBlocked, let padding = blockedInputGradientPadding {
                // The convolution of dy (this pass's input) with the filters turned, onto dx.
                let geometry = try KernelArgument.counts([outChannels, out.h, out.w, x.shape.h, x.shape.w, kernel.h,
                                                          kernel.w, 1, 1, padding.h, padding.w, dilation.h, dilation.w])
                last = try q.launchRuns(.conv, "grouped_blocked", dy.arguments + weight.vectorArguments + dx.arguments +
                                        geometry + KernelArgument.counts([outChannels / groups, inChannels / groups, 1,
                                                                          x.shape.n]) + [.flag(accumulate)],
                                        specialised: blockedMacros(flip: true), waitFor: [])
            } else if let dx {
                last = try q.launch(.conv, "grouped_backward_input", dy.arguments + weight.vectorArguments + dx.arguments +
                                    geometry(x.shape, out) + groupArguments + [.count(x.shape.count), .flag(accumulate)],
                                    total: x.shape.count, waitFor: [])
            }
        case .im2col:
            let ws = workspace!
            let perSample = columnCount(x.shape, out), cg = inChannels / groups, og = outChannels / groups
            if let dweight { last = try weightGradient(q, x: x, dy: dy, out: out, dweight: dweight, workspace: ws, beta: beta) }
            let step = groups == 1 ? chunk(x.shape, out, workspace: ws.shape.count) : 1
            for n0 in Swift.stride(from: 0, to: x.shape.n, by: step) {
                let count = min(step, x.shape.n - n0)
                if let dx {
                    if groups == 1 {
                        _ = try q.gemmStridedBatched(transposeA: true, m: inChannels * kk, n: plane, k: outChannels,
                                                     a: weight.buffer, aOffset: weight.offset, lda: inChannels * kk,
                                                     strideA: 0, b: dy.buffer, bOffset: dy.offset + n0 * dy.batchStride,
                                                     ldb: plane, strideB: dy.batchStride, c: ws.buffer, cOffset: ws.offset,
                                                     ldc: plane, strideC: perSample, batch: count,
                                                     storage: GEMMStorage(a: weight.storage, b: dy.storage))
                    } else {
                        _ = try q.gemmStridedBatched(transposeA: true, m: cg * kk, n: plane, k: og, a: weight.buffer,
                                                     aOffset: weight.offset, lda: cg * kk, strideA: og * cg * kk,
                                                     b: dy.buffer, bOffset: dy.offset + n0 * dy.batchStride, ldb: plane,
                                                     strideB: og * plane, c: ws.buffer, cOffset: ws.offset, ldc: plane,
                                                     strideC: cg * kk * plane, batch: groups,
                                                     storage: GEMMStorage(a: weight.storage, b: dy.storage))
                    }
                    // One work item per input row.
                    let total = count * x.shape.c * x.shape.h
                    last = try q.launch(.conv, "col2im", ws.vectorArguments + dx.arguments + geometry(x.shape, out) +
                                        [.count(n0), .count(total), .flag(accumulate)], total: total, waitFor: [])
                }
            }
        }
        return last
    }

    /// dW (+)= Σ over samples of dY_s col_s^T, one GEMM (batched over groups) per chunk of samples.
    private func weightGradient(_ q: CommandQueue, x: Tensor, dy: Tensor, out: Shape, dweight: Tensor, workspace ws: Tensor,
                                beta: Float) throws(CLNetError) -> Event {
        let kk = kernel.h * kernel.w, plane = out.h * out.w, cg = inChannels / groups, og = outChannels / groups
        // The partial sums take the workspace's tail when there is room beyond one sample's
        // columns; a smaller workspace runs without split-K.
        let partialRoom = ws.shape.count >= workspacePerSample(x.shape, out) + partialsCount ? partialsCount : 0
        let room = ws.shape.count - partialRoom
        let step = chunk(x.shape, out, workspace: room)
        var last: Event? = nil
        for n0 in Swift.stride(from: 0, to: x.shape.n, by: step) {
            let count = min(step, x.shape.n - n0)
            let width = count * plane, colCount = inChannels * kk * width
            // One work item per column row segment of OW values.
            let rowsTotal = colCount / out.w
            _ = try q.launch(.conv, "im2col", x.arguments + ws.vectorArguments + geometry(x.shape, out) +
                             [.count(n0), .count(count), .flag(true), .count(rowsTotal)], total: rowsTotal, waitFor: [])
            let dyCount = outChannels * width
            _ = try q.launch(.conv, "channel_major", dy.arguments + [.buffer(ws.buffer), .count(ws.offset + colCount),
                             .count(outChannels), .count(plane), .count(n0), .count(count), .count(dyCount)],
                             total: dyCount, waitFor: [])
            let slices = splitK(m: og, n: cg * kk, width: width, computeUnits: q.context.device.info.computeUnits,
                                room: partialRoom)
            if slices == 1 {
                last = try q.gemmStridedBatched(transposeB: true, m: og, n: cg * kk, k: width, a: ws.buffer,
                                                aOffset: ws.offset + colCount, lda: width, strideA: og * width,
                                                b: ws.buffer, bOffset: ws.offset, ldb: width, strideB: cg * kk * width,
                                                beta: n0 == 0 ? beta : 1, c: dweight.buffer, cOffset: dweight.offset,
                                                ldc: cg * kk, strideC: og * cg * kk, batch: groups)
            } else {
                // One group: the slices of K become the batch, then a kernel sums them.
                let ks = width / slices, mn = outChannels * inChannels * kk, partials = ws.offset + room
                _ = try q.gemmStridedBatched(transposeB: true, m: outChannels, n: inChannels * kk, k: ks, a: ws.buffer,
                                             aOffset: ws.offset + colCount, lda: width, strideA: ks, b: ws.buffer,
                                             bOffset: ws.offset, ldb: width, strideB: ks, c: ws.buffer, cOffset: partials,
                                             ldc: inChannels * kk, strideC: mn, batch: slices)
                last = try q.launch(.conv, "sum_partials", [.buffer(ws.buffer), .count(partials), .count(slices), .count(mn)] +
                                    dweight.vectorArguments + [.flag(n0 > 0 || beta != 0)], total: mn, waitFor: [])
            }
        }
        return last!
    }

    /// How many slices to split the weight gradient's K (= samples x pixels) into. The product is
    /// small (out x in*kh*kw) and K huge, and CLBlast gives each output tile one work-group, so
    /// without a split an early layer's weight gradient occupies a few of a GPU's compute units.
    /// The slices fill about two work-groups per compute unit, fit the partial-sum room, divide
    /// K evenly and keep each slice at least 256 long.
    func splitK(m: Int, n: Int, width: Int, computeUnits: Int, room: Int) -> Int {
        guard groups == 1, room > 0 else { return 1 }
        let tiles = max(1, (m * n) / 4096)
        let target = min(64, max(1, 2 * computeUnits / tiles), room / (m * n))
        guard target > 1 else { return 1 }
        for d in Swift.stride(from: target, through: 2, by: -1) where width % d == 0 && width / d >= 256 { return d }
        return 1
    }

    private func im2col(_ q: CommandQueue, _ x: Tensor, _ out: Shape, _ ws: Tensor, n0: Int, count: Int,
                        waitFor: [Event]) throws(CLNetError) -> Event {
        // One work item per column row segment of OW values.
        let total = count * columnCount(x.shape, out) / out.w
        return try q.launch(.conv, "im2col", x.arguments + ws.vectorArguments + geometry(x.shape, out) +
                            [.count(n0), .count(count), .flag(false), .count(total)], total: total, waitFor: waitFor)
    }
}
