#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// AutoInit (Bingham and Miikkulainen, AAAI 2022): the mean and mean square of the signal are
/// carried through the graph, node by node, from those of the input, and each weighted layer
/// (convolution, fully connected, deformable, dendritic, DCLS) draws its weights from
/// N(0, 1 / (fan-in · E[x²])) so that its output has unit variance whatever came before it:
/// norms or none, any depth. The carrying assumes Gaussian pre-activations (ReLU, sigmoid,
/// max pooling and spikes are integrated over one) and independent summands. Pooling keeps the
/// variance (neighbouring values are correlated, the more so the deeper the layer), and a
/// selective sum takes its branches' average. Weights the model fixes to a constant
/// (`ParameterInit.constant`: deformable offsets, Fixup's zeroed layers) keep it: they are part
/// of the design, not of the scale.
public enum AutoInit {
    /// A signal's mean and mean square, averaged over its elements.
    public struct Moments: Sendable, Equatable {
        public var mean: Double
        public var square: Double
        public init(mean: Double, square: Double) {
            self.mean = mean
            self.square = square
        }
        public var variance: Double { max(square - mean * mean, 0) }
        /// The moments of `values`.
        public init(of values: [Float]) {
            var s = 0.0, s2 = 0.0
            for v in values { s += Double(v); s2 += Double(v) * Double(v) }
            let n = Double(max(values.count, 1))
            self.init(mean: s / n, square: s2 / n)
        }
    }

