// Residual additions and channel-wise scaling on the device. CPU reference:
// Reference/ElementwiseReference.swift; kernels: Kernels/Elementwise.cl.

/// The residual addition y = a + b, optionally fused with the ReLU that follows it
/// (y = max(a + b, 0)), which reads and writes each tensor once. `y` may be `a` or `b`.
public enum Add {
    @discardableResult
    public static func forward(_ q: CommandQueue, a: Tensor, b: Tensor, y: Tensor, relu: Bool = false,
                               waitFor: [Event] = []) throws(CLNetError) -> Event {
        try checkSameShape(relu ? "Add+ReLU" : "Add", ["a": a.shape, "b": b.shape, "y": y.shape])
        try checkIndexable("Add", [a, b, y])
        let sample = a.shape.sampleCount, tiles = CommandQueue.tiles(sample)
        return try q.launchRuns(.elementwise, "add_forward", a.arguments + b.arguments + y.arguments +
                                [.count(sample), .count(a.shape.n), .count(tiles), .flag(relu)],
                                waitFor: waitFor)
    }

    /// The gradient for one addend (both addends receive the same): dy, masked by y > 0 when the
    /// ReLU was fused, which is ReLU's backward. Without the ReLU it is dy itself, which a graph
    /// can pass on without a copy; asked for, it is one.
    @discardableResult
    public static func backward(_ q: CommandQueue, y: Tensor, dy: Tensor, dx: Tensor, relu: Bool = false,
                                accumulate: Bool = false, waitFor: [Event] = []) throws(CLNetError) -> Event {
        try checkSameShape(relu ? "Add+ReLU backward" : "Add backward", ["y": y.shape, "dy": dy.shape, "dx": dx.shape])
        return relu ? try ReLU.backward(q, y: y, dy: dy, dx: dx, accumulate: accumulate, waitFor: waitFor)
            : try q.copy(from: dy, to: dx, accumulate: accumulate, waitFor: waitFor)
    }
}

/// The element-wise product y = a * b of two tensors of one shape: the Residual Attention
/// Network's (1 + M(x)) * T(x). `y` may be `a` or `b`.
public enum Multiply {
    static func run(_ q: CommandQueue, _ op: String, _ a: Tensor, _ b: Tensor, _ y: Tensor, accumulate: Bool,
                    waitFor: [Event]) throws(CLNetError) -> Event {
        try checkSameShape(op, ["a": a.shape, "b": b.shape, "y": y.shape])
        let sample = a.shape.sampleCount, tiles = CommandQueue.tiles(sample)
        return try q.launchRuns(.elementwise, "multiply", a.arguments + b.arguments + y.arguments +
                                [.count(sample), .count(a.shape.n), .count(tiles), .flag(accumulate)], waitFor: waitFor)
    }

    @discardableResult
    public static func forward(_ q: CommandQueue, a: Tensor, b: Tensor, y: Tensor, waitFor: [Event] = []) throws(CLNetError) -> Event {
        try run(q, "Multiply", a, b, y, accumulate: false, waitFor: waitFor)
    }

    /// The gradient for one factor: dy times the `other` factor, added to `dx` when `accumulate`.
    @discardableResult
    public static func backward(_ q: CommandQueue, other: Tensor, dy: Tensor, dx: Tensor, accumulate: Bool = false,
                                waitFor: [Event] = []) throws(CLNetError) -> Event {
        try run(q, "Multiply backward", dy, other, dx, accumulate: accumulate, waitFor: waitFor)
    }
}

/// y[n, c, :, :] = x[n, c, :, :] * s[n, c], the rescaling of squeeze-and-excitation blocks.
public enum ChannelScale {
    static func check(_ op: String, _ x: Shape, _ s: Tensor) throws(CLNetError) {
        try checkPerChannel(op, "scale", s, count: x.rank == 4 ? x.n * x.c : nil, of: x,
                            needs: "needs [\(x.n), \(x.rank > 1 ? x.c : 0)]")
    }

    @discardableResult
    public static func forward(_ q: CommandQueue, x: Tensor, scale: Tensor, y: Tensor,
                               waitFor: [Event] = []) throws(CLNetError) -> Event {
        try check("ChannelScale", x.shape, scale)
        try checkSameShape("ChannelScale", ["x": x.shape, "y": y.shape])
        return try apply(q, x, scale, y, accumulate: false, waitFor: waitFor)
    }

