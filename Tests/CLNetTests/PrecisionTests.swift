import Testing
@testable import CLNet

/// Mixed precision (Precision.swift): 16-bit storage with float32 arithmetic, for every operator
/// and every convolution algorithm, against the CPU reference rounding the same values to the
/// same format (arithmetic in Double); the host's conversions against the device's; and dynamic
/// loss scaling's overflow, skip and growth.
@Suite(.serialized) struct PrecisionTests {
    /// Relative error bounds, in units of the format's rounding (2^-11 for half, 2^-8 for
    /// bfloat16): both sides round at the same points, so they differ where float and Double
    /// arithmetic round an element to neighbouring 16-bit values, and by what such an element
    /// moves after it. Measured over 18 draws of every case below (Benchmarks/RESULTS.md): at
    /// most 2.6 units (the linear layer's weight gradient at fp16), 1.0-1.7 for the other
    /// products and the losses, below 1 for the rest; 4 units leaves room for other draws. Over
    /// 40 more: at most 2.5 units but for distillation (3.1), whose gradients cancel and which
    /// has its own bound.
    static func bound(_ p: Precision, units: Double = 4) -> Double {
        units * (p == .fp16 ? 0x1p-11 : 0x1p-8)
    }

    // MARK: Conversions

    @Test func hostConversionsRoundToNearestEven() {
        // Half: the largest finite value, overflow to infinity, ties to even, subnormals.
        #expect(Precision.floatToHalf(65504) == 0x7BFF)
        #expect(Precision.floatToHalf(65520) == 0x7C00)
        #expect(Precision.floatToHalf(65519) == 0x7BFF)
        #expect(Precision.floatToHalf(1 + 0x1p-11) == 0x3C00)          // tie: stays on the even 1.0
        #expect(Precision.floatToHalf(1 + 3 * 0x1p-11) == 0x3C02)      // tie: up to the even neighbour
        #expect(Precision.floatToHalf(0x1p-24) == 0x0001)
        #expect(Precision.floatToHalf(0x1p-25) == 0x0000)              // tie with zero: even
        #expect(Precision.floatToHalf(-2) == 0xC000)
        #expect(Precision.halfToFloat(0x0001) == 0x1p-24)
        #expect(Precision.halfToFloat(0x7BFF) == 65504)
        #expect(Precision.halfToFloat(Precision.floatToHalf(.nan)).isNaN)
        // bfloat16: the upper half of float32's bits, rounded.
        #expect(Precision.floatToBfloat(1 + 0x1p-8) == 0x3F80)
        #expect(Precision.floatToBfloat(1 + 3 * 0x1p-8) == 0x3F82)
        #expect(Precision.bfloatToFloat(0x3F80) == 1)
        #expect(Precision.floatToBfloat(.infinity) == 0x7F80)
        #expect(Precision.bfloatToFloat(Precision.floatToBfloat(.nan)).isNaN)
        #expect(Precision.fp32.rounded(0.1) == 0.1)
    }

    /// The device's stores (Common.cl's float_to_half and bf16_round) give the host's bits, on
    /// values that exercise every rounding case, and the converting copy reads them back.
    @Test(arguments: [Precision.fp16, .bf16])
    func deviceStoresMatchHostConversions(_ p: Precision) throws {
        let q = try Shared.context().makeQueue()
        var rng = freshGenerator("precision conversions \(p)")
        var values = randomDoubles(4093, using: &rng, in: -4...4).map(Float.init)
        values += [0, -0, 65504, 65520, 70000, 1e-8, 3e-5, 0x1p-24, 0x1p-25, 1 + 0x1p-11, 1 + 3 * 0x1p-11, 1 + 0x1p-8,
                   1 + 3 * 0x1p-8, .infinity, -.infinity]
        let source = try q.upload(values, shape: [values.count])
        let stored = try Tensor(context: q.context, shape: [values.count], storage: p)
        try q.fill(stored.buffer, with: .nan, storage: p)
        try q.copy(from: source, to: stored)
        let bits: [UInt16] = try q.read(stored.buffer, as: UInt16.self, count: values.count)
        let host = p.encode(values)
        let mismatches = (0..<values.count).filter { bits[$0] != host[$0] }
        #expect(mismatches.isEmpty, "\(mismatches.count) values stored differently, first \(mismatches.first.map { "\(values[$0]): device \(bits[$0]), host \(host[$0])" } ?? "")")
        let back = try Tensor(context: q.context, shape: [values.count])
        try q.fill(back.buffer, with: .nan)
        try q.copy(from: stored, to: back)
        let read = try q.read(back), want = values.map(p.rounded)
        #expect(zip(read, want).allSatisfy { $0 == $1 || ($0.isNaN && $1.isNaN) })
        #expect(try q.read(stored) == want)
    }

    // MARK: Every convolution algorithm

