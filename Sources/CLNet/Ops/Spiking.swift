// Spiking neurons and what a spiking network needs around them (SEW ResNet, Fang et al. 2021),
// on the device. CPU reference: Reference/SpikingReference.swift; kernels: Kernels/Spiking.cl.
//
// Time steps live in the batch, as in SpikingJelly's multi-step mode: a tensor of T*N samples
// holds step t of sample n at t*N + n. Convolutions, norms and pooling then run on every step at
// once (batch norm's statistics over all T*N, as SpikingJelly's), and only the neurons walk the
// steps in order.

/// A layer of spiking neurons, SpikingJelly's `IFNode` or `LIFNode` in multi-step mode, over
/// inputs [T*N, ...]: each neuron charges its membrane potential V with its input (H = V + X,
/// or H = V + (X - V) / tau when leaky), fires a spike S = 1 when H reaches the threshold, and
/// resets (to 0, or by the threshold). V starts at 0 for each sample. The spike's gradient is a
/// surrogate's (SpikingJelly's `surrogate.ATan` or `surrogate.Sigmoid`), and training
/// backpropagates through time.
public struct SpikingNeuron: Sendable, Hashable, CustomStringConvertible {
    /// How the membrane potential charges.
    public enum Dynamics: Sendable, Hashable {
        /// H = V + X (`IFNode`).
        case integrateAndFire
        /// H = V + (X - V) / tau (`LIFNode` with `decay_input=True`).
        case leaky(tau: Float)
    }

    /// The function whose derivative stands in for the spike's.
    public enum Surrogate: Sendable, Hashable {
        /// arctan(pi/2 alpha u) / pi + 1/2 (SpikingJelly's default alpha: 2).
        case atan(alpha: Float)
        /// sigmoid(alpha u) (SpikingJelly's default alpha: 4).
        case sigmoid(alpha: Float)
    }

    /// Time steps T; the input holds T*N samples.
    public var steps: Int
    public var dynamics: Dynamics
    public var threshold: Float
    /// Reset to 0 after a spike (SpikingJelly's `v_reset=0`), or subtract the threshold (`None`).
    public var hardReset: Bool
    public var surrogate: Surrogate
    /// Treat the reset's spike as a constant in the backward pass (`detach_reset=True`).
    public var detachReset: Bool

    public init(steps: Int, dynamics: Dynamics = .integrateAndFire, threshold: Float = 1, hardReset: Bool = true,
                surrogate: Surrogate = .atan(alpha: 2), detachReset: Bool = true) {
        self.steps = steps
        self.dynamics = dynamics
        self.threshold = threshold
        self.hardReset = hardReset
        self.surrogate = surrogate
        self.detachReset = detachReset
    }

    /// The most time steps the kernels take (the backward pass keeps each step's H in registers).
    public static let maximumSteps = 64

    public var description: String {
        let kind: String
        switch dynamics {
        case .integrateAndFire: kind = "IF"
        case let .leaky(tau): kind = "LIF tau \(tau)"
        }
        let grad: String
        switch surrogate {
        case let .atan(alpha): grad = "atan \(alpha)"
        case let .sigmoid(alpha): grad = "sigmoid \(alpha)"
        }
        return "\(kind) T=\(steps) threshold \(threshold) \(hardReset ? "hard" : "soft") reset, \(grad) surrogate\(detachReset ? ", reset detached" : "")"
    }

    /// Throws unless the neuron's constants are usable and `x` holds whole time steps.
    public func check(_ x: Shape) throws(CLNetError) {
        let op = "SpikingNeuron(\(self))"
        guard (1...Self.maximumSteps).contains(steps) else {
            throw .invalidShape(operation: op, message: "takes 1 to \(Self.maximumSteps) time steps, not \(steps)")
        }
        guard x.rank >= 2, x.n % steps == 0 else {
            throw .invalidShape(operation: op, message: "x \(x) must hold T*N samples for T = \(steps)")
        }
        var constants = [threshold]
        if case let .leaky(tau) = dynamics {
            // Below 1, dH/dV = 1 - 1/tau turns negative and the potential oscillates; SpikingJelly's
            // LIFNode refuses it too.
            guard tau > 1 else { throw .invalidShape(operation: op, message: "tau must be above 1, not \(tau)") }
            constants.append(tau)
        }
        switch surrogate { case let .atan(a), let .sigmoid(a): constants.append(a) }
        guard constants.allSatisfy({ $0.isFinite && $0 > 0 }) else {
            throw .invalidShape(operation: op, message: "threshold, tau and alpha must be positive and finite")
        }
    }