    /// y = x * s per channel; the input gradient is the same product of dy.
    static func apply(_ q: CommandQueue, _ x: Tensor, _ scale: Tensor, _ y: Tensor, accumulate: Bool,
                      waitFor: [Event]) throws(CLNetError) -> Event {
        let plane = x.shape.h * x.shape.w, tiles = CommandQueue.tiles(plane)
        return try q.launchRuns(.elementwise, "channel_scale_apply", x.arguments + scale.vectorArguments + y.arguments +
                                [.count(x.shape.n), .count(x.shape.c), .count(plane), .count(tiles), .flag(accumulate)],
                                waitFor: waitFor)
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
            events.append(try apply(q, dy, scale, dx, accumulate: accumulate, waitFor: waitFor))
        }
        if let dscale {
            try check("ChannelScale backward", x.shape, dscale)
            events.append(try q.launchRuns(.elementwise, "channel_scale_backward_scale", x.arguments + dy.arguments +
                                           dscale.vectorArguments + [.count(x.shape.n), .count(x.shape.c), .count(plane),
                                           .flag(accumulate)], waitFor: waitFor))
        }
        return events
    }
}

/// Selective kernels' fusion (Li et al. 2019): y = sum over m of a_m * U_m, where the per-sample,
/// per-channel weights a = softmax over branches of the attention logits z [N, M*C] (branch m's
/// logits at channels m*C ..< (m+1)*C). Two to four branches.
public enum SelectiveSum {
    static func check(_ op: String, _ branches: [Tensor], _ z: Tensor) throws(CLNetError) -> Shape {
        guard (2...4).contains(branches.count) else {
            throw .invalidShape(operation: op, message: "takes 2 to 4 branches, got \(branches.count)")
        }
        let u = branches[0].shape
        for b in branches {
            try checkSameShape(op, ["branch 0": u, "branch": b.shape])
        }
        guard u.rank == 4, z.isDense, z.shape.count == u.n * branches.count * u.c else {
            throw .invalidShape(operation: op, message: "logits \(z.shape) must be dense [\(u.n), \(branches.count * (u.rank > 1 ? u.c : 0))] for branches \(u)")
        }
        try checkIndexable(op, branches)
        return u
    }

    /// The four branch slots of the kernels; unused ones repeat branch 0.
    static func branchArguments(_ branches: [Tensor]) throws(CLNetError) -> [KernelArgument] {
        var arguments: [KernelArgument] = []
        for m in 0..<4 { arguments += try branches[m < branches.count ? m : 0].arguments }
        return arguments
    }

    @discardableResult
    public static func forward(_ q: CommandQueue, branches: [Tensor], logits z: Tensor, y: Tensor,
                               waitFor: [Event] = []) throws(CLNetError) -> Event {
        let u = try check("SelectiveSum", branches, z)
        try checkSameShape("SelectiveSum", ["branches": u, "y": y.shape])
        return try q.launch(.elementwise, "selective_sum_forward", branchArguments(branches) + z.vectorArguments + y.arguments +
                            [.count(u.c), .count(u.h * u.w), .count(branches.count), .count(u.count)],
                            total: u.count, waitFor: waitFor)
    }

    /// Gradients for each branch (nil where none is needed) and for the logits.
    @discardableResult
    public static func backward(_ q: CommandQueue, branches: [Tensor], logits z: Tensor, dy: Tensor, dbranches: [Tensor?],
                                dlogits: Tensor?, accumulate: [Bool]? = nil, accumulateLogits: Bool = false,
                                waitFor: [Event] = []) throws(CLNetError) -> [Event] {
        let u = try check("SelectiveSum backward", branches, z)
        try checkSameShape("SelectiveSum backward", ["branches": u, "dy": dy.shape])
        let plane = u.h * u.w
        var events: [Event] = []
        for (m, d) in dbranches.enumerated() {
            guard let d else { continue }
            try checkSameShape("SelectiveSum backward", ["branches": u, "dbranch": d.shape])
            events.append(try q.launch(.elementwise, "selective_sum_backward_branch", z.vectorArguments + dy.arguments +
                                       d.arguments + [.count(u.c), .count(plane), .count(branches.count), .count(m),
                                       .count(u.count), .flag(accumulate?[m] ?? false)], total: u.count, waitFor: waitFor))
        }
        if let dlogits {
            guard dlogits.isDense, dlogits.shape.count == z.shape.count else {
                throw .invalidShape(operation: "SelectiveSum backward", message: "dlogits \(dlogits.shape) must be dense like the logits \(z.shape)")
            }
            events.append(try q.reduce(.elementwise, "selective_sum_backward_logits", branchArguments(branches) +
                                       z.vectorArguments + dy.arguments + dlogits.vectorArguments +
                                       [.count(u.c), .count(plane), .count(branches.count), .flag(accumulateLogits)],
                                       groups: u.n * u.c, waitFor: waitFor))
        }
        return events
    }
}

