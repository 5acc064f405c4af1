// Deformable convolution (Dai et al. 2017), and its modulated form (v2, Zhu et al. 2019), on the
// device. CPU reference: Reference/DeformConvReference.swift; kernels: Kernels/DeformConv.cl;
// the products through GEMM (Device/GEMM.swift), on columns that the kernels gather by bilinear
// sampling, as im2col + GEMM does for a plain convolution (Conv.swift).

/// A deformable convolution: a convolution whose every kernel tap samples the input at its
/// place moved by a learned offset, per output pixel, with bilinear interpolation; in the
/// modulated form (v2) each sample is also multiplied by a mask. The definition is torchvision's
/// `torchvision.ops.deform_conv2d`, whose inputs it takes: x [N, C, H, W], offset
/// [N, 2 * offsetGroups * KH * KW, OH, OW] (for tap k = kh * KW + kw of offset group g, channel
/// g * 2K + 2k moves it down and 2k + 1 right), mask [N, offsetGroups * KH * KW, OH, OW], and the
/// convolution's OIHW weight and bias. Input channels split into `offsetGroups` groups that each
/// have their own offsets.
public struct DeformConv2D: Sendable, Hashable, CustomStringConvertible {
    /// The convolution that samples the moved taps (its stride, padding, dilation and groups).
    public var conv: Conv2D
    /// Groups of input channels with offsets (and masks) of their own (torchvision's
    /// `offset_groups`, mmcv's `deform_groups`).
    public var offsetGroups: Int
    /// Whether a mask multiplies every sample (v2).
    public var modulated: Bool

    public init(_ conv: Conv2D, offsetGroups: Int = 1, modulated: Bool) {
        self.conv = conv
        self.offsetGroups = offsetGroups
        self.modulated = modulated
    }

    public var description: String {
        "deformable \(conv)\(offsetGroups > 1 ? " dg\(offsetGroups)" : "")\(modulated ? " modulated" : "")"
    }

    var taps: Int { conv.kernel.h * conv.kernel.w }
    /// Channels of the offset input: a (down, right) pair per tap and offset group.
    public var offsetChannels: Int { 2 * offsetGroups * taps }
    /// Channels of the mask input: one per tap and offset group.
    public var maskChannels: Int { offsetGroups * taps }

    /// What gradients add to the tensors they are written to instead of overwriting them.
    public struct Accumulation: OptionSet, Sendable {
        public let rawValue: Int
        public init(rawValue: Int) { self.rawValue = rawValue }
        public static let input = Accumulation(rawValue: 1)
        public static let offset = Accumulation(rawValue: 2)
        public static let mask = Accumulation(rawValue: 4)
        /// The weight and bias gradients.
        public static let parameters = Accumulation(rawValue: 8)
    }

    /// The output shape for input `x`, offsets `offset` and mask `mask` (nil unless modulated);
    /// throws naming the layer and the shapes when they do not fit.
    public func outputShape(_ x: Shape, offset: Shape, mask: Shape?) throws(CLNetError) -> Shape {
        let op = "DeformConv2D(\(self))"
        let out: Shape
        do { out = try conv.outputShape(x) } catch {
            throw .invalidShape(operation: op, message: "\(error)")
        }
        guard offsetGroups > 0, conv.inChannels % offsetGroups == 0 else {
            throw .invalidShape(operation: op, message: "\(conv.inChannels) input channels do not split into \(offsetGroups) offset groups")
        }
        let wantOffset: Shape = [out.n, offsetChannels, out.h, out.w]
        guard offset == wantOffset else {
            throw .invalidShape(operation: op, message: "offset has shape \(offset) but x \(x) needs \(wantOffset)")
        }
        let wantMask: Shape = [out.n, maskChannels, out.h, out.w]
        switch (modulated, mask) {
        case (true, nil):
            throw .invalidShape(operation: op, message: "a modulated deformable convolution needs a mask \(wantMask)")
        case let (false, mask?):
            throw .invalidShape(operation: op, message: "got a mask \(mask), but the convolution is not modulated")
        case let (true, mask?) where mask != wantMask:
            throw .invalidShape(operation: op, message: "mask has shape \(mask) but x \(x) needs \(wantMask)")
        default:
            return out
        }
    }

