extension Reference {
    /// Max pooling: the output and each window's argmax (h * W + w in the input plane; first
    /// maximum on ties; a NaN wins, as in PyTorch).
    public static func maxPool(_ x: [Double], shape: Shape, window: Pool2D) -> (y: [Double], indices: [Int]) {
        let out = poolShape(shape, window)
        var y = [Double](repeating: 0, count: out.count), indices = [Int](repeating: 0, count: out.count)
        forEachWindow(shape, out, window) { o, taps in
            var best = -Double.infinity, arg = taps[0]
            for t in taps where x[t.index] > best || (best == -.infinity && t == taps[0]) || x[t.index].isNaN {
                best = x[t.index]; arg = t
                if best.isNaN { break }
            }
            y[o] = best
            indices[o] = arg.plane
        }
        return (y, indices)
    }

    public static func maxPoolBackward(dy: [Double], indices: [Int], shape: Shape, window: Pool2D) -> [Double] {
        let out = poolShape(shape, window)
        var dx = [Double](repeating: 0, count: shape.count)
        let plane = shape.h * shape.w, outPlane = out.h * out.w
        for o in 0..<out.count { dx[(o / outPlane) * plane + indices[o]] += dy[o] }
        return dx
    }

    /// Average pooling with PyTorch's count_include_pad divisor.
    public static func avgPool(_ x: [Double], shape: Shape, window: Pool2D) -> [Double] {
        let out = poolShape(shape, window)
        var y = [Double](repeating: 0, count: out.count)
        forEachWindow(shape, out, window) { o, taps in
            y[o] = taps.reduce(0) { $0 + x[$1.index] } / avgDivisor(o, shape, out, window)
        }
        return y
    }

    public static func avgPoolBackward(dy: [Double], shape: Shape, window: Pool2D) -> [Double] {
        let out = poolShape(shape, window)
        var dx = [Double](repeating: 0, count: shape.count)
        forEachWindow(shape, out, window) { o, taps in
            for t in taps { dx[t.index] += dy[o] / avgDivisor(o, shape, out, window) }
        }
        return dx
    }

    public static func globalAvgPool(_ x: [Double], shape: Shape) -> [Double] {
        let plane = shape.h * shape.w
        return (0..<shape.n * shape.c).map { nc in x[nc * plane..<(nc + 1) * plane].reduce(0, +) / Double(plane) }
    }

    public static func globalAvgPoolBackward(dy: [Double], shape: Shape) -> [Double] {
        let plane = shape.h * shape.w
        return (0..<shape.count).map { dy[$0 / plane] / Double(plane) }
    }

    struct Tap: Equatable { var index: Int; var plane: Int }

    static func poolShape(_ x: Shape, _ p: Pool2D) -> Shape {
        [x.n, x.c, (x.h + 2 * p.padding.h - p.kernel.h) / p.stride.h + 1, (x.w + 2 * p.padding.w - p.kernel.w) / p.stride.w + 1]
    }

    /// Calls `body` with each output index and the input positions inside its window.
    static func forEachWindow(_ x: Shape, _ out: Shape, _ p: Pool2D, _ body: (Int, [Tap]) -> Void) {
        for nc in 0..<x.n * x.c {
            for oh in 0..<out.h {
                for ow in 0..<out.w {
                    var taps: [Tap] = []
                    for kh in 0..<p.kernel.h {
                        let h = oh * p.stride.h - p.padding.h + kh
                        guard h >= 0 && h < x.h else { continue }
                        for kw in 0..<p.kernel.w {
                            let w = ow * p.stride.w - p.padding.w + kw
                            guard w >= 0 && w < x.w else { continue }
                            taps.append(Tap(index: nc * x.h * x.w + h * x.w + w, plane: h * x.w + w))
                        }
                    }
                    body((nc * out.h + oh) * out.w + ow, taps)
                }
            }
        }
    }

    static func avgDivisor(_ o: Int, _ x: Shape, _ out: Shape, _ p: Pool2D) -> Double {
        let ow = o % out.w, oh = (o / out.w) % out.h
        let hs = oh * p.stride.h - p.padding.h, ws = ow * p.stride.w - p.padding.w
        let he = min(hs + p.kernel.h, x.h + p.padding.h), we = min(ws + p.kernel.w, x.w + p.padding.w)
        return Double((he - hs) * (we - ws))
    }
}
