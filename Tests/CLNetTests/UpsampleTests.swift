import CLNet
import Foundation
import Testing

@Suite("Upsample: nearest and bilinear against the reference and PyTorch's F.interpolate")
struct UpsampleTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var shape: Shape
        var op: Upsample
        var testDescription: String { "\(shape) \(op.mode) -> \(op.height)x\(op.width)\(op.factor.map { " (factor \($0.h)x\($0.w))" } ?? "")" }
    }

    /// Odd sizes, batch 1, integer and fractional factors, a size given outright, 8x (DenseASPP's
    /// last step) and a reduction.
    static let cases: [Case] = Upsample.Mode.allCases.flatMap { mode -> [Case] in
        [
            Case(shape: [2, 3, 4, 5], op: Upsample(mode, factor: (2, 2), input: [2, 3, 4, 5])),
            Case(shape: [1, 2, 5, 3], op: Upsample(mode, factor: (3, 3), input: [1, 2, 5, 3])),
            Case(shape: [1, 2, 7, 6], op: Upsample(mode, factor: (1.5, 1.5), input: [1, 2, 7, 6])),
            Case(shape: [2, 2, 5, 7], op: Upsample(mode, height: 13, width: 9)),
            Case(shape: [1, 3, 9, 8], op: Upsample(mode, height: 4, width: 5)),
            Case(shape: [3, 4, 3, 3], op: Upsample(mode, factor: (8, 8), input: [3, 4, 3, 3])),
            Case(shape: [1, 1, 1, 1], op: Upsample(mode, factor: (2, 3), input: [1, 1, 1, 1])),
        ]
    }

    @Test(arguments: cases)
    func matchesReference(_ t: Case) throws {
        var rng = freshGenerator("upsample \(t.testDescription)")
        let out = try t.op.outputShape(t.shape)
        let x = randomDoubles(t.shape.count, using: &rng), dy = randomDoubles(out.count, using: &rng)
        let y = Reference.upsample(x, shape: t.shape, op: t.op), dx = Reference.upsampleBackward(dy: dy, shape: t.shape, op: t.op)
        for q in try Shared.queuesForEachLayout() {
            let xt = try deviceTensor(q, x, t.shape, strided: true), yt = try poisonedTensor(q, out, strided: true)
            try t.op.forward(q, x: xt, y: yt)
            try expectClose(q, yt, y, forwardBound, "forward")
            let dyt = try deviceTensor(q, dy, out, strided: true), dxt = try poisonedTensor(q, t.shape, strided: true)
            try t.op.backward(q, dy: dyt, dx: dxt)
            try expectClose(q, dxt, dx, backwardBound, "dx")
            let prior = randomDoubles(t.shape.count, using: &rng), acc = try deviceTensor(q, prior, t.shape)
            try t.op.backward(q, dy: dyt, dx: acc, accumulate: true)
            try expectClose(q, acc, zip(prior, dx).map(+), backwardBound, "accumulated dx")
        }
    }

    /// The reference's backward is the transpose of its forward: <dy, f(x)> has gradient
    /// f^T dy, checked by central differences in Double.
    @Test(arguments: cases.filter { $0.shape.count <= 120 })
    func referenceGradientMatchesFiniteDifferences(_ t: Case) throws {
        var rng = freshGenerator("upsample fd \(t.testDescription)")
        let out = try t.op.outputShape(t.shape)
        let x = randomDoubles(t.shape.count, using: &rng), dy = randomDoubles(out.count, using: &rng)
        let numeric = finiteDifference(at: x) { dot(dy, Reference.upsample($0, shape: t.shape, op: t.op)) }
        let error = relativeError(Reference.upsampleBackward(dy: dy, shape: t.shape, op: t.op), numeric)
        #expect(error <= 1e-7, "relative error \(error)")
    }

    /// `Fixtures/make_upsample_fixture.py`'s cases, in order.
    static let fixtureCases: [Case] = [
        Case(shape: [2, 3, 4, 5], op: Upsample(.nearest, factor: (2, 2), input: [2, 3, 4, 5])),
        Case(shape: [2, 3, 4, 5], op: Upsample(.bilinear, factor: (2, 2), input: [2, 3, 4, 5])),
        Case(shape: [1, 2, 5, 3], op: Upsample(.bilinear, factor: (3, 3), input: [1, 2, 5, 3])),
        Case(shape: [1, 2, 5, 3], op: Upsample(.nearest, factor: (3, 3), input: [1, 2, 5, 3])),
        Case(shape: [1, 2, 7, 6], op: Upsample(.bilinear, factor: (1.5, 1.5), input: [1, 2, 7, 6])),
        Case(shape: [1, 2, 7, 6], op: Upsample(.nearest, factor: (1.5, 1.5), input: [1, 2, 7, 6])),
        Case(shape: [2, 2, 5, 7], op: Upsample(.bilinear, height: 13, width: 9)),
        Case(shape: [2, 2, 5, 7], op: Upsample(.nearest, height: 13, width: 9)),
        Case(shape: [1, 3, 9, 8], op: Upsample(.bilinear, height: 4, width: 5)),
        Case(shape: [1, 2, 3, 3], op: Upsample(.bilinear, factor: (8, 8), input: [1, 2, 3, 3])),
    ]

    /// PyTorch's float32 results (the fixture): the reference and the device within 1e-6.
    @Test(arguments: Array(fixtureCases.indices))
    func matchesPyTorch(_ i: Int) throws {
        let t = Self.fixtureCases[i], out = try t.op.outputShape(t.shape)
        let file = try SafeTensors(contentsOf: URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("Fixtures/upsample.safetensors"))
        func load(_ name: String) throws -> [Double] { try file.floats("case\(i).\(name)").map(Double.init) }
        let x = try load("x"), r = try load("r"), y = try load("y"), dx = try load("dx")
        try #require(x.count == t.shape.count && y.count == out.count, "fixture case \(i) has the shapes of \(t.testDescription)")
        #expect(relativeError(Reference.upsample(x, shape: t.shape, op: t.op), y) <= 1e-6, "reference y")
        #expect(relativeError(Reference.upsampleBackward(dy: r, shape: t.shape, op: t.op), dx) <= 1e-6, "reference dx")
        let q = try Shared.context().makeQueue()
        let xt = try deviceTensor(q, x, t.shape), yt = try poisonedTensor(q, out), dxt = try poisonedTensor(q, t.shape)
        try t.op.forward(q, x: xt, y: yt)
        try expectClose(q, yt, y, 1e-6, "device y")
        try t.op.backward(q, dy: try deviceTensor(q, r, out), dx: dxt)
        try expectClose(q, dxt, dx, 1e-6, "device dx")
    }

    @Test func refusesWrongShapes() throws {
        var b = GraphBuilder()
        let x = try b.input("input", shape: [2, 3, 4, 4])
        #expect(throws: CLNetError.self) { _ = try b.upsample(x, .bilinear, factor: 0, name: "up") }
        #expect(throws: CLNetError.self) { _ = try b.upsample(x, .bilinear, factor: .infinity, name: "up") }
        #expect(throws: CLNetError.self) { _ = try b.upsample(x, .nearest, factor: 1e300, name: "up") }
        #expect(throws: CLNetError.self) { _ = try b.upsample(x, .nearest, height: 0, width: 3, name: "up") }
        let flat = try b.input("flat", shape: [2, 12])
        #expect(throws: CLNetError.self) { _ = try b.upsample(flat, .nearest, factor: 2, name: "up") }
        let q = try Shared.context().makeQueue()
        let op = Upsample(.bilinear, height: 8, width: 8)
        #expect(throws: CLNetError.self) {
            try op.forward(q, x: try poisonedTensor(q, [2, 3, 4, 4]), y: try poisonedTensor(q, [2, 3, 8, 7]))
        }
    }
}
