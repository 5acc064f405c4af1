#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// GradInit (Zhu, Ni, Xu, Kong, Huang and Goldstein, NeurIPS 2021): before training, learn one
/// scale factor per weight and bias tensor, starting at 1 on the default initialisation, so that
/// one step of the training's SGD from the scaled weights lowers the loss on a fresh batch as
/// much as it can, while the gradient's norm stays at most `gradientBound`. Each iteration takes
/// a batch S and the gradient g there:
/// - if |g| > gradientBound, the scales descend |g|²;
/// - else they descend L(S', θ - η g) on the next batch S', through g's own dependence on them.
///
/// Both need a Hessian-vector product (H g, and H u with u the gradient at θ - η g), which CLNet
/// takes as a central difference of two gradients at θ ± εv, since it has no double backward
/// (the paper's code differentiates through the gradient). The scales move by Adam and stay at
/// least `lowerBound`. Norm parameters, PReLU slopes and DCLS positions keep their values.
public struct GradInit: Sendable {
    /// Iterations: four forward and backward passes each (one of them on S') while the gradient's
    /// norm is within the bound, three while it is lowered.
    public var steps = 100
    /// η: the learning rate of the training's first step, which the objective looks through.
    public var learningRate = 0.1
    /// The Adam step of the scales.
    public var scaleRate = 0.01
    /// γ: the largest gradient norm the objective accepts before it lowers the norm instead.
    public var gradientBound = 1.0
    /// α's lower bound (the paper's 0.01).
    public var lowerBound = 0.01

    public init() {}

    /// What one run did: the scales by parameter name, and how many iterations lowered the
    /// gradient's norm instead of the loss after a step.
    public struct Result: Sendable {
        public var scales: [String: Double]
        public var normSteps: Int
        /// The loss on S' after the step, at the first and the last iteration that measured it.
        public var firstLoss: Double?
        public var lastLoss: Double?
    }

    /// Learns the scales on `executor` (a training executor without an optimizer, holding the
    /// initial weights), drawing batch i from `batch`, and leaves the scaled weights in it.
    public func run(_ executor: Executor, batch: (Int) throws(CLNetError) -> Batch) throws(CLNetError) -> Result {
        let probe = try Probe(executor)
        var alpha = [Double](repeating: 1, count: probe.names.count)
        var m = [Double](repeating: 0, count: alpha.count), v = m
        var result = Result(scales: [:], normSteps: 0)
        for t in 0..<steps {
            let s = try batch(2 * t)
            let step = try objectiveGradient(probe, alpha: alpha, batch: s, next: { () throws(CLNetError) in try batch(2 * t + 1) },
                                             seed: UInt32(t))
            if let loss = step.lossAfterStep {
                if result.firstLoss == nil { result.firstLoss = loss }
                result.lastLoss = loss
            } else {
                result.normSteps += 1
            }
            // Adam (β 0.9, 0.999), then the lower bound.
            for i in alpha.indices where step.gradient[i].isFinite {
                let g = step.gradient[i]
                m[i] = 0.9 * m[i] + 0.1 * g
                v[i] = 0.999 * v[i] + 0.001 * g * g
                let mh = m[i] / (1 - pow(0.9, Double(t + 1))), vh = v[i] / (1 - pow(0.999, Double(t + 1)))
                alpha[i] = max(lowerBound, alpha[i] - scaleRate * mh / (vh.squareRoot() + 1e-8))
            }
        }
        try probe.set(probe.scaled(alpha))
        for (i, n) in probe.names.enumerated() { result.scales[n] = alpha[i] }
        return result
    }

