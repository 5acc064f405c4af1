// Residual additions and channel-wise scaling on the device. CPU reference:
// Reference/Elementwise.swift; kernels: Kernels/Elementwise.cl.

/// The residual addition y = a + b, optionally fused with the ReLU that follows it
/// (y = max(a + b, 0)), which reads and writes each tensor once. `y` may be `a` or `b`.
public enum Add {
    @discardableResult
    public static func forward(_ q: CommandQueue, a: Tensor, b: Tensor, y: Tensor, relu: Bool = false,
                               waitFor: [Event] = []) throws(CLNetError) -> Event {
        try checkSameShape(relu ? "Add+ReLU" : "Add", ["a": a.shape, "b": b.shape, "y": y.shape])
        try checkIndexable("Add", [a, b, y])
        return try q.launch(.elementwise, "add_forward", a.arguments + b.arguments + y.arguments +
                            [.count(a.shape.sampleCount), .count(a.shape.count), .flag(relu)],
                            total: a.shape.count, waitFor: waitFor)
    }

    /// The gradient for one addend (both addends receive the same): dy, masked by y > 0 when the
    /// ReLU was fused. Without the ReLU it is dy itself, which a graph can pass on without a copy.
    @discardableResult
    public static func backward(_ q: CommandQueue, y: Tensor, dy: Tensor, dx: Tensor, relu: Bool = false,
                                accumulate: Bool = false, waitFor: [Event] = []) throws(CLNetError) -> Event {
        try checkSameShape(relu ? "Add+ReLU backward" : "Add backward", ["y": y.shape, "dy": dy.shape, "dx": dx.shape])
        return try q.launch(.elementwise, "add_backward", y.arguments + dy.arguments + [.buffer(dy.buffer), .uint(0)] +
                            dx.arguments + [.count(y.shape.sampleCount), .count(y.shape.count), .flag(relu),
                            .flag(false), .flag(accumulate)], total: y.shape.count, waitFor: waitFor)
    }
}

/// Stochastic depth's residual addition (Huang et al. 2016): y = x + scale[n] * branch, where
/// scale holds one value per sample: the 0/1 keep mask in training, the survival probability at
/// inference. Optionally fused with the following ReLU.
public enum ScaledAdd {
    static func check(_ op: String, _ x: Shape, _ scale: Tensor) throws(CLNetError) {
        guard scale.shape.count == x.n else {
            throw .invalidShape(operation: op, message: "scale has shape \(scale.shape) but x \(x) has \(x.n) samples")
        }
    }

    @discardableResult
    public static func forward(_ q: CommandQueue, x: Tensor, branch: Tensor, scale: Tensor, y: Tensor,
                               relu: Bool = false, waitFor: [Event] = []) throws(CLNetError) -> Event {
        try checkSameShape("ScaledAdd", ["x": x.shape, "branch": branch.shape, "y": y.shape])
        try check("ScaledAdd", x.shape, scale)
        return try q.launch(.elementwise, "scaled_add_forward", x.arguments + branch.arguments +
                            scale.vectorArguments + y.arguments +
                            [.count(x.shape.sampleCount), .count(x.shape.count), .flag(relu)],
                            total: x.shape.count, waitFor: waitFor)
    }

    /// Gradients for the shortcut (`dx`: dy, masked by the ReLU) and the branch (`dbranch`:
    /// scale[n] times that); either may be nil.
    @discardableResult
    public static func backward(_ q: CommandQueue, y: Tensor, dy: Tensor, scale: Tensor, dx: Tensor?, dbranch: Tensor?,
                                relu: Bool = false, accumulate: Bool = false,
                                waitFor: [Event] = []) throws(CLNetError) -> [Event] {
        try check("ScaledAdd backward", y.shape, scale)
        var events: [Event] = []
        for (target, scaled) in [(dx, false), (dbranch, true)] {
            guard let target else { continue }
            try checkSameShape("ScaledAdd backward", ["y": y.shape, "dy": dy.shape, "gradient": target.shape])
            events.append(try q.launch(.elementwise, "add_backward", y.arguments + dy.arguments + scale.vectorArguments +
                                       target.arguments + [.count(y.shape.sampleCount), .count(y.shape.count),
                                       .flag(relu), .flag(scaled), .flag(accumulate)],
                                       total: y.shape.count, waitFor: waitFor))
        }
        return events
    }
}