    static let convolutions: [(Shape, Conv2D)] = [
        ([2, 6, 9, 7], Conv2D(inChannels: 6, outChannels: 5, kernel: 3, padding: 1)),
        ([1, 8, 6, 6], Conv2D(inChannels: 8, outChannels: 7, kernel: 1)),
        ([2, 8, 9, 9], Conv2D(inChannels: 8, outChannels: 8, kernel: 3, stride: 2, padding: 1, groups: 4)),
        ([2, 5, 8, 8], Conv2D(inChannels: 5, outChannels: 4, kernel: 3, padding: 2, dilation: 2)),
    ]

    /// Each algorithm, forced, in each direction, on 16-bit tensors: forward, the input gradient
    /// (written, and added to a prior, so that the read-modify-write of a 16-bit gradient is
    /// covered) and the float weight gradient; written outputs poisoned with NaN first.
    @Test(arguments: [Precision.fp16, .bf16])
    func everyConvolutionAlgorithm(_ p: Precision) throws {
        let q = try Shared.context().makeQueue()
        for (shape, conv) in Self.convolutions {
            var rng = freshGenerator("precision conv \(conv) \(p)")
            let r = { (v: [Double]) in v.map { Double(p.rounded(Float($0))) } }
            let x = r(randomDoubles(shape.count, using: &rng)), w = r(randomDoubles(conv.weightShape.count, using: &rng))
            let out = try conv.outputShape(shape)
            let dy = r(randomDoubles(out.count, using: &rng)), prior = r(randomDoubles(shape.count, using: &rng))
            let wantY = r(Reference.conv2d(x, shape: shape, weight: w, bias: nil, conv: conv))
            let g = Reference.conv2dBackward(x, shape: shape, weight: w, conv: conv, dy: dy)
            let wantDx = r(zip(prior, g.dx).map(+))
            func stored(_ v: [Double], _ s: Shape) throws -> Tensor { try q.upload(v.map(Float.init), shape: s, storage: p) }
            let xt = try stored(x, shape), wt = try stored(w, conv.weightShape), dyt = try stored(dy, out)
            let ws = try Tensor(context: q.context, shape: [max(1, try conv.workspaceCount(shape))])
            for algorithm in conv.applicableAlgorithms {
                let what = "\(conv) \(algorithm.rawValue) at \(p)"
                let y = try Tensor(context: q.context, shape: out, storage: p)
                try q.fill(y.buffer, with: .nan, storage: p)
                try conv.forward(q, x: xt, weight: wt, bias: nil, y: y, workspace: ws, algorithm: algorithm)
                let ey = relativeError(try q.read(y), wantY)
                #expect(ey <= Self.bound(p), "\(what) forward: \(ey)")
                let dx = try stored(prior, shape)
                try conv.backward(q, x: xt, weight: wt, dy: dyt, dx: dx, dweight: nil, dbias: nil, workspace: ws,
                                  accumulate: true, algorithm: algorithm)
                let ed = relativeError(try q.read(dx), wantDx)
                #expect(ed <= Self.bound(p), "\(what) input gradient, accumulating: \(ed)")
                let fresh = try Tensor(context: q.context, shape: shape, storage: p)
                try q.fill(fresh.buffer, with: .nan, storage: p)
                try conv.backward(q, x: xt, weight: wt, dy: dyt, dx: fresh, dweight: nil, dbias: nil, workspace: ws,
                                  algorithm: algorithm)
                let ef = relativeError(try q.read(fresh), r(g.dx))
                #expect(ef <= Self.bound(p), "\(what) input gradient: \(ef)")
                let dw = try Tensor(context: q.context, shape: conv.weightShape)
                try q.fill(dw.buffer, with: .nan)
                try conv.backward(q, x: xt, weight: wt, dy: dyt, dx: nil, dweight: dw, dbias: nil, workspace: ws,
                                  algorithm: algorithm)
                let ew = relativeError(try q.read(dw), g.dweight)
                #expect(ew <= Self.bound(p), "\(what) weight gradient: \(ew)")
            }
        }
    }

