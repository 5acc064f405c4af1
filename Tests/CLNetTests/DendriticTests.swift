import CLNet
import Foundation
import Testing

@Suite("Dendritic: dendritic ReLU convolutions and linear layers against the reference and finite differences")
struct DendriticTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var shape: Shape
        var op: DendriticConv2D
        var bias: Bool
        /// Samples per chunk of the backward passes (nil: the whole batch in one).
        var chunk: Int? = nil
        var testDescription: String { "\(shape) \(op)\(bias ? " bias" : "")\(chunk.map { " chunks of \($0)" } ?? "")" }
    }

    static func c(_ shape: Shape, out: Int, k: Int, s: Int = 1, p: Int = 0, d: Int = 1, g: Int = 1, bias: Bool = false,
                  chunk: Int? = nil) -> Case {
        Case(shape: shape, op: DendriticConv2D(Conv2D(inChannels: shape.c, outChannels: out, kernel: k, stride: s, padding: p,
                                                      dilation: d, groups: g)), bias: bias, chunk: chunk)
    }

    static let cases: [Case] = [
        c([2, 3, 7, 6], out: 5, k: 3, p: 1, bias: true),               // ResNet's 3x3, one partial vector of outputs
        c([1, 4, 9, 21], out: 19, k: 3, s: 2, p: 1),                    // stride 2, batch 1, 19 outputs: 3 vectors
        c([2, 4, 11, 19], out: 3, k: 3, p: 2, d: 2, bias: true),        // dilation 2
        c([2, 6, 6, 17], out: 48, k: 3, p: 1, g: 3),                    // 3 groups of 16 outputs: whole vectors
        c([2, 6, 5, 7], out: 30, k: 3, p: 1, g: 3, bias: true),         // 3 groups of 10 outputs: padded vectors
        c([2, 5, 8, 16], out: 8, k: 1),                                 // 1x1
        c([1, 3, 13, 23], out: 2, k: 7, s: 2, p: 3),                    // a stem's 7x7 stride 2
        c([2, 2, 10, 26], out: 3, k: 3, s: 3, p: 0, bias: true),        // stride 3, no padding
        c([3, 4, 4, 4], out: 16, k: 3, p: 1, bias: true, chunk: 1),     // one sample per chunk
        c([5, 3, 5, 6], out: 9, k: 3, s: 2, p: 1, chunk: 2),            // chunks with a remainder
        Case(shape: [3, 10], op: .linear(inFeatures: 10, outFeatures: 7), bias: true),   // the fully connected form
        Case(shape: [1, 9, 1, 1], op: .linear(inFeatures: 9, outFeatures: 4), bias: false),
    ]

    @Test(arguments: cases)
    func matchesReference(_ t: Case) throws {
        let q = try Shared.context().makeQueue()
        var rng = freshGenerator("dendritic \(t.testDescription)")
        let conv = t.op.conv, shape = t.shape, out = try t.op.outputShape(shape)
        let x = randomDoubles(shape.count, using: &rng), w = randomDoubles(conv.weightShape.count, using: &rng)
        let d = randomDoubles(t.op.dendriteShape.count, using: &rng, in: -0.5...0.5)
        let b = t.bias ? randomDoubles(conv.outChannels, using: &rng) : nil
        let dy = randomDoubles(out.count, using: &rng)
        let y = Reference.dendriticConv2d(x, shape: shape, weight: w, dendrites: d, bias: b, conv: conv)
        let g = Reference.dendriticConv2dBackward(x, shape: shape, weight: w, dendrites: d, conv: conv, dy: dy)

        // Activations as strided views, as in a DenseNet block.
        let xt = try deviceTensor(q, x, shape, strided: true), wt = try deviceTensor(q, w, conv.weightShape)
        let dt = try deviceTensor(q, d, t.op.dendriteShape), bt = try b.map { try deviceTensor(q, $0, [conv.outChannels]) }
        let yt = try poisonedTensor(q, out, strided: true)
        // A chunk of k samples: the packed parameters and k samples' packed dy.
        let one = try t.op.workspaceCount(Shape([1] + shape.dims.dropFirst()))
        let perSample = try t.op.workspaceCount(Shape([2] + shape.dims.dropFirst())) - one
        let floats = try t.chunk.map { one + ($0 - 1) * perSample } ?? t.op.workspaceCount(shape)
        let ws = try poisonedTensor(q, [floats])
        try t.op.forward(q, x: xt, weight: wt, dendrites: dt, bias: bt, y: yt, workspace: ws)
        try expectClose(q, yt, y, forwardBound, "forward")

        let dyt = try deviceTensor(q, dy, out, strided: true)
        let dxt = try poisonedTensor(q, shape, strided: true), dwt = try poisonedTensor(q, conv.weightShape)
        let ddt = try poisonedTensor(q, t.op.dendriteShape), dbt = t.bias ? try poisonedTensor(q, [conv.outChannels]) : nil
        try t.op.backward(q, x: xt, weight: wt, dendrites: dt, dy: dyt, dx: dxt, dweight: dwt, ddendrites: ddt, dbias: dbt, workspace: ws)
        try expectClose(q, dxt, g.dx, backwardBound, "dx")
        try expectClose(q, dwt, g.dweight, backwardBound, "dweight")
        try expectClose(q, ddt, g.ddendrites, backwardBound, "ddendrites")
        if let dbt { try expectClose(q, dbt, g.dbias, backwardBound, "dbias") }

        // The input gradient alone, and the parameters' alone, each added to random prior values:
        // what the executor asks for when it splits them, and when a tensor has several consumers.
        let px = randomDoubles(shape.count, using: &rng), ax = try deviceTensor(q, px, shape, strided: true)
        try t.op.backward(q, x: xt, weight: wt, dendrites: dt, dy: dyt, dx: ax, dweight: nil, ddendrites: nil, dbias: nil,
                          workspace: ws, accumulateInput: true)
        try expectClose(q, ax, zip(px, g.dx).map(+), backwardBound, "accumulated dx")
        let pw = randomDoubles(w.count, using: &rng), pd = randomDoubles(d.count, using: &rng)
        let aw = try deviceTensor(q, pw, conv.weightShape), ad = try deviceTensor(q, pd, t.op.dendriteShape)
        try t.op.backward(q, x: xt, weight: wt, dendrites: dt, dy: dyt, dx: nil, dweight: aw, ddendrites: ad, dbias: nil,
                          workspace: ws, accumulateParameters: true)
        try expectClose(q, aw, zip(pw, g.dweight).map(+), backwardBound, "accumulated dweight")
        try expectClose(q, ad, zip(pd, g.ddendrites).map(+), backwardBound, "accumulated ddendrites")
        // The dendrites' gradient without the weight's.
        let only = try poisonedTensor(q, t.op.dendriteShape)
        try t.op.backward(q, x: xt, weight: wt, dendrites: dt, dy: dyt, dx: nil, dweight: nil, ddendrites: only, dbias: nil, workspace: ws)
        try expectClose(q, only, g.ddendrites, backwardBound, "ddendrites alone")
    }

    /// With its biases at 0 and a non-negative input, the layer is the plain convolution.
    @Test func zeroBiasesOnRectifiedInputAreTheConvolution() throws {
        var rng = freshGenerator("dendritic as convolution")
        let conv = Conv2D(inChannels: 4, outChannels: 6, kernel: 3, stride: 2, padding: 1, groups: 2), shape: Shape = [2, 4, 9, 8]
        let x = randomDoubles(shape.count, using: &rng).map { max($0, 0) }, w = randomDoubles(conv.weightShape.count, using: &rng)
        let d = [Double](repeating: 0, count: DendriticConv2D(conv).dendriteShape.count)
        let y = Reference.dendriticConv2d(x, shape: shape, weight: w, dendrites: d, bias: nil, conv: conv)
        #expect(relativeError(y, Reference.conv2d(x, shape: shape, weight: w, bias: nil, conv: conv)) <= 1e-15)
    }

    /// The reference's gradients against central differences of sum(y * r) in Double. Inputs
    /// and biases lie on grids that keep every x + b at least 1/32 from ReLU's kink, which a
    /// difference step of 1e-6 then never straddles.
    @Test(arguments: [
        c([2, 4, 5, 4], out: 4, k: 3, s: 2, p: 2, d: 2, g: 2, bias: true),
        c([1, 3, 4, 5], out: 2, k: 3, p: 1, bias: true),
        Case(shape: [2, 5], op: .linear(inFeatures: 5, outFeatures: 3), bias: true),
    ])
    func referenceGradientsMatchFiniteDifferences(_ t: Case) throws {
        var rng = freshGenerator("dendritic differences \(t.testDescription)")
        let conv = t.op.conv, shape = t.shape, out = try t.op.outputShape(shape)
        let x = (0..<shape.count).map { _ in Double(Int.random(in: -8...8, using: &rng)) / 8 + 1.0 / 16 }
        let d = (0..<t.op.dendriteShape.count).map { _ in Double(Int.random(in: -4...4, using: &rng)) / 8 }
        let w = randomDoubles(conv.weightShape.count, using: &rng), b = randomDoubles(conv.outChannels, using: &rng)
        let r = randomDoubles(out.count, using: &rng)
        func loss(_ x: [Double], _ w: [Double], _ d: [Double], _ b: [Double]) -> Double {
            dot(Reference.dendriticConv2d(x, shape: shape, weight: w, dendrites: d, bias: b, conv: conv), r)
        }
        let g = Reference.dendriticConv2dBackward(x, shape: shape, weight: w, dendrites: d, conv: conv, dy: r)
        let bound = 1e-6
        #expect(g.ddendrites.contains { $0 != 0 } && g.dx.contains { $0 != 0 }, "some connections are active")
        #expect(relativeError(g.dx, finiteDifference(at: x) { loss($0, w, d, b) }) <= bound, "dx")
        #expect(relativeError(g.dweight, finiteDifference(at: w) { loss(x, $0, d, b) }) <= bound, "dweight")
        #expect(relativeError(g.ddendrites, finiteDifference(at: d) { loss(x, w, $0, b) }) <= bound, "ddendrites")
        #expect(relativeError(g.dbias, finiteDifference(at: b) { loss(x, w, d, $0) }) <= bound, "dbias")
    }

    /// Shapes that do not fit are refused, naming the layer and both shapes.
    @Test func refusesWrongShapes() throws {
        let op = DendriticConv2D(Conv2D(inChannels: 4, outChannels: 6, kernel: 3, padding: 1))
        let message = { (x: Shape) -> String in
            do { _ = try op.outputShape(x); return "" } catch { return "\(error)" }
        }
        #expect(message([2, 4, 5, 5]).isEmpty)
        #expect(message([2, 3, 5, 5]).contains("DendriticConv2D(") && message([2, 3, 5, 5]).contains("[2, 3, 5, 5]"))
        #expect(message([2, 4]).contains("only a 1x1"))
        #expect(try DendriticConv2D.linear(inFeatures: 4, outFeatures: 3).outputShape([5, 4]) == [5, 3])
        #expect(throws: CLNetError.self) { try DendriticConv2D.linear(inFeatures: 4, outFeatures: 3).outputShape([5, 6]) }
        let q = try Shared.context().makeQueue()
        let x = try poisonedTensor(q, [2, 4, 5, 5]), w = try poisonedTensor(q, op.conv.weightShape)
        let wrong = try poisonedTensor(q, [6, 3]), y = try poisonedTensor(q, [2, 6, 5, 5])
        let ws = try poisonedTensor(q, [try op.workspaceCount([2, 4, 5, 5])])
        let error = #expect(throws: CLNetError.self) { try op.forward(q, x: x, weight: w, dendrites: wrong, bias: nil, y: y, workspace: ws) }
        #expect("\(error.map { "\($0)" } ?? "")".contains("[6, 4]"))
        // In a graph, the node is named.
        var b = GraphBuilder()
        let input = try b.input("input", shape: [2, 3, 5, 5])
        let graphError = #expect(throws: CLNetError.self) { try b.dendritic(input, op, name: "layer3.0.conv2") }
        #expect("\(graphError.map { "\($0)" } ?? "")".contains("layer3.0.conv2"))
    }
}

