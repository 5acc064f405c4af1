/// The random draws of a training step that the device executor and the CPU reference make
/// alike, so that both drop the same units and samples: each follows from the step's seed and the
/// node's position alone.
public enum StepRandomness {
    /// The seed of node `k`'s draws (dropout's mask, stochastic depth's samples) in a step
    /// seeded `seed`.
    public static func nodeSeed(_ seed: UInt32, node k: Int) -> UInt32 {
        seed &+ UInt32(truncatingIfNeeded: k) &* 0x9E37_79B9
    }

    /// Stochastic depth's per-sample, per-channel scales for a step: 0 for a dropped sample,
    /// 1 / (1 - p) for a kept one. They are drawn on the host, where the reference draws them
    /// too, and uploaded.
    public static func stochasticDepthScales(_ shape: Shape, p: Float, seed: UInt32) -> [Float] {
        var rng = SeededGenerator(seed: UInt64(seed) << 20 | 0x5d)
        var scales: [Float] = []
        for _ in 0..<shape.n {
            let keep = rng.uniform() >= Double(p)
            scales += [Float](repeating: keep ? 1 / (1 - p) : 0, count: shape.c)
        }
        return scales
    }
}
