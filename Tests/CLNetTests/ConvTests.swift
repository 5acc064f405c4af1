import CLNet
import Testing

@Suite("Conv: 1x1 GEMM, im2col + GEMM, direct grouped and depthwise")
struct ConvTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var shape: Shape
        var conv: Conv2D
        var bias: Bool
        var testDescription: String { "\(shape) \(conv)\(bias ? " bias" : "") [\(conv.algorithm.rawValue)]" }
    }

    static func c(_ shape: Shape, out: Int, k: Int, s: Int = 1, p: Int = 0, d: Int = 1, g: Int = 1, bias: Bool = false) -> Case {
        Case(shape: shape, conv: Conv2D(inChannels: shape.c, outChannels: out, kernel: k, stride: s, padding: p,
                                        dilation: d, groups: g), bias: bias)
    }

    // Groups of more than 16 input channels go through im2col + batched GEMM, fewer through the
    // direct kernel; both are swept.
    static let cases: [Case] = [
        c([2, 5, 6, 7], out: 7, k: 1),                          // 1x1 GEMM
        c([1, 3, 9, 9], out: 4, k: 1, bias: true),              // 1x1, batch 1, bias
        c([2, 6, 8, 8], out: 10, k: 1, s: 2),                   // 1x1 stride 2 (ResNet's downsample)
        c([2, 3, 11, 9], out: 5, k: 3, p: 1),                   // 3x3 pad 1
        c([1, 4, 9, 10], out: 6, k: 3, s: 2, p: 1, bias: true), // stride 2, batch 1
        c([3, 3, 15, 13], out: 8, k: 7, s: 2, p: 3),            // ResNet's stem
        c([2, 5, 9, 9], out: 3, k: 3, p: 0),                    // padding 0
        c([2, 4, 11, 11], out: 6, k: 3, p: 2, d: 2),            // dilation 2
        c([2, 8, 7, 6], out: 12, k: 3, p: 1, g: 2),             // 2 groups (direct)
        c([2, 40, 6, 5], out: 20, k: 3, s: 2, p: 1, g: 2),      // 2 groups of 20 (im2col)
        c([2, 64, 5, 5], out: 64, k: 3, s: 2, p: 1, g: 32),     // ResNeXt-like: 32 groups of 2 channels
        c([1, 128, 4, 4], out: 128, k: 3, p: 1, g: 32, bias: true), // ResNeXt 32x4d: 32 groups of 4
        c([2, 6, 7, 7], out: 6, k: 3, p: 1, g: 6, bias: true),  // depthwise
        c([1, 5, 8, 9], out: 10, k: 3, s: 2, p: 1, g: 5),       // depthwise, multiplier 2, stride 2
        c([2, 4, 9, 9], out: 4, k: 3, p: 2, d: 2, g: 4),        // depthwise dilated
        c([2, 4, 6, 6], out: 6, k: 2, s: 1, p: 0),              // even kernel
        c([4, 3, 32, 32], out: 4, k: 3, p: 1, bias: true),      // large K: split-K weight gradient
        c([2, 8, 24, 24], out: 5, k: 1),                        // 1x1 with split-K
    ]

    @Test(arguments: cases)
    func matchesReference(_ t: Case) throws {
        let q = try Shared.context().makeQueue()
        var rng = freshGenerator("conv \(t.testDescription)")
        let conv = t.conv, shape = t.shape
        let out = try conv.outputShape(shape)
        let x = randomDoubles(shape.count, using: &rng), w = randomDoubles(conv.weightShape.count, using: &rng)
        let b = t.bias ? randomDoubles(conv.outChannels, using: &rng) : nil
        let dy = randomDoubles(out.count, using: &rng)
        let y = Reference.conv2d(x, shape: shape, weight: w, bias: b, conv: conv)
        let g = Reference.conv2dBackward(x, shape: shape, weight: w, conv: conv, dy: dy)

        // Input and output as strided views, as in a DenseNet block.
        let xt = try deviceTensor(q, x, shape, strided: true), wt = try deviceTensor(q, w, conv.weightShape)
        let bt = try b.map { try deviceTensor(q, $0, [conv.outChannels]) }
        let yt = try poisonedTensor(q, out, strided: true)
        let wsCount = try conv.workspaceCount(shape)
        let ws = wsCount > 0 ? try poisonedTensor(q, [wsCount]) : nil
        try conv.forward(q, x: xt, weight: wt, bias: bt, y: yt, workspace: ws)
        try expectClose(q, yt, y, forwardBound, "forward")

        let dyt = try deviceTensor(q, dy, out, strided: true)
        let dxt = try poisonedTensor(q, shape, strided: true), dwt = try poisonedTensor(q, conv.weightShape)
        let dbt = t.bias ? try poisonedTensor(q, [conv.outChannels]) : nil
        try conv.backward(q, x: xt, weight: wt, dy: dyt, dx: dxt, dweight: dwt, dbias: dbt, workspace: ws)
        try expectClose(q, dxt, g.dx, backwardBound, "dx")
        try expectClose(q, dwt, g.dweight, backwardBound, "dweight")
        if let dbt { try expectClose(q, dbt, g.dbias, backwardBound, "dbias") }

        // Accumulating: both gradients added to random prior values.
        let px = randomDoubles(shape.count, using: &rng), pw = randomDoubles(conv.weightShape.count, using: &rng)
        let ax = try deviceTensor(q, px, shape), aw = try deviceTensor(q, pw, conv.weightShape)
        try conv.backward(q, x: xt, weight: wt, dy: dyt, dx: ax, dweight: aw, dbias: nil, workspace: ws, accumulate: true)
        try expectClose(q, ax, zip(px, g.dx).map(+), backwardBound, "accumulated dx")
        try expectClose(q, aw, zip(pw, g.dweight).map(+), backwardBound, "accumulated dweight")
    }

    /// Where the bias pass with a fused epilogue writes: over the convolution's own output, over
    /// the residual (as the executor does when the addition runs in place), or to a third tensor.
    enum EpilogueTarget: String, Sendable, CaseIterable {
        case reluInPlace, residualInPlace, residualElsewhere, residualWithoutBias
    }

    /// The bias pass with the executor's fused residual addition and ReLU, for each algorithm,
    /// on strided views, batch 1 and odd sizes included.
    @Test(arguments: [Self.cases[0], Self.cases[1], Self.cases[4], Self.cases[8], Self.cases[12]], EpilogueTarget.allCases)
    func epilogueMatchesReference(_ t: Case, _ target: EpilogueTarget) throws {
        let q = try Shared.context().makeQueue()
        var rng = freshGenerator("conv epilogue \(t.testDescription) \(target)")
        let conv = t.conv, shape = t.shape, out = try conv.outputShape(shape)
        let x = randomDoubles(shape.count, using: &rng), w = randomDoubles(conv.weightShape.count, using: &rng)
        let b = target == .residualWithoutBias ? nil : randomDoubles(conv.outChannels, using: &rng)
        let r = randomDoubles(out.count, using: &rng)
        var want = Reference.conv2d(x, shape: shape, weight: w, bias: b, conv: conv)
        if target != .reluInPlace { want = Reference.add(want, r) }
        want = Reference.relu(want)
        #expect(want.contains(0) && want.contains { $0 > 0 }, "the ReLU must bite")

        let xt = try deviceTensor(q, x, shape, strided: true), wt = try deviceTensor(q, w, conv.weightShape)
        let bt = try b.map { try deviceTensor(q, $0, [conv.outChannels]) }
        let yt = try poisonedTensor(q, out, strided: true)
        let rt = try deviceTensor(q, r, out, strided: true)
        let wsCount = try conv.workspaceCount(shape)
        let ws = wsCount > 0 ? try poisonedTensor(q, [wsCount]) : nil
        let epilogue: ConvEpilogue, result: Tensor
        switch target {
        case .reluInPlace:
            (epilogue, result) = (ConvEpilogue(relu: true), yt)
        case .residualInPlace:
            (epilogue, result) = (ConvEpilogue(residual: rt, relu: true, output: rt), rt)
        case .residualElsewhere, .residualWithoutBias:
            let other = try poisonedTensor(q, out, strided: true)
            (epilogue, result) = (ConvEpilogue(residual: rt, relu: true, output: other), other)
        }
        try conv.forward(q, x: xt, weight: wt, bias: bt, y: yt, workspace: ws, epilogue: epilogue)
        try expectClose(q, result, want, forwardBound, "epilogue")
        // A residual of another shape is refused, naming the layer and both shapes.
        let wrong = try poisonedTensor(q, [out.n, out.c + 1, out.h, out.w])
        let error = #expect(throws: CLNetError.self) {
            try conv.forward(q, x: xt, weight: wt, bias: bt, y: yt, workspace: ws,
                             epilogue: ConvEpilogue(residual: wrong, relu: true))
        }
        let message = error.map { "\($0)" } ?? ""
        #expect(message.contains("Conv2D(") && message.contains("\(out)") && message.contains("\(wrong.shape)"), "\(message)")
    }

    /// A workspace smaller than a whole batch: im2col runs in chunks of samples.
    @Test func chunkedWorkspace() throws {
        let q = try Shared.context().makeQueue()
        var rng = freshGenerator("conv chunked")
        let shape: Shape = [5, 3, 8, 8]
        let conv = Conv2D(inChannels: 3, outChannels: 4, kernel: 3, padding: 1)
        let out = try conv.outputShape(shape)
        let x = randomDoubles(shape.count, using: &rng), w = randomDoubles(conv.weightShape.count, using: &rng)
        let dy = randomDoubles(out.count, using: &rng)
        let perSample = (3 * 9 + 4) * 64  // im2col columns plus the channel-major output gradient
        let count = try conv.workspaceCount(shape, budget: 2 * perSample + (1 << 20))
        #expect(count == 2 * perSample + (1 << 20))  // two samples, and the split-K partial sums
        let ws = try poisonedTensor(q, [count])
        let xt = try deviceTensor(q, x, shape), wt = try deviceTensor(q, w, conv.weightShape)
        let yt = try poisonedTensor(q, out)
        try conv.forward(q, x: xt, weight: wt, bias: nil, y: yt, workspace: ws)
        try expectClose(q, yt, Reference.conv2d(x, shape: shape, weight: w, bias: nil, conv: conv), forwardBound, "forward")
        let g = Reference.conv2dBackward(x, shape: shape, weight: w, conv: conv, dy: dy)
        let dxt = try poisonedTensor(q, shape), dwt = try poisonedTensor(q, conv.weightShape)
        try conv.backward(q, x: xt, weight: wt, dy: try deviceTensor(q, dy, out), dx: dxt, dweight: dwt, dbias: nil, workspace: ws)
        try expectClose(q, dxt, g.dx, backwardBound, "dx")
        try expectClose(q, dwt, g.dweight, backwardBound, "dweight")
    }

    /// The smallest workspace (one sample's columns, no room for split-K partial sums) still gives
    /// the right weight gradient.
    @Test func minimalWorkspace() throws {
        let q = try Shared.context().makeQueue()
        var rng = freshGenerator("conv minimal workspace")
        let shape: Shape = [2, 3, 40, 40]
        let conv = Conv2D(inChannels: 3, outChannels: 4, kernel: 3, padding: 1)
        let out = try conv.outputShape(shape)
        let x = randomDoubles(shape.count, using: &rng), w = randomDoubles(conv.weightShape.count, using: &rng)
        let dy = randomDoubles(out.count, using: &rng)
        let g = Reference.conv2dBackward(x, shape: shape, weight: w, conv: conv, dy: dy)
        let ws = try poisonedTensor(q, [(3 * 9 + 4) * 40 * 40])
        let dxt = try poisonedTensor(q, shape), dwt = try poisonedTensor(q, conv.weightShape)
        try conv.backward(q, x: try deviceTensor(q, x, shape), weight: try deviceTensor(q, w, conv.weightShape),
                          dy: try deviceTensor(q, dy, out), dx: dxt, dweight: dwt, dbias: nil, workspace: ws)
        try expectClose(q, dxt, g.dx, backwardBound, "dx")
        try expectClose(q, dwt, g.dweight, backwardBound, "dweight")
        let tooSmall = try poisonedTensor(q, [100])
        #expect(throws: CLNetError.self) {
            try conv.backward(q, x: dxt, weight: dwt, dy: try deviceTensor(q, dy, out), dx: dxt, dweight: dwt, dbias: nil,
                              workspace: tooSmall)
        }
    }

    @Test func algorithmChoice() {
        #expect(Conv2D(inChannels: 64, outChannels: 256, kernel: 1).algorithm == .gemm1x1)
        #expect(Conv2D(inChannels: 64, outChannels: 128, kernel: 1, stride: 2).algorithm == .im2col)
        #expect(Conv2D(inChannels: 64, outChannels: 64, kernel: 3, padding: 1).algorithm == .im2col)
        #expect(Conv2D(inChannels: 128, outChannels: 128, kernel: 3, padding: 1, groups: 32).algorithm == .direct)
        #expect(Conv2D(inChannels: 1024, outChannels: 1024, kernel: 3, padding: 1, groups: 32).algorithm == .im2col)
        #expect(Conv2D(inChannels: 32, outChannels: 32, kernel: 3, padding: 1, groups: 32).algorithm == .direct)
    }

    @Test(arguments: [
        ConvTests.c([1, 2, 6, 5], out: 3, k: 3, d: 2, bias: true), ConvTests.c([2, 4, 5, 4], out: 2, k: 3, s: 2, p: 1, g: 2),
        ConvTests.c([1, 3, 4, 5], out: 3, k: 3, p: 1, g: 3),
    ])
    func referenceGradientsMatchFiniteDifferences(_ t: Case) throws {
        var rng = freshGenerator("conv finite differences \(t.testDescription)")
        let conv = t.conv, shape = t.shape
        let out = try conv.outputShape(shape)
        let x = randomDoubles(shape.count, using: &rng), w = randomDoubles(conv.weightShape.count, using: &rng)
        let b = randomDoubles(conv.outChannels, using: &rng), dy = randomDoubles(out.count, using: &rng)
        let g = Reference.conv2dBackward(x, shape: shape, weight: w, conv: conv, dy: dy)
        #expect(relativeError(g.dx, finiteDifference(at: x) { dot(Reference.conv2d($0, shape: shape, weight: w, bias: b, conv: conv), dy) }) < 1e-6)
        #expect(relativeError(g.dweight, finiteDifference(at: w) { dot(Reference.conv2d(x, shape: shape, weight: $0, bias: b, conv: conv), dy) }) < 1e-6)
        #expect(relativeError(g.dbias, finiteDifference(at: b) { dot(Reference.conv2d(x, shape: shape, weight: w, bias: $0, conv: conv), dy) }) < 1e-6)
    }

    @Test func badArgumentsNameTheLayerAndShapes() throws {
        let q = try Shared.context().makeQueue()
        let groups = #expect(throws: CLNetError.self) {
            try Conv2D(inChannels: 6, outChannels: 8, kernel: 3, groups: 4).outputShape([1, 6, 8, 8])
        }
        #expect("\(groups!)".contains("Conv2D") && "\(groups!)".contains("divisible by 4 groups"))
        let big = #expect(throws: CLNetError.self) {
            try Conv2D(inChannels: 3, outChannels: 4, kernel: 7).outputShape([1, 3, 5, 5])
        }
        #expect("\(big!)".contains("larger than the padded input") && "\(big!)".contains("[1, 3, 5, 5]"))
        let channels = #expect(throws: CLNetError.self) {
            try Conv2D(inChannels: 3, outChannels: 4, kernel: 3).outputShape([1, 5, 8, 8])
        }
        #expect("\(channels!)".contains("[1, 5, 8, 8]") && "\(channels!)".contains("[4, 3, 3, 3]"))
        let negative = #expect(throws: CLNetError.self) {
            try Conv2D(inChannels: 3, outChannels: 4, kernel: 3, padding: -1).outputShape([1, 3, 8, 8])
        }
        #expect("\(negative!)".contains("padding"))
        let conv = Conv2D(inChannels: 3, outChannels: 4, kernel: 1)
        let x = try poisonedTensor(q, [1, 3, 4, 4]), w = try poisonedTensor(q, [4, 2, 1, 1]), y = try poisonedTensor(q, [1, 4, 4, 4])
        let weight = #expect(throws: CLNetError.self) { try conv.forward(q, x: x, weight: w, bias: nil, y: y) }
        #expect("\(weight!)".contains("[4, 2, 1, 1]") && "\(weight!)".contains("[4, 3, 1, 1]"))
    }
}

/// The operator example README.md shows, with concrete data.
@Test func readmeOperatorExample() throws {
    let context = try Context()
    let queue = try context.makeQueue()
    let pixels = [Float](repeating: 0.5, count: 8 * 3 * 32 * 32)
    let weights = [Float](repeating: 0.1, count: 16 * 3 * 3 * 3)
    let x = try queue.upload(pixels, shape: [8, 3, 32, 32])
    let conv = Conv2D(inChannels: 3, outChannels: 16, kernel: 3, padding: 1)
    let w = try queue.upload(weights, shape: conv.weightShape)
    let y = try Tensor(context: context, shape: try conv.outputShape(x.shape))
    let ws = try Tensor(context: context, shape: [try conv.workspaceCount(x.shape)])
    try conv.forward(queue, x: x, weight: w, bias: nil, y: y, workspace: ws)
    #expect(conv.algorithm == .im2col)
    let out = try queue.read(y)
    // An interior pixel sees all 27 taps: 27 * 0.5 * 0.1.
    #expect(abs(out[16 * 32 + 16] - 1.35) < 1e-5)
}