    /// The kernels' constants (Spiking.cl).
    var macros: [String: String] {
        var m = ["SPIKE_T": "\(steps)", "VTH": Self.literal(threshold), "HARD_RESET": hardReset ? "1" : "0",
                 "DETACH_RESET": detachReset ? "1" : "0", "LEAKY": "0", "TAU": "1.0f"]
        if case let .leaky(tau) = dynamics { (m["LEAKY"], m["TAU"]) = ("1", Self.literal(tau)) }
        switch surrogate {
        case let .atan(alpha): (m["SURROGATE"], m["ALPHA"]) = ("0", Self.literal(alpha))
        case let .sigmoid(alpha): (m["SURROGATE"], m["ALPHA"]) = ("1", Self.literal(alpha))
        }
        return m
    }

    /// A float constant as OpenCL C reads it back exactly.
    static func literal(_ v: Float) -> String { "\(v)f" }

    /// Launches one of the neuron kernels over (element of a sample, 1, sample of the N).
    private func launch(_ q: CommandQueue, _ name: String, _ x: Shape, _ arguments: [KernelArgument],
                        waitFor: [Event]) throws(CLNetError) -> Event {
        try q.launchPlanes(.spiking, name, arguments, plane: x.sampleCount, channels: 1, batch: x.n / steps,
                           specialised: macros, waitFor: waitFor)
    }

    /// y = the spikes of x [T*N, ...].
    @discardableResult
    public func forward(_ q: CommandQueue, x: Tensor, y: Tensor, waitFor: [Event] = []) throws(CLNetError) -> Event {
        try check(x.shape)
        try checkSameShape("SpikingNeuron(\(self))", ["x": x.shape, "y": y.shape])
        return try launch(q, "spike_forward", x.shape, x.arguments + y.arguments + [try .count(x.shape.n / steps)],
                          waitFor: waitFor)
    }

    /// dx (=, or += with `accumulate`) the gradient through time, from the input x and the
    /// spikes' gradient dy.
    @discardableResult
    public func backward(_ q: CommandQueue, x: Tensor, dy: Tensor, dx: Tensor, accumulate: Bool = false,
                         waitFor: [Event] = []) throws(CLNetError) -> Event {
        try check(x.shape)
        try checkSameShape("SpikingNeuron(\(self)) backward", ["x": x.shape, "dy": dy.shape, "dx": dx.shape])
        return try launch(q, "spike_backward", x.shape, x.arguments + dy.arguments + dx.arguments +
                          [try .count(x.shape.n / steps), .flag(accumulate)], waitFor: waitFor)
    }
}

/// Moving between a network's N samples and its T*N time steps: the input repeated at every
/// step, and the output's mean over the steps (SpikingJelly's models are fed
/// `x.unsqueeze(0).repeat(T, ...)` and read out with `.mean(0)`).
public enum TimeSteps {
    /// [T*N, ...] for x [N, ...].
    public static func repeatedShape(_ x: Shape, steps: Int) throws(CLNetError) -> Shape {
        guard steps >= 1, x.rank >= 2 else {
            throw .invalidShape(operation: "TimeSteps.repeat", message: "needs T >= 1 and x [N, ...]; got T = \(steps), x \(x)")
        }
        return Shape([x.n * steps] + Array(x.dims.dropFirst()))
    }

    /// [N, ...] for x [T*N, ...].
    public static func meanShape(_ x: Shape, steps: Int) throws(CLNetError) -> Shape {
        guard steps >= 1, x.rank >= 2, x.n % steps == 0 else {
            throw .invalidShape(operation: "TimeSteps.mean", message: "x \(x) must hold T*N samples for T = \(steps)")
        }
        return Shape([x.n / steps] + Array(x.dims.dropFirst()))
    }

    /// big[t*N + n] (=, or +=) scale * small[n] for every step t.
    @discardableResult
    public static func broadcast(_ q: CommandQueue, small: Tensor, big: Tensor, steps: Int, scale: Float = 1,
                                 accumulate: Bool = false, waitFor: [Event] = []) throws(CLNetError) -> Event {
        try checkSameShape("TimeSteps.broadcast", ["big": big.shape, "small repeated": repeatedShape(small.shape, steps: steps)])
        return try q.launch(.spiking, "time_broadcast", small.arguments + big.arguments + arguments(small.shape, steps, scale) +
                            [.flag(accumulate)], total: small.shape.count, waitFor: waitFor)
    }

