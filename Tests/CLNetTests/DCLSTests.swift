import CLNet
import Foundation
import Testing

@Suite("DCLS: convolutions with learnable spacings against the reference and finite differences")
struct DCLSTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var shape: Shape
        var op: DCLSConv2D
        var bias: Bool
        var testDescription: String { "\(shape) \(op)\(bias ? " bias" : "")" }
    }

    static func c(_ shape: Shape, out: Int, size: Int, count: Int, s: Int = 1, g: Int = 1, bias: Bool = false) -> Case {
        Case(shape: shape, op: DCLSConv2D(Conv2D(inChannels: shape.c, outChannels: out, kernel: size, stride: s, padding: size / 2,
                                                 groups: g), count: count), bias: bias)
    }

    static let cases: [Case] = [
        c([2, 3, 7, 6], out: 5, size: 5, count: 9, bias: true),   // a 3x3's nine elements in a 5x5 footprint
        c([1, 4, 9, 10], out: 6, size: 5, count: 4, s: 2),        // stride 2, batch 1
        c([2, 6, 6, 7], out: 4, size: 7, count: 3, g: 2, bias: true), // groups, a 7x7 footprint
        c([2, 2, 5, 5], out: 3, size: 3, count: 1),               // one element
        c([1, 8, 6, 6], out: 8, size: 5, count: 5, g: 8),         // depthwise, as DCLS's ConvNeXt
    ]

    /// Positions over the footprint and past its bound, so that the clamp is exercised.
    static func positions(_ op: DCLSConv2D, using rng: inout SeededGenerator) -> [Double] {
        let b = Double(op.positionBound) + 0.75
        return randomDoubles(op.positionShape.count, using: &rng, in: -b...b)
    }

    @Test(arguments: cases)
    func matchesReference(_ t: Case) throws {
        let q = try Shared.context().makeQueue()
        var rng = freshGenerator("dcls \(t.testDescription)")
        let op = t.op, shape = t.shape, out = try op.outputShape(shape)
        let x = randomDoubles(shape.count, using: &rng), w = randomDoubles(op.weightShape.count, using: &rng)
        let p = Self.positions(op, using: &rng), b = t.bias ? randomDoubles(op.conv.outChannels, using: &rng) : nil
        let dy = randomDoubles(out.count, using: &rng)
        let y = Reference.dclsConv2d(x, shape: shape, weight: w, positions: p, bias: b, op: op)
        let g = Reference.dclsConv2dBackward(x, shape: shape, weight: w, positions: p, op: op, dy: dy)

        let xt = try deviceTensor(q, x, shape, strided: true), wt = try deviceTensor(q, w, op.weightShape)
        let pt = try deviceTensor(q, p, op.positionShape), bt = try b.map { try deviceTensor(q, $0, [op.conv.outChannels]) }
        let ws = try poisonedTensor(q, [try op.workspaceCount(shape)])
        let kernel = try poisonedTensor(q, op.conv.weightShape)
        try op.buildKernel(q, weight: wt, positions: pt, kernel: kernel)
        try expectClose(q, kernel, Reference.dclsKernel(weight: w, positions: p, op: op), 1e-6, "built kernel")
        // Every algorithm the convolution has runs on the built kernel.
        for algorithm in op.conv.applicableAlgorithms {
            let label = "\(algorithm.rawValue)"
            let bound = algorithm == .winograd4x4 ? 1e-4 : forwardBound
            let yt = try poisonedTensor(q, out, strided: true)
            try op.forward(q, x: xt, weight: wt, positions: pt, bias: bt, y: yt, workspace: ws, algorithm: algorithm)
            try expectClose(q, yt, y, bound, "forward \(label)")
            let dyt = try deviceTensor(q, dy, out, strided: true)
            let dxt = try poisonedTensor(q, shape, strided: true), dwt = try poisonedTensor(q, op.weightShape)
            let dpt = try poisonedTensor(q, op.positionShape), dbt = t.bias ? try poisonedTensor(q, [op.conv.outChannels]) : nil
            try op.backward(q, x: xt, weight: wt, positions: pt, dy: dyt, dx: dxt, dweight: dwt, dpositions: dpt, dbias: dbt,
                            workspace: ws, algorithm: algorithm)
            try expectClose(q, dxt, g.dx, backwardBound, "dx \(label)")
            try expectClose(q, dwt, g.dweight, backwardBound, "dweight \(label)")
            try expectClose(q, dpt, g.dpositions, backwardBound, "dpositions \(label)")
            if let dbt { try expectClose(q, dbt, g.dbias, backwardBound, "dbias \(label)") }
        }
        // Each gradient alone, added to random prior values (split and fanned-out backward passes).
        let dyt = try deviceTensor(q, dy, out)
        let px = randomDoubles(shape.count, using: &rng), ax = try deviceTensor(q, px, shape)
        try op.backward(q, x: xt, weight: wt, positions: pt, dy: dyt, dx: ax, dweight: nil, dpositions: nil, dbias: nil,
                        workspace: ws, accumulateInput: true)
        try expectClose(q, ax, zip(px, g.dx).map(+), backwardBound, "accumulated dx")
        let pw = randomDoubles(w.count, using: &rng), pp = randomDoubles(p.count, using: &rng)
        let aw = try deviceTensor(q, pw, op.weightShape), ap = try deviceTensor(q, pp, op.positionShape)
        try op.backward(q, x: xt, weight: wt, positions: pt, dy: dyt, dx: nil, dweight: aw, dpositions: ap, dbias: nil,
                        workspace: ws, accumulateParameters: true)
        try expectClose(q, aw, zip(pw, g.dweight).map(+), backwardBound, "accumulated dweight")
        try expectClose(q, ap, zip(pp, g.dpositions).map(+), backwardBound, "accumulated dpositions")
    }

    /// Elements at whole positions spaced by 2 are a 3x3 convolution with dilation 2: DCLS
    /// starts from, and generalises, the dilated convolution.
    @Test func wholePositionsAreADilatedConvolution() throws {
        var rng = freshGenerator("dcls dilated")
        let shape: Shape = [2, 3, 8, 7]
        let op = DCLSConv2D(Conv2D(inChannels: 3, outChannels: 4, kernel: 5, padding: 2), count: 9)
        let dilated = Conv2D(inChannels: 3, outChannels: 4, kernel: 3, padding: 2, dilation: 2)
        let x = randomDoubles(shape.count, using: &rng), w = randomDoubles(op.weightShape.count, using: &rng)
        // Element m = 3 * kh + kw sits at ((kh - 1) * 2, (kw - 1) * 2) from the centre.
        let pairs = op.weightShape.count / 9
        let rows = (0..<pairs).flatMap { _ in (0..<9).map { Double(($0 / 3 - 1) * 2) } }
        let cols = (0..<pairs).flatMap { _ in (0..<9).map { Double(($0 % 3 - 1) * 2) } }
        let y = Reference.dclsConv2d(x, shape: shape, weight: w, positions: rows + cols, bias: nil, op: op)
        #expect(relativeError(y, Reference.conv2d(x, shape: shape, weight: w, bias: nil, conv: dilated)) <= 1e-14)
    }

    /// The reference's gradients, the positions' included, against central differences of
    /// sum(y * r) in Double. Positions keep 0.1 from whole numbers (where the interpolation has
    /// a kink) and stay inside their bound (beyond it the clamp holds them still).
    @Test(arguments: [
        c([1, 4, 5, 4], out: 4, size: 5, count: 3, s: 2, g: 2, bias: true),
        c([2, 2, 4, 5], out: 2, size: 3, count: 2, bias: true),
    ])
    func referenceGradientsMatchFiniteDifferences(_ t: Case) throws {
        var rng = freshGenerator("dcls differences \(t.testDescription)")
        let op = t.op, shape = t.shape, out = try op.outputShape(shape)
        let x = randomDoubles(shape.count, using: &rng), w = randomDoubles(op.weightShape.count, using: &rng)
        let bound = Double(op.positionBound)
        let p = randomDoubles(op.positionShape.count, using: &rng, in: -(bound - 0.2)...(bound - 0.2)).map { v in
            let f = v - v.rounded(.down)
            return f < 0.1 ? v + 0.15 : f > 0.9 ? v - 0.15 : v
        }
        let b = randomDoubles(op.conv.outChannels, using: &rng), r = randomDoubles(out.count, using: &rng)
        func loss(_ x: [Double], _ w: [Double], _ p: [Double], _ b: [Double]) -> Double {
            dot(Reference.dclsConv2d(x, shape: shape, weight: w, positions: p, bias: b, op: op), r)
        }
        let g = Reference.dclsConv2dBackward(x, shape: shape, weight: w, positions: p, op: op, dy: r)
        let tolerance = 1e-6
        #expect(relativeError(g.dx, finiteDifference(at: x) { loss($0, w, p, b) }) <= tolerance, "dx")
        #expect(relativeError(g.dweight, finiteDifference(at: w) { loss(x, $0, p, b) }) <= tolerance, "dweight")
        #expect(relativeError(g.dpositions, finiteDifference(at: p) { loss(x, w, $0, b) }) <= tolerance, "dpositions")
        #expect(relativeError(g.dbias, finiteDifference(at: b) { loss(x, w, p, $0) }) <= tolerance, "dbias")
    }

    /// The optimizer keeps positions inside their footprint after each step, as DCLS's
    /// `clamp_parameters`, on the device as in the reference.
    @Test func optimizerClampsPositions() throws {
        let q = try Shared.context().makeQueue()
        var rng = freshGenerator("dcls clamp")
        let p = randomDoubles(64, using: &rng, in: -2...2), g = randomDoubles(64, using: &rng, in: -20...20)
        var sgd = SGD(learningRate: 0.1, momentum: 0.9)
        sgd.bounds = -2...2
        let pt = try deviceTensor(q, p, [64]), gt = try deviceTensor(q, g, [64]), mt = try deviceTensor(q, [Double](repeating: 0, count: 64), [64])
        try sgd.step(q, parameters: pt, gradients: gt, momentumBuffer: mt)
        let want = Reference.sgdStep(parameters: p, gradients: g, momentumBuffer: [Double](repeating: 0, count: 64),
                                     learningRate: 0.1, momentum: 0.9, weightDecay: 0, nesterov: false, bounds: -2...2)
        let got = try q.read(pt)
        #expect(got.allSatisfy { abs($0) <= 2 } && want.parameters.contains { abs($0) == 2 }, "some were clamped")
        #expect(relativeError(got, want.parameters) <= 1e-6)
    }

    /// Shapes that do not fit are refused, naming the layer.
    @Test func refusesWrongShapes() throws {
        let op = DCLSConv2D(Conv2D(inChannels: 4, outChannels: 4, kernel: 5, padding: 2), count: 3)
        #expect(try op.outputShape([2, 4, 6, 6]) == [2, 4, 6, 6])
        for (bad, message) in [(DCLSConv2D(Conv2D(inChannels: 4, outChannels: 4, kernel: .init(5, 3), stride: .init(1, 1),
                                                  padding: .init(2, 1), dilation: .init(1, 1), groups: 1), count: 3), "square"),
                               (DCLSConv2D(Conv2D(inChannels: 4, outChannels: 4, kernel: 3, padding: 2, dilation: 2), count: 3), "dilation"),
                               (DCLSConv2D(Conv2D(inChannels: 4, outChannels: 4, kernel: 4, padding: 2), count: 3), "odd"),
                               (DCLSConv2D(Conv2D(inChannels: 4, outChannels: 4, kernel: 5, padding: 2), count: 0), "element"),
                               (DCLSConv2D(Conv2D(inChannels: 3, outChannels: 4, kernel: 5, padding: 2), count: 3), "channels")] {
            let error = #expect(throws: CLNetError.self) { try bad.outputShape([2, 4, 6, 6]) }
            #expect("\(error.map { "\($0)" } ?? "")".contains(message) && "\(error.map { "\($0)" } ?? "")".contains("DCLSConv2D("))
        }
        var b = GraphBuilder()
        let input = try b.input("input", shape: [2, 3, 6, 6])
        let graphError = #expect(throws: CLNetError.self) { try b.dcls(input, op, name: "layer2.0.conv1") }
        #expect("\(graphError.map { "\($0)" } ?? "")".contains("layer2.0.conv1"))
    }
}

