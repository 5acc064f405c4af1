#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
@testable import CLNet
import Testing

@Suite("Conv: 1x1 GEMM, im2col + GEMM, implicit GEMM, Winograd, direct grouped and depthwise")
struct ConvTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var shape: Shape
        var conv: Conv2D
        var bias: Bool
        /// Forced, so that every algorithm that applies is tested on its own.
        var algorithm: Conv2D.Algorithm
        var testDescription: String { "\(shape) \(conv)\(bias ? " bias" : "") [\(algorithm.rawValue)]" }
    }

    /// The case with the convolution's default algorithm.
    static func c(_ shape: Shape, out: Int, k: Int, s: Int = 1, p: Int = 0, d: Int = 1, g: Int = 1, bias: Bool = false) -> Case {
        let conv = Conv2D(inChannels: shape.c, outChannels: out, kernel: k, stride: s, padding: p, dilation: d, groups: g)
        return Case(shape: shape, conv: conv, bias: bias, algorithm: conv.applicableAlgorithms[0])
    }

    /// The bounds of an algorithm's relative error: the suite's, but for Winograd F(4x4), whose
    /// larger transform constants cost digits (`Conv2D.winograd4x4Bound`).
    static func bounds(_ algorithm: Conv2D.Algorithm) -> (forward: Double, backward: Double) {
        algorithm == .winograd4x4 ? (Conv2D.winograd4x4Bound, Conv2D.winograd4x4Bound) : (forwardBound, backwardBound)
    }

    /// The case once per algorithm that applies.
    static func everyAlgorithm(_ t: Case) -> [Case] {
        t.conv.applicableAlgorithms.map { Case(shape: t.shape, conv: t.conv, bias: t.bias, algorithm: $0) }
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
        // Winograd's tiles and panels: odd sizes (half-empty edge tiles), more rows than one
        // panel of the GEMM (8) and more tiles than one panel (32), padding 0 and 2, batch 1.
        c([2, 35, 9, 11], out: 19, k: 3, p: 1, bias: true),
        c([1, 9, 13, 7], out: 17, k: 3, p: 2),
        c([3, 17, 6, 9], out: 9, k: 3, p: 0),
        c([1, 64, 7, 7], out: 64, k: 3, p: 1),                  // ResNet's last stage, at width 64
        c([2, 6, 5, 26], out: 10, k: 3, p: 1),                  // wide rows: Winograd's vector blocks
        // F(4x4)'s groups of tiles (eight in the input transform, four in the output's): a row's
        // first group (padding 1, and 2 as the input gradient of padding 0 pads), its last, one
        // between with no load guarded, and groups that straddle two of the GEMM's panels.
        c([1, 5, 7, 32], out: 6, k: 3, p: 1),
        c([2, 3, 5, 19], out: 4, k: 3, p: 0),
        c([1, 4, 6, 41], out: 5, k: 3, p: 2),
        c([1, 3, 5, 61], out: 4, k: 3, p: 1),
        c([1, 2, 12, 50], out: 3, k: 3, p: 1),
        // grouped-blocked's rows of eight outputs: edges, interior, a tail, stride 2's even lanes.
        c([2, 16, 9, 19], out: 16, k: 3, p: 1, g: 4),
        c([1, 8, 9, 34], out: 12, k: 3, s: 2, p: 1, g: 2, bias: true),
        c([1, 4, 5, 50], out: 4, k: 3, s: 3, p: 1, g: 2),       // stride 3: the strided gather
        // Implicit GEMM: k longer than one tile (1,080 taps), items of several panels whose runs
        // cross rows and samples, and strided input gradients whose phases take every tap, none
        // (zeroed), or every third.
        c([1, 120, 5, 5], out: 9, k: 3, p: 1),
        c([2, 3, 24, 24], out: 4, k: 3, p: 1),
        c([1, 3, 13, 11], out: 4, k: 3, s: 2, p: 2, d: 2),
        c([1, 2, 14, 13], out: 3, k: 3, s: 3, p: 2, d: 2),
        c([1, 2, 1, 1], out: 3, k: 1, s: 2, p: 1),              // an input no tap of the stride reaches
        // The weight gradient's slices longer than a tile (1,176 positions in 8 slices on two
        // cores, tiles of 1,024 with 32-column panels), with a tile that crosses into the next sample.
        c([3, 1, 56, 56], out: 2, k: 3, p: 1),
        Case(shape: [2, 5, 8, 7], conv: Conv2D(inChannels: 5, outChannels: 6, kernel: .init(3, 3), stride: .init(1, 1),
                                               padding: .init(0, 2), dilation: .init(1, 1), groups: 1),
             bias: false, algorithm: .winograd2x2),                // unequal padding
    ]

    @Test(arguments: cases.flatMap(everyAlgorithm))
    func matchesReference(_ t: Case) throws {
        let q = try Shared.context().makeQueue()
        var rng = freshGenerator("conv \(t.testDescription)")
        let conv = t.conv, shape = t.shape, (forwardBound, backwardBound) = Self.bounds(t.algorithm)
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
        let wsCount = try conv.workspaceCount(shape, algorithm: t.algorithm)
        let ws = wsCount > 0 ? try poisonedTensor(q, [wsCount]) : nil
        try conv.forward(q, x: xt, weight: wt, bias: bt, y: yt, workspace: ws, algorithm: t.algorithm)
        try expectClose(q, yt, y, forwardBound, "forward")

        let dyt = try deviceTensor(q, dy, out, strided: true)
        let dxt = try poisonedTensor(q, shape, strided: true), dwt = try poisonedTensor(q, conv.weightShape)
        let dbt = t.bias ? try poisonedTensor(q, [conv.outChannels]) : nil
        try conv.backward(q, x: xt, weight: wt, dy: dyt, dx: dxt, dweight: dwt, dbias: dbt, workspace: ws,
                          algorithm: t.algorithm)
        try expectClose(q, dxt, g.dx, backwardBound, "dx")
        try expectClose(q, dwt, g.dweight, backwardBound, "dweight")
        if let dbt { try expectClose(q, dbt, g.dbias, backwardBound, "dbias") }

        // Accumulating: both gradients added to random prior values.
        let px = randomDoubles(shape.count, using: &rng), pw = randomDoubles(conv.weightShape.count, using: &rng)
        let ax = try deviceTensor(q, px, shape), aw = try deviceTensor(q, pw, conv.weightShape)
        try conv.backward(q, x: xt, weight: wt, dy: dyt, dx: ax, dweight: aw, dbias: nil, workspace: ws, accumulate: true,
                          algorithm: t.algorithm)
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
    @Test(arguments: [Self.cases[0], Self.cases[1], Self.cases[3], Self.cases[4], Self.cases[8], Self.cases[12]]
            .flatMap(everyAlgorithm), EpilogueTarget.allCases)
    func epilogueMatchesReference(_ t: Case, _ target: EpilogueTarget) throws {
        let q = try Shared.context().makeQueue()
        var rng = freshGenerator("conv epilogue \(t.testDescription) \(target)")
        let conv = t.conv, shape = t.shape, out = try conv.outputShape(shape), forwardBound = Self.bounds(t.algorithm).forward
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
        let wsCount = try conv.workspaceCount(shape, algorithm: t.algorithm)
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
        try conv.forward(q, x: xt, weight: wt, bias: bt, y: yt, workspace: ws, epilogue: epilogue, algorithm: t.algorithm)
        try expectClose(q, result, want, forwardBound, "epilogue")
        // A residual of another shape is refused, naming the layer and both shapes.
        let wrong = try poisonedTensor(q, [out.n, out.c + 1, out.h, out.w])
        let error = #expect(throws: CLNetError.self) {
            try conv.forward(q, x: xt, weight: wt, bias: bt, y: yt, workspace: ws,
                             epilogue: ConvEpilogue(residual: wrong, relu: true), algorithm: t.algorithm)
        }
        let message = error.map { "\($0)" } ?? ""
        #expect(message.contains("Conv2D(") && message.contains("\(out)") && message.contains("\(wrong.shape)"), "\(message)")
    }

    /// A workspace smaller than a whole batch: im2col runs in chunks of samples.
    /// The algorithms that write their output's batch statistics as they store it
    /// (`WrittenStatistics`): the batch norm after them then normalises with those, and its
    /// output and running statistics must be the reference's. The partials are poisoned first, so
    /// a part left unwritten fails. Chunked im2col and Winograd write each chunk's parts, and a
    /// 1x1 layer with a plane wider than the GEMM's packing buffer writes those of each column slice.
    @Test(arguments: cases.filter { !$0.bias }.flatMap(everyAlgorithm) + [
        Case(shape: [5, 3, 8, 8], conv: Conv2D(inChannels: 3, outChannels: 4, kernel: 3, padding: 1), bias: false, algorithm: .im2col),
        Case(shape: [5, 11, 9, 10], conv: Conv2D(inChannels: 11, outChannels: 13, kernel: 3, padding: 1), bias: false,
             algorithm: .winograd2x2),
        Case(shape: [5, 11, 9, 10], conv: Conv2D(inChannels: 11, outChannels: 13, kernel: 3, padding: 1), bias: false,
             algorithm: .winograd4x4),
        Case(shape: [1, 64, 256, 257], conv: Conv2D(inChannels: 64, outChannels: 9, kernel: 1), bias: false, algorithm: .gemm1x1),
    ])
    func writtenStatisticsMatchReference(_ t: Case) throws {
        let q = try Shared.context().makeQueue()
        let conv = t.conv, shape = t.shape, out = try conv.outputShape(shape), forwardBound = Self.bounds(t.algorithm).forward
        guard let parts = try conv.statisticsParts(shape, algorithm: t.algorithm, on: q.context.device) else {
            #expect(throws: CLNetError.self, "\(t.algorithm.rawValue) cannot write statistics and must say so") {
                try conv.forward(q, x: try poisonedTensor(q, shape), weight: try poisonedTensor(q, conv.weightShape), bias: nil,
                                 y: try poisonedTensor(q, out), workspace: nil,
                                 written: WrittenStatistics(partials: try poisonedTensor(q, [1 << 16]), parts: 1),
                                 algorithm: t.algorithm)
            }
            return
        }
        var rng = freshGenerator("conv written statistics \(t.testDescription)")
        let x = randomDoubles(shape.count, using: &rng, in: -1...2), w = randomDoubles(conv.weightShape.count, using: &rng)
        let c = conv.outChannels
        let gamma = randomDoubles(c, using: &rng, in: 0.5...1.5), beta = randomDoubles(c, using: &rng)
        let rm = randomDoubles(c, using: &rng), rv = randomDoubles(c, using: &rng, in: 0.5...2)
        let y = Reference.conv2d(x, shape: shape, weight: w, bias: nil, conv: conv)
        let want = Reference.batchNormTraining(y, shape: out, gamma: gamma, beta: beta, runningMean: rm, runningVar: rv, relu: true)

        let xt = try deviceTensor(q, x, shape, strided: true), wt = try deviceTensor(q, w, conv.weightShape)
        let yt = try poisonedTensor(q, out, strided: true)
        // The chunked cases get the workspace of two samples.
        let budget = shape.n == 5 ? try conv.workspaceCount(Shape([2] + Array(shape.dims.dropFirst())), budget: .max, algorithm: t.algorithm) + 1
            : 1 << 24
        let wsCount = try conv.workspaceCount(shape, budget: budget, algorithm: t.algorithm)
        let ws = wsCount > 0 ? try poisonedTensor(q, [wsCount]) : nil
        let written = WrittenStatistics(partials: try poisonedTensor(q, [WrittenStatistics.count(channels: c, parts: parts)]),
                                        parts: parts)
        try conv.forward(q, x: xt, weight: wt, bias: nil, y: yt, workspace: ws, written: written, algorithm: t.algorithm)
        try expectClose(q, yt, y, forwardBound, "forward")
        let zt = try poisonedTensor(q, out), rmt = try deviceTensor(q, rm, [c]), rvt = try deviceTensor(q, rv, [c])
        try BatchNorm.forwardTraining(q, x: yt, gamma: try deviceTensor(q, gamma, [c]), beta: try deviceTensor(q, beta, [c]),
                                      runningMean: rmt, runningVar: rvt, y: zt,
                                      workspace: try poisonedTensor(q, [BatchNorm.workspaceCount(out)]), relu: true,
                                      written: written)
        try expectClose(q, zt, want.y, forwardBound, "batch norm after it")
        try expectClose(q, rmt, want.runningMean, forwardBound, "running mean")
        try expectClose(q, rvt, want.runningVar, forwardBound, "running variance")

        // A wrong part count, a bias, and partials too small are refused.
        for bad in [WrittenStatistics(partials: written.partials, parts: parts + 1),
                    WrittenStatistics(partials: try poisonedTensor(q, [3 * c * parts - 1]), parts: parts)] {
            #expect(throws: CLNetError.self) {
                try conv.forward(q, x: xt, weight: wt, bias: nil, y: yt, workspace: ws, written: bad, algorithm: t.algorithm)
            }
        }
        #expect(throws: CLNetError.self) {
            try conv.forward(q, x: xt, weight: wt, bias: try deviceTensor(q, gamma, [c]), y: yt, workspace: ws, written: written,
                             algorithm: t.algorithm)
        }
    }

    @Test func chunkedWorkspace() throws {
        let q = try Shared.context().makeQueue()
        var rng = freshGenerator("conv chunked")
        let shape: Shape = [5, 3, 8, 8]
        let conv = Conv2D(inChannels: 3, outChannels: 4, kernel: 3, padding: 1)
        let out = try conv.outputShape(shape)
        let x = randomDoubles(shape.count, using: &rng), w = randomDoubles(conv.weightShape.count, using: &rng)
        let dy = randomDoubles(out.count, using: &rng)
        let perSample = (3 * 9 + 4) * 64  // im2col columns plus the channel-major output gradient
        let count = try conv.workspaceCount(shape, budget: 2 * perSample + (1 << 20), algorithm: .im2col)
        #expect(count == 2 * perSample + (1 << 20))  // two samples, and the split-K partial sums
        try checkChunked(q, conv, shape, x, w, dy, count: count, algorithm: .im2col)
    }

    /// Winograd in chunks of two samples, with the weight gradient summed across the chunks.
    @Test(arguments: [Conv2D.Algorithm.winograd2x2, .winograd4x4])
    func chunkedWinograd(_ algorithm: Conv2D.Algorithm) throws {
        let q = try Shared.context().makeQueue()
        var rng = freshGenerator("conv chunked \(algorithm.rawValue)")
        let shape: Shape = [5, 11, 9, 10]
        let conv = Conv2D(inChannels: 11, outChannels: 13, kernel: 3, padding: 1)
        let out = try conv.outputShape(shape)
        let one = try conv.workspaceCount([1, 11, 9, 10], budget: .max, algorithm: algorithm)
        let two = try conv.workspaceCount([2, 11, 9, 10], budget: .max, algorithm: algorithm)
        let count = try conv.workspaceCount(shape, budget: two + 1, algorithm: algorithm)
        #expect(one < two && count == two, "a budget of two samples' workspace holds two")
        try checkChunked(q, conv, shape, randomDoubles(shape.count, using: &rng),
                         randomDoubles(conv.weightShape.count, using: &rng), randomDoubles(out.count, using: &rng),
                         count: count, algorithm: algorithm)
        let tooSmall = try poisonedTensor(q, [one - 1])
        let error = #expect(throws: CLNetError.self) {
            try conv.forward(q, x: try poisonedTensor(q, shape), weight: try poisonedTensor(q, conv.weightShape), bias: nil,
                             y: try poisonedTensor(q, out), workspace: tooSmall, algorithm: algorithm)
        }
        #expect("\(error.map { "\($0)" } ?? "")".contains("\(one) floats"))
    }

    private func checkChunked(_ q: CommandQueue, _ conv: Conv2D, _ shape: Shape, _ x: [Double], _ w: [Double],
                              _ dy: [Double], count: Int, algorithm: Conv2D.Algorithm) throws {
        let out = try conv.outputShape(shape), (forwardBound, backwardBound) = Self.bounds(algorithm)
        let ws = try poisonedTensor(q, [count])
        let xt = try deviceTensor(q, x, shape), wt = try deviceTensor(q, w, conv.weightShape)
        let yt = try poisonedTensor(q, out)
        try conv.forward(q, x: xt, weight: wt, bias: nil, y: yt, workspace: ws, algorithm: algorithm)
        try expectClose(q, yt, Reference.conv2d(x, shape: shape, weight: w, bias: nil, conv: conv), forwardBound, "forward")
        let g = Reference.conv2dBackward(x, shape: shape, weight: w, conv: conv, dy: dy)
        let dxt = try poisonedTensor(q, shape), dwt = try poisonedTensor(q, conv.weightShape)
        try conv.backward(q, x: xt, weight: wt, dy: try deviceTensor(q, dy, out), dx: dxt, dweight: dwt, dbias: nil,
                          workspace: ws, algorithm: algorithm)
        try expectClose(q, dxt, g.dx, backwardBound, "dx")
        try expectClose(q, dwt, g.dweight, backwardBound, "dweight")
    }

    /// The implicit algorithm's workspace holds its packed filters, forward and input gradient, for
    /// either register block a device may use (rows in blocks of 6 or 8: 256 rows are 256 in
    /// blocks of 8 but 258 in blocks of 6), whatever device sized it.
    @Test func implicitWorkspaceFitsEveryRegisterBlock() throws {
        for conv in [Conv2D(inChannels: 256, outChannels: 256, kernel: 3, padding: 1),
                     Conv2D(inChannels: 512, outChannels: 512, kernel: 3, padding: 1),
                     Conv2D(inChannels: 256, outChannels: 512, kernel: 3, stride: 2, padding: 1),
                     Conv2D(inChannels: 128, outChannels: 128, kernel: 3, padding: 1, groups: 32),
                     Conv2D(inChannels: 3, outChannels: 64, kernel: 7, stride: 2, padding: 3)] {
            let cg = conv.inChannels / conv.groups, og = conv.outChannels / conv.groups, kk = conv.kernel.h * conv.kernel.w
            for mr in [6, 8] {
                let forward = conv.groups * ((og + mr - 1) / mr * mr) * cg * kk
                let data = conv.groups * ((cg + mr - 1) / mr * mr) * og * kk
                // And one sample's float sums after the panels (16-bit outputs over several tiles of k).
                let x: Shape = [2, conv.inChannels, 9, 9], sums = max(x.sampleCount, try conv.outputShape(x).sampleCount)
                #expect(try conv.implicitWorkspaceCount(x) >= max(forward, data) + sums, "\(conv) with MR \(mr)")
            }
        }
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
                          dy: try deviceTensor(q, dy, out), dx: dxt, dweight: dwt, dbias: nil, workspace: ws,
                          algorithm: .im2col)
        try expectClose(q, dxt, g.dx, backwardBound, "dx")
        try expectClose(q, dwt, g.dweight, backwardBound, "dweight")
        let tooSmall = try poisonedTensor(q, [100])
        #expect(throws: CLNetError.self) {
            try conv.backward(q, x: dxt, weight: dwt, dy: try deviceTensor(q, dy, out), dx: dxt, dweight: dwt, dbias: nil,
                              workspace: tooSmall, algorithm: .im2col)
        }
    }

    @Test func algorithmChoice() throws {
        typealias C = Conv2D
        #expect(C(inChannels: 64, outChannels: 256, kernel: 1).applicableAlgorithms == [.gemm1x1, .im2col, .implicitGEMM])
        #expect(C(inChannels: 64, outChannels: 128, kernel: 1, stride: 2).applicableAlgorithms == [.implicitGEMM, .im2col])
        #expect(C(inChannels: 64, outChannels: 64, kernel: 3, padding: 1).applicableAlgorithms
                == [.winograd2x2, .winograd4x4, .im2col, .implicitGEMM])
        #expect(C(inChannels: 64, outChannels: 64, kernel: 3, padding: 3).applicableAlgorithms == [.implicitGEMM, .im2col])
        #expect(C(inChannels: 64, outChannels: 64, kernel: 3, padding: 2, dilation: 2).applicableAlgorithms == [.implicitGEMM, .im2col])
        #expect(C(inChannels: 64, outChannels: 64, kernel: 3, stride: 2, padding: 1).applicableAlgorithms == [.implicitGEMM, .im2col])
        #expect(C(inChannels: 128, outChannels: 128, kernel: 3, padding: 1, groups: 32).applicableAlgorithms
                == [.direct, .groupedBlocked, .im2col, .implicitGEMM])
        #expect(C(inChannels: 1024, outChannels: 1024, kernel: 3, padding: 1, groups: 32).applicableAlgorithms
                == [.im2col, .groupedBlocked, .implicitGEMM])
        #expect(C(inChannels: 32, outChannels: 32, kernel: 3, padding: 1, groups: 32).applicableAlgorithms
                == [.direct, .groupedBlocked, .im2col, .implicitGEMM])
        // On a device that runs CLNet's GEMM, 3x3 stride-1 layers take Winograd; elsewhere im2col.
        let device = try Shared.context().device
        let want: Conv2D.Algorithm = GEMMEngine.preferred(for: device) == .clnet ? .winograd2x2 : .im2col
        #expect(C(inChannels: 64, outChannels: 64, kernel: 3, padding: 1).algorithm(on: device) == want)
        #expect(C(inChannels: 128, outChannels: 128, kernel: 3, padding: 1, groups: 32).algorithm(on: device)
                == (want == .winograd2x2 ? .groupedBlocked : .direct))
        // Asking for an algorithm that does not apply is refused, naming those that do.
        let q = try Shared.context().makeQueue(), conv = C(inChannels: 2, outChannels: 2, kernel: 3, stride: 2)
        let error = #expect(throws: CLNetError.self) {
            try conv.forward(q, x: try poisonedTensor(q, [1, 2, 5, 5]), weight: try poisonedTensor(q, conv.weightShape),
                             bias: nil, y: try poisonedTensor(q, [1, 2, 2, 2]), algorithm: .winograd2x2)
        }
        #expect("\(error.map { "\($0)" } ?? "")".contains("winograd-2x2 algorithm does not apply; these do: implicit-gemm, im2col+gemm"))
    }

    /// Timing chooses among the algorithms that apply, per direction, and a second call (an
    /// executor of the same shape) reuses the choice.
    @Test func chooseTimesEachDirection() throws {
        let context = try Shared.context()
        let grouped = Conv2D(inChannels: 32, outChannels: 32, kernel: 3, padding: 1, groups: 8)
        let choice = try grouped.choose(on: context, input: [2, 32, 9, 9], training: true)
        for direction in Conv2D.Direction.allCases {
            #expect(grouped.applicableAlgorithms.contains(choice.algorithm(direction)))
        }
        if Conv2D.algorithmSetting == nil {
            #expect(choice.reason.hasPrefix("measured (forward: ") || choice.reason.hasPrefix("cached, measured"), "\(choice.reason)")
            #expect(choice.reason.contains("weights: "), "\(choice.reason)")
        }
        #expect(try grouped.choose(on: context, input: [2, 32, 9, 9], training: true) == choice)
        // A strided layer: im2col and implicit GEMM, timed in the forward direction alone.
        let strided = Conv2D(inChannels: 4, outChannels: 4, kernel: 3, stride: 2, padding: 1)
        let forward = try strided.choose(on: context, input: [1, 4, 9, 9], training: false)
        #expect([.im2col, .implicitGEMM].contains(forward.forward))
        if Conv2D.algorithmSetting == nil {
            #expect(forward.reason.contains("implicit-gemm") && !forward.reason.contains("weights: "), "\(forward.reason)")
        }
    }

    /// The choices survive the process in their file, and a line that does not parse (a file
    /// from another version, or damaged) is ignored rather than trusted.
    @Test func choicesPersist() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("clnet-conv-choices-\(UInt64.random(in: 0...UInt64.max))")
        defer { try? FileManager.default.removeItem(at: folder) }
        let file = folder.appendingPathComponent("conv-algorithms.tsv")
        let choice = ConvChoice(forward: .winograd2x2, data: .im2col, weights: .winograd2x2, reason: "measured (test)")
        ConvChoiceStore(file: file).record("conv a", choice)
        let text = try String(contentsOf: file, encoding: .utf8)
        try Data((text + "conv b\tfft\tim2col+gemm\tim2col+gemm\tmeasured\nnot a line\n").utf8).write(to: file)
        let again = ConvChoiceStore(file: file)
        let read = try #require(again.lookup("conv a"))
        #expect(read.forward == .winograd2x2 && read.data == .im2col && read.weights == .winograd2x2)
        #expect(read.reason == "cached, measured (test)")
        #expect(again.lookup("conv b") == nil && again.lookup("not a line") == nil)

        // A process that started before another wrote its choice adopts it instead of timing
        // its own (the ranks of a data-parallel run must run the same algorithms).
        let late = ConvChoiceStore(file: file), early = ConvChoiceStore(file: file)
        let first = try early.choice(for: "conv c") { ConvChoice(forward: .im2col, data: .im2col, weights: .im2col, reason: "measured (first)") }
        let second = try late.choice(for: "conv c") { () throws(CLNetError) -> ConvChoice in
            Issue.record("the second process timed a shape the first had written")
            return ConvChoice(forward: .winograd2x2, data: .winograd2x2, weights: .winograd2x2, reason: "measured (second)")
        }
        #expect(first.forward == .im2col && second.forward == .im2col && second.reason == "cached, measured (first)")
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
    #expect(conv.applicableAlgorithms == [.winograd2x2, .winograd4x4, .im2col, .implicitGEMM])
    let out = try queue.read(y)
    // An interior pixel sees all 27 taps: 27 * 0.5 * 0.1.
    #expect(abs(out[16 * 32 + 16] - 1.35) < 1e-5)
}

