// Activations on the device: ReLU, PReLU, dropout, sigmoid. Their CPU reference is
// Reference/ActivationReference.swift; kernels in Kernels/Activation.cl.

/// max(x, 0). Backward reads the output, so it may run in place (`y` the same tensor as `x`).
public enum ReLU {
    @discardableResult
    public static func forward(_ q: CommandQueue, x: Tensor, y: Tensor, waitFor: [Event] = []) throws(CLNetError) -> Event {
        try checkSameShape("ReLU", ["x": x.shape, "y": y.shape])
        try checkIndexable("ReLU", [x, y])
        let sample = x.shape.sampleCount, tiles = CommandQueue.tiles(sample)
        return try q.launchRuns(.activation, "relu_forward", x.arguments + y.arguments +
                                [.count(sample), .count(x.shape.n), .count(tiles)],
                                waitFor: waitFor)
    }

    /// dx (=, or += with `accumulate`) dy where y > 0.
    @discardableResult
    public static func backward(_ q: CommandQueue, y: Tensor, dy: Tensor, dx: Tensor, accumulate: Bool = false,
                                waitFor: [Event] = []) throws(CLNetError) -> Event {
        try checkSameShape("ReLU backward", ["y": y.shape, "dy": dy.shape, "dx": dx.shape])
        try checkIndexable("ReLU backward", [y, dy, dx])
        let sample = y.shape.sampleCount, tiles = CommandQueue.tiles(sample)
        return try q.launchRuns(.activation, "relu_backward", y.arguments + dy.arguments + dx.arguments +
                                [.count(sample), .count(y.shape.n), .count(tiles), .flag(accumulate)],
                                waitFor: waitFor)
    }
}

/// PReLU (He et al. 2015): x where x > 0, slope[c] * x elsewhere; one learnable slope per channel.
public enum PReLU {
    static func check(_ op: String, _ x: Shape, _ slope: Tensor) throws(CLNetError) {
        try checkPerChannel(op, "slope", slope, count: x.rank >= 2 ? x.c : nil, of: x, needs: "has \(x.rank >= 2 ? x.c : 0) channels")
    }

    @discardableResult
    public static func forward(_ q: CommandQueue, x: Tensor, slope: Tensor, y: Tensor,
                               waitFor: [Event] = []) throws(CLNetError) -> Event {
        try check("PReLU", x.shape, slope)
        try checkSameShape("PReLU", ["x": x.shape, "y": y.shape])
        try checkIndexable("PReLU", [x, y])
        let plane = x.shape.sampleCount / x.shape.c
        return try q.launchRuns(.activation, "prelu_forward", x.arguments + slope.vectorArguments + y.arguments +
                                [.count(x.shape.n), .count(x.shape.c), .count(plane), .count(CommandQueue.tiles(plane))],
                                waitFor: waitFor)
    }

    /// Gradients for the input and for the slopes; either may be nil when it is not needed.
    @discardableResult
    public static func backward(_ q: CommandQueue, x: Tensor, slope: Tensor, dy: Tensor, dx: Tensor?, dslope: Tensor?,
                                accumulate: Bool = false, waitFor: [Event] = []) throws(CLNetError) -> [Event] {
        try check("PReLU backward", x.shape, slope)
        try checkSameShape("PReLU backward", ["x": x.shape, "dy": dy.shape])
        let plane = x.shape.sampleCount / x.shape.c
        var events: [Event] = []
        if let dx {
            try checkSameShape("PReLU backward", ["x": x.shape, "dx": dx.shape])
            events.append(try q.launchRuns(.activation, "prelu_backward_input",
                                           x.arguments + slope.vectorArguments + dy.arguments + dx.arguments +
                                           [.count(x.shape.n), .count(x.shape.c), .count(plane), .count(CommandQueue.tiles(plane)),
                                            .flag(accumulate)], waitFor: waitFor))
        }
        if let dslope {
            try check("PReLU backward", x.shape, dslope)
            events.append(try q.launchRuns(.activation, "prelu_backward_slope",
                                           x.arguments + dy.arguments + dslope.vectorArguments + [.count(x.shape.n),
                                           .count(x.shape.c), .count(plane), .flag(accumulate)], waitFor: waitFor))
        }
        return events
    }
}

