import CLNet
import Foundation
import Testing

@Suite("DeformConv: deformable convolution v1 and v2 against the reference, finite differences and torchvision")
struct DeformConvTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var shape: Shape
        var op: DeformConv2D
        var bias: Bool
        /// Samples per chunk of the columns (nil: the whole batch in one).
        var chunk: Int? = nil
        var testDescription: String { "\(shape) \(op)\(bias ? " bias" : "")\(chunk.map { " chunks of \($0)" } ?? "")" }
    }

    static func c(_ shape: Shape, out: Int, k: Int, s: Int = 1, p: Int = 0, d: Int = 1, g: Int = 1, dg: Int = 1,
                  modulated: Bool, bias: Bool = false, chunk: Int? = nil) -> Case {
        let conv = Conv2D(inChannels: shape.c, outChannels: out, kernel: k, stride: s, padding: p, dilation: d, groups: g)
        return Case(shape: shape, op: DeformConv2D(conv, offsetGroups: dg, modulated: modulated), bias: bias, chunk: chunk)
    }

    static let cases: [Case] = [
        c([2, 3, 7, 6], out: 5, k: 3, p: 1, modulated: false, bias: true),        // v1, ResNet's 3x3
        c([2, 3, 7, 6], out: 5, k: 3, p: 1, modulated: true),                     // v2
        c([1, 4, 9, 10], out: 6, k: 3, s: 2, p: 1, modulated: true, bias: true),  // stride 2, batch 1
        c([2, 4, 11, 9], out: 3, k: 3, p: 2, d: 2, modulated: false),             // dilation 2
        c([2, 6, 6, 7], out: 4, k: 3, p: 1, g: 2, modulated: true),               // 2 groups
        c([1, 8, 5, 5], out: 8, k: 3, p: 1, g: 4, dg: 2, modulated: true, bias: true), // groups and offset groups
        c([2, 6, 8, 5], out: 3, k: 3, p: 0, dg: 3, modulated: false),             // 3 offset groups, padding 0
        c([2, 2, 6, 6], out: 3, k: 2, modulated: true),                           // even kernel
        c([1, 3, 5, 7], out: 2, k: 1, modulated: false),                          // 1x1: offsets alone move it
        c([3, 3, 6, 5], out: 4, k: 3, s: 2, p: 1, modulated: true, bias: true, chunk: 1), // one sample per chunk
        c([5, 2, 4, 6], out: 3, k: 3, p: 1, g: 1, dg: 2, modulated: false, chunk: 2),    // chunks with a remainder
    ]

    /// Offsets of about two pixels, so that samples land between pixels and off every edge.
    static func offsets(_ count: Int, using rng: inout SeededGenerator) -> [Double] {
        randomDoubles(count, using: &rng, in: -2.5...2.5)
    }

    @Test(arguments: cases)
    func matchesReference(_ t: Case) throws {
        let q = try Shared.context().makeQueue()
        var rng = freshGenerator("deform conv \(t.testDescription)")
        let op = t.op, conv = op.conv, shape = t.shape, out = try conv.outputShape(shape)
        let offsetShape: Shape = [shape.n, op.offsetChannels, out.h, out.w], maskShape: Shape = [shape.n, op.maskChannels, out.h, out.w]
        let x = randomDoubles(shape.count, using: &rng), w = randomDoubles(conv.weightShape.count, using: &rng)
        let off = Self.offsets(offsetShape.count, using: &rng)
        let m = op.modulated ? randomDoubles(maskShape.count, using: &rng, in: 0...1) : nil
        let b = t.bias ? randomDoubles(conv.outChannels, using: &rng) : nil
        let dy = randomDoubles(out.count, using: &rng)
        let y = Reference.deformConv2d(x, shape: shape, offset: off, mask: m, weight: w, bias: b, op: op)
        let g = Reference.deformConv2dBackward(x, shape: shape, offset: off, mask: m, weight: w, op: op, dy: dy)

        // Every activation-sized tensor as a strided view, as in a DenseNet block.
        let xt = try deviceTensor(q, x, shape, strided: true), wt = try deviceTensor(q, w, conv.weightShape)
        let ot = try deviceTensor(q, off, offsetShape, strided: true)
        let mt = try m.map { try deviceTensor(q, $0, maskShape, strided: true) }
        let bt = try b.map { try deviceTensor(q, $0, [conv.outChannels]) }
        let floats = try t.chunk.map { try $0 * op.workspaceCount([1, shape.c, shape.h, shape.w]) } ?? op.workspaceCount(shape)
        let ws = try poisonedTensor(q, [floats])
        let yt = try poisonedTensor(q, out, strided: true)
        try op.forward(q, x: xt, offset: ot, mask: mt, weight: wt, bias: bt, y: yt, workspace: ws)
        try expectClose(q, yt, y, forwardBound, "forward")

        let dyt = try deviceTensor(q, dy, out, strided: true)
        let dxt = try poisonedTensor(q, shape, strided: true), dot = try poisonedTensor(q, offsetShape, strided: true)
        let dmt = op.modulated ? try poisonedTensor(q, maskShape, strided: true) : nil
        let dwt = try poisonedTensor(q, conv.weightShape), dbt = t.bias ? try poisonedTensor(q, [conv.outChannels]) : nil
        try op.backward(q, x: xt, offset: ot, mask: mt, weight: wt, dy: dyt, dx: dxt, doffset: dot, dmask: dmt, dweight: dwt,
                        dbias: dbt, workspace: ws)
        try expectClose(q, dxt, g.dx, backwardBound, "dx")
        try expectClose(q, dot, g.doffset, backwardBound, "doffset")
        if let dmt { try expectClose(q, dmt, g.dmask!, backwardBound, "dmask") }
        try expectClose(q, dwt, g.dweight, backwardBound, "dweight")
        if let dbt { try expectClose(q, dbt, g.dbias, backwardBound, "dbias") }

        // Each gradient alone, added to random prior values: what the executor asks for when a
        // tensor has several consumers.
        let px = randomDoubles(shape.count, using: &rng), po = randomDoubles(offsetShape.count, using: &rng)
        let ax = try deviceTensor(q, px, shape), ao = try deviceTensor(q, po, offsetShape)
        try op.backward(q, x: xt, offset: ot, mask: mt, weight: wt, dy: dyt, dx: ax, doffset: nil, dmask: nil, dweight: nil,
                        dbias: nil, workspace: ws, accumulate: .input)
        try expectClose(q, ax, zip(px, g.dx).map(+), backwardBound, "accumulated dx")
        try op.backward(q, x: xt, offset: ot, mask: mt, weight: wt, dy: dyt, dx: nil, doffset: ao, dmask: nil, dweight: nil,
                        dbias: nil, workspace: ws, accumulate: .offset)
        try expectClose(q, ao, zip(po, g.doffset).map(+), backwardBound, "accumulated doffset")
        let pw = randomDoubles(conv.weightShape.count, using: &rng), aw = try deviceTensor(q, pw, conv.weightShape)
        try op.backward(q, x: xt, offset: ot, mask: mt, weight: wt, dy: dyt, dx: nil, doffset: nil, dmask: nil, dweight: aw,
                        dbias: nil, workspace: ws, accumulate: .parameters)
        try expectClose(q, aw, zip(pw, g.dweight).map(+), backwardBound, "accumulated dweight")
        if let mt, let want = g.dmask {
            let pm = randomDoubles(maskShape.count, using: &rng), am = try deviceTensor(q, pm, maskShape)
            try op.backward(q, x: xt, offset: ot, mask: mt, weight: wt, dy: dyt, dx: nil, doffset: nil, dmask: am, dweight: nil,
                            dbias: nil, workspace: ws, accumulate: .mask)
            try expectClose(q, am, zip(pm, want).map(+), backwardBound, "accumulated dmask")
        }
    }

    /// The reference's gradients, offsets' and mask's included, against central differences of
    /// sum(y * r) in Double. Offsets are kept a margin away from whole pixels, where the bilinear
    /// sample has a kink that differences straddle.
    /// Small, as each difference runs the reference twice per input value: groups and offset
    /// groups with a mask, and stride, padding and dilation without.
    @Test(arguments: [
        c([1, 4, 4, 3], out: 2, k: 3, p: 1, g: 2, dg: 2, modulated: true, bias: true),
        c([2, 2, 6, 5], out: 2, k: 3, s: 2, p: 2, d: 2, modulated: false, bias: true),
    ])
    func referenceGradientsMatchFiniteDifferences(_ t: Case) throws {
        var rng = freshGenerator("deform conv differences \(t.testDescription)")
        let op = t.op, conv = op.conv, shape = t.shape, out = try conv.outputShape(shape)
        let x = randomDoubles(shape.count, using: &rng), w = randomDoubles(conv.weightShape.count, using: &rng)
        var off = Self.offsets(shape.n * op.offsetChannels * out.h * out.w, using: &rng)
        off = off.map { v in
            let f = v - v.rounded(.down)
            return f < 0.05 ? v + 0.1 : f > 0.95 ? v - 0.1 : v
        }
        let m = op.modulated ? randomDoubles(shape.n * op.maskChannels * out.h * out.w, using: &rng, in: 0...1) : nil
        let b = randomDoubles(conv.outChannels, using: &rng), r = randomDoubles(out.count, using: &rng)
        func loss(_ x: [Double], _ off: [Double], _ m: [Double]?, _ w: [Double], _ b: [Double]) -> Double {
            dot(Reference.deformConv2d(x, shape: shape, offset: off, mask: m, weight: w, bias: b, op: op), r)
        }
        let g = Reference.deformConv2dBackward(x, shape: shape, offset: off, mask: m, weight: w, op: op, dy: r)
        let bound = 1e-6
        #expect(relativeError(g.dx, finiteDifference(at: x) { loss($0, off, m, w, b) }) <= bound, "dx")
        #expect(relativeError(g.doffset, finiteDifference(at: off) { loss(x, $0, m, w, b) }) <= bound, "doffset")
        if let m { #expect(relativeError(g.dmask!, finiteDifference(at: m) { loss(x, off, $0, w, b) }) <= bound, "dmask") }
        #expect(relativeError(g.dweight, finiteDifference(at: w) { loss(x, off, m, $0, b) }) <= bound, "dweight")
        #expect(relativeError(g.dbias, finiteDifference(at: b) { loss(x, off, m, w, $0) }) <= bound, "dbias")
    }

    /// `Fixtures/make_deform_conv_fixture.py`'s cases, in order.
    static let fixtureCases: [Case] = [
        c([2, 4, 7, 6], out: 6, k: 3, p: 1, modulated: false, bias: true),
        c([1, 6, 9, 8], out: 4, k: 3, s: 2, p: 1, g: 2, dg: 3, modulated: true),
        c([2, 3, 8, 9], out: 5, k: 3, p: 2, d: 2, modulated: true, bias: true),
        Case(shape: [1, 2, 6, 7], op: DeformConv2D(Conv2D(inChannels: 2, outChannels: 3, kernel: .init(2, 3), stride: .init(1, 2),
                                                          padding: .init(0, 1), dilation: .init(1, 1), groups: 1),
                                                   offsetGroups: 2, modulated: false), bias: false),
    ]

    /// torchvision's `deform_conv2d` in float64 (the fixture) against the device, within 1e-4 for
    /// the output and 1e-3 for the gradients, and against the reference, which must agree to
    /// float32's rounding of the fixture's values.
    @Test(arguments: Array(fixtureCases.indices))
    func matchesTorchvision(_ i: Int) throws {
        let t = Self.fixtureCases[i], op = t.op, conv = op.conv
        let file = try SafeTensors(contentsOf: URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("Fixtures/deform_conv.safetensors"))
        func load(_ name: String) throws -> [Double] { try file.floats("case\(i).\(name)").map(Double.init) }
        let out = try conv.outputShape(t.shape)
        let offsetShape: Shape = [t.shape.n, op.offsetChannels, out.h, out.w], maskShape: Shape = [t.shape.n, op.maskChannels, out.h, out.w]
        let x = try load("x"), off = try load("offset"), w = try load("weight"), r = try load("r")
        let m = op.modulated ? try load("mask") : nil, b = t.bias ? try load("bias") : nil
        try #require(x.count == t.shape.count && off.count == offsetShape.count && w.count == conv.weightShape.count)

        let reference = Reference.deformConv2d(x, shape: t.shape, offset: off, mask: m, weight: w, bias: b, op: op)
        let g = Reference.deformConv2dBackward(x, shape: t.shape, offset: off, mask: m, weight: w, op: op, dy: r)
        #expect(relativeError(reference, try load("y")) <= 1e-6, "reference y")
        #expect(relativeError(g.dx, try load("dx")) <= 1e-6, "reference dx")
        #expect(relativeError(g.doffset, try load("doffset")) <= 1e-6, "reference doffset")
        if let dm = g.dmask { #expect(relativeError(dm, try load("dmask")) <= 1e-6, "reference dmask") }
        #expect(relativeError(g.dweight, try load("dweight")) <= 1e-6, "reference dweight")

        let q = try Shared.context().makeQueue()
        let xt = try deviceTensor(q, x, t.shape), ot = try deviceTensor(q, off, offsetShape)
        let mt = try m.map { try deviceTensor(q, $0, maskShape) }, wt = try deviceTensor(q, w, conv.weightShape)
        let bt = try b.map { try deviceTensor(q, $0, [conv.outChannels]) }
        let ws = try poisonedTensor(q, [try op.workspaceCount(t.shape)]), yt = try poisonedTensor(q, out)
        try op.forward(q, x: xt, offset: ot, mask: mt, weight: wt, bias: bt, y: yt, workspace: ws)
        try expectClose(q, yt, try load("y"), 1e-4, "y")
        let dxt = try poisonedTensor(q, t.shape), dot = try poisonedTensor(q, offsetShape)
        let dmt = op.modulated ? try poisonedTensor(q, maskShape) : nil
        let dwt = try poisonedTensor(q, conv.weightShape), dbt = t.bias ? try poisonedTensor(q, [conv.outChannels]) : nil
        try op.backward(q, x: xt, offset: ot, mask: mt, weight: wt, dy: try deviceTensor(q, r, out), dx: dxt, doffset: dot,
                        dmask: dmt, dweight: dwt, dbias: dbt, workspace: ws)
        try expectClose(q, dxt, try load("dx"), 1e-3, "dx")
        try expectClose(q, dot, try load("doffset"), 1e-3, "doffset")
        if let dmt { try expectClose(q, dmt, try load("dmask"), 1e-3, "dmask") }
        try expectClose(q, dwt, try load("dweight"), 1e-3, "dweight")
        if let dbt { try expectClose(q, dbt, try load("dbias"), 1e-3, "dbias") }
    }

    /// Shapes that do not fit are refused, naming the layer and both shapes.
    @Test func refusesWrongShapes() throws {
        let op = DeformConv2D(Conv2D(inChannels: 4, outChannels: 4, kernel: 3, padding: 1), offsetGroups: 2, modulated: true)
        let x: Shape = [2, 4, 6, 6]
        let message = { (offset: Shape, mask: Shape?) -> String in
            do { _ = try op.outputShape(x, offset: offset, mask: mask); return "" } catch { return "\(error)" }
        }
        #expect(message([2, 36, 6, 6], [2, 18, 6, 6]).isEmpty)
        let wrongOffset = message([2, 18, 6, 6], [2, 18, 6, 6])
        #expect(wrongOffset.contains("DeformConv2D(") && wrongOffset.contains("[2, 18, 6, 6]") && wrongOffset.contains("[2, 36, 6, 6]"),
                "\(wrongOffset)")
        #expect(message([2, 36, 6, 6], nil).contains("needs a mask"))
        #expect(message([2, 36, 6, 6], [2, 9, 6, 6]).contains("[2, 9, 6, 6]"))
        let groups = DeformConv2D(Conv2D(inChannels: 4, outChannels: 4, kernel: 3, padding: 1), offsetGroups: 3, modulated: false)
        #expect(throws: CLNetError.self) { try groups.outputShape(x, offset: [2, 54, 6, 6], mask: nil) }
        // In a graph, the node is named.
        var b = GraphBuilder()
        let input = try b.input("input", shape: x)
        let offset = try b.input("offset", shape: [2, 18, 6, 6])
        let error = #expect(throws: CLNetError.self) { try b.deformConv(input, offset: offset, mask: nil, groups, name: "layer4.0.conv2") }
        #expect("\(error.map { "\($0)" } ?? "")".contains("layer4.0.conv2"))
    }
}

