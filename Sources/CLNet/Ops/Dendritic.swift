// Dendritic ReLU (the dendrites-activated connections of Metta et al. 2023) on the device.
// CPU reference: Reference/DendriticReference.swift; kernels: Kernels/Dendritic.cl. No GEMM can
// do it: the ReLU sits inside the product, different for every output channel.

/// A convolution or fully connected layer whose every connection (dendrite) applies a ReLU of
/// its own before the weighted sum, instead of one activation that every downstream neuron
/// shares: for input channel c (the i-th of its group) and output channel o,
///
///     y[n, o, p] = bias[o] + Σ over i and the taps t of w[o, i, t] · relu(x[n, c, p + t] + b[o, i])
///
/// with one learnable bias b per (output, input) channel pair, `dendriteShape` = [O, C / groups],
/// shared by the taps, as Metta et al. make DAC convolutions. A tap in the zero padding adds
/// nothing (the padding is of the dendrite's output). With b = 0 and an input that a ReLU has
/// made non-negative it is the plain convolution; placed where a ReLU was removed, with b = 0, it
/// is the plain convolution of that ReLU's output, so a model starts as its plain form.
///
/// A fully connected layer is the 1x1 form over [N, C] inputs (`linear(inFeatures:outFeatures:)`).
/// It costs the convolution's multiply-adds plus an addition and a maximum per multiply-add,
/// and C / groups · O more parameters (1 / (KH · KW) of the weight's).
public struct DendriticConv2D: Sendable, Hashable, CustomStringConvertible {
    /// The convolution whose connections get the ReLUs (its kernel, stride, padding, dilation
    /// and groups).
    public var conv: Conv2D

    public init(_ conv: Conv2D) { self.conv = conv }

    /// The fully connected form: a 1x1 convolution over [N, inFeatures] (or [N, C, 1, 1]).
    public static func linear(inFeatures: Int, outFeatures: Int) -> DendriticConv2D {
        DendriticConv2D(Conv2D(inChannels: inFeatures, outChannels: outFeatures, kernel: 1))
    }

    public var description: String { "dendritic \(conv)" }

    /// The dendrites' biases: [O, C / groups].
    public var dendriteShape: Shape { [conv.outChannels, conv.inChannels / max(conv.groups, 1)] }

    /// Whether it is the fully connected form, which also takes [N, C] inputs.
    var isPointwise: Bool {
        conv.kernel == .init(1, 1) && conv.stride == .init(1, 1) && conv.padding == .init(0, 0) && conv.groups == 1
    }

    /// A rank-2 input [N, C] as the [N, C, 1, 1] it is laid out as.
    private func planar(_ s: Shape) -> Shape { s.rank == 2 ? [s.n, s.c, 1, 1] : s }

    /// The output shape for input `x`: [N, O, OH, OW], or [N, O] for a fully connected layer's
    /// [N, C]. Throws naming the layer and both shapes when they do not fit.
    public func outputShape(_ x: Shape) throws(CLNetError) -> Shape {
        let op = "DendriticConv2D(\(self))"
        if x.rank == 2 {
            guard isPointwise else {
                throw .invalidShape(operation: op, message: "x \(x) has no spatial dimensions; only a 1x1 stride-1 layer of one group (the linear form) takes [N, C]")
            }
            guard x.c == conv.inChannels else {
                throw .invalidShape(operation: op, message: "x \(x) has \(x.c) features but the weight \(conv.weightShape) expects \(conv.inChannels)")
            }
            return [x.n, conv.outChannels]
        }
        do { return try conv.outputShape(x) } catch { throw .invalidShape(operation: op, message: "\(error)") }
    }

    /// Output channels per group, padded to whole vectors of 8 (the kernels' packed layout).
    private var paddedOutputs: Int { (conv.outChannels / conv.groups + 7) / 8 * 8 }

    /// Floats of the packed weights and dendrites' biases, at the workspace's start.
    private var packedCount: Int { conv.inChannels * (conv.kernel.h * conv.kernel.w + 1) * paddedOutputs }

    /// Floats per sample of dy packed channel-last (the backward passes).
    private func packedGradientPerSample(_ y: Shape) -> Int { conv.groups * paddedOutputs * y.h * y.w }

    /// Samples per chunk of the backward passes, in a workspace of `floats`.
    private func chunk(_ x: Shape, _ y: Shape, workspace floats: Int) -> Int {
        max(1, min(x.n, (floats - packedCount) / max(packedGradientPerSample(y), 1)))
    }