    /// A convolution's activations share x's storage, and its weight too: one stored otherwise
    /// is refused with an error naming both, not read as the wrong format (an fp32 x with a
    /// 16-bit y once compiled implicit GEMM with a float y on the 16-bit buffer).
    @Test func convolutionsRefuseMixedStorage() throws {
        let q = try Shared.context().makeQueue()
        let conv = Conv2D(inChannels: 4, outChannels: 3, kernel: 3, padding: 1)
        let shape: Shape = [1, 4, 5, 5], out = try conv.outputShape(shape)
        let ws = try Tensor(context: q.context, shape: [try conv.workspaceCount(shape)])
        func t(_ s: Shape, _ p: Precision) throws -> Tensor { try Tensor(context: q.context, shape: s, storage: p) }
        for algorithm in conv.applicableAlgorithms {
            for (x, y) in [(Precision.fp32, Precision.fp16), (.fp16, .fp32), (.bf16, .fp16)] {
                #expect(throws: CLNetError.self, "\(algorithm.rawValue): x \(x), y \(y)") {
                    try conv.forward(q, x: try t(shape, x), weight: try t(conv.weightShape, x), bias: nil, y: try t(out, y),
                                     workspace: ws, algorithm: algorithm)
                }
                #expect(throws: CLNetError.self, "\(algorithm.rawValue) backward: x \(x), dy \(y)") {
                    try conv.backward(q, x: try t(shape, x), weight: try t(conv.weightShape, x), dy: try t(out, y),
                                      dx: try t(shape, x), dweight: nil, dbias: nil, workspace: ws, algorithm: algorithm)
                }
            }
            #expect(throws: CLNetError.self, "\(algorithm.rawValue): a float weight beside 16-bit x") {
                try conv.forward(q, x: try t(shape, .fp16), weight: try t(conv.weightShape, .fp32), bias: nil,
                                 y: try t(out, .fp16), workspace: ws, algorithm: algorithm)
            }
        }
    }

    /// The channels of `wide` (a dense 16-bit tensor filled with NaN) outside `inside`, the slice
    /// a kernel wrote, still hold NaN.
    static func expectNaNOutside(_ q: CommandQueue, _ wide: Tensor, channels inside: Range<Int>,
                                 sourceLocation: SourceLocation = #_sourceLocation) throws {
        let all = wide.storage.decode(try q.read(wide.buffer, as: UInt16.self, count: wide.shape.count))
        let plane = wide.shape.h * wide.shape.w
        for n in 0..<wide.shape.n {
            for c in 0..<wide.shape.c where !inside.contains(c) {
                let start = (n * wide.shape.c + c) * plane
                #expect(all[start..<start + plane].allSatisfy { $0.isNaN }, "sample \(n) channel \(c) outside the slice was written",
                        sourceLocation: sourceLocation)
            }
        }
    }

    /// The deformable convolution's 16-bit input gradient, summed in float in the workspace
    /// and rounded once: over chunks of one sample (so that the sums' offset wraps in the
    /// kernel's 32-bit arithmetic), into a strided channel slice, written and accumulated.
    @Test(arguments: [Precision.fp16, .bf16])
    func deformableInputGradientInChunks(_ p: Precision) throws {
        let q = try Shared.context().makeQueue()
        // Stride 2 and five samples: from sample 3 on, the sums' offset less n0 samples is
        // negative, and wraps.
        let op = DeformConv2D(Conv2D(inChannels: 4, outChannels: 5, kernel: 3, stride: 2, padding: 1), modulated: true)
        let shape: Shape = [5, 4, 6, 7]
        let out = try op.conv.outputShape(shape)
        var rng = freshGenerator("precision deform chunks \(p)")
        let r = { (v: [Double]) in v.map { Double(p.rounded(Float($0))) } }
        let x = r(randomDoubles(shape.count, using: &rng)), w = r(randomDoubles(op.conv.weightShape.count, using: &rng))
        // Offsets within a third of a pixel and off 0 (see operatorMatchesRoundedReference).
        let offsets = r(randomDoubles(out.n * op.offsetChannels * out.h * out.w, using: &rng, in: 0.01...0.3)
                        .map { Bool.random(using: &rng) ? $0 : -$0 })
        let mask = r(randomDoubles(out.n * op.maskChannels * out.h * out.w, using: &rng, in: 0...1))
        let dy = r(randomDoubles(out.count, using: &rng)), prior = r(randomDoubles(shape.count, using: &rng))
        let g = Reference.deformConv2dBackward(x, shape: shape, offset: offsets, mask: mask, weight: w, op: op, dy: dy)
        func stored(_ v: [Double], _ s: Shape) throws -> Tensor { try q.upload(v.map(Float.init), shape: s, storage: p) }
        let xt = try stored(x, shape), wt = try stored(w, op.conv.weightShape), dyt = try stored(dy, out)
        let ot = try stored(offsets, [out.n, op.offsetChannels, out.h, out.w])
        let mt = try stored(mask, [out.n, op.maskChannels, out.h, out.w])
        // One sample's workspace: five chunks.
        let ws = try Tensor(context: q.context, shape: [op.workspacePerSample(shape, out)])
        // dx as channels 1..<5 of a 6-channel buffer, NaN around it.
        let wide = try Tensor(context: q.context, shape: [5, 6, 6, 7], storage: p)
        try q.fill(wide.buffer, with: .nan, storage: p)
        let dx = try wide.slice(channels: 1..<5)
        for accumulate in [false, true] {
            if accumulate { try q.write(prior.map(Float.init), to: dx) }
            try op.backward(q, x: xt, offset: ot, mask: mt, weight: wt, dy: dyt, dx: dx, doffset: nil, dmask: nil,
                            dweight: nil, dbias: nil, workspace: ws, accumulate: accumulate ? .input : [])
            let want = r(accumulate ? zip(prior, g.dx).map(+) : g.dx)
            let error = relativeError(try q.read(dx), want)
            #expect(error <= Self.bound(p), "deformable input gradient at \(p), accumulate \(accumulate): \(error)")
            try Self.expectNaNOutside(q, wide, channels: 1..<5)
        }
    }

    /// Implicit GEMM over more rows of k than one tile holds, at 16-bit storage: the sums are
    /// built in float in the workspace and rounded once, so the device rounds what the reference
    /// rounds and they differ only where float and Double sums fall either side of a rounding
    /// point (0.25 units; a rounding per tile of k measured 0.73-0.83). Forward, and the input
    /// gradient written and accumulated into a strided channel slice. 242 channels: k = 2,178
    /// exceeds the largest tile a CPU takes (2,048 rows), and the 527,076 weights are too many for
    /// the weight gradient's split partials, so the workspace holds the packed filters and one
    /// sample's sums, and the two samples take two chunks.
    @Test(arguments: [Precision.fp16, .bf16])
    func implicitSumsRoundOnce(_ p: Precision) throws {
        let q = try Shared.context().makeQueue(), device = q.context.device
        let c = 242, conv = Conv2D(inChannels: c, outChannels: c, kernel: 3, padding: 1)
        let shape: Shape = [2, c, 1, 2], out = try conv.outputShape(shape)
        let tile = Conv2D.implicitTileRows(device, nr: GEMMPanels(device: device).nr, np: 1)
        try #require(9 * c > tile, "k fits one tile of \(tile) rows on this device: the case tests nothing")
        let ws = try Tensor(context: q.context, shape: [try conv.implicitWorkspaceCount(shape)])
        try #require(ws.shape.count - conv.implicitPackedCount < 2 * shape.sampleCount, "the samples fit one chunk")
        var rng = freshGenerator("precision implicit sums \(p)")
        let r = { (v: [Double]) in v.map { Double(p.rounded(Float($0))) } }
        let x = r(randomDoubles(shape.count, using: &rng)), w = r(randomDoubles(conv.weightShape.count, using: &rng))
        let dy = r(randomDoubles(out.count, using: &rng)), prior = r(randomDoubles(shape.count, using: &rng))
        let g = Reference.conv2dBackward(x, shape: shape, weight: w, conv: conv, dy: dy)
        func stored(_ v: [Double], _ s: Shape) throws -> Tensor { try q.upload(v.map(Float.init), shape: s, storage: p) }
        let xt = try stored(x, shape), wt = try stored(w, conv.weightShape), dyt = try stored(dy, out)
        let bound = Self.bound(p, units: 0.25)

        let y = try Tensor(context: q.context, shape: out, storage: p)
        try q.fill(y.buffer, with: .nan, storage: p)
        try conv.forward(q, x: xt, weight: wt, bias: nil, y: y, workspace: ws, algorithm: .implicitGEMM)
        let ey = relativeError(try q.read(y), r(Reference.conv2d(x, shape: shape, weight: w, bias: nil, conv: conv)))
        #expect(ey <= bound, "forward at \(p): \(ey)")

        let wide = try Tensor(context: q.context, shape: [2, c + 2, 1, 2], storage: p)
        try q.fill(wide.buffer, with: .nan, storage: p)
        let dx = try wide.slice(channels: 1..<c + 1)
        for accumulate in [false, true] {
            if accumulate { try q.write(prior.map(Float.init), to: dx) }
            try conv.backward(q, x: xt, weight: wt, dy: dyt, dx: dx, dweight: nil, dbias: nil, workspace: ws,
                              accumulate: accumulate, algorithm: .implicitGEMM)
            let error = relativeError(try q.read(dx), r(accumulate ? zip(prior, g.dx).map(+) : g.dx))
            #expect(error <= bound, "input gradient at \(p), accumulate \(accumulate): \(error)")
            try Self.expectNaNOutside(q, wide, channels: 1..<c + 1)
        }
    }

    /// Max pooling's 16-bit input gradient: the outputs that chose an input (up to nine with a
    /// 3x3 window at stride 1) are summed in float and rounded once, on every layout, in rows
    /// wider than the CPU kernel's pieces of 64; written, and added to a prior. The reference
    /// takes the device's choices, which ties between rounded inputs leave open. 0.25 units, as
    /// `implicitSumsRoundOnce` (a rounding per addition measured 0.65-0.95; once, 0).
    @Test(arguments: [Precision.fp16, .bf16])
    func maxPoolGradientRoundsOnce(_ p: Precision) throws {
        let shape: Shape = [2, 3, 6, 70], window = Pool2D(kernel: 3, stride: 1, padding: 1)
        let out = try window.outputShape("test", shape)
        for q in try Shared.queuesForEachLayout() {
            var rng = freshGenerator("precision max pool \(p)")
            let r = { (v: [Double]) in v.map { Double(p.rounded(Float($0))) } }
            let x = r(randomDoubles(shape.count, using: &rng)), dy = r(randomDoubles(out.count, using: &rng))
            let prior = r(randomDoubles(shape.count, using: &rng))
            let xt = try q.upload(x.map(Float.init), shape: shape, storage: p)
            let dyt = try q.upload(dy.map(Float.init), shape: out, storage: p)
            let y = try Tensor(context: q.context, shape: out, storage: p), idx = try q.context.buffer(bytes: out.count * 4)
            try MaxPool.forward(q, x: xt, y: y, indices: idx, window: window)
            let indices = try q.read(idx, as: UInt32.self).map(Int.init)
            let want = Reference.maxPoolBackward(dy: dy, indices: indices, shape: shape, window: window)
            let dx = try Tensor(context: q.context, shape: shape, storage: p)
            for accumulate in [false, true] {
                if accumulate { try q.write(prior.map(Float.init), to: dx) } else { try q.fill(dx.buffer, with: .nan, storage: p) }
                try MaxPool.backward(q, dy: dyt, indices: idx, dx: dx, window: window, accumulate: accumulate)
                let error = relativeError(try q.read(dx), r(accumulate ? zip(prior, want).map(+) : want))
                #expect(error <= Self.bound(p, units: 0.25),
                        "\(p), \(q.context.laneCount) lanes, accumulate \(accumulate): \(error)")
            }
        }
    }

    // MARK: Every operator

    /// One operator of a small graph: x feeds two 1x1 convolutions, `h` and `h2`; the operator
    /// takes them (or one) and its output goes to a mean-squared-error loss against a target,
    /// unless it is a loss itself. `h`'s gradient is the operator's input gradient.
    struct OperatorCase: CustomTestStringConvertible, Sendable {
        let name: String
        var channels = 6, size = 6
        /// The bound in units of 16-bit rounding (`bound`).
        var units = 4.0
        /// Whether its kernels depend on the memory-bound layouts (lanes, vector width): the
        /// convolution engine's do not, and run on the device's layout alone.
        var layouts = true
        /// The node whose output is a deformable convolution's offsets, kept off integers.
        var offsets: String? = nil
        let build: @Sendable (inout GraphBuilder, Value, Value) throws -> Value
        var testDescription: String { name }
    }

    static let operators: [OperatorCase] = [
        OperatorCase(name: "conv 3x3", layouts: false) { b, h, _ in
            try b.conv(h, Conv2D(inChannels: 6, outChannels: 5, kernel: 3, padding: 1), bias: true, name: "op") },
        OperatorCase(name: "conv grouped, strided, dilated", layouts: false) { b, h, _ in
            try b.conv(h, Conv2D(inChannels: 6, outChannels: 4, kernel: 3, stride: 2, padding: 2, dilation: 2, groups: 2),
                       name: "op") },
        OperatorCase(name: "deformable conv", layouts: false, offsets: "op.offset") { b, h, _ in
            try b.deformableConv(h, Conv2D(inChannels: 6, outChannels: 4, kernel: 3, padding: 1), modulated: true, name: "op") },
        OperatorCase(name: "dcls conv", layouts: false) { b, h, _ in
            try b.dcls(h, DCLSConv2D(Conv2D(inChannels: 6, outChannels: 4, kernel: 5, padding: 2), count: 3), name: "op") },
        OperatorCase(name: "dendritic conv", layouts: false) { b, h, _ in
            try b.dendritic(h, DendriticConv2D(Conv2D(inChannels: 6, outChannels: 4, kernel: 3, padding: 1)), name: "op") },
        OperatorCase(name: "batch norm + relu") { b, h, _ in try b.batchNorm(h, relu: true, name: "op") },
        OperatorCase(name: "group norm") { b, h, _ in try b.groupNorm(h, groups: 3, name: "op") },
        // The norm does the addition's and the ReLU's backward (MemoryPlan.normFusions).
        OperatorCase(name: "batch norm, residual add + relu") { b, h, h2 in
            try b.add(try b.batchNorm(h, name: "op"), h2, relu: true, name: "add") },
        OperatorCase(name: "relu") { b, h, _ in try b.relu(h, name: "op") },
        OperatorCase(name: "add + relu") { b, h, h2 in try b.add(h, h2, relu: true, name: "op") },
        OperatorCase(name: "max pool", size: 7) { b, h, _ in try b.maxPool(h, Pool2D(kernel: 3, stride: 2, padding: 1), name: "op") },
        OperatorCase(name: "avg pool") { b, h, _ in try b.avgPool(h, Pool2D(kernel: 2), name: "op") },
        OperatorCase(name: "global avg pool") { b, h, _ in try b.globalAvgPool(h, name: "op") },
        OperatorCase(name: "concat") { b, h, h2 in try b.concat([h, h2], name: "op") },
        OperatorCase(name: "channel slice") { b, h, _ in try b.channelSlice(h, channels: 1..<4, name: "op") },
        OperatorCase(name: "linear") { b, h, _ in try b.linear(h, outFeatures: 7, name: "op") },
        OperatorCase(name: "dropout") { b, h, _ in try b.dropout(h, p: 0.3, name: "op") },
        OperatorCase(name: "stochastic depth") { b, h, _ in try b.stochasticDepth(h, p: 0.3, name: "op") },
        OperatorCase(name: "pad shortcut") { b, h, _ in try b.padShortcut(h, outChannels: 10, stride: 2, name: "op") },
        OperatorCase(name: "sigmoid") { b, h, _ in try b.sigmoid(h, name: "op") },
        OperatorCase(name: "prelu") { b, h, _ in try b.prelu(h, name: "op") },
        OperatorCase(name: "channel scale") { b, h, h2 in
            try b.channelScale(h, by: try b.sigmoid(try b.globalAvgPool(h2, name: "s.pool"), name: "s"), name: "op") },
        OperatorCase(name: "selective sum") { b, h, h2 in
            let z = try b.linear(try b.globalAvgPool(h2, name: "z.pool"), outFeatures: 12, name: "z")
            return try b.selectiveSum([h, h2], logits: z, name: "op") },
        OperatorCase(name: "scalar affine") { b, h, _ in try b.scalarAffine(h, scale: "op.scale", bias: "op.bias", name: "op") },
        OperatorCase(name: "spiking neuron, repeat and mean over time") { b, h, _ in
            let big = try b.timeRepeat(h, steps: 2, name: "repeat")
            let spikes = try b.spikingNeuron(big, SpikingNeuron(steps: 2, dynamics: .leaky(tau: 2)), name: "op")
            return try b.timeMean(spikes, steps: 2, name: "mean") },
        OperatorCase(name: "sew connect") { b, h, h2 in try b.sewConnect(h, h2, .add, name: "op") },
        OperatorCase(name: "upsample nearest") { b, h, _ in try b.upsample(h, .nearest, factor: 2, name: "op") },
        OperatorCase(name: "upsample bilinear") { b, h, _ in try b.upsample(h, .bilinear, height: 9, width: 11, name: "op") },
        OperatorCase(name: "multiply") { b, h, h2 in try b.multiply(h, h2, name: "op") },
        OperatorCase(name: "softmax cross-entropy") { b, h, _ in
            try b.softmaxCrossEntropy(try b.linear(h, outFeatures: 5, name: "fc"), labelSmoothing: 0.1, name: "loss") },
        // Its gradients are differences of two softmaxes over five classes, summed over two
        // samples, which cancel: a logit rounded to the neighbouring 16-bit value on one side
        // moves them further. Over 125 draws: at most 4.3 units (fc.bias at bf16), else 3.1.
        OperatorCase(name: "distillation", units: 6) { b, h, _ in
            let teacher = try b.input("teacher", shape: [2, 5])
            return try b.distillation(try b.linear(h, outFeatures: 5, name: "fc"), teacher: teacher,
                                      Distillation(temperature: 2, weight: 0.5), name: "loss") },
        OperatorCase(name: "per-pixel cross-entropy") { b, h, _ in try b.pixelCrossEntropy(h, name: "loss") },
    ]

    @Test(arguments: operators, [Precision.fp16, .bf16])
    func operatorMatchesRoundedReference(_ c: OperatorCase, _ p: Precision) throws {
        var b = GraphBuilder()
        let x = try b.input("x", shape: [2, 4, c.size, c.size])
        let h = try b.conv(x, Conv2D(inChannels: 4, outChannels: c.channels, kernel: 1), name: "h")
        let h2 = try b.conv(x, Conv2D(inChannels: 4, outChannels: c.channels, kernel: 1), name: "h2")
        let y = try c.build(&b, h, h2)
        var output = y
        if !b.graph.nodes[b.graph.producers[y.index]!].operation.isLoss {
            let target = try b.input("target", shape: b.graph.shape(of: y))
            output = try b.meanSquaredError(y, target: target, name: "loss")
        }
        let graph = b.graph
        var rng = freshGenerator("precision \(c.name) \(p)")
        var params: [String: [Double]] = [:]
        for q in graph.parameters {
            switch q.role {
            case .normWeight: params[q.name] = randomDoubles(q.shape.count, using: &rng, in: 0.5...1.5)
            case .runningVar: params[q.name] = randomDoubles(q.shape.count, using: &rng, in: 0.5...1.5)
            case .position: params[q.name] = randomDoubles(q.shape.count, using: &rng, in: -1.5...1.5)
            // Deformable offsets (and the mask's logits) about half a pixel from 0, within
            // 0.2 of it (see the check below).
            case _ where q.name.contains("conv_offset.bias"):
                params[q.name] = randomDoubles(q.shape.count, using: &rng, in: 0.4...0.6)
            case _ where q.name.contains("conv_offset"):
                params[q.name] = randomDoubles(q.shape.count, using: &rng, in: -0.01...0.01)
            default: params[q.name] = randomDoubles(q.shape.count, using: &rng, in: -0.5...0.5)
            }
        }
        let lossNode = graph.nodes[graph.lossNode!]
        let labelCount = lossNode.operation.labelCount(input: graph.shape(of: lossNode.inputs[0]))
        let classes = graph.shape(of: lossNode.inputs[0]).c
        let labels = (0..<labelCount).map { ($0 * 5 + 1) % classes }

        // A deformable sample's offset gradient jumps where its position crosses a pixel, that
        // is, where an offset crosses an integer. The device's offsets and the reference's
        // differ by more than their own rounding: each is a sum over 16-bit inputs of which a few
        // round to neighbouring values on the two sides (bfloat16 moved one by 7.6e-5, across 0,
        // and that gradient by 9%, in 2 draws of 20 when offsets were drawn around 0). So the
        // offsets lie about half a pixel from 0, and a draw with one within 0.05 of an integer
        // (600 times that difference) is redrawn, as ModelTests keeps ReLU inputs off their kink.
        var inputs: [String: [Double]] = [:], values: [[Double]] = []
        var reference = try ReferenceExecutor(graph: graph, parameters: params)
        reference.activationStorage = p
        var clear = c.offsets == nil
        for _ in 0..<20 where !clear {
            for (name, v) in graph.inputs { inputs[name] = randomDoubles(graph.shape(of: v).count, using: &rng) }
            values = try reference.forward(inputs, labels: labels, training: true, seed: 7)
            let k = try #require(graph.nodes.firstIndex { $0.name == c.offsets }, "no node \(c.offsets ?? "")")
            clear = values[graph.nodes[k].output.index].allSatisfy { abs($0 - $0.rounded()) >= 0.05 }
        }
        if c.offsets == nil {
            for (name, v) in graph.inputs { inputs[name] = randomDoubles(graph.shape(of: v).count, using: &rng) }
            values = try reference.forward(inputs, labels: labels, training: true, seed: 7)
        }
        try #require(clear, "\(c.name): no draw in 20 kept the offsets 0.05 off an integer")
        let grads = try reference.backward(values: values, labels: labels, seed: 7)

        // The memory-bound kernels' other layouts (lanes sharing a run, other vector widths) at
        // fp16; bfloat16 differs from it only in Common.cl's conversions.
        let layouts = p == .fp16 && c.layouts ? try Shared.queuesForEachLayout().map(\.context) : [try Shared.context()]
        for context in layouts {
            let what = "\(c.name) at \(p), \(context.laneCount) lanes, VEC=\(context.loadWidth)"
            let e = try Executor(graph: graph, context: context, training: true, keep: [h, y], precision: p)
            // NaN in every activation and gradient before the step, so that one left unwritten fails.
            let poison = try context.makeQueue()
            try poison.fill(e.values[0].buffer, with: .nan, storage: p)
            if let arena = e.gradientArena { try poison.fill(arena, with: .nan) }
            try poison.finish()
            for (name, v) in params { try e.setParameter(name, v.map(Float.init)) }
            try e.forward(inputs.mapValues { $0.map(Float.init) }, labels: labels, seed: 7)
            try e.backward()
            let limit = Self.bound(p, units: c.units)
            let forward = relativeError(try e.read(y), values[y.index])
            #expect(forward <= limit, "\(what): forward relative error \(forward) > \(limit)")
            let loss = relativeError([try e.loss().loss], [values[output.index][0]])
            #expect(loss <= limit, "\(what): loss relative error \(loss)")
            let dh = relativeError(try e.readGradient(h) ?? [], grads.values[h.index])
            #expect(dh <= limit, "\(what): input gradient relative error \(dh) > \(limit)")


            // h2's convolution gets no gradient where the operator takes h alone.
            for q in graph.parameters where q.trainable {
                guard let want = grads.parameters[q.name] else { continue }
                let error = relativeError(try e.gradient(q.name), want)
                #expect(error <= limit, "\(what): gradient of \(q.name) relative error \(error) > \(limit)")
            }
        }
    }
}