    /// small[n] (=, or +=) scale * the sum over t of big[t*N + n].
    @discardableResult
    public static func sum(_ q: CommandQueue, big: Tensor, small: Tensor, steps: Int, scale: Float = 1,
                           accumulate: Bool = false, waitFor: [Event] = []) throws(CLNetError) -> Event {
        try checkSameShape("TimeSteps.sum", ["small": small.shape, "big over time": meanShape(big.shape, steps: steps)])
        return try q.launch(.spiking, "time_sum", big.arguments + small.arguments + arguments(small.shape, steps, scale) +
                            [.flag(accumulate)], total: small.shape.count, waitFor: waitFor)
    }

    private static func arguments(_ small: Shape, _ steps: Int, _ scale: Float) throws(CLNetError) -> [KernelArgument] {
        try KernelArgument.counts([steps, small.n, small.sampleCount]) + [.float(scale), try .count(small.count)]
    }
}

/// SEW ResNet's spike-element-wise connection of a block's shortcut a and its branch's spikes b
/// (SpikingJelly's `sew_function`): ADD a + b, AND a b, IAND a (1 - b).
public enum SEWConnect: String, Sendable, Hashable, CaseIterable {
    case add, and, iand

    var mode: Int { self == .add ? 0 : self == .and ? 1 : 2 }

    @discardableResult
    public func forward(_ q: CommandQueue, shortcut a: Tensor, branch b: Tensor, y: Tensor,
                        waitFor: [Event] = []) throws(CLNetError) -> Event {
        try checkSameShape("SEWConnect(\(rawValue))", ["shortcut": a.shape, "branch": b.shape, "y": y.shape])
        return try q.launch(.spiking, "sew_connect", a.arguments + b.arguments + y.arguments +
                            KernelArgument.counts([mode, a.shape.sampleCount, a.shape.count]), total: a.shape.count,
                            waitFor: waitFor)
    }

    /// The shortcut's and the branch's gradients (either may be nil), each overwriting or adding.
    @discardableResult
    public func backward(_ q: CommandQueue, shortcut a: Tensor, branch b: Tensor, dy: Tensor, dshortcut: Tensor?,
                         dbranch: Tensor?, accumulateShortcut: Bool = false, accumulateBranch: Bool = false,
                         waitFor: [Event] = []) throws(CLNetError) -> Event {
        try checkSameShape("SEWConnect(\(rawValue)) backward", ["shortcut": a.shape, "branch": b.shape, "dy": dy.shape,
                                                                "dshortcut": dshortcut?.shape ?? a.shape,
                                                                "dbranch": dbranch?.shape ?? a.shape])
        return try q.launch(.spiking, "sew_connect_backward", a.arguments + b.arguments + dy.arguments +
                            (dshortcut ?? dy).arguments + [.flag(dshortcut != nil), .flag(accumulateShortcut)] +
                            (dbranch ?? dy).arguments + [.flag(dbranch != nil), .flag(accumulateBranch)] +
                            KernelArgument.counts([mode, a.shape.sampleCount, a.shape.count]), total: a.shape.count,
                            waitFor: waitFor)
    }
}

extension GraphBuilder {
    /// A layer of spiking neurons (see `SpikingNeuron`) over x [T*N, ...].
    public mutating func spikingNeuron(_ x: Value, _ neuron: SpikingNeuron, name: String) throws(CLNetError) -> Value {
        let out = try inferring(name, [x]) { () throws(CLNetError) in
            try neuron.check(shape(x))
            return shape(x)
        }
        return try appendNode(name, .spikingNeuron(neuron), [x], out, [])
    }

    /// x [N, ...] at each of `steps` time steps (see `Operation.timeRepeat`).
    public mutating func timeRepeat(_ x: Value, steps: Int, name: String) throws(CLNetError) -> Value {
        let out = try inferring(name, [x]) { () throws(CLNetError) in try TimeSteps.repeatedShape(shape(x), steps: steps) }
        return try appendNode(name, .timeRepeat(steps: steps), [x], out, [])
    }

    /// The mean of x [T*N, ...] over `steps` time steps (see `Operation.timeMean`).
    public mutating func timeMean(_ x: Value, steps: Int, name: String) throws(CLNetError) -> Value {
        let out = try inferring(name, [x]) { () throws(CLNetError) in try TimeSteps.meanShape(shape(x), steps: steps) }
        return try appendNode(name, .timeMean(steps: steps), [x], out, [])
    }

    /// SEW ResNet's connection of `shortcut` and `branch` (see `SEWConnect`).
    public mutating func sewConnect(_ shortcut: Value, _ branch: Value, _ connect: SEWConnect, name: String) throws(CLNetError) -> Value {
        try require(shape(shortcut) == shape(branch), name,
                    "cannot connect \(shape(shortcut)) from \(origin(shortcut)) and \(shape(branch)) from \(origin(branch))")
        return try appendNode(name, .sewConnect(connect), [shortcut, branch], shape(shortcut), [])
    }
}
