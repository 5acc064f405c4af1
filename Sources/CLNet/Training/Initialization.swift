#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Initialisation as the papers and torchvision do it.
extension Executor {
    /// Sets every parameter from a generator seeded with `seed` (the same seed gives the same
    /// weights):
    /// - convolutions: He normal with the ReLU gain over the fan-out, std sqrt(2 / (out x kH x kW)),
    ///   as torchvision's ResNets (He et al. 2015);
    /// - fully connected weights and every bias: uniform in +-1/sqrt(fan-in), PyTorch's default
    ///   (weights in timm's 1x1-convolution layout, [out, in, 1, 1], start as convolutions, as timm's do);
    /// - norms: weight 1, bias 0; running mean 0, running variance 1;
    /// - PReLU slopes: 0.25, PyTorch's default;
    /// - DCLS's kernel positions: normal(0, 0.5) clamped into their footprint, as DCLS's code;
    /// - then what the model asked for (`Parameter.initialization`): a factor on the default (He's
    ///   PReLU gain, Fixup's depth scaling) or a constant (Fixup's zeroed last layers);
    /// - with `zeroInitResidual`, the last norm of each residual branch starts at weight 0, so
    ///   that each block starts as the identity (torchvision's `zero_init_residual`).
    public func initialize(seed: UInt64, zeroInitResidual: Bool = false) throws(CLNetError) {
        var rng = SeededGenerator(seed: seed)
        var zeroed: Set<Int> = []
        if zeroInitResidual {
            for node in graph.nodes {
                guard case .add = node.operation, let p = graph.producers[node.inputs[0].index] else { continue }
                switch graph.nodes[p].operation {
                case .batchNorm, .groupNorm: zeroed.insert(graph.nodes[p].parameters[0])
                default: break
                }
            }
        }
        for (i, p) in graph.parameters.enumerated() {
            let n = p.shape.count
            var values: [Float]
            switch p.role {
            case .weight where p.shape.rank == 4:
                let std = (2.0 / Double(p.shape[0] * p.shape[2] * p.shape[3])).squareRoot()
                values = (0..<n).map { _ in Float(rng.normal() * std) }
            case .weight, .bias:
                // The fan-in of the layer this belongs to: its weight's per-output size.
                let owner = graph.nodes.first { $0.parameters.contains(i) }!
                let weight = graph.parameters[owner.parameters[0]].shape
                let bound = 1 / Double(max(weight.sampleCount, 1)).squareRoot()
                values = (0..<n).map { _ in Float(rng.uniform() * 2 * bound - bound) }
            case .normWeight:
                values = [Float](repeating: zeroed.contains(i) ? 0 : 1, count: n)
            case .normBias, .runningMean:
                values = [Float](repeating: 0, count: n)
            case .runningVar:
                values = [Float](repeating: 1, count: n)
            case .slope:
                values = [Float](repeating: 0.25, count: n)
            case .position:
                // DCLS's: normal with standard deviation 0.5 around the footprint's centre, clamped
                // into it.
                let bounds = p.bounds ?? -Float.infinity...Float.infinity
                values = (0..<n).map { _ in min(max(Float(rng.normal() * 0.5), bounds.lowerBound), bounds.upperBound) }
            }
            switch p.initialization {
            case .standard: break
            case let .scaled(factor): values = values.map { Float(Double($0) * factor) }
            case let .constant(v): values = [Float](repeating: Float(v), count: n)
            }
            try setParameter(p.name, values)
        }
    }
}

/// SplitMix64, with Box-Muller normals: small, fast, and the same sequence on every platform for
/// a seed, which is what makes initialisation (and the tests' random inputs) repeatable.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    public var state: UInt64
    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    public mutating func uniform() -> Double { Double(next() >> 11) * 0x1p-53 }

    /// Standard normal.
    public mutating func normal() -> Double {
        let u = max(uniform(), 0x1p-53), v = uniform()
        return (-2 * log(u)).squareRoot() * cos(2 * Double.pi * v)
    }
}
