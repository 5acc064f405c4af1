// Max, average and global average pooling on the device. CPU reference:
// Reference/PoolReference.swift; kernels: Kernels/Pool.cl.

/// The window of a 2-D pooling: kernel size, stride and zero padding (no dilation; the output
/// size rounds down, as PyTorch with ceil_mode off).
public struct Pool2D: Sendable, Hashable {
    public var kernel: (h: Int, w: Int)
    public var stride: (h: Int, w: Int)
    public var padding: (h: Int, w: Int)

    public init(kernel: Int, stride: Int? = nil, padding: Int = 0) {
        self.kernel = (kernel, kernel)
        self.stride = (stride ?? kernel, stride ?? kernel)
        self.padding = (padding, padding)
    }

    public static func == (a: Pool2D, b: Pool2D) -> Bool {
        a.kernel == b.kernel && a.stride == b.stride && a.padding == b.padding
    }

    public func hash(into hasher: inout Hasher) {
        for v in [kernel.h, kernel.w, stride.h, stride.w, padding.h, padding.w] { hasher.combine(v) }
    }

    /// The output shape for input `x`, or an error naming `operation` and the shapes.
    public func outputShape(_ operation: String, _ x: Shape) throws(CLNetError) -> Shape {
        try checkRank(operation, "x", x, 4)
        guard kernel.h > 0, kernel.w > 0, stride.h > 0, stride.w > 0 else {
            throw .invalidShape(operation: operation, message: "kernel \(kernel) and stride \(stride) must be positive")
        }
        guard padding.h >= 0, padding.w >= 0, padding.h * 2 <= kernel.h, padding.w * 2 <= kernel.w else {
            throw .invalidShape(operation: operation, message: "padding \(padding) must be between 0 and half the kernel \(kernel)")
        }
        guard kernel.h <= x.h + 2 * padding.h, kernel.w <= x.w + 2 * padding.w else {
            throw .invalidShape(operation: operation, message: """
                kernel \(kernel.h)x\(kernel.w) is larger than the padded input \(x.h + 2 * padding.h)x\(x.w + 2 * padding.w) of x \(x)
                """)
        }
        return [x.n, x.c, (x.h + 2 * padding.h - kernel.h) / stride.h + 1, (x.w + 2 * padding.w - kernel.w) / stride.w + 1]
    }

    /// The forward kernels' window, compiled in (Pool.cl), and the windows of a vector block
    /// (PV): 16 where the device loads 16 floats and the rows of `x` have 16 windows that lie
    /// inside them (as the kernel's `inner_columns` counts), else 8 or 4. One program per
    /// window and block a model uses.
    func forwardMacros(_ x: Shape, _ y: Shape, loadWidth: Int) -> [String: String] {
        let lo = (padding.w + stride.w - 1) / stride.w
        let inside = min(max((x.w + padding.w - kernel.w) / stride.w + 1, lo), y.w) - lo
        let block = loadWidth >= 16 && inside >= 16 ? 16 : loadWidth >= 8 ? 8 : 4
        return ["WKH": "\(kernel.h)", "WKW": "\(kernel.w)", "WSH": "\(stride.h)", "WSW": "\(stride.w)", "WPH": "\(padding.h)",
                "WPW": "\(padding.w)", "PV": "\(block)"]
    }

    /// The forward kernels' sizes: channels, input and output planes.
    func forwardGeometry(_ x: Shape, _ y: Shape) throws(CLNetError) -> [KernelArgument] {
        try KernelArgument.counts([x.c, x.h, x.w, y.h, y.w])
    }

    func geometry(_ x: Shape, _ y: Shape) throws(CLNetError) -> [KernelArgument] {
        try KernelArgument.counts([x.c, x.h, x.w, y.h, y.w, kernel.h, kernel.w, stride.h, stride.w, padding.h, padding.w])
    }
}

/// Max pooling. The forward records each window's argmax (first maximum; NaN propagates) in
/// `indices`, a buffer of `y.shape.count` 32-bit integers, which the backward reads.
public enum MaxPool {
    @discardableResult
    public static func forward(_ q: CommandQueue, x: Tensor, y: Tensor, indices: Buffer, window: Pool2D,
                               waitFor: [Event] = []) throws(CLNetError) -> Event {
        let out = try window.outputShape("MaxPool", x.shape)
        try checkSameShape("MaxPool", ["expected output": out, "y": y.shape])
        try checkIndices(indices, out)
        let rows = out.n * out.c * out.h
        return try q.launchRuns(.pool, "maxpool_forward", x.arguments + y.arguments + [.buffer(indices)] +
                                window.forwardGeometry(x.shape, out) + [.count(rows)],
                                specialised: window.forwardMacros(x.shape, out, loadWidth: q.context.loadWidth),
                                waitFor: waitFor)
    }