    /// The workspace floats that forward and backward need: the packed parameters and dy of
    /// whole chunks of samples, up to about `budget` floats and at least one sample.
    public func workspaceCount(_ x: Shape, budget: Int = 1 << 24) throws(CLNetError) -> Int {
        let y = planar(try outputShape(x))
        return packedCount + max(1, min(x.n, budget / max(packedGradientPerSample(y), 1))) * packedGradientPerSample(y)
    }

    private func check(_ op: String, _ x: Tensor, _ weight: Tensor, _ dendrites: Tensor, _ y: Shape,
                       _ bias: Tensor?, _ workspace: Tensor?, least: Int) throws(CLNetError) {
        let out = try outputShape(x.shape)
        guard weight.shape.count == conv.weightShape.count, weight.isDense else {
            throw .invalidShape(operation: op, message: "weight has shape \(weight.shape) but \(conv.weightShape) is needed")
        }
        guard dendrites.shape.count == dendriteShape.count, dendrites.isDense else {
            throw .invalidShape(operation: op, message: "dendrite biases have shape \(dendrites.shape) but \(dendriteShape) is needed")
        }
        guard y == out else {
            throw .invalidShape(operation: op, message: "\(op.hasSuffix("backward") ? "dy" : "output") has shape \(y) but x \(x.shape) gives \(out)")
        }
        if let bias, bias.shape.count != conv.outChannels {
            throw .invalidShape(operation: op, message: "bias has shape \(bias.shape) but \(conv.outChannels) values are needed")
        }
        let workspace = try checkedWorkspace(op, workspace, least: least)
        try checkIndexable(op, [x, workspace])
    }

    private func geometry(_ x: Shape) throws(CLNetError) -> [KernelArgument] {
        let x = planar(x), y = planar(try outputShape(x))
        return try KernelArgument.counts([x.c, x.h, x.w, y.h, y.w, conv.kernel.h, conv.kernel.w, conv.stride.h, conv.stride.w,
                                          conv.padding.h, conv.padding.w, conv.dilation.h, conv.dilation.w,
                                          conv.inChannels / conv.groups, conv.outChannels / conv.groups, paddedOutputs])
    }

    /// Dendritic.cl compiled for this layer's kernel size, whose tap loops then unroll.
    private var macros: [String: String] { ["DK_KH": "\(conv.kernel.h)", "DK_KW": "\(conv.kernel.w)"] }

    private func launch(_ q: CommandQueue, _ name: String, _ arguments: [KernelArgument]) throws(CLNetError) -> Event {
        try q.launchRuns(.dendritic, name, arguments, specialised: macros, waitFor: [])
    }

    /// The workspace's buffer and where the packed weights, biases and dy start in it.
    private func layout(_ ws: Tensor) throws(CLNetError) -> [KernelArgument] {
        let wp = ws.offset, bp = wp + conv.inChannels * conv.kernel.h * conv.kernel.w * paddedOutputs
        return [.buffer(ws.buffer)] + (try KernelArgument.counts([wp, bp, ws.offset + packedCount]))
    }

    /// Packs the weights and the dendrites' biases output-channel-last (see Dendritic.cl).
    private func pack(_ q: CommandQueue, _ weight: Tensor, _ dendrites: Tensor, _ ws: Tensor) throws(CLNetError) -> Event {
        let args = try layout(ws)
        return try launch(q, "dendritic_pack", weight.vectorArguments + dendrites.vectorArguments + [args[0], args[1], args[2]] +
                          KernelArgument.counts([conv.groups, conv.inChannels / conv.groups, conv.outChannels / conv.groups,
                                                 paddedOutputs]))
    }

    /// y = the layer of x (see the type), plus `bias` when given. `workspace`: at least
    /// `workspaceCount` floats (the forward pass uses the packed parameters' part).
    @discardableResult
    public func forward(_ q: CommandQueue, x: Tensor, weight: Tensor, dendrites: Tensor, bias: Tensor?, y: Tensor,
                        workspace: Tensor?, waitFor: [Event] = []) throws(CLNetError) -> Event {
        try check("DendriticConv2D(\(self))", x, weight, dendrites, y.shape, bias, workspace, least: packedCount)
        let ws = workspace!
        _ = try q.marker(waitFor: waitFor)
        _ = try pack(q, weight, dendrites, ws)
        let packed = Array(try layout(ws).prefix(3))
        return try launch(q, "dendritic_forward", x.arguments + packed + (bias ?? weight).vectorArguments +
                          [.flag(bias != nil)] + y.arguments + geometry(x.shape) + [.count(x.shape.n)])
    }

