extension Reference {
    /// The dendritic ReLU layer (see `DendriticConv2D`): y[n, o, p] = b[o] + Σ w[o, i, t] ·
    /// relu(x[n, g*cg + i, p + t] + d[o, i]) over the group's input channels i and the taps t
    /// that land inside the input; `dendrites` is d, [O, C / groups]. x [N, C] for the fully
    /// connected form gives [N, O].
    public static func dendriticConv2d(_ x: [Double], shape: Shape, weight: [Double], dendrites: [Double], bias: [Double]?,
                                       conv: Conv2D) -> [Double] {
        let planar: Shape = shape.rank == 2 ? [shape.n, shape.c, 1, 1] : shape
        let out = convShape(planar, conv), taps = conv.kernel.h * conv.kernel.w
        var y = [Double](repeating: 0, count: out.count)
        forEachTap(planar, out, conv) { yi, xi, wi in y[yi] += weight[wi] * max(x[xi] + dendrites[wi / taps], 0) }
        if let bias {
            let plane = out.h * out.w
            for i in y.indices { y[i] += bias[(i / plane) % conv.outChannels] }
        }
        return y
    }

    /// Gradients of `dendriticConv2d` with respect to the input, the weight, the dendrites'
    /// biases and the bias. ReLU's derivative at 0 is taken as 0, as PyTorch's.
    public static func dendriticConv2dBackward(_ x: [Double], shape: Shape, weight: [Double], dendrites: [Double],
                                               conv: Conv2D, dy: [Double])
        -> (dx: [Double], dweight: [Double], ddendrites: [Double], dbias: [Double]) {
        let planar: Shape = shape.rank == 2 ? [shape.n, shape.c, 1, 1] : shape
        let out = convShape(planar, conv), taps = conv.kernel.h * conv.kernel.w
        var dx = [Double](repeating: 0, count: x.count), dw = [Double](repeating: 0, count: weight.count)
        var dd = [Double](repeating: 0, count: dendrites.count)
        forEachTap(planar, out, conv) { yi, xi, wi in
            let a = x[xi] + dendrites[wi / taps]
            guard a > 0 else { return }
            dx[xi] += dy[yi] * weight[wi]
            dw[wi] += dy[yi] * a
            dd[wi / taps] += dy[yi] * weight[wi]
        }
        var db = [Double](repeating: 0, count: conv.outChannels)
        let plane = out.h * out.w
        for i in dy.indices { db[(i / plane) % conv.outChannels] += dy[i] }
        return (dx, dw, dd, db)
    }
}