    /// Floats per sample of the workspace: the columns (C * KH * KW rows of OH * OW), then the
    /// output or its gradient, channel-major (what one GEMM over a chunk writes or reads).
    /// Per sample: the columns, the output gradient channel-major, and, for a 16-bit input
    /// gradient, its float sums (`deform_col2im`).
    func workspacePerSample(_ x: Shape, _ y: Shape) -> Int {
        (conv.inChannels * taps + conv.outChannels) * y.h * y.w + conv.inChannels * x.h * x.w
    }

    /// Samples per chunk, in a workspace of `floats`.
    func chunk(_ x: Shape, _ y: Shape, workspace floats: Int) -> Int {
        max(1, min(x.n, floats / max(workspacePerSample(x, y), 1)))
    }

    /// The workspace floats that forward and backward need: whole chunks of samples, up to about
    /// `budget` floats and at least one sample.
    public func workspaceCount(_ x: Shape, budget: Int = 1 << 24) throws(CLNetError) -> Int {
        let y = try conv.outputShape(x)
        return chunk(x, y, workspace: budget) * workspacePerSample(x, y)
    }

    private func check(_ x: Tensor, _ offset: Tensor, _ mask: Tensor?, _ weight: Tensor, _ y: Shape, _ bias: Tensor?,
                       _ workspace: Tensor?, _ label: String) throws(CLNetError) -> Shape {
        let op = "DeformConv2D(\(self))\(label)"
        let out = try outputShape(x.shape, offset: offset.shape, mask: mask?.shape)
        guard weight.shape == conv.weightShape, weight.isDense else {
            throw .invalidShape(operation: op, message: "weight has shape \(weight.shape) but \(conv.weightShape) is needed")
        }
        guard y == out else {
            throw .invalidShape(operation: op, message: "\(label.isEmpty ? "output" : "dy") has shape \(y) but x \(x.shape) gives \(out)")
        }
        if let bias, bias.shape.count != conv.outChannels {
            throw .invalidShape(operation: op, message: "bias has shape \(bias.shape) but \(conv.outChannels) values are needed")
        }
        // One launch's store_t arguments share one format (Kernels/Common.cl).
        for t in [offset, weight] + (mask.map { [$0] } ?? []) where t.storage != x.storage {
            throw .invalidArgument("\(op): x is stored as \(x.storage) but an offset, mask or weight as \(t.storage)")
        }
        let least = workspacePerSample(x.shape, out)
        let workspace = try checkedWorkspace(op, workspace, least: least)
        try checkIndexable(op, [x, offset, workspace] + (mask.map { [$0] } ?? []))
        return out
    }

    private func geometry(_ x: Shape, _ y: Shape) throws(CLNetError) -> [KernelArgument] {
        try KernelArgument.counts([x.c, x.h, x.w, y.h, y.w, conv.kernel.h, conv.kernel.w, conv.stride.h, conv.stride.w,
                                   conv.padding.h, conv.padding.w, conv.dilation.h, conv.dilation.w, offsetGroups])
    }

    /// The offset and mask arguments of the kernels; without a mask, the offsets stand in for it
    /// (never read: the kernels take `masked` = 0).
    private func sampling(_ offset: Tensor, _ mask: Tensor?) throws(CLNetError) -> [KernelArgument] {
        try offset.arguments + (mask ?? offset).arguments + [.flag(mask != nil)]
    }

    /// Channels per work item of the gather and the input gradient (CB in DeformConv.cl, which
    /// is compiled with this value): they share each sample's position and corner weights.
    static let channelBlock = 8

    /// Work items of the kernels that take a block of channels each.
    private func channelBlocks(_ count: Int) -> Int {
        let cg = conv.inChannels / offsetGroups
        return count * offsetGroups * ((cg + Self.channelBlock - 1) / Self.channelBlock)
    }