    /// The new weights of every weighted layer of `graph`, by parameter name, for an input
    /// with moments `input` and the other parameters' current `values`; drawn from `seed`.
    public static func weights(for graph: Graph, values: [String: [Float]], input: Moments,
                               seed: UInt64) throws(CLNetError) -> [String: [Float]] {
        // Each use of a shared weight would draw it again for its own input's moments.
        try graph.refuseSharedParameters("AutoInit")
        var rng = SeededGenerator(seed: seed)
        var moments = [Moments?](repeating: nil, count: graph.shapes.count)
        for (_, v) in graph.inputs { moments[v.index] = input }
        var drawn: [String: [Float]] = [:]
        for node in graph.nodes {
            let inputs = node.inputs.map { moments[$0.index] ?? input }, x = inputs[0]
            let p = try node.parameters.map { i throws(CLNetError) in try graph.checkedParameter(i, in: values, for: "AutoInit") }
            let xs = graph.shape(of: node.inputs[0])
            // A weighted layer: its weight (parameter 0) and bias (at `bias`, if any), its fan-in,
            // and the mean square its products see.
            func weighted(fanIn: Int, bias: Int?, square: Double) -> Moments {
                let weight = graph.parameters[node.parameters[0]]
                let b = bias.map { p[$0] } ?? []
                let bm = Moments(of: b)
                var out: Double
                if case .constant = weight.initialization {
                    out = Double(fanIn) * Moments(of: p[0]).square * square
                } else {
                    let std = 1 / (Double(fanIn) * max(square, 1e-12)).squareRoot()
                    drawn[weight.name] = (0..<weight.shape.count).map { _ in Float(rng.normal() * std) }
                    out = 1
                }
                return Moments(mean: b.isEmpty ? 0 : bm.mean, square: out + (b.isEmpty ? 0 : bm.square))
            }
            let y: Moments
            switch node.operation {
            case let .conv(c, bias):
                y = weighted(fanIn: c.inChannels / c.groups * c.kernel.h * c.kernel.w, bias: bias ? 1 : nil,
                             square: x.square * coverage(c, xs))
            case let .deformConv(op, bias):
                y = weighted(fanIn: op.conv.inChannels / op.conv.groups * op.taps, bias: bias ? 1 : nil,
                             square: x.square * coverage(op.conv, xs))
            case let .linear(_, bias):
                y = weighted(fanIn: xs.sampleCount, bias: bias ? 1 : nil, square: x.square)
            case let .dendritic(op, bias):
                // Each connection's ReLU with its bias, which starts at 0.
                let c = op.conv
                y = weighted(fanIn: c.inChannels / c.groups * c.kernel.h * c.kernel.w, bias: bias ? 2 : nil,
                             square: relu(x).square * (xs.rank == 4 ? coverage(c, xs) : 1))
            case let .dcls(op, bias):
                // An element spread over its taps with bilinear factors f passes Σ f² of its
                // weight's variance (1 only at whole positions).
                var energy = 0.0
                Reference.forEachDCLSTap(positions: p[1].map(Double.init), op: op) { _, _, f, _, _ in energy += f * f }
                y = weighted(fanIn: op.conv.inChannels / op.conv.groups * op.count, bias: bias ? 2 : nil,
                             square: x.square * coverage(op.conv, xs) * energy / Double(max(op.weightShape.count, 1)))
            case .batchNorm(let r, _, _), .groupNorm(_, let r, _):
                // Channel c leaves as N(beta_c, gamma_c^2).
                let channels = zip(p[0], p[1]).map { g, b in
                    let m = Moments(mean: Double(b), square: Double(b) * Double(b) + Double(g) * Double(g))
                    return r ? relu(m) : m
                }
                y = average(channels)
            case .relu:
                y = relu(x)
            case let .add(r):
                let sum = Moments(mean: x.mean + inputs[1].mean,
                                  square: x.variance + inputs[1].variance + pow(x.mean + inputs[1].mean, 2))
                y = r ? relu(sum) : sum
            case let .maxPool(pool):
                y = maximum(of: pool.kernel.h * pool.kernel.w, x)
            case .concat:
                let channels = node.inputs.map { Double(graph.shape(of: $0).c) }, total = channels.reduce(0, +)
                y = Moments(mean: zip(inputs, channels).map { $0.mean * $1 }.reduce(0, +) / total,
                            square: zip(inputs, channels).map { $0.square * $1 }.reduce(0, +) / total)
            case let .dropout(rate), let .stochasticDepth(rate):
                y = Moments(mean: x.mean, square: x.square / Double(1 - rate))
            case .padShortcut:
                let kept = Double(xs.c) / Double(graph.shape(of: node.output).c)
                y = Moments(mean: x.mean * kept, square: x.square * kept)
            case .sigmoid:
                y = gaussian(x) { 1 / (1 + exp(-$0)) }
            case .prelu:
                let a = Moments(of: p[0]).mean, positive = relu(x), negative = relu(Moments(mean: -x.mean, square: x.square))
                y = Moments(mean: positive.mean - a * negative.mean, square: positive.square + a * a * negative.square)
            case .channelScale:
                y = Moments(mean: x.mean * inputs[1].mean, square: x.square * inputs[1].square)
            case let .selectiveSum(m):
                y = average(Array(inputs.prefix(m)))
            case let .scalarAffine(hasScale, hasBias):
                let a = hasScale ? Double(p[0][0]) : 1, b = hasBias ? Double(p[hasScale ? 1 : 0][0]) : 0
                y = Moments(mean: a * x.mean + b, square: a * a * x.square + 2 * a * b * x.mean + b * b)
            case .spikingNeuron(let neuron):
                // A spike where the input charges past the threshold in one step.
                let fire = 1 - normalCDF((Double(neuron.threshold) - x.mean) / max(x.variance.squareRoot(), 1e-12))
                y = Moments(mean: fire, square: fire)
            case .avgPool, .globalAvgPool, .channelSlice, .timeRepeat, .timeMean:
                y = x
            case let .sewConnect(connect):
                let (a, b) = (x.mean, inputs[1].mean)
                switch connect {
                case .add: y = Moments(mean: a + b, square: x.variance + inputs[1].variance + (a + b) * (a + b))
                case .and: y = Moments(mean: a * b, square: a * b)
                case .iand: y = Moments(mean: (1 - a) * b, square: (1 - a) * b)
                }
            case .softmaxCrossEntropy, .distillation, .pixelCrossEntropy, .meanSquaredError:
                y = x
            case .upsample:
                // Resampling keeps a plane's moments (bilinear's averages lower the variance a
                // little, which this ignores).
                y = x
            case .multiply:
                // Independent factors: E[ab] = E[a]E[b], E[(ab)^2] = E[a^2]E[b^2].
                y = Moments(mean: x.mean * inputs[1].mean, square: x.square * inputs[1].square)
            }
            moments[node.output.index] = y
        }
        return drawn
    }