/// y[n, c, :, :] = x[n, c, :, :] * s[n, c], the rescaling of squeeze-and-excitation blocks.
public enum ChannelScale {
    static func check(_ op: String, _ x: Shape, _ s: Tensor) throws(CLNetError) {
        guard x.rank == 4, s.shape.count == x.n * x.c else {
            throw .invalidShape(operation: op, message: "scale has shape \(s.shape) but x \(x) needs [\(x.n), \(x.rank > 1 ? x.c : 0)]")
        }
    }

    @discardableResult
    public static func forward(_ q: CommandQueue, x: Tensor, scale: Tensor, y: Tensor,
                               waitFor: [Event] = []) throws(CLNetError) -> Event {
        try check("ChannelScale", x.shape, scale)
        try checkSameShape("ChannelScale", ["x": x.shape, "y": y.shape])
        return try q.launch(.elementwise, "channel_scale_forward", x.arguments + scale.vectorArguments + y.arguments +
                            [.count(x.shape.c), .count(x.shape.h * x.shape.w), .count(x.shape.count)],
                            total: x.shape.count, waitFor: waitFor)
    }

    @discardableResult
    public static func backward(_ q: CommandQueue, x: Tensor, scale: Tensor, dy: Tensor, dx: Tensor?, dscale: Tensor?,
                                accumulate: Bool = false, waitFor: [Event] = []) throws(CLNetError) -> [Event] {
        try check("ChannelScale backward", x.shape, scale)
        try checkSameShape("ChannelScale backward", ["x": x.shape, "dy": dy.shape])
        let plane = x.shape.h * x.shape.w
        var events: [Event] = []
        if let dx {
            try checkSameShape("ChannelScale backward", ["x": x.shape, "dx": dx.shape])
            events.append(try q.launch(.elementwise, "channel_scale_backward_input", dy.arguments + scale.vectorArguments +
                                       dx.arguments + [.count(x.shape.c), .count(plane), .count(x.shape.count),
                                       .flag(accumulate)], total: x.shape.count, waitFor: waitFor))
        }
        if let dscale {
            try check("ChannelScale backward", x.shape, dscale)
            events.append(try q.reduce(.elementwise, "channel_scale_backward_scale", x.arguments + dy.arguments +
                                       dscale.vectorArguments + [.count(x.shape.c), .count(plane), .flag(accumulate)],
                                       groups: x.shape.n * x.shape.c, waitFor: waitFor))
        }
        return events
    }
}

/// The parameter-free "option A" shortcut of the CIFAR ResNets (He et al. 2015, section 4.2):
/// subsample by `stride` and pad channels with zeros, half before and half after (as the common
/// PyTorch CIFAR implementation does), from C to `outChannels`.
public struct PadShortcut: Sendable, Hashable {
    public var outChannels: Int
    public var stride: Int

    public init(outChannels: Int, stride: Int) {
        self.outChannels = outChannels
        self.stride = stride
    }

    public func outputShape(_ x: Shape) throws(CLNetError) -> Shape {
        try checkRank("PadShortcut", "x", x, 4)
        guard stride > 0, outChannels >= x.c, (outChannels - x.c) % 2 == 0 else {
            throw .invalidShape(operation: "PadShortcut", message: """
                cannot pad x \(x) to \(outChannels) channels (an even number of extra channels) with stride \(stride)
                """)
        }
        return [x.n, outChannels, (x.h + stride - 1) / stride, (x.w + stride - 1) / stride]
    }

    private func geometry(_ x: Shape, _ y: Shape) throws(CLNetError) -> [KernelArgument] {
        try KernelArgument.counts([x.c, x.h, x.w, y.c, y.h, y.w, stride, (y.c - x.c) / 2])
    }

    @discardableResult
    public func forward(_ q: CommandQueue, x: Tensor, y: Tensor, waitFor: [Event] = []) throws(CLNetError) -> Event {
        let out = try outputShape(x.shape)
        try checkSameShape("PadShortcut", ["expected output": out, "y": y.shape])
        return try q.launch(.elementwise, "pad_shortcut_forward", x.arguments + y.arguments + geometry(x.shape, out) +
                            [.count(out.count)], total: out.count, waitFor: waitFor)
    }

    @discardableResult
    public func backward(_ q: CommandQueue, dy: Tensor, dx: Tensor, accumulate: Bool = false,
                         waitFor: [Event] = []) throws(CLNetError) -> Event {
        let out = try outputShape(dx.shape)
        try checkSameShape("PadShortcut backward", ["expected output gradient": out, "dy": dy.shape])
        return try q.launch(.elementwise, "pad_shortcut_backward", dy.arguments + dx.arguments + geometry(dx.shape, out) +
                            [.count(dx.shape.count), .flag(accumulate)], total: dx.shape.count, waitFor: waitFor)
    }
}
