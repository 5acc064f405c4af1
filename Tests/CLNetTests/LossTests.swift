import CLNet
import Testing

@Suite("Loss: softmax cross-entropy, distillation, per-pixel cross-entropy and mean squared error")
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

    /// Per-pixel cross-entropy on odd planes, batch 1, many classes, with some pixels ignored
    /// (the default 255 and PyTorch's -100), and a batch whose every pixel is ignored.
    @Test(arguments: [([1, 3, 5, 7], 255, 0.2), ([2, 21, 4, 3], -100, 0.1), ([3, 2, 9, 1], 255, 0.0),
                      ([2, 5, 2, 2], 255, 1.0)] as [(Shape, Int, Double)])
    func pixelCrossEntropy(shape: Shape, ignore: Int, ignoredShare: Double) throws {
        let q = try Shared.context().makeQueue()
        var rng = freshGenerator("pixel xent \(shape) ignore \(ignore)")
        let z = randomDoubles(shape.count, using: &rng, in: -5...5)
        let pixels = shape.n * shape.h * shape.w
        let labels = (0..<pixels).map { _ in
            Double.random(in: 0..<1, using: &rng) < ignoredShare ? ignore : Int.random(in: 0..<shape.c, using: &rng)
        }
        let want = Reference.pixelCrossEntropy(z, shape: shape, labels: labels, ignoreIndex: ignore)
        let zt = try deviceTensor(q, z, shape, strided: true)
        let lb = try q.context.buffer(bytes: pixels * 4)
        try q.write(labels.map { Int32($0) }, to: lb)
        let result = try poisonedTensor(q, [2]), ws = try poisonedTensor(q, [PixelCrossEntropy.workspaceCount(shape)])
        try PixelCrossEntropy.forward(q, logits: zt, labels: lb, result: result, workspace: ws, ignoreIndex: ignore)
        let r: [Float] = try q.read(result)
        if want.counted == 0 {
            #expect(r[0] == 0 && r[1] == 0, "every pixel ignored: loss 0, got \(r)")
        } else {
            #expect(relativeError([r[0]], [want.loss]) <= forwardBound, "loss \(r[0]) vs \(want.loss)")
            #expect(r[1].isFinite && Int(exactly: r[1]) == want.correct, "correct pixels \(r[1]), expected \(want.correct)")
        }
        let dzt = try poisonedTensor(q, shape, strided: true)
        try PixelCrossEntropy.backward(q, logits: zt, labels: lb, workspace: ws, dlogits: dzt, ignoreIndex: ignore, scale: 0.5)
        let dz = Reference.pixelCrossEntropyBackward(z, shape: shape, labels: labels, ignoreIndex: ignore, scale: 0.5)
        if want.counted == 0 {
            let got: [Float] = try q.read(dzt)
            #expect(got.allSatisfy { $0 == 0 }, "every pixel ignored: zero gradient")
        } else {
            try expectClose(q, dzt, dz, backwardBound, "dlogits")
        }
        #expect(throws: CLNetError.self) {
            try PixelCrossEntropy.checkLabels([shape.c] + labels.dropFirst(), logits: shape, ignoreIndex: ignore)
        }
        #expect(throws: CLNetError.self) { try PixelCrossEntropy.checkLabels(Array(labels.dropFirst()), logits: shape, ignoreIndex: ignore) }
    }

    @Test(arguments: [[1, 1, 1, 1], [2, 3, 5, 7], [3, 1, 33, 17]] as [Shape])
    func meanSquaredError(shape: Shape) throws {
        let q = try Shared.context().makeQueue()
        var rng = freshGenerator("mse \(shape)")
        let x = randomDoubles(shape.count, using: &rng), t = randomDoubles(shape.count, using: &rng)
        let xt = try deviceTensor(q, x, shape, strided: true), tt = try deviceTensor(q, t, shape)
        let result = try poisonedTensor(q, [2]), ws = try poisonedTensor(q, [MeanSquaredError.partialGroups])
        try MeanSquaredError.forward(q, prediction: xt, target: tt, result: result, workspace: ws)
        let r: [Float] = try q.read(result)
        #expect(relativeError([r[0]], [Reference.meanSquaredError(x, target: t)]) <= forwardBound && r[1] == 0, "result \(r)")
        let dxt = try poisonedTensor(q, shape, strided: true)
        try MeanSquaredError.backward(q, prediction: xt, target: tt, dx: dxt, scale: 0.5)
        try expectClose(q, dxt, Reference.meanSquaredErrorBackward(x, target: t, scale: 0.5), backwardBound, "dx")
        let prior = randomDoubles(shape.count, using: &rng), acc = try deviceTensor(q, prior, shape)
        try MeanSquaredError.backward(q, prediction: xt, target: tt, dx: acc, accumulate: true)
        try expectClose(q, acc, zip(prior, Reference.meanSquaredErrorBackward(x, target: t)).map(+), backwardBound, "accumulated dx")
    }

    /// The mean squared error's target gets no gradient, so it must be a graph input.
    @Test func regressionTargetIsAnInput() throws {
        var b = GraphBuilder()
        let x = try b.input("input", shape: [2, 1, 4, 4]), t = try b.input("target", shape: [2, 1, 4, 4])
        let y = try b.relu(x, name: "relu")
        #expect(throws: CLNetError.self) { _ = try b.meanSquaredError(x, target: y, name: "loss") }
        _ = try b.meanSquaredError(y, target: t, name: "loss")
        #expect(b.graph.lossNode != nil)
    }

    @Test func perPixelAndRegressionGradientsMatchFiniteDifferences() {
        var rng = freshGenerator("pixel xent and mse finite differences")
        let shape: Shape = [2, 4, 3, 2]
        let z = randomDoubles(shape.count, using: &rng, in: -3...3), t = randomDoubles(shape.count, using: &rng)
        let labels = [0, 3, 255, 1, 2, 2, 255, 0, 1, 3, 3, 0]
        let g = Reference.pixelCrossEntropyBackward(z, shape: shape, labels: labels, ignoreIndex: 255)
        let fd = finiteDifference(at: z) { Reference.pixelCrossEntropy($0, shape: shape, labels: labels, ignoreIndex: 255).loss }
        #expect(relativeError(g, fd) < 1e-6)
        let gm = Reference.meanSquaredErrorBackward(z, target: t)
        #expect(relativeError(gm, finiteDifference(at: z) { Reference.meanSquaredError($0, target: t) }) < 1e-6)
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

    /// Knowledge distillation's loss and gradient on the device against the CPU reference, over
    /// temperatures, weights (0 and 1 included) and label smoothing.
    @Test(arguments: [([1, 2], 1.0, 0.5, 0.0), ([4, 10], 4.0, 0.9, 0.0), ([7, 3], 2.0, 1.0, 0.1), ([33, 1000], 8.0, 0.0, 0.1),
                      ([5, 10], 0.5, 0.7, 0.0)])
    func distillation(size: [Int], temperature: Double, weight: Double, smoothing: Double) throws {
        let (batch, classes) = (size[0], size[1])
        let q = try Shared.context().makeQueue()
        var rng = freshGenerator("kd \(batch)x\(classes) T \(temperature) a \(weight)")
        let z = randomDoubles(batch * classes, using: &rng, in: -5...5), t = randomDoubles(batch * classes, using: &rng, in: -5...5)
        let labels = (0..<batch).map { _ in Int.random(in: 0..<classes, using: &rng) }
        let d = Distillation(temperature: Float(temperature), weight: Float(weight), labelSmoothing: Float(smoothing))
        let want = Reference.distillation(z, teacher: t, batch: batch, labels: labels, temperature: temperature, weight: weight,
                                          smoothing: smoothing)
        let zt = try deviceTensor(q, z, [batch, classes], strided: true), tt = try deviceTensor(q, t, [batch, classes], strided: true)
        let lb = try q.context.buffer(bytes: batch * 4)
        try q.write(labels.map { Int32($0) }, to: lb)
        let result = try poisonedTensor(q, [2]), ws = try poisonedTensor(q, [SoftmaxCrossEntropy.workspaceCount(batch: batch)])
        try d.forward(q, logits: zt, teacher: tt, labels: lb, result: result, workspace: ws)
        let r: [Float] = try q.read(result)
        #expect(relativeError([r[0]], [want.loss]) <= forwardBound, "loss \(r[0]) vs \(want.loss)")
        #expect(Int(exactly: r[1]) == want.correct)
        let dzt = try poisonedTensor(q, [batch, classes], strided: true)
        try d.backward(q, logits: zt, teacher: tt, labels: lb, dlogits: dzt, scale: 0.5)
        try expectClose(q, dzt, Reference.distillationBackward(z, teacher: t, batch: batch, labels: labels, temperature: temperature,
                                                               weight: weight, smoothing: smoothing, scale: 0.5),
                        backwardBound, "dlogits")
        #expect(throws: CLNetError.self) {
            try Distillation(temperature: 0, weight: 0.5).forward(q, logits: zt, teacher: tt, labels: lb, result: result, workspace: ws)
        }
    }

    @Test func distillationReferenceGradientMatchesFiniteDifferences() {
        var rng = freshGenerator("kd finite differences")
        let (batch, classes) = (3, 5)
        let z = randomDoubles(batch * classes, using: &rng, in: -3...3), t = randomDoubles(batch * classes, using: &rng, in: -3...3)
        let labels = [0, 4, 2]
        for (temperature, weight, eps) in [(1.0, 0.5, 0.0), (4.0, 0.9, 0.1), (3.0, 1.0, 0.0)] {
            let g = Reference.distillationBackward(z, teacher: t, batch: batch, labels: labels, temperature: temperature, weight: weight,
                                                   smoothing: eps)
            let fd = finiteDifference(at: z) {
                Reference.distillation($0, teacher: t, batch: batch, labels: labels, temperature: temperature, weight: weight,
                                       smoothing: eps).loss
            }
            #expect(relativeError(g, fd) < 1e-6, "T \(temperature) a \(weight)")
        }
        // With the teacher's own logits as the student's and a = 1, the loss and gradient vanish.
        let zero = Reference.distillationBackward(t, teacher: t, batch: batch, labels: labels, temperature: 2, weight: 1)
        #expect(zero.allSatisfy { abs($0) < 1e-12 })
    }

    /// A training graph whose loss is distillation runs a step on the device as the reference does.
    @Test func distillationGraphStep() throws {
        var rng = freshGenerator("kd graph")
        var graph = try ModelSpec.graph("cifar_resnet:depth=8,channels=1,classes=5", batch: 3, size: 8).graph
        try graph.setLabelSmoothing(0.1)
        graph = try graph.distilling(Distillation(temperature: 3, weight: 0.8))
        #expect(graph.inputs.map(\.name) == ["input", "teacher"])
        let executor = try Executor(graph: graph, context: try Shared.context(), training: true, queues: 2)
        try executor.initialize(seed: rng.next())
        var params: [String: [Double]] = [:]
        for p in graph.parameters { params[p.name] = try executor.parameter(p.name).map(Double.init) }
        let x = randomDoubles(3 * 64, using: &rng), teacher = randomDoubles(15, using: &rng, in: -3...3), labels = [4, 0, 2]
        var reference = try ReferenceExecutor(graph: graph, parameters: params)
        let values = try reference.forward(["input": x, "teacher": teacher], labels: labels, training: true)
        let grads = try reference.backward(values: values, labels: labels)
        let reading = try executor.forward(["input": x.map(Float.init), "teacher": teacher.map(Float.init)], labels: labels)
        try executor.backward()
        let loss = try #require(reading).value().loss
        #expect(relativeError([loss], values[graph.nodes[graph.lossNode!].output.index]) <= 1e-5)
        var device: [Float] = [], want: [Double] = []
        for p in graph.parameters where p.trainable {
            device += try executor.gradient(p.name)
            want += grads.parameters[p.name]!
        }
        #expect(relativeError(device, want) <= 1e-4)
    }
}
