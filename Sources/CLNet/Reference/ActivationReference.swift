#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension Reference {
    /// max(x, 0), keeping NaN (as PyTorch).
    public static func relu(_ x: [Double]) -> [Double] { x.map { $0 < 0 ? 0 : $0 } }

    /// From the output, as the kernel: dy where y > 0.
    public static func reluBackward(y: [Double], dy: [Double]) -> [Double] {
        zip(y, dy).map { $0 > 0 ? $1 : 0 }
    }

    public static func prelu(_ x: [Double], shape: Shape, slope: [Double]) -> [Double] {
        let plane = shape.sampleCount / shape.c
        return x.indices.map { i in
            let c = (i % shape.sampleCount) / plane
            return x[i] > 0 ? x[i] : slope[c] * x[i]
        }
    }

    public static func preluBackward(_ x: [Double], shape: Shape, slope: [Double], dy: [Double])
        -> (dx: [Double], dslope: [Double]) {
        let plane = shape.sampleCount / shape.c
        var dx = [Double](repeating: 0, count: x.count), dslope = [Double](repeating: 0, count: shape.c)
        for i in x.indices {
            let c = (i % shape.sampleCount) / plane
            if x[i] > 0 { dx[i] = dy[i] } else { dx[i] = slope[c] * dy[i]; dslope[c] += dy[i] * x[i] }
        }
        return (dx, dslope)
    }

    public static func dropout(_ x: [Double], p: Float, seed: UInt32) -> [Double] {
        let scale = 1 / (1 - Double(p))
        return x.indices.map { Dropout.keeps(index: $0, p: p, seed: seed) ? x[$0] * scale : 0 }
    }

    public static func dropoutBackward(dy: [Double], p: Float, seed: UInt32) -> [Double] {
        dropout(dy, p: p, seed: seed)
    }

    public static func sigmoid(_ x: [Double]) -> [Double] { x.map { 1 / (1 + exp(-$0)) } }

    public static func sigmoidBackward(y: [Double], dy: [Double]) -> [Double] {
        zip(y, dy).map { $1 * $0 * (1 - $0) }
    }
}

