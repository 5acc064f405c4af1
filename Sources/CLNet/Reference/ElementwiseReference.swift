#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension Reference {
    public static func add(_ a: [Double], _ b: [Double], relu: Bool = false) -> [Double] {
        relu ? Reference.relu(zip(a, b).map(+)) : zip(a, b).map(+)
    }

    /// The gradient each addend receives.
    public static func addBackward(y: [Double], dy: [Double], relu: Bool = false) -> [Double] {
        relu ? reluBackward(y: y, dy: dy) : dy
    }

    public static func multiply(_ a: [Double], _ b: [Double]) -> [Double] { zip(a, b).map(*) }

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

extension Reference {
    /// Selective kernels' softmax weights a[n][m][c] from logits z [N, M*C].
    static func selectiveWeights(_ z: [Double], batch: Int, branches: Int, channels: Int) -> [Double] {
        var a = [Double](repeating: 0, count: z.count)
        for n in 0..<batch {
            for c in 0..<channels {
                let idx = (0..<branches).map { (n * branches + $0) * channels + c }
                let top = idx.map { z[$0] }.max()!
                let e = idx.map { exp(z[$0] - top) }
                let sum = e.reduce(0, +)
                for (m, i) in idx.enumerated() { a[i] = e[m] / sum }
            }
        }
        return a
    }

    /// y = sum over m of softmax_m(z) * U_m (see `SelectiveSum`).
    public static func selectiveSum(_ branches: [[Double]], shape: Shape, logits z: [Double]) -> [Double] {
        let m = branches.count, plane = shape.h * shape.w
        let a = selectiveWeights(z, batch: shape.n, branches: m, channels: shape.c)
        return (0..<shape.count).map { i in
            let n = i / shape.sampleCount, c = (i % shape.sampleCount) / plane
            return (0..<m).reduce(0) { $0 + a[(n * m + $1) * shape.c + c] * branches[$1][i] }
        }
    }

    public static func selectiveSumBackward(_ branches: [[Double]], shape: Shape, logits z: [Double], dy: [Double])
        -> (dbranches: [[Double]], dlogits: [Double]) {
        let m = branches.count, plane = shape.h * shape.w
        let a = selectiveWeights(z, batch: shape.n, branches: m, channels: shape.c)
        var du = [[Double]](repeating: [Double](repeating: 0, count: shape.count), count: m)
        var g = [Double](repeating: 0, count: z.count)
        for i in 0..<shape.count {
            let n = i / shape.sampleCount, c = (i % shape.sampleCount) / plane
            for b in 0..<m {
                let k = (n * m + b) * shape.c + c
                du[b][i] = a[k] * dy[i]
                g[k] += dy[i] * branches[b][i]
            }
        }
        var dz = [Double](repeating: 0, count: z.count)
        for n in 0..<shape.n {
            for c in 0..<shape.c {
                let idx = (0..<m).map { (n * m + $0) * shape.c + c }
                let mean = idx.reduce(0) { $0 + a[$1] * g[$1] }
                for k in idx { dz[k] = a[k] * (g[k] - mean) }
            }
        }
        return (du, dz)
    }

    /// y = x * scale + bias with scalars (nil: 1 and 0).
    public static func scalarAffine(_ x: [Double], scale: Double?, bias: Double?) -> [Double] {
        x.map { $0 * (scale ?? 1) + (bias ?? 0) }
    }

    /// dx, and the scalars' gradients (sum of dy * x, sum of dy).
    public static func scalarAffineBackward(_ x: [Double], scale: Double?, dy: [Double])
        -> (dx: [Double], dscale: Double, dbias: Double) {
        (dy.map { $0 * (scale ?? 1) }, zip(x, dy).reduce(0) { $0 + $1.0 * $1.1 }, dy.reduce(0, +))
    }
}
