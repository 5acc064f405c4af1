extension Reference {
    /// The indices of each statistics set: per channel for batch norm (`groups` 0), per
    /// (sample, group) for group norm.
    static func statisticsSets(_ shape: Shape, groups: Int) -> [[Int]] {
        let plane = shape.h * shape.w, sample = shape.sampleCount
        if groups == 0 {
            return (0..<shape.c).map { c in
                (0..<shape.n).flatMap { n in (0..<plane).map { n * sample + c * plane + $0 } }
            }
        }
        let per = shape.c / groups * plane
        return (0..<shape.n * groups).map { s in
            let n = s / groups, g = s % groups
            return (0..<per).map { n * sample + g * per + $0 }
        }
    }

    /// Mean and biased variance of each statistics set.
    static func moments(_ x: [Double], sets: [[Int]]) -> (mean: [Double], variance: [Double]) {
        let mean = sets.map { s in s.reduce(0) { $0 + x[$1] } / Double(s.count) }
        let variance = sets.indices.map { k in
            sets[k].reduce(0) { $0 + (x[$1] - mean[k]) * (x[$1] - mean[k]) } / Double(sets[k].count)
        }
        return (mean, variance)
    }

    /// Normalisation with given statistics per set, the per-channel affine, and an optional ReLU.
    static func normalize(_ x: [Double], shape: Shape, sets: [[Int]], mean: [Double], variance: [Double],
                          gamma: [Double], beta: [Double], eps: Double, relu: Bool) -> [Double] {
        let plane = shape.h * shape.w
        var y = [Double](repeating: 0, count: x.count)
        for (k, set) in sets.enumerated() {
            let invstd = 1 / (variance[k] + eps).squareRoot()
            for i in set {
                let c = (i % shape.sampleCount) / plane
                let v = (x[i] - mean[k]) * invstd * gamma[c] + beta[c]
                y[i] = relu && v < 0 ? 0 : v
            }
        }
        return y
    }

    /// Batch norm in training mode: the output, and the running statistics after PyTorch's update.
    public static func batchNormTraining(_ x: [Double], shape: Shape, gamma: [Double], beta: [Double],
                                         runningMean: [Double], runningVar: [Double], eps: Double = 1e-5,
                                         momentum: Double = 0.1, relu: Bool = false)
        -> (y: [Double], runningMean: [Double], runningVar: [Double]) {
        let sets = statisticsSets(shape, groups: 0)
        let (mean, variance) = moments(x, sets: sets)
        let y = normalize(x, shape: shape, sets: sets, mean: mean, variance: variance, gamma: gamma, beta: beta,
                          eps: eps, relu: relu)
        let m = Double(sets[0].count)
        let newMean = runningMean.indices.map { (1 - momentum) * runningMean[$0] + momentum * mean[$0] }
        let newVar = runningVar.indices.map { (1 - momentum) * runningVar[$0] + momentum * variance[$0] * m / (m - 1) }
        return (y, newMean, newVar)
    }

    public static func batchNormInference(_ x: [Double], shape: Shape, gamma: [Double], beta: [Double],
                                          runningMean: [Double], runningVar: [Double], eps: Double = 1e-5,
                                          relu: Bool = false) -> [Double] {
        normalize(x, shape: shape, sets: statisticsSets(shape, groups: 0), mean: runningMean, variance: runningVar,
                  gamma: gamma, beta: beta, eps: eps, relu: relu)
    }

    public static func groupNorm(_ x: [Double], shape: Shape, gamma: [Double], beta: [Double], groups: Int,
                                 eps: Double = 1e-5, relu: Bool = false) -> [Double] {
        let sets = statisticsSets(shape, groups: groups)
        let (mean, variance) = moments(x, sets: sets)
        return normalize(x, shape: shape, sets: sets, mean: mean, variance: variance, gamma: gamma, beta: beta,
                         eps: eps, relu: relu)
    }

    /// Gradient of inference-mode batch norm with respect to x: with fixed statistics it is one
    /// affine map per channel, so dx = dy * gamma / sqrt(running_var + eps), masked where a fused
    /// ReLU cut the output `y`.
    public static func batchNormInferenceBackward(shape: Shape, gamma: [Double], runningVar: [Double], eps: Double = 1e-5,
                                                  relu: Bool = false, y: [Double], dy: [Double]) -> [Double] {
        let plane = shape.count / max(shape.n * shape.c, 1)
        return dy.indices.map { i in
            if relu && y[i] <= 0 { return 0 }
            let c = i / plane % shape.c
            return dy[i] * gamma[c] / (runningVar[c] + eps).squareRoot()
        }
    }

    /// Gradients of batch norm (`groups` 0, training mode) or group norm with respect to x, gamma
    /// and beta, normalising with the batch's own statistics.
    public static func normBackward(_ x: [Double], shape: Shape, gamma: [Double], beta: [Double], groups: Int,
                                    dy: [Double], eps: Double = 1e-5, relu: Bool = false)
        -> (dx: [Double], dgamma: [Double], dbeta: [Double]) {
        let plane = shape.h * shape.w
        let sets = statisticsSets(shape, groups: groups)
        let (mean, variance) = moments(x, sets: sets)
        var dx = [Double](repeating: 0, count: x.count)
        var dgamma = [Double](repeating: 0, count: shape.c), dbeta = [Double](repeating: 0, count: shape.c)
        for (k, set) in sets.enumerated() {
            let invstd = 1 / (variance[k] + eps).squareRoot()
            var xhat: [Double] = [], dxhat: [Double] = []
            for i in set {
                let c = (i % shape.sampleCount) / plane
                let h = (x[i] - mean[k]) * invstd
                let g = relu && h * gamma[c] + beta[c] <= 0 ? 0 : dy[i]
                dgamma[c] += g * h
                dbeta[c] += g
                xhat.append(h)
                dxhat.append(g * gamma[c])
            }
            let m = Double(set.count)
            let s1 = dxhat.reduce(0, +) / m
            let s2 = zip(dxhat, xhat).reduce(0) { $0 + $1.0 * $1.1 } / m
            for (p, i) in set.enumerated() { dx[i] = invstd * (dxhat[p] - s1 - xhat[p] * s2) }
        }
        return (dx, dgamma, dbeta)
    }
}
