// Dilated convolution with learnable spacings (Khalfaoui-Hassani, Pellegrini and Masquelier,
// ICLR 2023) on the device. CPU reference: Reference/DCLSReference.swift; kernels:
// Kernels/DCLS.cl builds the kernel, and the convolution runs on it as any other (Conv.swift).

/// A convolution whose kernel is built from `count` weights per (output, input) channel pair,
/// each at a learned real position inside a larger footprint (the convolution's kernel size,
/// DCLS's `dilated_kernel_size`), spread over its four nearest taps by bilinear interpolation
/// (DCLS's bilinear construction, its "v0"):
///
///     K[o, i, r, c] = Σ over m of w[o, i, m] · max(0, 1 - |r - h|) · max(0, 1 - |c - w|)
///
/// with (h, w) = clamp(P[., o, i, m], ±size / 2) + size / 2 per axis, on a square footprint of
/// odd size. Weights are
/// [O, C / groups, count] and positions [2, O, C / groups, count] (rows, then columns), as DCLS's
/// `Dcls2d` holds them. A position beyond its bound is clamped in the construction and by the
/// optimizer after each step (`Parameter.bounds`), as DCLS's `clamp_parameters`.
/// Its costs are the convolution's on the footprint (which the built kernel fills sparsely),
/// plus the construction.
public struct DCLSConv2D: Sendable, Hashable, CustomStringConvertible {
    /// The convolution that runs on the built kernel: its kernel size is the footprint.
    public var conv: Conv2D
    /// Weights (kernel elements) per (output, input) channel pair: DCLS's `kernel_count`.
    public var count: Int

    public init(_ conv: Conv2D, count: Int) {
        self.conv = conv
        self.count = count
    }

    public var description: String { "dcls \(count) in \(conv)" }

    var pairs: Int { conv.outChannels * (conv.inChannels / max(conv.groups, 1)) }
    /// [O, C / groups, count].
    public var weightShape: Shape { [conv.outChannels, conv.inChannels / max(conv.groups, 1), count] }
    /// [2, O, C / groups, count]: rows, then columns.
    public var positionShape: Shape { [2, conv.outChannels, conv.inChannels / max(conv.groups, 1), count] }
    /// How far a position may lie from the footprint's centre along each axis (DCLS's `lim`).
    public var positionBound: Float { Float(conv.kernel.h / 2) }

    /// The output shape for input `x`; throws naming the layer and the shapes when they do not fit.
    public func outputShape(_ x: Shape) throws(CLNetError) -> Shape {
        let op = "DCLSConv2D(\(self))"
        guard count > 0 else { throw .invalidShape(operation: op, message: "needs at least one kernel element, not \(count)") }
        // Odd, so that positions within ±size/2 of the centre keep their taps inside it.
        guard conv.kernel.h == conv.kernel.w, conv.kernel.h % 2 == 1 else {
            throw .invalidShape(operation: op, message: "the footprint \(conv.kernel.h)x\(conv.kernel.w) must be square and odd, as DCLS's")
        }
        guard conv.dilation == .init(1, 1) else {
            throw .invalidShape(operation: op, message: "the footprint is the spacing; give it as the kernel size, with dilation 1")
        }
        do { return try conv.outputShape(x) } catch { throw .invalidShape(operation: op, message: "\(error)") }
    }

    /// Floats of the built kernel (and, in backward, of its gradient).
    private var kernelCount: Int { conv.weightShape.count }

    /// The workspace floats that forward and backward need: the built kernel and its gradient,
    /// then the convolution's own workspace.
    public func workspaceCount(_ x: Shape) throws(CLNetError) -> Int {
        _ = try outputShape(x)
        return 2 * kernelCount + (try conv.workspaceCount(x))
    }

    private func check(_ op: String, _ x: Tensor, _ weight: Tensor, _ positions: Tensor,
                       _ workspace: Tensor?) throws(CLNetError) -> (kernel: Tensor, gradient: Tensor, rest: Tensor) {
        _ = try outputShape(x.shape)
        guard weight.shape.count == weightShape.count, weight.isDense else {
            throw .invalidShape(operation: op, message: "weight has shape \(weight.shape) but \(weightShape) is needed")
        }
        guard positions.shape.count == positionShape.count, positions.isDense else {
            throw .invalidShape(operation: op, message: "positions have shape \(positions.shape) but \(positionShape) is needed")
        }
        let least = try workspaceCount(x.shape)
        let ws = try checkedWorkspace(op, workspace, least: least)
        // The built kernel is read by the convolution engine beside the activations, so it is
        // stored as they are; its gradient, which the engine writes, stays float.
        return (try Tensor(buffer: ws.buffer, shape: conv.weightShape, offset: ws.offset).viewed(as: x.storage),
                try Tensor(buffer: ws.buffer, shape: conv.weightShape, offset: ws.offset + kernelCount),
                try Tensor(buffer: ws.buffer, shape: [ws.shape.count - 2 * kernelCount], offset: ws.offset + 2 * kernelCount))
    }

    private var sizes: [KernelArgument] {
        get throws(CLNetError) { try KernelArgument.counts([pairs, count, conv.kernel.h, conv.kernel.w]) }
    }