@Suite("DeformConv in ResNets: resnet:deform=")
struct DeformableResNetTests {
    /// `deform=3.4` makes the 3x3 convolutions of stages 3 and 4 deformable, with mmcv's names
    /// (mmdetection's deformable ResNets), and leaves the rest as they were; the offset
    /// convolutions start at zero, so that the network starts as the plain one.
    @Test func specificationPlacesTheUnits() throws {
        let plain = try ModelSpec.graph("resnet50", batch: 1, size: 64).graph
        let v1 = try ModelSpec.graph("resnet50:deform=3.4", batch: 1, size: 64).graph
        let v2 = try ModelSpec.graph("resnet50:deform=3.4,dcn=v2,deform_groups=4", batch: 1, size: 64).graph
        func parameter(_ g: Graph, _ name: String) -> Parameter? { g.parameterIndex(name).map { g.parameters[$0] } }
        #expect(parameter(v1, "layer3.0.conv2.conv_offset.weight")?.shape == [18, 256, 3, 3])
        #expect(parameter(v1, "layer3.0.conv2.conv_offset.weight")?.initialization == .constant(0))
        #expect(parameter(v1, "layer4.2.conv2.conv_offset.bias")?.initialization == .constant(0))
        #expect(parameter(v1, "layer4.2.conv2.conv_offset.bias")?.learningRateScale == 0.1)
        #expect(parameter(v1, "layer4.2.conv2.weight")?.learningRateScale == 1)
        #expect(parameter(v1, "layer4.2.conv2.weight")?.shape == [512, 512, 3, 3])
        #expect(parameter(v1, "layer2.0.conv2.conv_offset.weight") == nil)
        #expect(parameter(v2, "layer3.5.conv2.conv_offset.weight")?.shape == [4 * 27, 256, 3, 3])
        // Nine bottlenecks, each adding its offset convolution (weight and bias) and nothing else.
        let added = 6 * (18 * 256 * 9 + 18) + 3 * (18 * 512 * 9 + 18)
        #expect(v1.trainableParameterCount == plain.trainableParameterCount + added)
        let deformable = v2.nodes.filter { if case .deformConv = $0.operation { true } else { false } }
        #expect(deformable.count == 9 && deformable.allSatisfy { $0.inputs.count == 3 })
        // Basic blocks deform both 3x3 convolutions.
        let basic = try ModelSpec.graph("resnet18:deform=4", batch: 1, size: 64).graph
        #expect(basic.nodes.filter { if case .deformConv = $0.operation { true } else { false } }.map(\.name)
                == ["layer4.0.conv1", "layer4.0.conv2", "layer4.1.conv1", "layer4.1.conv2"])
        for (spec, message) in [("resnet18:deform=5", "stage 5"), ("sknet50:deform=4", "choose one"),
                                ("resnet18:deform=4,dcn=v3", "dcn=v3"), ("resnet18:dcn=v2", "dcn"),
                                ("resnet18:deform=4,deform_groups=3", "offset groups")] {
            let error = #expect(throws: CLNetError.self, "\(spec)") { try ModelSpec.graph(spec, batch: 1, size: 64) }
            #expect("\(error.map { "\($0)" } ?? "")".contains(message), "\(spec): \(error.map { "\($0)" } ?? "")")
        }
    }
}
