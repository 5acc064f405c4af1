import CLNet
import Testing

@Suite("Loss: softmax cross-entropy")
struct LossTests {
    @Test(arguments: [[1, 2], [4, 10], [7, 3], [33, 1000]], [0.0, 0.1])
    func crossEntropy(size: [Int], smoothing: Double) throws {
        let (batch, classes) = (size[0], size[1])
        let q = try Shared.context().makeQueue()
        var rng = freshGenerator("xent \(batch)x\(classes) eps \(smoothing)")
        let z = randomDoubles(batch * classes, using: &rng, in: -5...5)
        let labels = (0..<batch).map { _ in Int.random(in: 0..<classes, using: &rng) }
        let want = Reference.softmaxCrossEntropy(z, batch: batch, labels: labels, smoothing: smoothing)
        let zt = try deviceTensor(q, z, [batch, classes], strided: true)
        let lb = try q.context.buffer(bytes: batch * 4)
        try q.write(labels.map { Int32($0) }, to: lb)
        let result = try poisonedTensor(q, [2])
        let ws = try poisonedTensor(q, [SoftmaxCrossEntropy.workspaceCount(batch: batch)])
        try SoftmaxCrossEntropy.forward(q, logits: zt, labels: lb, result: result, workspace: ws,
                                        labelSmoothing: Float(smoothing))
        let r: [Float] = try q.read(result)
        #expect(relativeError([r[0]], [want.loss]) <= forwardBound, "loss \(r[0]) vs \(want.loss)")
        #expect(r[1].isFinite && Int(exactly: r[1]) == want.correct, "correct count \(r[1]), expected \(want.correct)")
        let dzt = try poisonedTensor(q, [batch, classes], strided: true)
        try SoftmaxCrossEntropy.backward(q, logits: zt, labels: lb, dlogits: dzt, labelSmoothing: Float(smoothing), scale: 0.5)
        try expectClose(q, dzt, Reference.softmaxCrossEntropyBackward(z, batch: batch, labels: labels, smoothing: smoothing,
                                                                      scale: 0.5), backwardBound, "dlogits")
    }

    @Test func labelOutOfRangeGivesNaN() throws {
        let q = try Shared.context().makeQueue()
        let zt = try deviceTensor(q, [0.1, 0.2, 0.3, 0.4], [2, 2])
        let lb = try q.context.buffer(bytes: 8)
        try q.write([Int32(1), 5], to: lb)
        let result = try poisonedTensor(q, [2]), ws = try poisonedTensor(q, [4])
        try SoftmaxCrossEntropy.forward(q, logits: zt, labels: lb, result: result, workspace: ws)
        #expect(try q.read(result)[0].isNaN)
        let dz = try poisonedTensor(q, [2, 2])
        try q.write([Float](repeating: 0, count: 4), to: dz)
        try SoftmaxCrossEntropy.backward(q, logits: zt, labels: lb, dlogits: dz)
        let grad: [Float] = try q.read(dz)
        #expect(grad[0].isFinite && grad[1].isFinite && grad[2].isNaN && grad[3].isNaN, "only the bad sample is poisoned: \(grad)")
    }

    @Test func referenceGradientMatchesFiniteDifferences() {
        var rng = freshGenerator("xent finite differences")
        let (batch, classes) = (3, 5)
        let z = randomDoubles(batch * classes, using: &rng, in: -3...3)
        let labels = [0, 4, 2]
        for eps in [0.0, 0.2] {
            let g = Reference.softmaxCrossEntropyBackward(z, batch: batch, labels: labels, smoothing: eps)
            let fd = finiteDifference(at: z) { Reference.softmaxCrossEntropy($0, batch: batch, labels: labels, smoothing: eps).loss }
            #expect(relativeError(g, fd) < 1e-6)
        }
    }
}