    /// Builds the kernel into `kernel`.
    private func construct(_ q: CommandQueue, _ weight: Tensor, _ positions: Tensor, _ kernel: Tensor) throws(CLNetError) {
        _ = try q.launchRuns(.dcls, "dcls_construct", weight.vectorArguments + positions.vectorArguments +
                             kernel.vectorArguments + sizes, waitFor: [])
    }

    /// The built kernel for these weights and positions (what `clnet export` could write as a
    /// plain convolution's weight), into `kernel` [O, C / groups, KH, KW].
    public func buildKernel(_ q: CommandQueue, weight: Tensor, positions: Tensor, kernel: Tensor) throws(CLNetError) {
        guard kernel.shape.count == kernelCount, kernel.isDense else {
            throw .invalidShape(operation: "DCLSConv2D(\(self))", message: "kernel has shape \(kernel.shape) but \(conv.weightShape) is needed")
        }
        try construct(q, weight, positions, kernel)
    }

    /// y = the convolution of x with the built kernel, plus `bias`. The convolution runs with
    /// `algorithm` (nil: its default on the device).
    @discardableResult
    public func forward(_ q: CommandQueue, x: Tensor, weight: Tensor, positions: Tensor, bias: Tensor?, y: Tensor,
                        workspace: Tensor?, algorithm: Conv2D.Algorithm? = nil, waitFor: [Event] = []) throws(CLNetError) -> Event {
        let (kernel, _, rest) = try check("DCLSConv2D(\(self))", x, weight, positions, workspace)
        _ = try q.marker(waitFor: waitFor)
        try construct(q, weight, positions, kernel)
        return try conv.forward(q, x: x, weight: kernel, bias: bias, y: y, workspace: rest, algorithm: algorithm)
    }

    /// Gradients for the input, the weights, the positions and the bias; each may be nil.
    /// `accumulateInput` adds the input gradient to what dx holds, `accumulateParameters` the
    /// others to theirs.
    @discardableResult
    public func backward(_ q: CommandQueue, x: Tensor, weight: Tensor, positions: Tensor, dy: Tensor, dx: Tensor?,
                         dweight: Tensor?, dpositions: Tensor?, dbias: Tensor?, workspace: Tensor?,
                         accumulateInput: Bool = false, accumulateParameters: Bool = false, algorithm: Conv2D.Algorithm? = nil,
                         waitFor: [Event] = []) throws(CLNetError) -> Event {
        let op = "DCLSConv2D(\(self)) backward"
        let (kernel, dkernel, rest) = try check(op, x, weight, positions, workspace)
        if let dweight, dweight.shape.count != weightShape.count || !dweight.isDense {
            throw .invalidShape(operation: op, message: "dweight has shape \(dweight.shape) but \(weightShape) is needed")
        }
        if let dpositions, dpositions.shape.count != positionShape.count || !dpositions.isDense {
            throw .invalidShape(operation: op, message: "dpositions has shape \(dpositions.shape) but \(positionShape) is needed")
        }
        var last = try q.marker(waitFor: waitFor)
        try construct(q, weight, positions, kernel)
        if let dx {
            last = try conv.backward(q, x: x, weight: kernel, dy: dy, dx: dx, dweight: nil, dbias: nil, workspace: rest,
                                     accumulate: accumulateInput, algorithm: algorithm)
        }
        if dweight != nil || dpositions != nil {
            // The built kernel's gradient is the workspace's, written fresh; the accumulation is
            // the construction's.
            _ = try conv.backward(q, x: x, weight: kernel, dy: dy, dx: nil, dweight: dkernel, dbias: nil, workspace: rest,
                                  algorithm: algorithm)
            // An absent gradient is stood in for by the weight (never written: its flag is 0).
            last = try q.launchRuns(.dcls, "dcls_construct_backward", weight.vectorArguments + positions.vectorArguments +
                                    dkernel.vectorArguments + (dweight ?? weight).vectorArguments + [.flag(dweight != nil)] +
                                    (dpositions ?? weight).vectorArguments + [.flag(dpositions != nil)] + sizes +
                                    [.flag(accumulateParameters)], waitFor: [])
        }
        if let dbias {
            last = try Bias.backward(q, dy: dy, dbias: dbias, channels: conv.outChannels, accumulate: accumulateParameters,
                                     waitFor: [])
        }
        return last
    }
}

extension GraphBuilder {
    /// A DCLS convolution (see `DCLSConv2D`) of `x`, with `<name>.weight`, `<name>.P` (the
    /// positions, kept inside the footprint) and, with `bias`, `<name>.bias`: DCLS's `Dcls2d`
    /// names.
    public mutating func dcls(_ x: Value, _ op: DCLSConv2D, bias: Bool = false, name: String) throws(CLNetError) -> Value {
        let out = try inferring(name, [x]) { () throws(CLNetError) in try op.outputShape(shape(x)) }
        var params = [("\(name).weight", op.weightShape, ParameterRole.weight), ("\(name).P", op.positionShape, .position)]
        if bias { params.append(("\(name).bias", [op.conv.outChannels], .bias)) }
        let y = try appendNode(name, .dcls(op, bias: bias), [x], out, params)
        try setBounds("\(name).P", -op.positionBound...op.positionBound)
        return y
    }
}
