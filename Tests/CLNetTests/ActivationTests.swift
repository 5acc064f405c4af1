import CLNet
import Testing

@Suite("Activation: ReLU, PReLU, dropout, sigmoid")
struct ActivationTests {
    @Test(arguments: elementwiseShapes, [false, true])
    func relu(shape: Shape, strided: Bool) throws {
        for q in try Shared.queuesForEachLayout() {
            var rng = freshGenerator("relu \(shape)")
            let x = randomDoubles(shape.count, using: &rng), dy = randomDoubles(shape.count, using: &rng)
            let y = Reference.relu(x)
            let dx = Reference.reluBackward(y: y, dy: dy)
            let xt = try deviceTensor(q, x, shape, strided: strided), yt = try poisonedTensor(q, shape, strided: !strided)
            try ReLU.forward(q, x: xt, y: yt)
            try expectClose(q, yt, y, forwardBound, "forward")
            let dyt = try deviceTensor(q, dy, shape, strided: strided), dxt = try poisonedTensor(q, shape, strided: strided)
            try ReLU.backward(q, y: yt, dy: dyt, dx: dxt)
            try expectClose(q, dxt, dx, backwardBound, "backward")
            // Accumulate adds to what is there.
            let prior = randomDoubles(shape.count, using: &rng)
            let acc = try deviceTensor(q, prior, shape, strided: strided)
            try ReLU.backward(q, y: yt, dy: dyt, dx: acc, accumulate: true)
            try expectClose(q, acc, zip(prior, dx).map(+), backwardBound, "accumulate")
            // In place.
            try ReLU.forward(q, x: xt, y: xt)
            try expectClose(q, xt, y, forwardBound, "in place")
        }
    }

    /// PReLU at every layout (Shared.queuesForEachLayout), on views, with dx written and then
    /// accumulated; the last shape's planes are two tiles of the kernels' runs.
    @Test(arguments: elementwiseShapes + [[1, 2, 91, 91]], [false, true])
    func prelu(shape: Shape, strided: Bool) throws {
        for q in try Shared.queuesForEachLayout() {
            var rng = freshGenerator("prelu \(shape)")
            let x = randomDoubles(shape.count, using: &rng), dy = randomDoubles(shape.count, using: &rng)
            let slope = randomDoubles(shape.c, using: &rng, in: 0...0.5)
            let y = Reference.prelu(x, shape: shape, slope: slope)
            let (dx, dslope) = Reference.preluBackward(x, shape: shape, slope: slope, dy: dy)
            let xt = try deviceTensor(q, x, shape, strided: strided)
            let st = try deviceTensor(q, slope, [shape.c], strided: false)
            let yt = try poisonedTensor(q, shape, strided: strided)
            try PReLU.forward(q, x: xt, slope: st, y: yt)
            try expectClose(q, yt, y, forwardBound, "forward")
            let dyt = try deviceTensor(q, dy, shape, strided: strided)
            let dxt = try poisonedTensor(q, shape, strided: strided), dst = try poisonedTensor(q, [shape.c])
            try PReLU.backward(q, x: xt, slope: st, dy: dyt, dx: dxt, dslope: dst)
            try expectClose(q, dxt, dx, backwardBound, "dx")
            try expectClose(q, dst, dslope, backwardBound, "dslope")
            let prior = randomDoubles(shape.count, using: &rng)
            let acc = try deviceTensor(q, prior, shape, strided: strided)
            try PReLU.backward(q, x: xt, slope: st, dy: dyt, dx: acc, dslope: nil, accumulate: true)
            try expectClose(q, acc, zip(prior, dx).map(+), backwardBound, "accumulated dx")
        }
    }

