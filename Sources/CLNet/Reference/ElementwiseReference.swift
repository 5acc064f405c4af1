extension Reference {
    public static func add(_ a: [Double], _ b: [Double], relu: Bool = false) -> [Double] {
        relu ? Reference.relu(zip(a, b).map(+)) : zip(a, b).map(+)
    }

    /// The gradient each addend receives.
    public static func addBackward(y: [Double], dy: [Double], relu: Bool = false) -> [Double] {
        relu ? reluBackward(y: y, dy: dy) : dy
    }

    public static func scaledAdd(_ x: [Double], branch: [Double], scale: [Double], shape: Shape,
                                 relu: Bool = false) -> [Double] {
        x.indices.map { i in
            let v = x[i] + scale[i / shape.sampleCount] * branch[i]
            return relu && v < 0 ? 0 : v
        }
    }

    public static func scaledAddBackward(y: [Double], dy: [Double], scale: [Double], shape: Shape,
                                         relu: Bool = false) -> (dx: [Double], dbranch: [Double]) {
        let dx = addBackward(y: y, dy: dy, relu: relu)
        return (dx, dx.indices.map { dx[$0] * scale[$0 / shape.sampleCount] })
    }

    public static func channelScale(_ x: [Double], shape: Shape, scale: [Double]) -> [Double] {
        let plane = shape.h * shape.w
        return x.indices.map { x[$0] * scale[$0 / plane] }
    }

    public static func channelScaleBackward(_ x: [Double], shape: Shape, scale: [Double], dy: [Double])
        -> (dx: [Double], dscale: [Double]) {
        let plane = shape.h * shape.w
        var ds = [Double](repeating: 0, count: shape.n * shape.c)
        for i in x.indices { ds[i / plane] += x[i] * dy[i] }
        return (dy.indices.map { dy[$0] * scale[$0 / plane] }, ds)
    }
}

extension Reference {
    /// The option-A shortcut: subsample, then pad channels with zeros half before, half after.
    public static func padShortcut(_ x: [Double], shape: Shape, outChannels: Int, stride: Int) -> [Double] {
        let oh = (shape.h + stride - 1) / stride, ow = (shape.w + stride - 1) / stride, pad = (outChannels - shape.c) / 2
        var y = [Double](repeating: 0, count: shape.n * outChannels * oh * ow)
        for n in 0..<shape.n {
            for c in 0..<shape.c {
                for h in 0..<oh {
                    for w in 0..<ow {
                        y[((n * outChannels + c + pad) * oh + h) * ow + w] = x[((n * shape.c + c) * shape.h + h * stride) * shape.w + w * stride]
                    }
                }
            }
        }
        return y
    }

    public static func padShortcutBackward(dy: [Double], shape: Shape, outChannels: Int, stride: Int) -> [Double] {
        let oh = (shape.h + stride - 1) / stride, ow = (shape.w + stride - 1) / stride, pad = (outChannels - shape.c) / 2
        var dx = [Double](repeating: 0, count: shape.count)
        for n in 0..<shape.n {
            for c in 0..<shape.c {
                for h in 0..<oh {
                    for w in 0..<ow {
                        dx[((n * shape.c + c) * shape.h + h * stride) * shape.w + w * stride] = dy[((n * outChannels + c + pad) * oh + h) * ow + w]
                    }
                }
            }
        }
        return dx
    }
}