/// y = x * scale + bias with one scalar each (Fixup, Zhang et al. 2019). `parameters` holds the
/// scale (when `hasScale`) and then the bias (when `hasBias`).
public enum ScalarAffine {
    static func check(_ op: String, _ parameters: Tensor, hasScale: Bool, hasBias: Bool) throws(CLNetError) {
        let count = (hasScale ? 1 : 0) + (hasBias ? 1 : 0)
        guard count > 0, parameters.isDense, parameters.shape.count == count else {
            throw .invalidShape(operation: op, message: "needs \(count) dense parameter values (scale, bias), got \(parameters.shape)")
        }
    }

    @discardableResult
    public static func forward(_ q: CommandQueue, x: Tensor, parameters: Tensor, hasScale: Bool, hasBias: Bool, y: Tensor,
                               waitFor: [Event] = []) throws(CLNetError) -> Event {
        try check("ScalarAffine", parameters, hasScale: hasScale, hasBias: hasBias)
        try checkSameShape("ScalarAffine", ["x": x.shape, "y": y.shape])
        try checkIndexable("ScalarAffine", [x, y])
        return try q.launch(.elementwise, "scalar_affine_forward", x.arguments + parameters.vectorArguments +
                            [.flag(hasScale), .flag(hasBias)] + y.arguments +
                            [.count(x.shape.sampleCount), .count(x.shape.count)], total: x.shape.count, waitFor: waitFor)
    }

    /// Work-groups of the first reduction stage; their partial sums need `2 * partialGroups` floats.
    public static let partialGroups = 64

    /// Gradients for the input and the parameters (either may be nil). The parameter gradient
    /// needs `workspace`, at least `2 * partialGroups` floats.
    @discardableResult
    public static func backward(_ q: CommandQueue, x: Tensor, parameters: Tensor, hasScale: Bool, hasBias: Bool, dy: Tensor,
                                dx: Tensor?, dparameters: Tensor?, workspace: Tensor?, accumulate: Bool = false,
                                accumulateParameters: Bool = false, waitFor: [Event] = []) throws(CLNetError) -> [Event] {
        try check("ScalarAffine backward", parameters, hasScale: hasScale, hasBias: hasBias)
        try checkSameShape("ScalarAffine backward", ["x": x.shape, "dy": dy.shape])
        var events: [Event] = []
        if let dx {
            try checkSameShape("ScalarAffine backward", ["x": x.shape, "dx": dx.shape])
            events.append(try q.launch(.elementwise, "scalar_affine_backward_input", dy.arguments + parameters.vectorArguments +
                                       [.flag(hasScale)] + dx.arguments + [.count(x.shape.sampleCount), .count(x.shape.count),
                                       .flag(accumulate)], total: x.shape.count, waitFor: waitFor))
        }
        if let dparameters {
            try check("ScalarAffine backward", dparameters, hasScale: hasScale, hasBias: hasBias)
            guard let workspace, workspace.isDense, workspace.shape.count >= 2 * partialGroups else {
                throw .invalidShape(operation: "ScalarAffine backward", message: "needs a workspace of \(2 * partialGroups) floats")
            }
            let partial = try q.reduce(.elementwise, "scalar_affine_backward_partial", x.arguments + dy.arguments +
                                       [.buffer(workspace.buffer), .count(workspace.offset), .flag(hasScale)] +
                                       [.count(x.shape.sampleCount), .count(x.shape.count)],
                                       groups: partialGroups, waitFor: waitFor)
            events.append(try q.reduce(.elementwise, "scalar_affine_backward_final",
                                       [.buffer(workspace.buffer), .count(workspace.offset), .count(partialGroups)] +
                                       dparameters.vectorArguments + [.flag(hasScale), .flag(hasBias), .flag(accumulateParameters)],
                                       groups: 1, waitFor: [partial]))
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
        return try q.launchRuns(.elementwise, "pad_shortcut_forward", x.arguments + y.arguments + geometry(x.shape, out) +
                                [.count(out.n)], waitFor: waitFor)
    }

    @discardableResult
    public func backward(_ q: CommandQueue, dy: Tensor, dx: Tensor, accumulate: Bool = false,
                         waitFor: [Event] = []) throws(CLNetError) -> Event {
        let out = try outputShape(dx.shape)
        try checkSameShape("PadShortcut backward", ["expected output gradient": out, "dy": dy.shape])
        return try q.launchRuns(.elementwise, "pad_shortcut_backward", dy.arguments + dx.arguments + geometry(dx.shape, out) +
                                [.count(out.n), .flag(accumulate)], waitFor: waitFor)
    }
}

extension GraphBuilder {
    /// The element-wise product of `a` and `b`, of one shape (see `Multiply`).
    public mutating func multiply(_ a: Value, _ b: Value, name: String) throws(CLNetError) -> Value {
        try require(shape(a) == shape(b), name, "cannot multiply \(shape(a)) from \(origin(a)) and \(shape(b)) from \(origin(b))")
        return try appendNode(name, .multiply, [a, b], shape(a), [])
    }
}