    // The second shape's samples are two tiles of the kernel's walk.
    @Test(arguments: [Float(0.1), 0.5], [Shape([3, 7, 9, 5]), [2, 3, 60, 50]])
    func dropout(p: Float, shape: Shape) throws {
        for q in try Shared.queuesForEachLayout() {
            var rng = freshGenerator("dropout \(p) \(shape)")
            let seed = UInt32.random(in: 0...UInt32.max, using: &rng)
            let x = randomDoubles(shape.count, using: &rng), dy = randomDoubles(shape.count, using: &rng)
            let y = Reference.dropout(x, p: p, seed: seed)
            let dropped = Double(y.filter { $0 == 0 }.count) / Double(y.count)
            // Five standard deviations of the dropped fraction (binomial): a fixed 0.05 was 3.3 of
            // them at p = 0.5 on 945 values, and failed about one run in a thousand.
            let bound = 5 * (Double(p) * (1 - Double(p)) / Double(y.count)).squareRoot()
            #expect(abs(dropped - Double(p)) < bound, "dropped \(dropped), expected \(p) within \(bound)")
            let xt = try deviceTensor(q, x, shape, strided: true), yt = try poisonedTensor(q, shape)
            try Dropout.forward(q, x: xt, y: yt, p: p, seed: seed)
            try expectClose(q, yt, y, forwardBound, "forward")
            let dyt = try deviceTensor(q, dy, shape), dxt = try poisonedTensor(q, shape, strided: true)
            try Dropout.backward(q, dy: dyt, dx: dxt, p: p, seed: seed)
            try expectClose(q, dxt, Reference.dropoutBackward(dy: dy, p: p, seed: seed), backwardBound, "backward")
            #expect(throws: CLNetError.self) { try Dropout.forward(q, x: xt, y: yt, p: 1, seed: seed) }
        }
    }

    @Test(arguments: elementwiseShapes)
    func sigmoid(shape: Shape) throws {
        let q = try Shared.context().makeQueue()
        var rng = freshGenerator("sigmoid \(shape)")
        let x = randomDoubles(shape.count, using: &rng, in: -4...4), dy = randomDoubles(shape.count, using: &rng)
        let y = Reference.sigmoid(x)
        let xt = try deviceTensor(q, x, shape, strided: true), yt = try poisonedTensor(q, shape)
        try Sigmoid.forward(q, x: xt, y: yt)
        try expectClose(q, yt, y, forwardBound, "forward")
        let dyt = try deviceTensor(q, dy, shape), dxt = try poisonedTensor(q, shape, strided: true)
        try Sigmoid.backward(q, y: yt, dy: dyt, dx: dxt)
        try expectClose(q, dxt, Reference.sigmoidBackward(y: y, dy: dy), backwardBound, "backward")
    }

    /// The reference's gradients against central differences (inputs kept away from ReLU's kink).
    @Test func referenceGradientsMatchFiniteDifferences() {
        var rng = freshGenerator("activation finite differences")
        let shape: Shape = [2, 3, 2, 2]
        let x = randomDoubles(shape.count, using: &rng).map { $0 + ($0 >= 0 ? 0.1 : -0.1) }
        let dy = randomDoubles(shape.count, using: &rng)
        let slope = randomDoubles(shape.c, using: &rng, in: 0...0.5)
        let (dx, dslope) = Reference.preluBackward(x, shape: shape, slope: slope, dy: dy)
        #expect(relativeError(dx, finiteDifference(at: x) { dot(Reference.prelu($0, shape: shape, slope: slope), dy) }) < 1e-6)
        #expect(relativeError(dslope, finiteDifference(at: slope) { dot(Reference.prelu(x, shape: shape, slope: $0), dy) }) < 1e-6)
        let reluGrad = Reference.reluBackward(y: Reference.relu(x), dy: dy)
        #expect(relativeError(reluGrad, finiteDifference(at: x) { dot(Reference.relu($0), dy) }) < 1e-6)
        let sigGrad = Reference.sigmoidBackward(y: Reference.sigmoid(x), dy: dy)
        #expect(relativeError(sigGrad, finiteDifference(at: x) { dot(Reference.sigmoid($0), dy) }) < 1e-6)
        let seed: UInt32 = 7
        let dropGrad = Reference.dropoutBackward(dy: dy, p: 0.3, seed: seed)
        #expect(relativeError(dropGrad, finiteDifference(at: x) { dot(Reference.dropout($0, p: 0.3, seed: seed), dy) }) < 1e-6)
    }

    @Test func shapeErrorsNameTheOperatorAndShapes() throws {
        let q = try Shared.context().makeQueue()
        let x = try poisonedTensor(q, [2, 3, 4, 4]), y = try poisonedTensor(q, [2, 3, 4, 5])
        let e = #expect(throws: CLNetError.self) { try ReLU.forward(q, x: x, y: y) }
        #expect("\(e!)".contains("ReLU") && "\(e!)".contains("[2, 3, 4, 4]") && "\(e!)".contains("[2, 3, 4, 5]"))
        let slope = try poisonedTensor(q, [4])
        let p = #expect(throws: CLNetError.self) { try PReLU.forward(q, x: x, slope: slope, y: x) }
        #expect("\(p!)".contains("PReLU") && "\(p!)".contains("[4]") && "\(p!)".contains("[2, 3, 4, 4]"))
    }
}