/// Dropout with a seeded, counter-based generator: element i is kept iff a hash of (seed, i) is
/// at least p, so backward regenerates the mask and nothing is stored. Kept elements are scaled
/// by 1 / (1 - p), as PyTorch does; at inference dropout is the identity and is not launched.
public enum Dropout {
    static func check(_ p: Float) throws(CLNetError) {
        guard p >= 0, p < 1 else { throw .invalidShape(operation: "Dropout", message: "p must be in [0, 1), got \(p)") }
    }

    @discardableResult
    public static func forward(_ q: CommandQueue, x: Tensor, y: Tensor, p: Float, seed: UInt32,
                               waitFor: [Event] = []) throws(CLNetError) -> Event {
        try check(p)
        try checkSameShape("Dropout", ["x": x.shape, "y": y.shape])
        return try apply(q, x, y, p: p, seed: seed, accumulate: false, waitFor: waitFor)
    }

    @discardableResult
    public static func backward(_ q: CommandQueue, dy: Tensor, dx: Tensor, p: Float, seed: UInt32,
                                accumulate: Bool = false, waitFor: [Event] = []) throws(CLNetError) -> Event {
        try check(p)
        try checkSameShape("Dropout backward", ["dy": dy.shape, "dx": dx.shape])
        return try apply(q, dy, dx, p: p, seed: seed, accumulate: accumulate, waitFor: waitFor)
    }

    /// The forward and the backward are the same product: by the mask scaled by 1 / (1 - p).
    static func apply(_ q: CommandQueue, _ x: Tensor, _ y: Tensor, p: Float, seed: UInt32, accumulate: Bool,
                      waitFor: [Event]) throws(CLNetError) -> Event {
        let sample = x.shape.sampleCount, tiles = CommandQueue.tiles(sample)
        return try q.launchRuns(.activation, "dropout_apply", x.arguments + y.arguments +
                                [.count(sample), .count(x.shape.n), .count(tiles), .float(p), .uint(seed), .flag(accumulate)],
                                waitFor: waitFor)
    }

    /// The keep decision for dense element `index`: the same hash the kernels use.
    public static func keeps(index: Int, p: Float, seed: UInt32) -> Bool {
        var h = UInt32(truncatingIfNeeded: index) &* 0x9E37_79B9 ^ seed
        h ^= h >> 16; h &*= 0x7FEB_352D
        h ^= h >> 15; h &*= 0x846C_A68B
        h ^= h >> 16
        return Float(h >> 8) * (1.0 / 16_777_216.0) >= p
    }
}

/// The logistic sigmoid 1 / (1 + e^-x); backward reads the output.
public enum Sigmoid {
    @discardableResult
    public static func forward(_ q: CommandQueue, x: Tensor, y: Tensor, waitFor: [Event] = []) throws(CLNetError) -> Event {
        try checkSameShape("Sigmoid", ["x": x.shape, "y": y.shape])
        return try q.launch(.activation, "sigmoid_forward", x.arguments + y.arguments +
                            [.count(x.shape.sampleCount), .count(x.shape.count)], total: x.shape.count, waitFor: waitFor)
    }

    @discardableResult
    public static func backward(_ q: CommandQueue, y: Tensor, dy: Tensor, dx: Tensor, accumulate: Bool = false,
                                waitFor: [Event] = []) throws(CLNetError) -> Event {
        try checkSameShape("Sigmoid backward", ["y": y.shape, "dy": dy.shape, "dx": dx.shape])
        return try q.launch(.activation, "sigmoid_backward", y.arguments + dy.arguments + dx.arguments +
                            [.count(y.shape.sampleCount), .count(y.shape.count), .flag(accumulate)],
                            total: y.shape.count, waitFor: waitFor)
    }
}
