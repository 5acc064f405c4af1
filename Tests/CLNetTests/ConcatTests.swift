import CLNet
import Testing

@Suite("Concat: channel concatenation, copying and in place, and the channel slice")
struct ConcatTests {
    @Test(arguments: [[1, 2, 3], [5], [4, 4, 1, 7]], [1, 3])
    func concat(channels: [Int], batch: Int) throws {
        for q in try Shared.queuesForEachLayout() {
            var rng = freshGenerator("concat \(channels) batch \(batch)")
            let shapes = channels.map { Shape([batch, $0, 5, 3]) }
            let xs = shapes.map { randomDoubles($0.count, using: &rng) }
            let out = try Concat.outputShape(shapes)
            let dy = randomDoubles(out.count, using: &rng)
            let inputs = try zip(xs, shapes).map { try deviceTensor(q, $0, $1, strided: true) }
            let yt = try poisonedTensor(q, out, strided: true)
            try Concat.forward(q, inputs: inputs, y: yt)
            try expectClose(q, yt, Reference.concat(xs, shapes: shapes), forwardBound, "forward")
            let dyt = try deviceTensor(q, dy, out)
            let dxs = try shapes.map { try poisonedTensor(q, $0) }
            try Concat.backward(q, dy: dyt, dxs: dxs, channels: channels)
            for (i, want) in Reference.concatBackward(dy: dy, shapes: shapes).enumerated() {
                try expectClose(q, dxs[i], want, backwardBound, "dx \(i)")
            }
        }
    }

    /// The DenseNet form: producers write into slices of one preallocated buffer and the
    /// concatenation is the buffer itself.
    @Test func producersWriteIntoTheirSlices() throws {
        let q = try Shared.context().makeQueue()
        var rng = freshGenerator("concat in place")
        let shapes: [Shape] = [[2, 3, 4, 4], [2, 5, 4, 4]]
        let xs = shapes.map { randomDoubles($0.count, using: &rng) }
        let block = try poisonedTensor(q, try Concat.outputShape(shapes))
        for (i, (x, s)) in zip(xs, shapes).enumerated() {
            let start = i == 0 ? 0 : 3
            try ReLU.forward(q, x: try deviceTensor(q, x, s), y: try block.slice(channels: start..<start + s.c))
        }
        try expectClose(q, block, Reference.concat(xs.map(Reference.relu), shapes: shapes), forwardBound, "block")
    }

    @Test func referenceGradientMatchesFiniteDifferences() {
        var rng = freshGenerator("concat finite differences")
        let shapes: [Shape] = [[2, 1, 2, 2], [2, 3, 2, 2]]
        let a = randomDoubles(shapes[0].count, using: &rng), b = randomDoubles(shapes[1].count, using: &rng)
        let dy = randomDoubles(16 * 2, using: &rng)
        let grads = Reference.concatBackward(dy: dy, shapes: shapes)
        #expect(relativeError(grads[0], finiteDifference(at: a) { dot(Reference.concat([$0, b], shapes: shapes), dy) }) < 1e-6)
        #expect(relativeError(grads[1], finiteDifference(at: b) { dot(Reference.concat([a, $0], shapes: shapes), dy) }) < 1e-6)
    }

    /// A slice of every position (first, middle, last, all channels), into a strided output, and
    /// its gradient both written (zeros outside the slice) and added.
    @Test(arguments: [(0, 2), (1, 3), (3, 2), (0, 5)], [1, 3])
    func channelSlice(slice: (start: Int, count: Int), batch: Int) throws {
        let op = ChannelSlice(start: slice.start, count: slice.count)
        for q in try Shared.queuesForEachLayout() {
            var rng = freshGenerator("channel slice \(slice) batch \(batch)")
            let shape: Shape = [batch, 5, 3, 7]
            let x = randomDoubles(shape.count, using: &rng)
            let out = try op.outputShape(shape)
            let yt = try poisonedTensor(q, out, strided: true)
            try op.forward(q, x: try deviceTensor(q, x, shape, strided: true), y: yt)
            try expectClose(q, yt, Reference.channelSlice(x, shape: shape, start: op.start, count: op.count), forwardBound, "forward")
            let dy = randomDoubles(out.count, using: &rng)
            let want = Reference.channelSliceBackward(dy: dy, shape: shape, start: op.start, count: op.count)
            let dyt = try deviceTensor(q, dy, out, strided: true)
            let dxt = try poisonedTensor(q, shape, strided: true)
            try op.backward(q, dy: dyt, dx: dxt)
            try expectClose(q, dxt, want, backwardBound, "dx")
            let prior = randomDoubles(shape.count, using: &rng)
            let summed = try deviceTensor(q, prior, shape, strided: true)
            try op.backward(q, dy: dyt, dx: summed, accumulate: true)
            try expectClose(q, summed, zip(prior, want).map(+), backwardBound, "dx accumulated")
        }
    }

    @Test func channelSliceReferenceGradientMatchesFiniteDifferences() {
        var rng = freshGenerator("channel slice finite differences")
        let shape: Shape = [2, 4, 2, 3]
        let x = randomDoubles(shape.count, using: &rng), dy = randomDoubles(2 * 2 * 6, using: &rng)
        let grad = Reference.channelSliceBackward(dy: dy, shape: shape, start: 1, count: 2)
        let numeric = finiteDifference(at: x) { dot(Reference.channelSlice($0, shape: shape, start: 1, count: 2), dy) }
        #expect(relativeError(grad, numeric) < 1e-6)
    }

    @Test func sliceOutsideTheInputThrows() throws {
        let e = #expect(throws: CLNetError.self) { try ChannelSlice(start: 3, count: 3).outputShape([2, 5, 4, 4]) }
        #expect("\(e!)".contains("ChannelSlice") && "\(e!)".contains("3..<6") && "\(e!)".contains("[2, 5, 4, 4]"))
    }

    @Test func mismatchedInputsThrow() throws {
        let e = #expect(throws: CLNetError.self) { try Concat.outputShape([[2, 3, 4, 4], [2, 3, 5, 4]]) }
        #expect("\(e!)".contains("Concat") && "\(e!)".contains("[2, 3, 5, 4]") && "\(e!)".contains("[2, 3, 4, 4]"))
    }
}
