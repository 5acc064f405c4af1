extension Reference {
    /// y = x W^T + b for x [N, in], W [out, in].
    public static func linear(_ x: [Double], batch: Int, weight: [Double], outFeatures: Int, bias: [Double]?) -> [Double] {
        let inF = weight.count / outFeatures
        var y = [Double](repeating: 0, count: batch * outFeatures)
        for n in 0..<batch {
            for o in 0..<outFeatures {
                var s = bias?[o] ?? 0
                for i in 0..<inF { s += x[n * inF + i] * weight[o * inF + i] }
                y[n * outFeatures + o] = s
            }
        }
        return y
    }

    public static func linearBackward(_ x: [Double], batch: Int, weight: [Double], outFeatures: Int, dy: [Double])
        -> (dx: [Double], dweight: [Double], dbias: [Double]) {
        let inF = weight.count / outFeatures
        var dx = [Double](repeating: 0, count: x.count), dw = [Double](repeating: 0, count: weight.count)
        var db = [Double](repeating: 0, count: outFeatures)
        for n in 0..<batch {
            for o in 0..<outFeatures {
                let g = dy[n * outFeatures + o]
                db[o] += g
                for i in 0..<inF {
                    dx[n * inF + i] += g * weight[o * inF + i]
                    dw[o * inF + i] += g * x[n * inF + i]
                }
            }
        }
        return (dx, dw, db)
    }
}
