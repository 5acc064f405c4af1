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