    /// Launches one of DeformConv.cl's kernels, compiled with the channel block.
    private func launch(_ q: CommandQueue, _ name: String, _ arguments: [KernelArgument], total: Int,
                        floatInputGradient: Bool = false) throws(CLNetError) -> Event {
        try q.launch(.deformConv, name, arguments, total: total,
                     specialised: ["CB": "\(Self.channelBlock)"].merging(floatInputGradient ? ["DX_FLOAT": "1"] : [:]) { a, _ in a },
                     waitFor: [])
    }

    /// The columns of samples n0 ..< n0 + count, at the workspace's start (wide layout).
    private func columns(_ q: CommandQueue, _ x: Tensor, _ offset: Tensor, _ mask: Tensor?, _ out: Shape, _ ws: Tensor,
                         n0: Int, count: Int) throws(CLNetError) -> Event {
        let total = channelBlocks(count) * taps * out.h
        return try launch(q, "deform_im2col", x.arguments + sampling(offset, mask) + ws.vectorArguments +
                            geometry(x.shape, out) + KernelArgument.counts([n0, count, total]), total: total)
    }

    /// y = deform_conv(x, offset, mask, weight) + bias. `workspace` holds at least one sample's
    /// columns and output (`workspaceCount`); a smaller one than the batch's runs in chunks of
    /// samples.
    @discardableResult
    public func forward(_ q: CommandQueue, x: Tensor, offset: Tensor, mask: Tensor?, weight: Tensor, bias: Tensor?,
                        y: Tensor, workspace: Tensor?, waitFor: [Event] = []) throws(CLNetError) -> Event {
        let out = try check(x, offset, mask, weight, y.shape, bias, workspace, "")
        try checkIndexable("DeformConv2D(\(self))", [y])
        let ws = workspace!, plane = out.h * out.w, step = chunk(x.shape, out, workspace: ws.shape.count)
        let cg = conv.inChannels / conv.groups, og = conv.outChannels / conv.groups, kk = taps
        var last = try q.marker(waitFor: waitFor)
        for n0 in Swift.stride(from: 0, to: x.shape.n, by: step) {
            let count = min(step, x.shape.n - n0), width = count * plane, result = ws.offset + conv.inChannels * kk * width
            _ = try columns(q, x, offset, mask, out, ws, n0: n0, count: count)
            _ = try q.gemmStridedBatched(m: og, n: width, k: cg * kk, a: weight.buffer, aOffset: weight.offset, lda: cg * kk,
                                         strideA: og * cg * kk, b: ws.buffer, bOffset: ws.offset, ldb: width,
                                         strideB: cg * kk * width, c: ws.buffer, cOffset: result, ldc: width,
                                         strideC: og * width, batch: conv.groups, storage: GEMMStorage(a: weight.storage))
            let total = count * conv.outChannels * plane
            last = try launch(q, "deform_output", [.buffer(ws.buffer), .count(result)] +
                                (bias ?? ws).vectorArguments + [.flag(bias != nil)] + y.arguments +
                                KernelArgument.counts([conv.outChannels, plane, n0, count, total]), total: total)
        }
        return last
    }

