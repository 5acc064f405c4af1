// Upsampling on the device. CPU reference: Reference/UpsampleReference.swift; kernels:
// Kernels/Upsample.cl.

/// Nearest or bilinear resampling of an NCHW tensor to `height` x `width`, as PyTorch's
/// `F.interpolate(mode=..., align_corners=False)`: the Residual Attention Network's soft-mask
/// branch and DenseASPP's final upsampling. The output size is fixed when the graph is built,
/// from a factor or given outright; the source coordinates are PyTorch's, computed in float from
/// the ratio PyTorch uses (1 / factor when a factor was given, else input / output), so that a
/// nearest neighbour on the edge of two pixels is the same one.
public struct Upsample: Sendable, Hashable {
    /// How an output pixel reads the input.
    public enum Mode: String, Sendable, Hashable, CaseIterable {
        /// The input pixel at floor(j * ratio) (PyTorch's "nearest").
        case nearest
        /// Bilinear interpolation of the four pixels around ratio * (j + 1/2) - 1/2.
        case bilinear
    }

    public let mode: Mode
    public let height: Int, width: Int
    /// The factor the size came from, per axis; nil where the size was given outright.
    public let factor: (h: Double, w: Double)?

    /// Resampling to `height` x `width`.
    public init(_ mode: Mode, height: Int, width: Int) {
        (self.mode, self.height, self.width, self.factor) = (mode, height, width, nil)
    }

    /// Resampling of an input of `input`'s size by `factor` per axis: the output is the floor of
    /// the input's size times the factor, as PyTorch's `scale_factor`.
    public init(_ mode: Mode, factor: (h: Double, w: Double), input: Shape) {
        self.mode = mode
        self.factor = factor
        // A factor that is not a usable number gives size 0, which `outputShape` refuses.
        func size(_ n: Int, _ f: Double) -> Int { Int(exactly: (Double(n) * f).rounded(.down)).map { min($0, 1 << 20) } ?? 0 }
        height = factor.h.isFinite && factor.h > 0 ? size(input.h, factor.h) : 0
        width = factor.w.isFinite && factor.w > 0 ? size(input.w, factor.w) : 0
    }

    public static func == (a: Upsample, b: Upsample) -> Bool {
        a.mode == b.mode && a.height == b.height && a.width == b.width && a.factor?.h == b.factor?.h && a.factor?.w == b.factor?.w
    }

    public func hash(into h: inout Hasher) {
        h.combine(mode)
        h.combine(height)
        h.combine(width)
        h.combine(factor?.h)
        h.combine(factor?.w)
    }

    /// The input-per-output ratios of the coordinate maps, in float as PyTorch computes them. As
    /// ATen on the CPU, an axis whose size does not change is copied, and nearest doubling takes
    /// input j / 2, whatever fractional factor gave those sizes.
    public func ratios(input x: Shape) -> (h: Float, w: Float) {
        func ratio(_ f: Double?, _ i: Int, _ o: Int) -> Float {
            if o == i { return 1 }
            if mode == .nearest && o == 2 * i { return 0.5 }
            return f.map { Float(1 / $0) } ?? Float(i) / Float(o)
        }
        return (ratio(factor?.h, x.h, height), ratio(factor?.w, x.w, width))
    }

    public func outputShape(_ x: Shape) throws(CLNetError) -> Shape {
        guard x.rank == 4 else {
            throw .invalidShape(operation: "Upsample", message: "needs an [N, C, H, W] input, got \(x)")
        }
        if let factor {
            guard factor.h > 0, factor.w > 0, factor.h.isFinite, factor.w.isFinite else {
                throw .invalidShape(operation: "Upsample", message: "factors \(factor.h) x \(factor.w) must be positive")
            }
        }
        guard height > 0, width > 0 else {
            throw .invalidShape(operation: "Upsample", message: "output \(height) x \(width) of input \(x) must be at least 1 x 1")
        }
        return [x.n, x.c, height, width]
    }

    private func arguments(_ x: Shape) throws(CLNetError) -> [KernelArgument] {
        let r = ratios(input: x)
        return try KernelArgument.counts([x.h, x.w, height, width]) + [.float(r.h), .float(r.w)]
    }

    private var specialised: [String: String] { mode == .bilinear ? ["BILINEAR": "1"] : [:] }

    @discardableResult
    public func forward(_ q: CommandQueue, x: Tensor, y: Tensor, waitFor: [Event] = []) throws(CLNetError) -> Event {
        let out = try outputShape(x.shape)
        try checkSameShape("Upsample", ["output": out, "y": y.shape])
        return try q.launchPlanes(.upsample, "upsample_forward", x.arguments + y.arguments + arguments(x.shape),
                                  plane: height * width, channels: x.shape.c, batch: x.shape.n, specialised: specialised,
                                  waitFor: waitFor)
    }

    /// The input gradient: each input pixel gathers dy over the outputs that read it.
    @discardableResult
    public func backward(_ q: CommandQueue, dy: Tensor, dx: Tensor, accumulate: Bool = false,
                         waitFor: [Event] = []) throws(CLNetError) -> Event {
        let out = try outputShape(dx.shape)
        try checkSameShape("Upsample backward", ["output": out, "dy": dy.shape])
        return try q.launchPlanes(.upsample, "upsample_backward", dy.arguments + dx.arguments + arguments(dx.shape) +
                                  [.flag(accumulate)], plane: dx.shape.h * dx.shape.w, channels: dx.shape.c,
                                  batch: dx.shape.n, specialised: specialised, waitFor: waitFor)
    }
}

extension GraphBuilder {
    /// `x` resampled by an integer or fractional `factor` on both axes (see `Upsample`).
    public mutating func upsample(_ x: Value, _ mode: Upsample.Mode, factor: Double, name: String) throws(CLNetError) -> Value {
        let op = Upsample(mode, factor: (factor, factor), input: shape(x))
        let out = try inferring(name, [x]) { () throws(CLNetError) in try op.outputShape(shape(x)) }
        return try appendNode(name, .upsample(op), [x], out, [])
    }

    /// `x` resampled to `height` x `width` (see `Upsample`).
    public mutating func upsample(_ x: Value, _ mode: Upsample.Mode, height: Int, width: Int, name: String) throws(CLNetError) -> Value {
        let op = Upsample(mode, height: height, width: width)
        let out = try inferring(name, [x]) { () throws(CLNetError) in try op.outputShape(shape(x)) }
        return try appendNode(name, .upsample(op), [x], out, [])
    }
}
