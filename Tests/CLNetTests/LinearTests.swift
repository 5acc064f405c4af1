import CLNet
import Testing

@Suite("Linear: fully connected layer")
struct LinearTests {
    @Test(arguments: [(1, 1, 1), (1, 7, 3), (5, 64, 10), (8, 130, 17), (3, 512, 1000)])
    func linear(batch: Int, inF: Int, outF: Int) throws {
        let q = try Shared.context().makeQueue()
        var rng = freshGenerator("linear \(batch)x\(inF)->\(outF)")
        let x = randomDoubles(batch * inF, using: &rng), w = randomDoubles(outF * inF, using: &rng)
        let b = randomDoubles(outF, using: &rng), dy = randomDoubles(batch * outF, using: &rng)
        let y = Reference.linear(x, batch: batch, weight: w, outFeatures: outF, bias: b)
        let g = Reference.linearBackward(x, batch: batch, weight: w, outFeatures: outF, dy: dy)
        // x as the [N, C, 1, 1] output of a global pool, in a strided view.
        let xt = try deviceTensor(q, x, [batch, inF, 1, 1], strided: true)
        let wt = try deviceTensor(q, w, [outF, inF]), bt = try deviceTensor(q, b, [outF])
        let yt = try poisonedTensor(q, [batch, outF], strided: true)
        try Linear.forward(q, x: xt, weight: wt, bias: bt, y: yt)
        try expectClose(q, yt, y, forwardBound, "forward")
        let dyt = try deviceTensor(q, dy, [batch, outF], strided: true)
        let dxt = try poisonedTensor(q, [batch, inF, 1, 1])
        let dwt = try poisonedTensor(q, [outF, inF]), dbt = try poisonedTensor(q, [outF])
        try Linear.backward(q, x: xt, weight: wt, dy: dyt, dx: dxt, dweight: dwt, dbias: dbt)
        try expectClose(q, dxt, g.dx, backwardBound, "dx")
        try expectClose(q, dwt, g.dweight, backwardBound, "dweight")
        try expectClose(q, dbt, g.dbias, backwardBound, "dbias")
        try Linear.backward(q, x: xt, weight: wt, dy: dyt, dx: nil, dweight: dwt, dbias: dbt, accumulate: true)
        try expectClose(q, dwt, g.dweight.map { 2 * $0 }, backwardBound, "accumulated dweight")
        try expectClose(q, dbt, g.dbias.map { 2 * $0 }, backwardBound, "accumulated dbias")
    }

    @Test func referenceGradientsMatchFiniteDifferences() {
        var rng = freshGenerator("linear finite differences")
        let (batch, inF, outF) = (3, 4, 5)
        let x = randomDoubles(batch * inF, using: &rng), w = randomDoubles(outF * inF, using: &rng)
        let b = randomDoubles(outF, using: &rng), dy = randomDoubles(batch * outF, using: &rng)
        let g = Reference.linearBackward(x, batch: batch, weight: w, outFeatures: outF, dy: dy)
        #expect(relativeError(g.dx, finiteDifference(at: x) { dot(Reference.linear($0, batch: batch, weight: w, outFeatures: outF, bias: b), dy) }) < 1e-6)
        #expect(relativeError(g.dweight, finiteDifference(at: w) { dot(Reference.linear(x, batch: batch, weight: $0, outFeatures: outF, bias: b), dy) }) < 1e-6)
        #expect(relativeError(g.dbias, finiteDifference(at: b) { dot(Reference.linear(x, batch: batch, weight: w, outFeatures: outF, bias: $0), dy) }) < 1e-6)
    }

    @Test func mismatchedWeightThrows() throws {
        let q = try Shared.context().makeQueue()
        let x = try poisonedTensor(q, [2, 8]), w = try poisonedTensor(q, [3, 7]), y = try poisonedTensor(q, [2, 3])
        let e = #expect(throws: CLNetError.self) { try Linear.forward(q, x: x, weight: w, bias: nil, y: y) }
        #expect("\(e!)".contains("Linear") && "\(e!)".contains("[2, 8]") && "\(e!)".contains("[3, 7]"))
    }
}