    /// Gradients for the input, the offsets, the mask, the weight and the bias; each may be nil.
    /// Those named in `accumulate` are added to what their tensors hold.
    @discardableResult
    public func backward(_ q: CommandQueue, x: Tensor, offset: Tensor, mask: Tensor?, weight: Tensor, dy: Tensor,
                         dx: Tensor?, doffset: Tensor?, dmask: Tensor?, dweight: Tensor?, dbias: Tensor?, workspace: Tensor?,
                         accumulate: Accumulation = [], waitFor: [Event] = []) throws(CLNetError) -> Event {
        let op = "DeformConv2D(\(self)) backward"
        let out = try check(x, offset, mask, weight, dy.shape, dbias, workspace, " backward")
        if let dx { try checkSameShape(op, ["x": x.shape, "dx": dx.shape]) }
        if let doffset { try checkSameShape(op, ["offset": offset.shape, "doffset": doffset.shape]) }
        if let dmask {
            guard let mask else { throw .invalidShape(operation: op, message: "asked for a mask gradient \(dmask.shape) without a mask") }
            try checkSameShape(op, ["mask": mask.shape, "dmask": dmask.shape])
        }
        if let dweight, dweight.shape != conv.weightShape || !dweight.isDense {
            throw .invalidShape(operation: op, message: "dweight has shape \(dweight.shape) but \(conv.weightShape) is needed")
        }
        for t in [dy] + [dx, doffset, dmask].compactMap({ $0 }) where t.storage != x.storage {
            throw .invalidArgument("\(op): x is stored as \(x.storage) but a gradient as \(t.storage)")
        }
        try checkIndexable(op, [dy] + [dx, doffset, dmask].compactMap { $0 })
        let ws = workspace!, plane = out.h * out.w, step = chunk(x.shape, out, workspace: ws.shape.count)
        let cg = conv.inChannels / conv.groups, og = conv.outChannels / conv.groups, kk = taps
        var last = try q.marker(waitFor: waitFor)
        if let dbias {
            last = try Bias.backward(q, dy: dy, dbias: dbias, channels: conv.outChannels,
                                     accumulate: accumulate.contains(.parameters), waitFor: [])
        }
        for n0 in Swift.stride(from: 0, to: x.shape.n, by: step) {
            let count = min(step, x.shape.n - n0), width = count * plane, dyCM = ws.offset + conv.inChannels * kk * width
            let dyCount = conv.outChannels * width
            _ = try q.launch(.conv, "channel_major", dy.arguments + [.buffer(ws.buffer), .count(dyCM), .count(conv.outChannels),
                             .count(plane), .count(n0), .count(count), .count(dyCount)], total: dyCount, waitFor: [])
            if let dweight {
                // dW (+)= dY col^T over the chunk: one GEMM (batched over groups).
                _ = try columns(q, x, offset, mask, out, ws, n0: n0, count: count)
                let first = n0 == 0 && !accumulate.contains(.parameters)
                last = try q.gemmStridedBatched(transposeB: true, m: og, n: cg * kk, k: width, a: ws.buffer, aOffset: dyCM,
                                                lda: width, strideA: og * width, b: ws.buffer, bOffset: ws.offset, ldb: width,
                                                strideB: cg * kk * width, beta: first ? 0 : 1, c: dweight.buffer,
                                                cOffset: dweight.offset, ldc: cg * kk, strideC: og * cg * kk,
                                                batch: conv.groups)
            }
            guard dx != nil || doffset != nil || dmask != nil else { continue }
            // The columns' gradient W^T dY, over the columns (the weight gradient is done with them).
            _ = try q.gemmStridedBatched(transposeA: true, m: cg * kk, n: width, k: og, a: weight.buffer,
                                         aOffset: weight.offset, lda: cg * kk, strideA: og * cg * kk, b: ws.buffer,
                                         bOffset: dyCM, ldb: width, strideB: og * width, c: ws.buffer, cOffset: ws.offset,
                                         ldc: width, strideC: cg * kk * width, batch: conv.groups,
                                         storage: GEMMStorage(a: weight.storage))
            if let dx, dx.storage == .fp32 {
                let total = channelBlocks(count)
                last = try launch(q, "deform_col2im", ws.vectorArguments + sampling(offset, mask) + dx.arguments +
                                    geometry(x.shape, out) + KernelArgument.counts([n0, count, total]) +
                                    [.flag(accumulate.contains(.input))], total: total)
            } else if let dx {
                // The sums in float after the output gradient, then rounded into dx once. The
                // kernel addresses sample n0 + j, so the float buffer's offset is taken back by
                // n0 samples, in the kernel's unsigned 32-bit arithmetic, which wraps exactly.
                let total = channelBlocks(count), sample = x.shape.sampleCount
                let sums = try Tensor(buffer: ws.buffer, shape: [count, x.shape.c, x.shape.h, x.shape.w],
                                      offset: dyCM + conv.outChannels * width)
                let start = UInt32(truncatingIfNeeded: sums.offset - n0 * sample)
                _ = try launch(q, "deform_col2im", ws.vectorArguments + sampling(offset, mask) +
                                 [.buffer(ws.buffer), .uint(start), .uint(UInt32(sample))] + geometry(x.shape, out) +
                                 KernelArgument.counts([n0, count, total]) + [.flag(false)], total: total,
                               floatInputGradient: true)
                last = try q.copy(from: sums, to: try dx.slice(samples: n0..<n0 + count),
                                  accumulate: accumulate.contains(.input))
            }
            if doffset != nil || dmask != nil {
                let total = count * offsetGroups * kk * plane
                // Absent outputs are stood in for by the offsets (never written: their flags are 0).
                last = try launch(q, "deform_col2im_coord", ws.vectorArguments + x.arguments + sampling(offset, mask) +
                                    (doffset ?? offset).arguments + [.flag(doffset != nil), .flag(accumulate.contains(.offset))] +
                                    (dmask ?? offset).arguments + [.flag(dmask != nil), .flag(accumulate.contains(.mask))] +
                                    geometry(x.shape, out) + KernelArgument.counts([n0, count, total]), total: total)
            }
        }
        return last
    }
}