/// Dynamic loss scaling (Executor+Precision.swift) and the SGD update's part in it.
@Suite(.serialized) struct LossScalingTests {
    /// The update divides the scale out, reports a gradient that is not finite in its flag (and
    /// leaves the flag alone otherwise), and writes the 16-bit copy in the same pass.
    @Test(arguments: [Precision.fp16, .bf16])
    func updateUnscalesFlagsAndCopies(_ p: Precision) throws {
        let q = try Shared.context().makeQueue()
        var rng = freshGenerator("sgd scaled \(p)")
        let n = 4099, w = randomDoubles(n, using: &rng).map(Float.init), g = randomDoubles(n, using: &rng).map(Float.init)
        let sgd = SGD(learningRate: 0.1, momentum: 0.9, weightDecay: 1e-4)
        // Unscaled, on the host: buf = g + wd * w (zero momentum before), w -= lr * buf.
        let want = zip(w, g).map { w, g in w - 0.1 * (g + 1e-4 * w) }
        for (scale, poison) in [(Float(1024), false), (1024, true)] {
            let params = try q.upload(w, shape: [n]), momentum = try q.upload([Float](repeating: 0, count: n), shape: [n])
            var scaled = g.map { $0 * scale }
            if poison { scaled[1234] = .infinity }
            let grads = try q.upload(scaled, shape: [n])
            let copy = try Tensor(context: q.context, shape: [n], storage: p)
            try q.fill(copy.buffer, with: .nan, storage: p)
            let flag = try q.context.buffer(bytes: 4)
            try q.fill(flag, with: 0)
            try sgd.step(q, parameters: params, gradients: grads, momentumBuffer: momentum, gradientScale: 1 / scale,
                         overflow: flag, weightCopy: copy)
            let raised = try q.read(flag, as: UInt32.self, count: 1)[0]
            #expect(raised == (poison ? 1 : 0), "overflow flag \(raised), poisoned: \(poison)")
            guard !poison else { continue }
            let got = try q.read(params)
            #expect(relativeError(got, want.map(Double.init)) <= 1e-6)
            #expect(try q.read(copy) == got.map(p.rounded))
        }
    }

