import CLNet
import Testing

@Suite("Elementwise: residual add, add+ReLU, scaled add, channel scale")
struct ElementwiseTests {
    @Test(arguments: elementwiseShapes, [false, true])
    func add(shape: Shape, relu: Bool) throws {
        let q = try Shared.context().makeQueue()
        var rng = freshGenerator("add \(shape) relu \(relu)")
        let a = randomDoubles(shape.count, using: &rng), b = randomDoubles(shape.count, using: &rng)
        let dy = randomDoubles(shape.count, using: &rng)
        let y = Reference.add(a, b, relu: relu)
        let at = try deviceTensor(q, a, shape, strided: true), bt = try deviceTensor(q, b, shape)
        let yt = try poisonedTensor(q, shape, strided: relu)
        try Add.forward(q, a: at, b: bt, y: yt, relu: relu)
        try expectClose(q, yt, y, forwardBound, "forward")
        let dyt = try deviceTensor(q, dy, shape), dxt = try poisonedTensor(q, shape, strided: true)
        try Add.backward(q, y: yt, dy: dyt, dx: dxt, relu: relu)
        try expectClose(q, dxt, Reference.addBackward(y: y, dy: dy, relu: relu), backwardBound, "backward")
        // In place into the first addend, as a residual block's end does.
        try Add.forward(q, a: at, b: bt, y: at, relu: relu)
        try expectClose(q, at, y, forwardBound, "in place")
    }

    @Test(arguments: elementwiseShapes, [false, true])
    func scaledAdd(shape: Shape, relu: Bool) throws {
        let q = try Shared.context().makeQueue()
        var rng = freshGenerator("scaledAdd \(shape)")
        let x = randomDoubles(shape.count, using: &rng), br = randomDoubles(shape.count, using: &rng)
        let dy = randomDoubles(shape.count, using: &rng)
        // Training masks (0 or 1) and an inference survival probability.
        let scale = (0..<shape.n).map { i in i % 3 == 2 ? 0.8 : Double(Int.random(in: 0...1, using: &rng)) }
        let y = Reference.scaledAdd(x, branch: br, scale: scale, shape: shape, relu: relu)
        let (dx, dbranch) = Reference.scaledAddBackward(y: y, dy: dy, scale: scale, shape: shape, relu: relu)
        let xt = try deviceTensor(q, x, shape), bt = try deviceTensor(q, br, shape, strided: true)
        let st = try deviceTensor(q, scale, [shape.n]), yt = try poisonedTensor(q, shape)
        try ScaledAdd.forward(q, x: xt, branch: bt, scale: st, y: yt, relu: relu)
        try expectClose(q, yt, y, forwardBound, "forward")
        let dyt = try deviceTensor(q, dy, shape)
        let dxt = try poisonedTensor(q, shape), dbt = try poisonedTensor(q, shape, strided: true)
        try ScaledAdd.backward(q, y: yt, dy: dyt, scale: st, dx: dxt, dbranch: dbt, relu: relu)
        try expectClose(q, dxt, dx, backwardBound, "dx")
        try expectClose(q, dbt, dbranch, backwardBound, "dbranch")
    }

    @Test(arguments: elementwiseShapes)
    func channelScale(shape: Shape) throws {
        let q = try Shared.context().makeQueue()
        var rng = freshGenerator("channelScale \(shape)")
        let x = randomDoubles(shape.count, using: &rng), dy = randomDoubles(shape.count, using: &rng)
        let s = randomDoubles(shape.n * shape.c, using: &rng, in: 0...1)
        let (dx, ds) = Reference.channelScaleBackward(x, shape: shape, scale: s, dy: dy)
        let xt = try deviceTensor(q, x, shape, strided: true), st = try deviceTensor(q, s, [shape.n, shape.c])
        let yt = try poisonedTensor(q, shape, strided: true)
        try ChannelScale.forward(q, x: xt, scale: st, y: yt)
        try expectClose(q, yt, Reference.channelScale(x, shape: shape, scale: s), forwardBound, "forward")
        let dyt = try deviceTensor(q, dy, shape)
        let dxt = try poisonedTensor(q, shape), dst = try poisonedTensor(q, [shape.n, shape.c])
        try ChannelScale.backward(q, x: xt, scale: st, dy: dyt, dx: dxt, dscale: dst)
        try expectClose(q, dxt, dx, backwardBound, "dx")
        try expectClose(q, dst, ds, backwardBound, "dscale")
        // Accumulating into the scale gradient.
        let prior = randomDoubles(shape.n * shape.c, using: &rng)
        let acc = try deviceTensor(q, prior, [shape.n, shape.c])
        try ChannelScale.backward(q, x: xt, scale: st, dy: dyt, dx: nil, dscale: acc, accumulate: true)
        try expectClose(q, acc, zip(prior, ds).map(+), backwardBound, "accumulated dscale")
    }

