// The fully connected layer on the device: a GEMM (Device/GEMM.swift) plus the bias kernels of
// Kernels/Linear.cl (which convolutions use too). CPU reference: Reference/LinearReference.swift.

/// y = x W^T + b with x [N, in] (any tensor whose samples hold `in` values, e.g. [N, C, 1, 1]),
/// W [out, in] as torchvision's `fc.weight` (or [out, in, 1, 1], timm's SE layers), b [out].
public enum Linear {
    static func check(_ op: String, _ x: Tensor, _ weight: Tensor, _ y: Shape?) throws(CLNetError) -> (Int, Int) {
        // [out, in], or timm's 1x1-convolution layout [out, in, 1, 1] (the same floats).
        guard weight.shape.rank == 2 || (weight.shape.rank == 4 && weight.shape[2] == 1 && weight.shape[3] == 1) else {
            throw .invalidShape(operation: op, message: "weight must be [out, in] or [out, in, 1, 1], got \(weight.shape)")
        }
        guard weight.isDense else { throw .invalidShape(operation: op, message: "weight \(weight.shape) must be dense") }
        let (outF, inF) = (weight.shape[0], weight.shape[1])
        guard x.shape.sampleCount == inF else {
            throw .invalidShape(operation: op, message: "x \(x.shape) has \(x.shape.sampleCount) features per sample but weight \(weight.shape) expects \(inF)")
        }
        if let y, y.count != x.shape.n * outF || y[0] != x.shape.n {
            throw .invalidShape(operation: op, message: "output \(y) does not hold [\(x.shape.n), \(outF)] for x \(x.shape) and weight \(weight.shape)")
        }
        return (outF, inF)
    }

    @discardableResult
    public static func forward(_ q: CommandQueue, x: Tensor, weight: Tensor, bias: Tensor?, y: Tensor,
                               waitFor: [Event] = []) throws(CLNetError) -> Event {
        let (outF, inF) = try check("Linear", x, weight, y.shape)
        let gemm = try q.gemm(transposeB: true, m: x.shape.n, n: outF, k: inF, a: x.buffer, aOffset: x.offset,
                              lda: x.batchStride, b: weight.buffer, bOffset: weight.offset, ldb: inF,
                              c: y.buffer, cOffset: y.offset, ldc: y.batchStride,
                              storage: GEMMStorage(a: x.storage, b: weight.storage, c: y.storage), waitFor: waitFor)
        guard let bias else { return gemm }
        return try Bias.forward(q, y: y, bias: bias, channels: outF, waitFor: [gemm])
    }

    /// Gradients for the input, the weight and the bias; each may be nil.
    @discardableResult
    public static func backward(_ q: CommandQueue, x: Tensor, weight: Tensor, dy: Tensor, dx: Tensor?, dweight: Tensor?,
                                dbias: Tensor?, accumulate: Bool = false, waitFor: [Event] = []) throws(CLNetError) -> [Event] {
        let (outF, inF) = try check("Linear backward", x, weight, dy.shape)
        let beta: Float = accumulate ? 1 : 0
        var events: [Event] = []
        if let dx {
            try checkSameShape("Linear backward", ["x": x.shape, "dx": dx.shape])
            events.append(try q.gemm(m: x.shape.n, n: inF, k: outF, a: dy.buffer, aOffset: dy.offset, lda: dy.batchStride,
                                     b: weight.buffer, bOffset: weight.offset, ldb: inF, beta: beta,
                                     c: dx.buffer, cOffset: dx.offset, ldc: dx.batchStride,
                                     storage: GEMMStorage(a: dy.storage, b: weight.storage, c: dx.storage), waitFor: waitFor))
        }
        if let dweight {
            try checkSameShape("Linear backward", ["weight": weight.shape, "dweight": dweight.shape])
            guard dweight.isDense else { throw .invalidShape(operation: "Linear backward", message: "dweight \(dweight.shape) must be dense") }
            events.append(try q.gemm(transposeA: true, m: outF, n: inF, k: x.shape.n, a: dy.buffer, aOffset: dy.offset,
                                     lda: dy.batchStride, b: x.buffer, bOffset: x.offset, ldb: x.batchStride, beta: beta,
                                     c: dweight.buffer, cOffset: dweight.offset, ldc: inF,
                                     storage: GEMMStorage(a: dy.storage, b: x.storage, c: dweight.storage), waitFor: waitFor))
        }
        if let dbias {
            events.append(try Bias.backward(q, dy: dy, dbias: dbias, channels: outF, accumulate: accumulate, waitFor: waitFor))
        }
        return events
    }
}

/// A per-channel bias over NCHW (or [N, C]) tensors, shared by Linear and Conv2D, and the
/// convolution epilogue that adds a residual and applies ReLU in the same pass.
enum Bias {
    static func forward(_ q: CommandQueue, y: Tensor, bias: Tensor, channels: Int,
                        waitFor: [Event]) throws(CLNetError) -> Event {
        try epilogue(q, x: y, bias: bias, residual: nil, relu: false, y: y, channels: channels, operation: "bias",
                     waitFor: waitFor)
    }

    /// y = x + bias (per channel) + residual, then ReLU when asked; y may be x or the residual.
    /// Shape errors name `operation`, the layer.
    static func epilogue(_ q: CommandQueue, x: Tensor, bias: Tensor?, residual: Tensor?, relu: Bool, y: Tensor,
                         channels: Int, operation: String, waitFor: [Event]) throws(CLNetError) -> Event {
        if let bias, bias.shape.count != channels {
            throw .invalidShape(operation: operation, message: "bias \(bias.shape) does not match \(channels) output channels of \(y.shape)")
        }
        try checkSameShape(operation, ["output": x.shape, "epilogue output": y.shape])
        if let residual { try checkSameShape(operation, ["output": x.shape, "residual": residual.shape]) }
        let plane = y.shape.sampleCount / channels
        // A tensor argument the kernel does not read still needs a buffer: x stands in.
        let b = try bias?.vectorArguments ?? [.buffer(x.buffer), .uint(UInt32(x.offset))]
        return try q.launchPlanes(.linear, "bias_epilogue", x.arguments + b + (residual ?? x).arguments + y.arguments +
                                  [.count(plane), .count(channels), .count(y.shape.n), .flag(bias != nil),
                                   .flag(residual != nil), .flag(relu)],
                                  plane: plane, channels: channels, batch: y.shape.n, waitFor: waitFor)
    }

    static func backward(_ q: CommandQueue, dy: Tensor, dbias: Tensor, channels: Int, accumulate: Bool,
                         waitFor: [Event]) throws(CLNetError) -> Event {
        guard dbias.shape.count == channels else {
            throw .invalidShape(operation: "bias backward", message: "dbias \(dbias.shape) does not match \(channels) channels of \(dy.shape)")
        }
        return try q.reduce(.linear, "bias_backward", dy.arguments + dbias.vectorArguments +
                            [.count(dy.shape.n), .count(channels), .count(dy.shape.sampleCount / channels), .flag(accumulate)],
                            groups: channels, waitFor: waitFor)
    }
}
