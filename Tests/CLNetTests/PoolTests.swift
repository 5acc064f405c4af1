import CLNet
import Testing

@Suite("Pool: max, average, global average")
struct PoolTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var shape: Shape
        var kernel, stride, padding: Int
        var testDescription: String { "\(shape) k\(kernel) s\(stride) p\(padding)" }
    }

    static let cases: [Case] = [
        Case(shape: [1, 3, 7, 7], kernel: 3, stride: 2, padding: 1),   // ResNet's stem pool
        Case(shape: [2, 5, 8, 6], kernel: 2, stride: 2, padding: 0),   // DenseNet's transition pool
        Case(shape: [3, 4, 9, 11], kernel: 3, stride: 1, padding: 1),
        Case(shape: [1, 6, 5, 5], kernel: 5, stride: 3, padding: 2),
        Case(shape: [2, 7, 1, 1], kernel: 1, stride: 1, padding: 0),
        Case(shape: [4, 17, 6, 7], kernel: 3, stride: 2, padding: 0),
        // Rows wide enough for the stride-2 kernels' vector blocks, with columns left over.
        Case(shape: [2, 3, 9, 45], kernel: 3, stride: 2, padding: 1),
        Case(shape: [1, 2, 6, 40], kernel: 2, stride: 2, padding: 0),
        // Rows with 8 to 15 windows inside: 8-wide blocks where the device loads 16 floats.
        Case(shape: [2, 3, 4, 30], kernel: 2, stride: 2, padding: 0),
        Case(shape: [1, 2, 5, 28], kernel: 3, stride: 2, padding: 1),
        // Stride-1 blocks, the last moved back over the one before, and windows past both edges.
        Case(shape: [2, 3, 5, 37], kernel: 3, stride: 1, padding: 1),
        Case(shape: [1, 2, 4, 50], kernel: 2, stride: 1, padding: 1),
    ]

    @Test(arguments: cases)
    func maxPool(_ t: Case) throws {
        for q in try Shared.queuesForEachLayout() {
            var rng = freshGenerator("maxPool \(t.testDescription)")
            let window = Pool2D(kernel: t.kernel, stride: t.stride, padding: t.padding)
            let out = try window.outputShape("test", t.shape)
            let x = randomDoubles(t.shape.count, using: &rng), dy = randomDoubles(out.count, using: &rng)
            let (y, indices) = Reference.maxPool(x, shape: t.shape, window: window)
            let xt = try deviceTensor(q, x, t.shape, strided: true), yt = try poisonedTensor(q, out, strided: true)
            let idx = try q.context.buffer(bytes: out.count * 4)
            try MaxPool.forward(q, x: xt, y: yt, indices: idx, window: window)
            try expectClose(q, yt, y, forwardBound, "forward")
            #expect(try q.read(idx, as: UInt32.self).map(Int.init) == indices)
            let dyt = try deviceTensor(q, dy, out), dxt = try poisonedTensor(q, t.shape, strided: true)
            try MaxPool.backward(q, dy: dyt, indices: idx, dx: dxt, window: window)
            let dx = Reference.maxPoolBackward(dy: dy, indices: indices, shape: t.shape, window: window)
            try expectClose(q, dxt, dx, backwardBound, "backward")
            let prior = randomDoubles(t.shape.count, using: &rng)
            let acc = try deviceTensor(q, prior, t.shape, strided: true)
            try MaxPool.backward(q, dy: dyt, indices: idx, dx: acc, window: window, accumulate: true)
            try expectClose(q, acc, zip(prior, dx).map(+), backwardBound, "accumulated backward")
        }
    }

    @Test(arguments: cases)
    func avgPool(_ t: Case) throws {
        for q in try Shared.queuesForEachLayout() {
            var rng = freshGenerator("avgPool \(t.testDescription)")
            let window = Pool2D(kernel: t.kernel, stride: t.stride, padding: t.padding)
            let out = try window.outputShape("test", t.shape)
            let x = randomDoubles(t.shape.count, using: &rng), dy = randomDoubles(out.count, using: &rng)
            let xt = try deviceTensor(q, x, t.shape), yt = try poisonedTensor(q, out, strided: true)
            try AvgPool.forward(q, x: xt, y: yt, window: window)
            try expectClose(q, yt, Reference.avgPool(x, shape: t.shape, window: window), forwardBound, "forward")
            let dyt = try deviceTensor(q, dy, out, strided: true), dxt = try poisonedTensor(q, t.shape)
            try AvgPool.backward(q, dy: dyt, dx: dxt, window: window)
            try expectClose(q, dxt, Reference.avgPoolBackward(dy: dy, shape: t.shape, window: window), backwardBound, "backward")
        }
    }

    @Test(arguments: [Shape([1, 3, 7, 7]), [2, 64, 1, 1], [3, 5, 16, 17], [2, 9, 33, 31]])
    func globalAvgPool(shape: Shape) throws {
        for q in try Shared.queuesForEachLayout() {
            var rng = freshGenerator("globalAvgPool \(shape)")
            let x = randomDoubles(shape.count, using: &rng), dy = randomDoubles(shape.n * shape.c, using: &rng)
            let xt = try deviceTensor(q, x, shape, strided: true), yt = try poisonedTensor(q, [shape.n, shape.c], strided: true)
            try GlobalAvgPool.forward(q, x: xt, y: yt)
            try expectClose(q, yt, Reference.globalAvgPool(x, shape: shape), forwardBound, "forward")
            let dyt = try deviceTensor(q, dy, [shape.n, shape.c, 1, 1]), dxt = try poisonedTensor(q, shape, strided: true)
            try GlobalAvgPool.backward(q, dy: dyt, dx: dxt)
            try expectClose(q, dxt, Reference.globalAvgPoolBackward(dy: dy, shape: shape), backwardBound, "backward")
        }
    }

    @Test func maxPoolTiesAndNaN() throws {
        let q = try Shared.context().makeQueue()
        // Ties pick the first position; a NaN in the window wins.
        let shape: Shape = [1, 1, 2, 4]
        let x: [Double] = [1, 1, 2, .nan, 1, 1, 0, 2]
        let window = Pool2D(kernel: 2)
        let xt = try deviceTensor(q, x, shape), yt = try poisonedTensor(q, [1, 1, 1, 2])
        let idx = try q.context.buffer(bytes: 8)
        try MaxPool.forward(q, x: xt, y: yt, indices: idx, window: window)
        let y: [Float] = try q.read(yt)
        #expect(y[0] == 1 && y[1].isNaN)
        #expect(try q.read(idx, as: UInt32.self) == [0, 3])
        let (ry, ridx) = Reference.maxPool(x, shape: shape, window: window)
        #expect(ry[0] == 1 && ry[1].isNaN && ridx == [0, 3], "the reference agrees: \(ry) \(ridx)")
    }

    /// The same rules in the stride-2 vector blocks: a row of small integers, full of ties, with
    /// two NaNs, against the reference position by position.
    @Test func maxPoolTiesAndNaNInVectorBlocks() throws {
        var rng = freshGenerator("max pool ties")
        let shape: Shape = [1, 2, 3, 41], window = Pool2D(kernel: 3, stride: 2, padding: 1)
        var x = (0..<shape.count).map { _ in Double(Int.random(in: 0...2, using: &rng)) }
        x[20] = .nan
        x[shape.count - 30] = .nan
        let out = try window.outputShape("test", shape)
        let (ry, ridx) = Reference.maxPool(x, shape: shape, window: window)
        for q in try Shared.queuesForEachLayout() {
            let xt = try deviceTensor(q, x, shape), yt = try poisonedTensor(q, out)
            let idx = try q.context.buffer(bytes: out.count * 4)
            try MaxPool.forward(q, x: xt, y: yt, indices: idx, window: window)
            let y: [Float] = try q.read(yt)
            #expect(zip(y, ry).allSatisfy { $0.isNaN ? $1.isNaN : Double($0) == $1 }, "\(y) against \(ry)")
            #expect(try q.read(idx, as: UInt32.self).map(Int.init) == ridx)
        }
    }

    @Test func referenceGradientsMatchFiniteDifferences() throws {
        var rng = freshGenerator("pool finite differences")
        let shape: Shape = [2, 2, 5, 5]
        let window = Pool2D(kernel: 3, stride: 2, padding: 1)
        let x = randomDoubles(shape.count, using: &rng)
        let out = try window.outputShape("test", shape)
        let dy = randomDoubles(out.count, using: &rng)
        let idx = Reference.maxPool(x, shape: shape, window: window).indices
        #expect(relativeError(Reference.maxPoolBackward(dy: dy, indices: idx, shape: shape, window: window),
                              finiteDifference(at: x) { dot(Reference.maxPool($0, shape: shape, window: window).y, dy) }) < 1e-6)
        #expect(relativeError(Reference.avgPoolBackward(dy: dy, shape: shape, window: window),
                              finiteDifference(at: x) { dot(Reference.avgPool($0, shape: shape, window: window), dy) }) < 1e-6)
        let gdy = randomDoubles(shape.n * shape.c, using: &rng)
        #expect(relativeError(Reference.globalAvgPoolBackward(dy: gdy, shape: shape),
                              finiteDifference(at: x) { dot(Reference.globalAvgPool($0, shape: shape), gdy) }) < 1e-6)
    }

    @Test func badWindowsThrow() throws {
        let q = try Shared.context().makeQueue()
        let x = try poisonedTensor(q, [1, 2, 3, 3]), y = try poisonedTensor(q, [1, 2, 1, 1])
        let big = #expect(throws: CLNetError.self) { try AvgPool.forward(q, x: x, y: y, window: Pool2D(kernel: 5)) }
        #expect("\(big!)".contains("AvgPool") && "\(big!)".contains("larger than the padded input") && "\(big!)".contains("[1, 2, 3, 3]"))
        let pad = #expect(throws: CLNetError.self) { try AvgPool.forward(q, x: x, y: y, window: Pool2D(kernel: 3, padding: -1)) }
        #expect("\(pad!)".contains("padding"))
        let wrong = #expect(throws: CLNetError.self) { try AvgPool.forward(q, x: x, y: x, window: Pool2D(kernel: 3)) }
        #expect("\(wrong!)".contains("[1, 2, 1, 1]") && "\(wrong!)".contains("[1, 2, 3, 3]"))
    }
}