extension GraphBuilder {
    /// A deformable convolution of `x` by offsets `offset` and, when modulated, `mask` (see
    /// `DeformConv2D`), with `<name>.weight` (and `<name>.bias`); `deformableConv` builds the
    /// unit with the convolution that predicts them.
    public mutating func deformConv(_ x: Value, offset: Value, mask: Value?, _ op: DeformConv2D, bias: Bool = false,
                                    name: String) throws(CLNetError) -> Value {
        let inputs = [x, offset] + (mask.map { [$0] } ?? [])
        let out = try inferring(name, inputs) { () throws(CLNetError) in
            try op.outputShape(shape(x), offset: shape(offset), mask: mask.map { shape($0) })
        }
        var params = [("\(name).weight", op.conv.weightShape, ParameterRole.weight)]
        if bias { params.append(("\(name).bias", [op.conv.outChannels], .bias)) }
        return try appendNode(name, .deformConv(op, bias: bias), inputs, out, params)
    }

    /// A deformable convolution unit as mmcv's `DeformConv2dPack` and `ModulatedDeformConv2dPack`
    /// (and so mmdetection's deformable ResNets) build it: the offsets, and the mask's logits,
    /// come from a parallel convolution of the same input, `<name>.conv_offset` (same kernel,
    /// stride, padding and dilation; with a bias), whose output channels are the offsets'
    /// followed by the mask's, and whose parameters start at zero, so that the unit starts as
    /// the plain convolution (v1) or half of it (v2: the mask is the sigmoid of its logits).
    /// They learn at a tenth of the rate (`Parameter.learningRateScale`), as DCNv2 (Zhu et al.
    /// 2019) trains its offset layers and mmcv's configurations do (`conv_offset` lr_mult 0.1):
    /// at the full rate a ResNet on Fashion-MNIST fell 10 points behind the plain one after an
    /// epoch (Benchmarks/RESULTS.md). The unit's own weight is `<name>.weight`.
    public mutating func deformableConv(_ x: Value, _ conv: Conv2D, offsetGroups: Int = 1, modulated: Bool,
                                        bias: Bool = false, name: String) throws(CLNetError) -> Value {
        let op = DeformConv2D(conv, offsetGroups: offsetGroups, modulated: modulated)
        let offsetConv = Conv2D(inChannels: conv.inChannels, outChannels: op.offsetChannels + (modulated ? op.maskChannels : 0),
                                kernel: conv.kernel, stride: conv.stride, padding: conv.padding, dilation: conv.dilation,
                                groups: 1)
        let raw = try self.conv(x, offsetConv, bias: true, name: "\(name).conv_offset")
        for p in ["weight", "bias"] {
            try setInitialization("\(name).conv_offset.\(p)", .constant(0))
            try setLearningRateScale("\(name).conv_offset.\(p)", 0.1)
        }
        guard modulated else { return try deformConv(x, offset: raw, mask: nil, op, bias: bias, name: name) }
        let offset = try channelSlice(raw, channels: 0..<op.offsetChannels, name: "\(name).offset")
        let logits = try channelSlice(raw, channels: op.offsetChannels..<op.offsetChannels + op.maskChannels,
                                      name: "\(name).mask_logits")
        let mask = try sigmoid(logits, name: "\(name).mask")
        return try deformConv(x, offset: offset, mask: mask, op, bias: bias, name: name)
    }
}
