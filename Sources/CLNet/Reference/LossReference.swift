#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension Reference {
    /// Mean softmax cross-entropy of logits [N, K] against labels, with label smoothing, and the
    /// number of samples whose first maximum logit is the label.
    public static func softmaxCrossEntropy(_ logits: [Double], batch: Int, labels: [Int], smoothing: Double = 0)
        -> (loss: Double, correct: Int) {
        let k = logits.count / batch
        var total = 0.0, correct = 0
        for n in 0..<batch {
            let row = Array(logits[n * k..<(n + 1) * k])
            let m = row.max()!
            let lse = m + log(row.reduce(0) { $0 + exp($1 - m) })
            total += lse - (1 - smoothing) * row[labels[n]] - smoothing / Double(k) * row.reduce(0, +)
            if SoftmaxCrossEntropy.rank(ofLabel: labels[n], in: row) == 0 { correct += 1 }
        }
        return (total / Double(batch), correct)
    }

    public static func softmaxCrossEntropyBackward(_ logits: [Double], batch: Int, labels: [Int], smoothing: Double = 0,
                                                   scale: Double = 1) -> [Double] {
        let k = logits.count / batch
        var d = [Double](repeating: 0, count: logits.count)
        for n in 0..<batch {
            let row = logits[n * k..<(n + 1) * k]
            let m = row.max()!
            let se = row.reduce(0) { $0 + exp($1 - m) }
            for j in 0..<k {
                let p = exp(logits[n * k + j] - m) / se
                let t = (j == labels[n] ? 1 - smoothing : 0) + smoothing / Double(k)
                d[n * k + j] = scale / Double(batch) * (p - t)
            }
        }
        return d
    }
}

extension Reference {
    /// Knowledge distillation's loss (see `Distillation`) and the correct count.
    public static func distillation(_ logits: [Double], teacher: [Double], batch: Int, labels: [Int], temperature: Double,
                                    weight: Double, smoothing: Double = 0) -> (loss: Double, correct: Int) {
        let hard = softmaxCrossEntropy(logits, batch: batch, labels: labels, smoothing: smoothing)
        let k = logits.count / batch
        var kl = 0.0
        for n in 0..<batch {
            let p = softmax(teacher[n * k..<(n + 1) * k].map { $0 / temperature })
            let q = softmax(logits[n * k..<(n + 1) * k].map { $0 / temperature })
            for j in 0..<k where p[j] > 0 { kl += p[j] * (log(p[j]) - log(q[j])) }
        }
        return (weight * temperature * temperature * kl / Double(batch) + (1 - weight) * hard.loss, hard.correct)
    }

    public static func distillationBackward(_ logits: [Double], teacher: [Double], batch: Int, labels: [Int],
                                            temperature: Double, weight: Double, smoothing: Double = 0,
                                            scale: Double = 1) -> [Double] {
        let hard = softmaxCrossEntropyBackward(logits, batch: batch, labels: labels, smoothing: smoothing, scale: scale)
        let k = logits.count / batch
        var d = [Double](repeating: 0, count: logits.count)
        for n in 0..<batch {
            let p = softmax(teacher[n * k..<(n + 1) * k].map { $0 / temperature })
            let q = softmax(logits[n * k..<(n + 1) * k].map { $0 / temperature })
            for j in 0..<k {
                d[n * k + j] = scale / Double(batch) * weight * temperature * (q[j] - p[j]) + (1 - weight) * hard[n * k + j]
            }
        }
        return d
    }

    static func softmax(_ x: [Double]) -> [Double] {
        let m = x.max()!
        let e = x.map { exp($0 - m) }
        let s = e.reduce(0, +)
        return e.map { $0 / s }
    }
}

extension Reference {
    /// The logits of pixel p of sample n, over the classes, from logits [N, K, H, W].
    private static func pixelLogits(_ logits: [Double], shape: Shape, n: Int, p: Int) -> [Double] {
        let plane = shape.h * shape.w
        return (0..<shape.c).map { logits[(n * shape.c + $0) * plane + p] }
    }

    /// Mean per-pixel softmax cross-entropy over the pixels whose label is not `ignoreIndex`
    /// (0 when none is), the number of those whose first maximum logit is the label, and that
    /// count of pixels.
    public static func pixelCrossEntropy(_ logits: [Double], shape: Shape, labels: [Int], ignoreIndex: Int)
        -> (loss: Double, correct: Int, counted: Int) {
        let plane = shape.h * shape.w
        var total = 0.0, correct = 0, counted = 0
        for n in 0..<shape.n {
            for p in 0..<plane where labels[n * plane + p] != ignoreIndex {
                let z = pixelLogits(logits, shape: shape, n: n, p: p), label = labels[n * plane + p]
                let m = z.max()!
                total += m + log(z.reduce(0) { $0 + exp($1 - m) }) - z[label]
                if SoftmaxCrossEntropy.rank(ofLabel: label, in: z) == 0 { correct += 1 }
                counted += 1
            }
        }
        return (counted > 0 ? total / Double(counted) : 0, correct, counted)
    }

    public static func pixelCrossEntropyBackward(_ logits: [Double], shape: Shape, labels: [Int], ignoreIndex: Int,
                                                 scale: Double = 1) -> [Double] {
        let plane = shape.h * shape.w
        let counted = labels.filter { $0 != ignoreIndex }.count
        var d = [Double](repeating: 0, count: logits.count)
        for n in 0..<shape.n {
            for p in 0..<plane where labels[n * plane + p] != ignoreIndex {
                let z = pixelLogits(logits, shape: shape, n: n, p: p)
                let m = z.max()!, se = z.reduce(0) { $0 + exp($1 - m) }
                for k in 0..<shape.c {
                    d[(n * shape.c + k) * plane + p] = scale / Double(counted) * (exp(z[k] - m) / se - (k == labels[n * plane + p] ? 1 : 0))
                }
            }
        }
        return d
    }

    /// The mean of (x - t)^2 over every element.
    public static func meanSquaredError(_ x: [Double], target t: [Double]) -> Double {
        zip(x, t).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) } / Double(x.count)
    }

    public static func meanSquaredErrorBackward(_ x: [Double], target t: [Double], scale: Double = 1) -> [Double] {
        zip(x, t).map { scale * 2 * ($0 - $1) / Double(x.count) }
    }
}
