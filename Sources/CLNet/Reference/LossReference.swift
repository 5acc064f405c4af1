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
            if row.firstIndex(of: m) == labels[n] { correct += 1 }
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
