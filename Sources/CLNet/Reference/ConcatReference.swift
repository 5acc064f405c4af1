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

    /// Channels `start ..< start + count` of an NCHW tensor.
    public static func channelSlice(_ x: [Double], shape: Shape, start: Int, count: Int) -> [Double] {
        let plane = shape.h * shape.w
        var y: [Double] = []
        for n in 0..<shape.n {
            let from = (n * shape.c + start) * plane
            y += x[from..<from + count * plane]
        }
        return y
    }

    /// The input gradient of a channel slice: dy in its channels, zero elsewhere.
    public static func channelSliceBackward(dy: [Double], shape: Shape, start: Int, count: Int) -> [Double] {
        let plane = shape.h * shape.w
        var dx = [Double](repeating: 0, count: shape.count)
        for n in 0..<shape.n {
            let from = n * count * plane, to = (n * shape.c + start) * plane
            dx.replaceSubrange(to..<to + count * plane, with: dy[from..<from + count * plane])
        }
        return dx
    }
}
