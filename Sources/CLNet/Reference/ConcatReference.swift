extension Reference {
    /// Concatenation of NCHW tensors along channels.
    public static func concat(_ inputs: [[Double]], shapes: [Shape]) -> [Double] {
        var y: [Double] = []
        for n in 0..<shapes[0].n {
            for (x, s) in zip(inputs, shapes) { y += x[n * s.sampleCount..<(n + 1) * s.sampleCount] }
        }
        return y
    }

    /// The gradient of each input: its channels of dy.
    public static func concatBackward(dy: [Double], shapes: [Shape]) -> [[Double]] {
        var grads = shapes.map { _ in [Double]() }
        var at = 0
        for n in 0..<shapes[0].n {
            _ = n
            for (i, s) in shapes.enumerated() {
                grads[i] += dy[at..<at + s.sampleCount]
                at += s.sampleCount
            }
        }
        return grads
    }
}
