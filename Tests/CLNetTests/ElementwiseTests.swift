import CLNet
import Testing

@Suite("Elementwise: residual add, add+ReLU, channel scale")
struct ElementwiseTests {
    @Test(arguments: elementwiseShapes, [false, true])
    func add(shape: Shape, relu: Bool) throws {
        for q in try Shared.queuesForEachLayout() {
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
    }

    @Test(arguments: elementwiseShapes)
    func multiply(shape: Shape) throws {
        for q in try Shared.queuesForEachLayout() {
            var rng = freshGenerator("multiply \(shape)")
            let a = randomDoubles(shape.count, using: &rng), b = randomDoubles(shape.count, using: &rng)
            let dy = randomDoubles(shape.count, using: &rng)
            let at = try deviceTensor(q, a, shape, strided: true), bt = try deviceTensor(q, b, shape)
            let yt = try poisonedTensor(q, shape, strided: true)
            try Multiply.forward(q, a: at, b: bt, y: yt)
            try expectClose(q, yt, Reference.multiply(a, b), forwardBound, "forward")
            let dyt = try deviceTensor(q, dy, shape, strided: true)
            let dat = try poisonedTensor(q, shape, strided: true), dbt = try poisonedTensor(q, shape)
            try Multiply.backward(q, other: bt, dy: dyt, dx: dat)
            try Multiply.backward(q, other: at, dy: dyt, dx: dbt)
            try expectClose(q, dat, Reference.multiply(dy, b), backwardBound, "da")
            try expectClose(q, dbt, Reference.multiply(dy, a), backwardBound, "db")
            let prior = randomDoubles(shape.count, using: &rng), acc = try deviceTensor(q, prior, shape)
            try Multiply.backward(q, other: bt, dy: dyt, dx: acc, accumulate: true)
            try expectClose(q, acc, zip(prior, Reference.multiply(dy, b)).map(+), backwardBound, "accumulated da")
        }
    }

    @Test(arguments: elementwiseShapes)
    func channelScale(shape: Shape) throws {
        for q in try Shared.queuesForEachLayout() {
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
    }

    @Test(arguments: [([2, 4, 8, 8], 8, 2), ([1, 3, 7, 5], 5, 2), ([3, 16, 4, 4], 16, 1), ([2, 2, 5, 5], 6, 3),
                      ([2, 6, 9, 21], 12, 2), ([1, 4, 16, 16], 8, 2)] as [(Shape, Int, Int)])
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
        let prior = randomDoubles(shape.count, using: &rng), acc = try deviceTensor(q, prior, shape, strided: true)
        try op.backward(q, dy: try deviceTensor(q, dy, out), dx: acc, accumulate: true)
        try expectClose(q, acc, zip(prior, want).map(+), backwardBound, "accumulated backward")
        #expect(relativeError(want, finiteDifference(at: x) {
            dot(Reference.padShortcut($0, shape: shape, outChannels: outChannels, stride: stride), dy)
        }) < 1e-6)
        #expect(throws: CLNetError.self) { try PadShortcut(outChannels: shape.c + 1, stride: 2).outputShape(shape) }
    }

    @Test(arguments: elementwiseShapes, [2, 3])
    func selectiveSum(shape: Shape, branches m: Int) throws {
        let q = try Shared.context().makeQueue()
        var rng = freshGenerator("selectiveSum \(shape) x\(m)")
        let us = (0..<m).map { _ in randomDoubles(shape.count, using: &rng) }
        let z = randomDoubles(shape.n * m * shape.c, using: &rng, in: -2...2), dy = randomDoubles(shape.count, using: &rng)
        let ut = try us.map { try deviceTensor(q, $0, shape, strided: true) }
        let zt = try deviceTensor(q, z, [shape.n, m * shape.c])
        let yt = try poisonedTensor(q, shape, strided: true)
        try SelectiveSum.forward(q, branches: ut, logits: zt, y: yt)
        try expectClose(q, yt, Reference.selectiveSum(us, shape: shape, logits: z), forwardBound, "forward")
        let want = Reference.selectiveSumBackward(us, shape: shape, logits: z, dy: dy)
        let dyt = try deviceTensor(q, dy, shape, strided: true)
        let dut = try (0..<m).map { _ in try poisonedTensor(q, shape, strided: true) }
        let dzt = try poisonedTensor(q, [shape.n, m * shape.c])
        try SelectiveSum.backward(q, branches: ut, logits: zt, dy: dyt, dbranches: dut, dlogits: dzt)
        for b in 0..<m { try expectClose(q, dut[b], want.dbranches[b], backwardBound, "dbranch \(b)") }
        try expectClose(q, dzt, want.dlogits, backwardBound, "dlogits")
        // Accumulating: branch 1's gradient and the logits'.
        let prior = randomDoubles(shape.count, using: &rng), priorZ = randomDoubles(z.count, using: &rng)
        let acc = try deviceTensor(q, prior, shape), accZ = try deviceTensor(q, priorZ, [shape.n, m * shape.c])
        try SelectiveSum.backward(q, branches: ut, logits: zt, dy: dyt, dbranches: [nil, acc] + Array(repeating: nil, count: m - 2),
                                  dlogits: accZ, accumulate: [false, true] + Array(repeating: false, count: m - 2),
                                  accumulateLogits: true)
        try expectClose(q, acc, zip(prior, want.dbranches[1]).map(+), backwardBound, "accumulated dbranch")
        try expectClose(q, accZ, zip(priorZ, want.dlogits).map(+), backwardBound, "accumulated dlogits")
    }

    @Test(arguments: elementwiseShapes, [(true, true), (false, true), (true, false)])
    func scalarAffine(shape: Shape, form: (scale: Bool, bias: Bool)) throws {
        let q = try Shared.context().makeQueue()
        var rng = freshGenerator("scalarAffine \(shape) \(form)")
        let x = randomDoubles(shape.count, using: &rng), dy = randomDoubles(shape.count, using: &rng)
        let scale = form.scale ? Double.random(in: 0.5...2, using: &rng) : nil
        let bias = form.bias ? Double.random(in: -1...1, using: &rng) : nil
        let params = [scale, bias].compactMap { $0 }
        let pt = try deviceTensor(q, params, [params.count])
        let xt = try deviceTensor(q, x, shape, strided: true), yt = try poisonedTensor(q, shape, strided: true)
        try ScalarAffine.forward(q, x: xt, parameters: pt, hasScale: form.scale, hasBias: form.bias, y: yt)
        try expectClose(q, yt, Reference.scalarAffine(x, scale: scale, bias: bias), forwardBound, "forward")
        let want = Reference.scalarAffineBackward(x, scale: scale, dy: dy)
        let dxt = try poisonedTensor(q, shape, strided: true), dpt = try poisonedTensor(q, [params.count])
        let ws = try poisonedTensor(q, [2 * ScalarAffine.partialGroups])
        try ScalarAffine.backward(q, x: xt, parameters: pt, hasScale: form.scale, hasBias: form.bias,
                                  dy: try deviceTensor(q, dy, shape, strided: true), dx: dxt, dparameters: dpt, workspace: ws)
        try expectClose(q, dxt, want.dx, backwardBound, "dx")
        let wantParams = (form.scale ? [want.dscale] : []) + (form.bias ? [want.dbias] : [])
        try expectClose(q, dpt, wantParams, backwardBound, "dparameters")
        #expect(throws: CLNetError.self) {
            try ScalarAffine.backward(q, x: xt, parameters: pt, hasScale: form.scale, hasBias: form.bias, dy: xt, dx: nil,
                                      dparameters: dpt, workspace: nil)
        }
    }

    @Test func referenceGradientsMatchFiniteDifferences() {
        var rng = freshGenerator("elementwise finite differences")
        let shape: Shape = [3, 2, 2, 3]
        let x = randomDoubles(shape.count, using: &rng), br = randomDoubles(shape.count, using: &rng)
        let dy = randomDoubles(shape.count, using: &rng)
        let s = randomDoubles(shape.n * shape.c, using: &rng)
        let (cdx, cds) = Reference.channelScaleBackward(x, shape: shape, scale: s, dy: dy)
        #expect(relativeError(cdx, finiteDifference(at: x) { dot(Reference.channelScale($0, shape: shape, scale: s), dy) }) < 1e-6)
        #expect(relativeError(cds, finiteDifference(at: s) { dot(Reference.channelScale(x, shape: shape, scale: $0), dy) }) < 1e-6)
        let u2 = [x, br], z = randomDoubles(shape.n * 2 * shape.c, using: &rng, in: -2...2)
        let sk = Reference.selectiveSumBackward(u2, shape: shape, logits: z, dy: dy)
        #expect(relativeError(sk.dbranches[0], finiteDifference(at: x) { dot(Reference.selectiveSum([$0, br], shape: shape, logits: z), dy) }) < 1e-6)
        #expect(relativeError(sk.dlogits, finiteDifference(at: z) { dot(Reference.selectiveSum(u2, shape: shape, logits: $0), dy) }) < 1e-6)
        let fixup = Reference.scalarAffineBackward(x, scale: 1.3, dy: dy)
        #expect(relativeError(fixup.dx, finiteDifference(at: x) { dot(Reference.scalarAffine($0, scale: 1.3, bias: 0.2), dy) }) < 1e-6)
        #expect(relativeError([fixup.dscale, fixup.dbias], finiteDifference(at: [1.3, 0.2]) {
            dot(Reference.scalarAffine(x, scale: $0[0], bias: $0[1]), dy)
        }) < 1e-6)
    }

    @Test func shapeErrorsNameBothShapes() throws {
        let q = try Shared.context().makeQueue()
        let a = try poisonedTensor(q, [2, 3, 4, 4]), b = try poisonedTensor(q, [2, 4, 4, 4])
        let e = #expect(throws: CLNetError.self) { try Add.forward(q, a: a, b: b, y: a) }
        #expect("\(e!)".contains("Add") && "\(e!)".contains("[2, 3, 4, 4]") && "\(e!)".contains("[2, 4, 4, 4]"))
        let s = try poisonedTensor(q, [3])
        #expect(throws: CLNetError.self) { try ChannelScale.forward(q, x: a, scale: s, y: a) }
    }
}