    @Test(arguments: [([2, 4, 8, 8], 8, 2), ([1, 3, 7, 5], 5, 2), ([3, 16, 4, 4], 16, 1), ([2, 2, 5, 5], 6, 3)] as [(Shape, Int, Int)])
    func padShortcut(shape: Shape, outChannels: Int, stride: Int) throws {
        let q = try Shared.context().makeQueue()
        var rng = freshGenerator("padShortcut \(shape) -> \(outChannels) s\(stride)")
        let op = PadShortcut(outChannels: outChannels, stride: stride)
        let out = try op.outputShape(shape)
        let x = randomDoubles(shape.count, using: &rng), dy = randomDoubles(out.count, using: &rng)
        let xt = try deviceTensor(q, x, shape, strided: true), yt = try poisonedTensor(q, out, strided: true)
        try op.forward(q, x: xt, y: yt)
        try expectClose(q, yt, Reference.padShortcut(x, shape: shape, outChannels: outChannels, stride: stride), forwardBound, "forward")
        let dxt = try poisonedTensor(q, shape, strided: true)
        try op.backward(q, dy: try deviceTensor(q, dy, out), dx: dxt)
        let want = Reference.padShortcutBackward(dy: dy, shape: shape, outChannels: outChannels, stride: stride)
        try expectClose(q, dxt, want, backwardBound, "backward")
        #expect(relativeError(want, finiteDifference(at: x) {
            dot(Reference.padShortcut($0, shape: shape, outChannels: outChannels, stride: stride), dy)
        }) < 1e-6)
        #expect(throws: CLNetError.self) { try PadShortcut(outChannels: shape.c + 1, stride: 2).outputShape(shape) }
    }

    @Test func referenceGradientsMatchFiniteDifferences() {
        var rng = freshGenerator("elementwise finite differences")
        let shape: Shape = [3, 2, 2, 3]
        let x = randomDoubles(shape.count, using: &rng), br = randomDoubles(shape.count, using: &rng)
        let dy = randomDoubles(shape.count, using: &rng)
        let scale = [1.0, 0.0, 0.7]
        let y = Reference.scaledAdd(x, branch: br, scale: scale, shape: shape)
        let (dx, dbranch) = Reference.scaledAddBackward(y: y, dy: dy, scale: scale, shape: shape)
        #expect(relativeError(dx, finiteDifference(at: x) { dot(Reference.scaledAdd($0, branch: br, scale: scale, shape: shape), dy) }) < 1e-6)
        #expect(relativeError(dbranch, finiteDifference(at: br) { dot(Reference.scaledAdd(x, branch: $0, scale: scale, shape: shape), dy) }) < 1e-6)
        let s = randomDoubles(shape.n * shape.c, using: &rng)
        let (cdx, cds) = Reference.channelScaleBackward(x, shape: shape, scale: s, dy: dy)
        #expect(relativeError(cdx, finiteDifference(at: x) { dot(Reference.channelScale($0, shape: shape, scale: s), dy) }) < 1e-6)
        #expect(relativeError(cds, finiteDifference(at: s) { dot(Reference.channelScale(x, shape: shape, scale: $0), dy) }) < 1e-6)
    }

    @Test func shapeErrorsNameBothShapes() throws {
        let q = try Shared.context().makeQueue()
        let a = try poisonedTensor(q, [2, 3, 4, 4]), b = try poisonedTensor(q, [2, 4, 4, 4])
        let e = #expect(throws: CLNetError.self) { try Add.forward(q, a: a, b: b, y: a) }
        #expect("\(e!)".contains("Add") && "\(e!)".contains("[2, 3, 4, 4]") && "\(e!)".contains("[2, 4, 4, 4]"))
        let s = try poisonedTensor(q, [3])
        #expect(throws: CLNetError.self) { try ScaledAdd.forward(q, x: a, branch: a, scale: s, y: a) }
        #expect(throws: CLNetError.self) { try ChannelScale.forward(q, x: a, scale: s, y: a) }
    }
}