    @discardableResult
    public static func backward(_ q: CommandQueue, dy: Tensor, indices: Buffer, dx: Tensor, window: Pool2D,
                                accumulate: Bool = false, waitFor: [Event] = []) throws(CLNetError) -> Event {
        let out = try window.outputShape("MaxPool backward", dx.shape)
        try checkSameShape("MaxPool backward", ["expected output gradient": out, "dy": dy.shape])
        try checkIndices(indices, out)
        // One run per plane on a CPU, per input row with lanes (see maxpool_backward).
        let runs = dx.shape.n * dx.shape.c * (q.context.laneCount == 1 ? 1 : dx.shape.h)
        return try q.launchRuns(.pool, "maxpool_backward", dy.arguments + [.buffer(indices)] + dx.arguments +
                                window.geometry(dx.shape, out) + [.count(runs), .flag(accumulate)],
                                waitFor: waitFor)
    }

    static func checkIndices(_ indices: Buffer, _ out: Shape) throws(CLNetError) {
        guard indices.byteCount >= out.count * 4 else {
            throw .invalidShape(operation: "MaxPool", message: "indices buffer of \(indices.byteCount) bytes is too small for output \(out)")
        }
    }
}

/// Average pooling; the divisor counts padding (PyTorch's count_include_pad, its default).
public enum AvgPool {
    @discardableResult
    public static func forward(_ q: CommandQueue, x: Tensor, y: Tensor, window: Pool2D,
                               waitFor: [Event] = []) throws(CLNetError) -> Event {
        let out = try window.outputShape("AvgPool", x.shape)
        try checkSameShape("AvgPool", ["expected output": out, "y": y.shape])
        let rows = out.n * out.c * out.h
        return try q.launchRuns(.pool, "avgpool_forward", x.arguments + y.arguments + window.forwardGeometry(x.shape, out) +
                                [.count(rows)], specialised: window.forwardMacros(x.shape, out, loadWidth: q.context.loadWidth),
                                waitFor: waitFor)
    }

    @discardableResult
    public static func backward(_ q: CommandQueue, dy: Tensor, dx: Tensor, window: Pool2D, accumulate: Bool = false,
                                waitFor: [Event] = []) throws(CLNetError) -> Event {
        let out = try window.outputShape("AvgPool backward", dx.shape)
        try checkSameShape("AvgPool backward", ["expected output gradient": out, "dy": dy.shape])
        let rows = dx.shape.n * dx.shape.c * dx.shape.h
        return try q.launchRuns(.pool, "avgpool_backward", dy.arguments + dx.arguments + window.geometry(dx.shape, out) +
                                [.count(rows), .flag(accumulate)], waitFor: waitFor)
    }
}

/// The mean over each channel's plane: [N, C, H, W] to [N, C] (or [N, C, 1, 1]).
public enum GlobalAvgPool {
    static func check(_ op: String, _ x: Shape, _ y: Shape) throws(CLNetError) {
        try checkRank(op, "x", x, 4)
        guard y.count == x.n * x.c, y[0] == x.n else {
            throw .invalidShape(operation: op, message: "output \(y) does not hold [\(x.n), \(x.c)] for x \(x)")
        }
    }

    @discardableResult
    public static func forward(_ q: CommandQueue, x: Tensor, y: Tensor, waitFor: [Event] = []) throws(CLNetError) -> Event {
        try check("GlobalAvgPool", x.shape, y.shape)
        let rows = x.shape.n * x.shape.c
        return try q.launchRuns(.pool, "global_avgpool_forward", x.arguments + y.arguments +
                                [.count(x.shape.c), .count(x.shape.h * x.shape.w), .count(rows)], 
                                waitFor: waitFor)
    }

    @discardableResult
    public static func backward(_ q: CommandQueue, dy: Tensor, dx: Tensor, accumulate: Bool = false,
                                waitFor: [Event] = []) throws(CLNetError) -> Event {
        try check("GlobalAvgPool backward", dx.shape, dy.shape)
        let rows = dx.shape.n * dx.shape.c
        return try q.launchRuns(.pool, "global_avgpool_backward", dy.arguments + dx.arguments +
                                [.count(dx.shape.c), .count(dx.shape.h * dx.shape.w), .count(rows), .flag(accumulate)],
                                waitFor: waitFor)
    }
}