    /// Gradients for the input, the weight, the dendrites' biases and the bias; each may be nil.
    /// `accumulateInput` adds the input gradient to what dx holds (a tensor with several
    /// consumers), `accumulateParameters` the others to theirs. A workspace smaller than the
    /// batch's `workspaceCount` runs in chunks of samples.
    @discardableResult
    public func backward(_ q: CommandQueue, x: Tensor, weight: Tensor, dendrites: Tensor, dy: Tensor, dx: Tensor?,
                         dweight: Tensor?, ddendrites: Tensor?, dbias: Tensor?, workspace: Tensor?,
                         accumulateInput: Bool = false, accumulateParameters: Bool = false,
                         waitFor: [Event] = []) throws(CLNetError) -> Event {
        let op = "DendriticConv2D(\(self)) backward"
        let out = planar(try outputShape(x.shape))
        try check(op, x, weight, dendrites, dy.shape, dbias, workspace, least: packedCount + packedGradientPerSample(out))
        if let dx { try checkSameShape(op, ["x": x.shape, "dx": dx.shape]) }
        if let dweight, dweight.shape.count != conv.weightShape.count || !dweight.isDense {
            throw .invalidShape(operation: op, message: "dweight has shape \(dweight.shape) but \(conv.weightShape) is needed")
        }
        if let ddendrites, ddendrites.shape.count != dendriteShape.count || !ddendrites.isDense {
            throw .invalidShape(operation: op, message: "ddendrites has shape \(ddendrites.shape) but \(dendriteShape) is needed")
        }
        try checkIndexable(op, [dy] + (dx.map { [$0] } ?? []))
        let ws = workspace!, step = chunk(x.shape, out, workspace: ws.shape.count), args = try layout(ws)
        let og = conv.outChannels / conv.groups
        var last = try q.marker(waitFor: waitFor)
        if let dbias {
            last = try Bias.backward(q, dy: dy, dbias: dbias, channels: conv.outChannels, accumulate: accumulateParameters,
                                     waitFor: [])
        }
        guard dx != nil || dweight != nil || ddendrites != nil else { return last }
        _ = try pack(q, weight, dendrites, ws)
        for n0 in Swift.stride(from: 0, to: x.shape.n, by: step) {
            let count = min(step, x.shape.n - n0)
            _ = try launch(q, "dendritic_channels_last", dy.arguments + [args[0], args[3]] +
                           KernelArgument.counts([conv.groups, og, paddedOutputs, out.h * out.w, n0, count]))
            if let dx {
                last = try launch(q, "dendritic_backward_input", x.arguments + args + dx.arguments + geometry(x.shape) +
                                  KernelArgument.counts([n0, count]) + [.flag(accumulateInput)])
            }
            if dweight != nil || ddendrites != nil {
                // An absent gradient is stood in for by the weight (never written: its flag is 0);
                // chunks after the first add to the first's sums.
                last = try launch(q, "dendritic_backward_params", x.arguments + args + (dweight ?? weight).vectorArguments +
                                  [.flag(dweight != nil)] + (ddendrites ?? weight).vectorArguments + [.flag(ddendrites != nil)] +
                                  geometry(x.shape) + KernelArgument.counts([n0, count]) +
                                  [.flag(accumulateParameters || n0 > 0)])
            }
        }
        return last
    }
}

extension GraphBuilder {
    /// A dendritic ReLU layer (see `DendriticConv2D`) of `x`, with `<name>.weight`,
    /// `<name>.dendrite_bias` (starting at 0, not decayed) and, with `bias`, `<name>.bias`.
    /// x [N, C, H, W], or [N, C] for the fully connected form.
    public mutating func dendritic(_ x: Value, _ op: DendriticConv2D, bias: Bool = false,
                                   name: String) throws(CLNetError) -> Value {
        let out = try inferring(name, [x]) { () throws(CLNetError) in try op.outputShape(shape(x)) }
        // The fully connected form's weight is torchvision's [out, in].
        let weightShape: Shape = shape(x).rank == 2 ? [op.conv.outChannels, op.conv.inChannels] : op.conv.weightShape
        var params = [("\(name).weight", weightShape, ParameterRole.weight),
                      ("\(name).dendrite_bias", op.dendriteShape, ParameterRole.bias)]
        if bias { params.append(("\(name).bias", [op.conv.outChannels], .bias)) }
        let y = try appendNode(name, .dendritic(op, bias: bias), [x], out, params)
        try setInitialization("\(name).dendrite_bias", .constant(0))
        return y
    }
}