    /// The share of a convolution's taps that land inside input `x` rather than in its zero
    /// padding, over all output pixels: the padding's zeros lower the output's variance by it
    /// (at 8x8, a 3x3 convolution's taps are 84% inside, and twelve such layers lost 0.12 of
    /// the variance uncounted).
    static func coverage(_ c: Conv2D, _ x: Shape) -> Double {
        func axis(_ size: Int, _ k: Int, _ s: Int, _ p: Int, _ d: Int) -> Double {
            let out = (size + 2 * p - (k - 1) * d - 1) / s + 1
            guard out > 0 else { return 1 }
            var inside = 0
            for o in 0..<out { for t in 0..<k where (0..<size).contains(o * s - p + t * d) { inside += 1 } }
            return Double(inside) / Double(out * k)
        }
        return axis(x.h, c.kernel.h, c.stride.h, c.padding.h, c.dilation.h) * axis(x.w, c.kernel.w, c.stride.w, c.padding.w, c.dilation.w)
    }

    static func average(_ m: [Moments]) -> Moments {
        let n = Double(max(m.count, 1))
        return Moments(mean: m.map(\.mean).reduce(0, +) / n, square: m.map(\.square).reduce(0, +) / n)
    }

    static func normalCDF(_ z: Double) -> Double { 0.5 * erfc(-z / 2.0.squareRoot()) }
    static func normalPDF(_ z: Double) -> Double { exp(-z * z / 2) / (2 * Double.pi).squareRoot() }

    /// ReLU of N(m, v): E[y] = m Φ(a) + s φ(a), E[y²] = (m² + v) Φ(a) + m s φ(a), a = m / s.
    static func relu(_ x: Moments) -> Moments {
        let s = x.variance.squareRoot(), m = x.mean
        guard s > 1e-12 else { return Moments(mean: max(m, 0), square: max(m, 0) * max(m, 0)) }
        let a = m / s, cdf = normalCDF(a), pdf = normalPDF(a)
        return Moments(mean: m * cdf + s * pdf, square: (m * m + s * s) * cdf + m * s * pdf)
    }

    /// The moments of f(x) for x ~ N(mean, variance), by the midpoint rule over ±8 deviations.
    static func gaussian(_ x: Moments, _ f: (Double) -> Double) -> Moments {
        let s = x.variance.squareRoot(), steps = 4000, h = 16.0 / Double(steps)
        var m = 0.0, q = 0.0
        for i in 0..<steps {
            let z = -8 + (Double(i) + 0.5) * h, w = normalPDF(z) * h, v = f(x.mean + s * z)
            m += w * v
            q += w * v * v
        }
        return Moments(mean: m, square: q)
    }

    /// The maximum of `k` independent draws of N(mean, variance): density k φ Φ^(k-1).
    static func maximum(of k: Int, _ x: Moments) -> Moments {
        let s = x.variance.squareRoot(), steps = 4000, h = 16.0 / Double(steps)
        var e = 0.0, e2 = 0.0
        for i in 0..<steps {
            let z = -8 + (Double(i) + 0.5) * h, w = Double(k) * normalPDF(z) * pow(normalCDF(z), Double(k - 1)) * h
            e += w * z
            e2 += w * z * z
        }
        let mean = x.mean + s * e, variance = s * s * (e2 - e * e)
        return Moments(mean: mean, square: variance + mean * mean)
    }
}

extension Executor {
    /// Draws every weighted layer's weights by AutoInit (see `AutoInit`) for inputs with the
    /// moments of `sample` (a batch of training inputs), keeping every other parameter.
    public func autoInitialize(sample: [Float], seed: UInt64) throws(CLNetError) {
        var values: [String: [Float]] = [:]
        for p in graph.parameters { values[p.name] = try parameter(p.name) }
        let drawn = try AutoInit.weights(for: graph, values: values, input: AutoInit.Moments(of: sample), seed: seed)
        for (name, w) in drawn { try setParameter(name, w) }
    }
}