/// The convolution engine's kernels carry the storage type of activations and weights as one
/// macro (`store_t`, Kernels/Common.cl): with 16-bit storage (`CLNET_STORAGE_HALF`) every one of
/// them builds, including the variants the executor does not launch at that precision
/// (PrecisionTests runs those it does).
@Test func engineKernelsBuildWithHalfStorage() throws {
    let context = try Shared.context()
    let kernels: [(KernelSource, [String: String], [String])] = [
        (.conv, [:], ["im2col", "col2im", "grouped_forward", "grouped_backward_input", "grouped_backward_weight",
                      "channel_major", "grouped_blocked"]),
        (.winograd, [:], ["wino_filter", "wino_input", "wino_output", "wino_output_grad", "wino4_filter", "wino4_input",
                          "wino4_output", "wino4_output_grad"]),
        (.implicitGEMM, [:], ["implicit_conv", "implicit_conv_weight", "implicit_pack_filters", "implicit_zero_phase"]),
        (.gemm, ["A_STORED": "1", "B_STORED": "1", "C_STORED": "1", "ROW_STATS": "1"],
         ["gemm_pack_a", "gemm_pack_b", "gemm_panels"]),
        (.gemm, ["A_STORED": "1", "B_STORED": "1", "C_STORED": "1", "TRANS_A": "1", "TRANS_B": "1"],
         ["gemm_pack_a", "gemm_pack_b", "gemm_panels"]),
        (.linear, [:], ["bias_epilogue", "bias_backward"]),
        (.deformConv, [:], ["deform_im2col", "deform_col2im", "deform_col2im_coord", "deform_output"]),
    ]
    for (source, defines, names) in kernels {
        let program = try context.program(source, defines: defines.merging(["CLNET_STORAGE_HALF": "1"]) { a, _ in a })
        for name in names { _ = try program.kernel(name) }
    }
}