@Suite("DCLS in ResNets: resnet:dcls=")
struct DCLSResNetTests {
    /// `dcls=4` makes stage 4's 3x3 convolutions DCLS ones with DCLS's parameter names, their
    /// positions bounded by the footprint and started inside it.
    @Test func specificationPlacesTheUnits() throws {
        let (graph, _) = try ModelSpec.graph("resnet18:dcls=4,dcls_size=7,dcls_count=5", batch: 1, size: 64)
        let units = graph.nodes.filter { if case .dcls = $0.operation { true } else { false } }
        #expect(units.map(\.name) == ["layer4.0.conv1", "layer4.0.conv2", "layer4.1.conv1", "layer4.1.conv2"])
        func parameter(_ name: String) -> Parameter? { graph.parameterIndex(name).map { graph.parameters[$0] } }
        #expect(parameter("layer4.0.conv1.weight")?.shape == [512, 256, 5])
        #expect(parameter("layer4.0.conv1.P")?.shape == [2, 512, 256, 5])
        #expect(parameter("layer4.0.conv1.P")?.bounds == -3...3 && parameter("layer4.0.conv1.P")?.role == .position)
        // The same output sizes as the 3x3 convolutions (stride 2 in layer4.0.conv1).
        let plain = try ModelSpec.graph("resnet18", batch: 1, size: 64).graph
        #expect(graph.shape(of: units[0].output) == plain.shape(of: plain.nodes.first { $0.name == "layer4.0.conv1" }!.output))
        let plainCount = plain.trainableParameterCount
        // Each 3x3 weight (9 per pair) becomes 5 weights and 10 coordinates per pair.
        let pairs = 512 * 256 + 3 * 512 * 512
        #expect(graph.trainableParameterCount == plainCount + pairs * (15 - 9))
        let executor = try Executor(graph: graph, context: try Shared.context(), training: false)
        try executor.initialize(seed: 7)
        let positions = try executor.parameter("layer4.1.conv2.P")
        #expect(positions.allSatisfy { abs($0) <= 3 } && positions.contains { $0 != 0 })
        // Graph rewrites keep the bounds (the optimizer clamps by them).
        let folded = try ModelSpec.graph("resnet18:dcls=4,fold_bn=1", batch: 1, size: 64).graph
        #expect(folded.parameters.filter { $0.role == .position }.allSatisfy { $0.bounds == -2...2 })
        #expect(folded.parameters.contains { $0.role == .position })
        for (spec, message) in [("resnet18:dcls=5", "stage 5"), ("resnet18:dcls=4,deform=4", "different stages"),
                                ("resnet18:dcls=4,dcls_size=4", "odd footprint"),
                                ("resnet50:dcls=4,dilation=0.0.1", "dilation")] {
            let error = #expect(throws: CLNetError.self, "\(spec)") { try ModelSpec.graph(spec, batch: 1, size: 64) }
            #expect("\(error.map { "\($0)" } ?? "")".contains(message), "\(spec): \(error.map { "\($0)" } ?? "")")
        }
    }
}