    /// One iteration's gradient with respect to the scales `alpha`, on batch `s` (and, when the
    /// gradient's norm is within the bound, the batch `next` gives): of |g|², or of the loss on
    /// the next batch after one SGD step. `lossAfterStep` is that loss, nil for the norm.
    func objectiveGradient(_ probe: Probe, alpha: [Double], batch s: Batch, next: () throws(CLNetError) -> Batch,
                           seed: UInt32) throws(CLNetError) -> (gradient: [Double], lossAfterStep: Double?) {
        let theta = probe.scaled(alpha)
        let g = try probe.gradient(at: theta, s, seed: seed).g
        if Probe.norm(g) > gradientBound {
            // d|g|²/dα_i = 2 (H g) · w_i.
            return (probe.blockDots(try probe.hessian(times: g, at: theta, s, seed: seed)).map { 2 * $0 }, nil)
        }
        let stepped = zip(theta, g).map { th, gr in zip(th, gr).map { $0 - Float(learningRate) * $1 } }
        let (loss, u) = try probe.gradient(at: stepped, try next(), seed: seed &+ 1_000_003)
        // dθ'/dα_i = w_i - η H w_i, and u · H w_i = (H u) · w_i.
        let hu = try probe.hessian(times: u, at: theta, s, seed: seed)
        return (zip(probe.blockDots(u), probe.blockDots(hu)).map { $0 - learningRate * $1 }, loss)
    }

    /// The tensors GradInit scales on an executor, their initial values, and the passes it runs.
    struct Probe {
        let executor: Executor
        let names: [String]
        let initial: [[Float]]

        init(_ executor: Executor) throws(CLNetError) {
            guard executor.optimizer == nil, executor.training else {
                throw .invalidState("GradInit runs its own passes on a training executor without an optimizer")
            }
            self.executor = executor
            names = executor.graph.parameters.filter { $0.trainable && ($0.role == .weight || $0.role == .bias) }.map(\.name)
            var values: [[Float]] = []
            for n in names { values.append(try executor.parameter(n)) }
            initial = values
        }

        func set(_ theta: [[Float]]) throws(CLNetError) { for (i, n) in names.enumerated() { try executor.setParameter(n, theta[i]) } }
        func scaled(_ alpha: [Double]) -> [[Float]] { zip(initial, alpha).map { w, a in w.map { $0 * Float(a) } } }

        /// The loss and the gradient at `theta` on batch `b`.
        func gradient(at theta: [[Float]], _ b: Batch, seed: UInt32) throws(CLNetError) -> (loss: Double, g: [[Float]]) {
            try set(theta)
            guard let reading = try executor.forward(["input": b.inputs], labels: b.labels, seed: seed) else {
                throw .invalidGraph("GradInit: the model has no loss node")
            }
            try executor.backward()
            var g: [[Float]] = []
            for n in names { g.append(try executor.gradient(n)) }
            return (Double(try reading.value().loss), g)
        }

        static func norm(_ x: [[Float]]) -> Double { x.reduce(0) { $0 + $1.reduce(0) { $0 + Double($1) * Double($1) } }.squareRoot() }

        /// H v at theta on batch b, by central differences of the gradient along v, a step of a
        /// thousandth of |theta|: large enough to rise above float32's rounding of the gradients.
        func hessian(times v: [[Float]], at theta: [[Float]], _ b: Batch, seed: UInt32) throws(CLNetError) -> [[Float]] {
            let eps = 1e-3 * max(Self.norm(theta), 1e-6) / max(Self.norm(v), 1e-12)
            func moved(_ sign: Double) -> [[Float]] { zip(theta, v).map { t, d in zip(t, d).map { $0 + Float(sign * eps) * $1 } } }
            let plus = try gradient(at: moved(1), b, seed: seed).g, minus = try gradient(at: moved(-1), b, seed: seed).g
            return zip(plus, minus).map { p, q in zip(p, q).map { Float(Double($0 - $1) / (2 * eps)) } }
        }

        /// d · w_i for each tensor i: the derivative along α_i of anything whose gradient in θ is d.
        func blockDots(_ d: [[Float]]) -> [Double] {
            zip(d, initial).map { d, w in zip(d, w).reduce(0) { $0 + Double($1.0) * Double($1.1) } }
        }
    }
}