    /// A small network at fp16: a step whose scaled gradients overflow (a scale of 2^40 makes the
    /// loss gradient itself infinite in half) is undone whole and halves the scale; clean steps
    /// update the weights, and after `growthInterval` of them the scale doubles. The scale
    /// divides out: a step at scale 2^10 moves the weights as one at scale 1 does.
    @Test func overflowSkipsTheStepAndCleanStepsGrowTheScale() throws {
        var b = GraphBuilder()
        let x = try b.input("x", shape: [4, 3, 8, 8])
        let c = try b.conv(x, Conv2D(inChannels: 3, outChannels: 8, kernel: 3, padding: 1), name: "conv")
        let r = try b.batchNorm(c, relu: true, name: "bn")
        let logits = try b.linear(try b.globalAvgPool(r, name: "pool"), outFeatures: 5, name: "fc")
        _ = try b.softmaxCrossEntropy(logits, name: "loss")
        let graph = b.graph
        var rng = freshGenerator("loss scaling")
        let input = randomDoubles(graph.shape(of: x).count, using: &rng).map(Float.init), labels = [0, 1, 2, 3]
        func executor() throws -> Executor {
            let e = try Executor(graph: graph, context: try Shared.context(), training: true,
                                 optimizer: SGD(learningRate: 0.1, momentum: 0.9), precision: .fp16)
            try e.initialize(seed: 3)
            return e
        }
        func weights(_ e: Executor) throws -> [Float] { try e.parameter("conv.weight") + e.parameter("fc.weight") }

        let e = try executor()
        #expect(e.lossScaler == LossScaler())
        var scaler = LossScaler()
        scaler.scale = 0x1p40
        scaler.growthInterval = 2
        try e.setLossScaler(scaler)
        let before = try weights(e), momentum = try e.momentum("conv.weight"), running = try e.parameter("bn.running_mean")
        try e.forward(["x": input], labels: labels)
        try e.backward()
        #expect(e.lastStepOverflowed)
        #expect(try weights(e) == before, "an overflowing step changed the weights")
        #expect(try e.momentum("conv.weight") == momentum)
        #expect(try e.parameter("bn.running_mean") == running, "an overflowing step kept its running statistics")
        #expect(e.lossScaler?.scale == 0x1p39)
        #expect(e.lossScaler?.skippedSteps == 1)

        scaler.scale = 1024
        try e.setLossScaler(scaler)
        for step in 1...2 {
            try e.forward(["x": input], labels: labels)
            try e.backward()
            #expect(!e.lastStepOverflowed)
            #expect(e.lossScaler?.scale == (step == 1 ? 1024 : 2048), "after \(step) clean steps")
        }
        #expect(try weights(e) != before)

        // The scale divides out: one step at 2^10 against one at 1.
        var moved: [[Float]] = []
        for s in [Float(1024), 1] {
            let f = try executor()
            var one = LossScaler()
            one.scale = s
            try f.setLossScaler(one)
            try f.forward(["x": input], labels: labels)
            try f.backward()
            moved.append(try weights(f))
        }
        // Scaling by a power of two moves no 16-bit rounding outside half's subnormal range.
        let start = try weights(try executor())
        let deltas = moved.map { zip($0, start).map { $0 - $1 } }
        #expect(relativeError(deltas[0], deltas[1]) <= 1e-3, "scaled and unscaled steps differ")
        #expect(throws: CLNetError.self) {
            try Executor(graph: graph, context: try Shared.context(), training: true, precision: .bf16)
                .setLossScaler(LossScaler())
        }
    }
}