@Suite("Dendritic ReLU in ResNets: resnet:dendritic=")
struct DendriticResNetTests {
    /// `dendritic=3.4` makes the branch convolutions that follow an activation dendritic and
    /// drops that activation; `dendritic_fc=1` the classifier. The biases start at 0.
    @Test func specificationPlacesTheUnits() throws {
        let plain = try ModelSpec.graph("resnet50", batch: 1, size: 64).graph
        let dac = try ModelSpec.graph("resnet50:dendritic=3.4,dendritic_fc=1", batch: 1, size: 64).graph
        func parameter(_ g: Graph, _ name: String) -> Parameter? { g.parameterIndex(name).map { g.parameters[$0] } }
        #expect(parameter(dac, "layer3.0.conv2.dendrite_bias")?.shape == [256, 256])
        #expect(parameter(dac, "layer3.0.conv3.dendrite_bias")?.shape == [1024, 256])
        #expect(parameter(dac, "layer4.2.conv2.dendrite_bias")?.initialization == .constant(0))
        #expect(parameter(dac, "fc.dendrite_bias")?.shape == [1000, 2048])
        #expect(parameter(dac, "fc.weight")?.shape == [1000, 2048])
        #expect(parameter(dac, "layer2.0.conv2.dendrite_bias") == nil && parameter(dac, "layer3.0.conv1.dendrite_bias") == nil)
        // Nine bottlenecks with two dendritic layers each, and the classifier.
        let added = 6 * (256 * 256 + 1024 * 256) + 3 * (512 * 512 + 2048 * 512) + 1000 * 2048
        #expect(dac.trainableParameterCount == plain.trainableParameterCount + added)
        let dendritic = dac.nodes.filter { if case .dendritic = $0.operation { true } else { false } }
        #expect(dendritic.count == 19)
        // Their inputs come from norms without the ReLU.
        for node in dendritic where node.name != "fc" {
            let producer = dac.nodes[dac.producers[node.inputs[0].index]!]
            guard case let .batchNorm(relu, _, _) = producer.operation else {
                Issue.record("\(node.name) reads \(producer.name)")
                continue
            }
            #expect(!relu, "\(producer.name)")
        }
        let basic = try ModelSpec.graph("resnet18:dendritic=4", batch: 1, size: 64).graph
        #expect(basic.nodes.filter { if case .dendritic = $0.operation { true } else { false } }.map(\.name)
                == ["layer4.0.conv2", "layer4.1.conv2"])
        for (spec, message) in [("resnet18:dendritic=5", "stage 5"), ("resnet18:deform=4,dendritic=3.4", "different stages"),
                                ("sknet50:dendritic=4", "choose one"), ("resnet18:dendritic_fc=2", "dendritic_fc"),
                                ("resnet18:dendritic=4,act=prelu", "act=prelu")] {
            let error = #expect(throws: CLNetError.self, "\(spec)") { try ModelSpec.graph(spec, batch: 1, size: 64) }
            #expect("\(error.map { "\($0)" } ?? "")".contains(message), "\(spec): \(error.map { "\($0)" } ?? "")")
        }
    }

    /// With the dendrites' biases at 0, the dendritic network computes the plain one's logits
    /// from the same weights, as Metta et al.'s units start from the network they replace.
    @Test func startsAsThePlainNetwork() throws {
        var rng = freshGenerator("dendritic resnet starts plain")
        let spec = "resnet:block=basic,layers=1.1,stem=cifar,classes=5"
        let (plain, plainLogits) = try ModelSpec.graph(spec, batch: 2, size: 8)
        let (dac, dacLogits) = try ModelSpec.graph(spec + ",dendritic=1.2,dendritic_fc=1", batch: 2, size: 8)
        var params: [String: [Double]] = [:]
        for p in dac.parameters {
            params[p.name] = p.name.hasSuffix("dendrite_bias") ? [Double](repeating: 0, count: p.shape.count)
                : p.role == .runningVar ? randomDoubles(p.shape.count, using: &rng, in: 0.5...1.5)
                : randomDoubles(p.shape.count, using: &rng)
        }
        let x = randomDoubles(2 * 3 * 8 * 8, using: &rng)
        var a = try ReferenceExecutor(graph: plain, parameters: params.filter { !$0.key.hasSuffix("dendrite_bias") })
        var b = try ReferenceExecutor(graph: dac, parameters: params)
        let ya = try a.forward(["input": x], labels: [0, 1], training: false)[plainLogits.index]
        let yb = try b.forward(["input": x], labels: [0, 1], training: false)[dacLogits.index]
        #expect(relativeError(yb, ya) <= 1e-12)
    }

    /// ONNX has no such operator: export refuses, naming the layer.
    @Test func onnxExportRefuses() throws {
        let (graph, logits) = try ModelSpec.graph("resnet:block=basic,layers=1.1,stem=cifar,classes=5,dendritic=2", batch: 1,
                                                  size: 8, loss: false)
        var weights: [String: [Float]] = [:]
        for p in graph.parameters { weights[p.name] = [Float](repeating: 0.5, count: p.shape.count) }
        let error = #expect(throws: CLNetError.self) { try ONNX.model(graph: graph, logits: logits, parameters: weights) }
        #expect("\(error.map { "\($0)" } ?? "")".contains("layer2.0.conv2"))
    }
}
