extension Reference {
    /// Direct convolution: y[n, o, oh, ow] = b[o] + Σ x[n, g*cg + i, ih, iw] * w[o, i, kh, kw] over the
    /// group's input channels i and the kernel taps that land inside the input.
    public static func conv2d(_ x: [Double], shape: Shape, weight: [Double], bias: [Double]?, conv: Conv2D) -> [Double] {
        let out = convShape(shape, conv)
        var y = [Double](repeating: 0, count: out.count)
        forEachTap(shape, out, conv) { yi, xi, wi in y[yi] += x[xi] * weight[wi] }
        if let bias {
            let plane = out.h * out.w
            for i in y.indices { y[i] += bias[(i / plane) % conv.outChannels] }
        }
        return y
    }

    public static func conv2dBackward(_ x: [Double], shape: Shape, weight: [Double], conv: Conv2D, dy: [Double])
        -> (dx: [Double], dweight: [Double], dbias: [Double]) {
        let out = convShape(shape, conv)
        var dx = [Double](repeating: 0, count: x.count), dw = [Double](repeating: 0, count: weight.count)
        forEachTap(shape, out, conv) { yi, xi, wi in
            dx[xi] += dy[yi] * weight[wi]
            dw[wi] += dy[yi] * x[xi]
        }
        var db = [Double](repeating: 0, count: conv.outChannels)
        let plane = out.h * out.w
        for i in dy.indices { db[(i / plane) % conv.outChannels] += dy[i] }
        return (dx, dw, db)
    }

    static func convShape(_ x: Shape, _ c: Conv2D) -> Shape {
        let ekh = (c.kernel.h - 1) * c.dilation.h + 1, ekw = (c.kernel.w - 1) * c.dilation.w + 1
        return [x.n, c.outChannels, (x.h + 2 * c.padding.h - ekh) / c.stride.h + 1, (x.w + 2 * c.padding.w - ekw) / c.stride.w + 1]
    }

    /// Calls `body(output index, input index, weight index)` for every multiply of the convolution.
    static func forEachTap(_ x: Shape, _ out: Shape, _ c: Conv2D, _ body: (Int, Int, Int) -> Void) {
        let cg = c.inChannels / c.groups, og = c.outChannels / c.groups
        for n in 0..<x.n {
            for o in 0..<c.outChannels {
                let g = o / og
                for oh in 0..<out.h {
                    for ow in 0..<out.w {
                        let yi = ((n * c.outChannels + o) * out.h + oh) * out.w + ow
                        for i in 0..<cg {
                            for kh in 0..<c.kernel.h {
                                let ih = oh * c.stride.h - c.padding.h + kh * c.dilation.h
                                guard ih >= 0 && ih < x.h else { continue }
                                for kw in 0..<c.kernel.w {
                                    let iw = ow * c.stride.w - c.padding.w + kw * c.dilation.w
                                    guard iw >= 0 && iw < x.w else { continue }
                                    body(yi, ((n * x.c + g * cg + i) * x.h + ih) * x.w + iw,
                                         ((o * cg + i) * c.kernel.h + kh) * c.kernel.w + kw)
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
