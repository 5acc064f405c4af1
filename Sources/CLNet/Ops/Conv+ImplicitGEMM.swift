// Implicit-GEMM convolution: every convolution (any kernel, stride, padding, dilation and groups)
// as a matrix product whose im2col gather runs inside the product kernel, into a tile in local
// memory. Kernels: Kernels/ImplicitGEMM.cl. Tested against the CPU reference in ConvTests with
// the algorithm forced.
//
//   forward:          Y[g] = W[g] col(X) over every sample, for each group; W is first written
//                     in the GEMM's panels of MR rows (it is small beside the activations).
//   input gradient:   for each phase (ph, pw) of the stride, the input positions ih = ph + SH*i
//                     are reached by the taps kh = kh0 + t*step only, from dy positions
//                     i + (ph + PH - kh0*DH)/SH - t*(DH/gcd): a stride-1 convolution of dy with
//                     those taps, reversed. A stride-1 layer is one phase; a 1x1 stride-2 layer's
//                     three other phases receive no tap and are zeroed.
//   weight gradient:  dW[g] = dY[g] col(X)^T over every sample, with k split into slices (each
//                     writing partial sums to the workspace, then added up) where the taps alone
//                     would leave the device's cores idle.

extension Conv2D {
    /// The rows of k a tile of the implicit kernels holds: NP tiles of NR floats a row take at
    /// most 128 KiB (a CPU core's L2 keeps them beside A's rows) and half the device's local memory.
    static func implicitTileRows(_ device: Device, nr: Int, np: Int) -> Int {
        max(16, min(128 << 10, device.info.localMemoryBytes / 2) / (4 * nr * np))
    }

    /// The panels of NR columns one item of an implicit kernel takes (NP): four, so that A's rows
    /// serve four tiles while in the L1 cache, or fewer where `panels` would then leave the
    /// device's cores without two items each.
    static func implicitPanelsPerItem(_ device: Device, panels: Int) -> Int {
        let cores = max(1, device.info.computeUnits)
        return [4, 2].first { (panels + $0 - 1) / $0 >= 4 * cores } ?? 1
    }

    /// Partial sums of the weight gradient's slices take at most this many floats of the workspace.
    static let implicitPartialsFloats = 1 << 20

    /// The most slices the weight gradient's k is split into.
    static let implicitMostSlices = 16

    /// The workspace floats of the implicit algorithm for input `x`: the filters in the GEMM's
    /// panels (those of one phase for the input gradient) with room after them for one sample's
    /// output or input gradient in float (16-bit sums, `inFloatSums`), or the weight gradient's
    /// partial sums (none when only one slice fits). The panels are sized for every register
    /// block a device may use (rows padded to 6 or 8), so that the memory plan does not depend
    /// on the device.
    func implicitWorkspaceCount(_ x: Shape) throws(CLNetError) -> Int {
        let weights = weightShape.count
        let partials = min(Self.implicitMostSlices, Self.implicitPartialsFloats / weights) * weights
        let sample = max(try outputShape(x).sampleCount, x.sampleCount)
        return max(implicitPackedCount + sample, partials >= 2 * weights ? partials : 0)
    }

    /// The floats of the filters in the GEMM's panels, for either direction and register block.
    var implicitPackedCount: Int {
        let kk = kernel.h * kernel.w, cg = inChannels / groups, og = outChannels / groups
        func padded(_ rows: Int) -> Int { GEMMPanels.rowBlocks.map { (rows + $0 - 1) / $0 * $0 }.max()! }
        return groups * kk * max(padded(og) * cg, padded(cg) * og)
    }

    /// Writes the filters into `ws` as implicit_conv's A: `rows` rows of k = (outer, th, tw) per
    /// group, element (row, o, i, j) at w[g*GS + row*rowStride + o*outerStride + (kh0 + i*stepH)*KW
    /// + kw0 + j*stepW]. Returns the floats between groups' panels.
    private func packFilters(_ q: CommandQueue, _ weight: Tensor, rows: Int, outer: Int, rowStride: Int, outerStride: Int,
                             th: (first: Int, step: Int, count: Int), tw: (first: Int, step: Int, count: Int),
                             into ws: Tensor) throws(CLNetError) -> Int {
        let mr = GEMMPanels(device: q.context.device).mr
        let groupFloats = (rows + mr - 1) / mr * mr * outer * th.count * tw.count
        guard groups * groupFloats <= ws.shape.count else {
            throw .invalidShape(operation: "Conv2D(\(self))",
                                message: "implicit GEMM needs a workspace of at least \(groups * groupFloats) floats, not \(ws.shape.count) (see workspaceCount)")
        }
        _ = try q.launchRuns(.implicitGEMM, "implicit_pack_filters", weight.vectorArguments + KernelArgument.counts(
            [rows, outer, rowStride, outerStride, weightShape.count / groups, kernel.w, th.first, tw.first, th.step,
             tw.step, th.count, tw.count, groups]) + ws.vectorArguments, specialised: ["MR": "\(mr)"], waitFor: [])
        return groupFloats
    }

    /// Enqueues an implicit kernel whose items take `np` panels, on a grid of the same size at
    /// every launch (PoCL, see FOR_EACH_RUN in Common.cl), one work item per work-group, each
    /// with its own tiles and runs; the macros are the GEMM's register block, the tiles' size
    /// and the taps' geometry, and Y_FLOAT where a float output is computed from 16-bit inputs.
    private func launchImplicit(_ q: CommandQueue, _ name: String, _ arguments: [KernelArgument], np: Int,
                                taps: (Int, Int), step: (Int, Int), tapStep: (Int, Int), floatOutput: Bool = false,
                                waitFor: [Event]) throws(CLNetError) -> Event {
        let device = q.context.device, panels = GEMMPanels(device: device)
        let rows = Self.implicitTileRows(device, nr: panels.nr, np: np)
        var macros = ["MR": "\(panels.mr)", "NR": "\(panels.nr)", "VW": "\(panels.vw)", "NP": "\(np)", "KC": "\(rows)",
                      "TH": "\(taps.0)", "TW": "\(taps.1)", "SH": "\(step.0)", "SW": "\(step.1)",
                      "DH": "\(tapStep.0)", "DW": "\(tapStep.1)"]
        if floatOutput { macros["Y_FLOAT"] = "1" }
        let kernel = try q.context.kernel(.implicitGEMM, name, for: arguments, specialised: macros)
        let local: [KernelArgument] = [.local(bytes: rows * panels.nr * np * 4), .local(bytes: 16 * max(rows, np * panels.nr))]
        return try q.enqueue(kernel, arguments + local, global: [Self.implicitWorkers(device)], local: [1],
                             waitFor: waitFor)
    }

    /// The implicit kernels' grid: at least 16 work items per compute unit, a power of two
    /// (FOR_EACH_SPREAD in Kernels/ImplicitGEMM.cl reverses their bits).
    static func implicitWorkers(_ device: Device) -> Int {
        var workers = 1
        while workers < 16 * max(1, device.info.computeUnits) { workers *= 2 }
        return workers
    }

    /// NP for a product of `columns` columns in each of the groups.
    private func implicitColumnPanels(_ device: Device, columns: Int) -> Int {
        let nr = GEMMPanels(device: device).nr
        return Self.implicitPanelsPerItem(device, panels: groups * ((columns + nr - 1) / nr))
    }

    func implicitForward(_ q: CommandQueue, x: Tensor, weight: Tensor, y: Tensor, workspace: Tensor?,
                         waitFor: [Event]) throws(CLNetError) -> Event {
        let ws = try implicitWorkspace(workspace, "", x.shape)
        let cg = inChannels / groups, og = outChannels / groups, kk = kernel.h * kernel.w
        _ = try q.marker(waitFor: waitFor)
        let aGroup = try packFilters(q, weight, rows: og, outer: cg, rowStride: cg * kk, outerStride: kk,
                                     th: (0, 1, kernel.h), tw: (0, 1, kernel.w), into: ws)
        func product(_ x: Tensor, _ y: Tensor) throws(CLNetError) -> Event {
            let out = y.shape
            let arguments: [KernelArgument] = try x.arguments + KernelArgument.counts([cg, x.shape.h, x.shape.w])
                + ws.vectorArguments + KernelArgument.counts([aGroup])
                + y.arguments + KernelArgument.counts([og, out.h, out.w, out.h, out.w])
                + [.int(Int32(-padding.h)), .int(Int32(-padding.w))]
                + KernelArgument.counts([0, 0, 1, 1, groups, x.shape.n]) + [.flag(false)]
            return try launchImplicit(q, "implicit_conv", arguments,
                                      np: implicitColumnPanels(q.context.device, columns: out.n * out.h * out.w),
                                      taps: (kernel.h, kernel.w), step: (stride.h, stride.w),
                                      tapStep: (dilation.h, dilation.w), floatOutput: y.storage == .fp32 && x.storage != .fp32,
                                      waitFor: [])
        }
        guard needsFloatSums(q.context.device, output: y, k: cg * kk, columns: y.shape.n * y.shape.h * y.shape.w) else {
            return try product(x, y)
        }
        return try inFloatSums(q, y, workspace: ws, accumulate: false) { (samples, sums) throws(CLNetError) in
            _ = try product(try x.slice(samples: samples), sums)
        }
    }

    /// True where implicit_conv, summing `k` rows into a 16-bit `output`, would add a rounded
    /// partial sum per tile of k: its sums are then built in float (`inFloatSums`).
    private func needsFloatSums(_ device: Device, output: Tensor, k: Int, columns: Int) -> Bool {
        let panels = GEMMPanels(device: device)
        let np = implicitColumnPanels(device, columns: columns)
        return output.storage != .fp32 && k > Self.implicitTileRows(device, nr: panels.nr, np: np)
    }

    /// Runs `product` over chunks of whole samples into float sums in the workspace (after the
    /// packed filters), each chunk rounded into `output` once (added to it when `accumulate`),
    /// so that a 16-bit output is rounded once however many tiles of k its sums took.
    private func inFloatSums(_ q: CommandQueue, _ output: Tensor, workspace ws: Tensor, accumulate: Bool,
                             _ product: (Range<Int>, Tensor) throws(CLNetError) -> Void) throws(CLNetError) -> Event {
        let n = output.shape.n, sample = output.shape.sampleCount
        // At least one sample fits: implicitWorkspaceCount leaves room for it.
        let chunk = max(1, min(n, (ws.shape.count - implicitPackedCount) / sample))
        var last = try q.marker()
        for n0 in Swift.stride(from: 0, to: n, by: chunk) {
            let samples = n0..<min(n, n0 + chunk)
            let sums = try Tensor(buffer: ws.buffer, shape: Shape([samples.count] + output.shape.dims.dropFirst()),
                                  offset: ws.offset + implicitPackedCount)
            try product(samples, sums)
            last = try q.copy(from: sums, to: try output.slice(samples: samples), accumulate: accumulate)
        }
        return last
    }

    /// The taps of one phase along an axis: the first kernel position that reaches input
    /// positions ≡ `phase` (mod stride), the step between such positions, and their count.
    private static func phaseTaps(phase: Int, kernel: Int, stride: Int, padding: Int,
                                  dilation: Int) -> (first: Int, step: Int, count: Int) {
        guard let first = (0..<kernel).first(where: { k in ((phase + padding - k * dilation) % stride + stride) % stride == 0 })
        else { return (0, 1, 0) }
        let step = stride / gcd(stride, dilation)
        return (first, step, (kernel - first + step - 1) / step)
    }

    private static func gcd(_ a: Int, _ b: Int) -> Int { b == 0 ? a : gcd(b, a % b) }

    /// Checks the workspace of the implicit algorithm and returns it.
    private func implicitWorkspace(_ workspace: Tensor?, _ label: String, _ x: Shape) throws(CLNetError) -> Tensor {
        let least = try implicitWorkspaceCount(x)
        guard let workspace, workspace.isDense, workspace.storage == .fp32, workspace.shape.count >= least else {
            throw .invalidShape(operation: "Conv2D(\(self))\(label)",
                                message: "implicit GEMM needs a float workspace of at least \(least) floats (see workspaceCount)")
        }
        return workspace
    }

    func implicitBackward(_ q: CommandQueue, x: Tensor, weight: Tensor, dy: Tensor, dx: Tensor?, dweight: Tensor?,
                          workspace: Tensor?, accumulate: Bool, waitFor: [Event]) throws(CLNetError) -> Event {
        let ws = try implicitWorkspace(workspace, " backward", x.shape)
        var last = try q.marker(waitFor: waitFor)
        if let dweight { last = try implicitWeightGradient(q, x: x, dy: dy, dweight: dweight, workspace: ws, accumulate: accumulate) }
        if let dx { last = try implicitInputGradient(q, weight: weight, dy: dy, dx: dx, workspace: ws, accumulate: accumulate) }
        return last
    }

    private func implicitInputGradient(_ q: CommandQueue, weight: Tensor, dy: Tensor, dx: Tensor, workspace ws: Tensor,
                                       accumulate: Bool) throws(CLNetError) -> Event {
        let og = outChannels / groups, shape = dx.shape
        let floatSums = inputPhases(shape).contains { phase in
            needsFloatSums(q.context.device, output: dx, k: og * phase.th.count * phase.tw.count,
                           columns: shape.n * phase.gi * phase.gj)
        }
        guard floatSums else {
            return try inputGradientPhases(q, weight: weight, dy: dy, dx: dx, workspace: ws, accumulate: accumulate)
        }
        return try inFloatSums(q, dx, workspace: ws, accumulate: accumulate) { (samples, sums) throws(CLNetError) in
            _ = try inputGradientPhases(q, weight: weight, dy: try dy.slice(samples: samples), dx: sums, workspace: ws,
                                        accumulate: false)
        }
    }

    /// One phase (ph, pw) of the stride in the input gradient: its taps along each axis and its
    /// grid of input positions (gi x gj).
    private struct InputPhase {
        var ph: Int, pw: Int
        var th: (first: Int, step: Int, count: Int), tw: (first: Int, step: Int, count: Int)
        var gi: Int, gj: Int
    }

    /// The phases of an input of `shape`; a phase may lack taps when the input is smaller than
    /// the stride.
    private func inputPhases(_ shape: Shape) -> [InputPhase] {
        (0..<min(stride.h, shape.h)).flatMap { ph in
            (0..<min(stride.w, shape.w)).map { pw in
                InputPhase(ph: ph, pw: pw,
                           th: Self.phaseTaps(phase: ph, kernel: kernel.h, stride: stride.h, padding: padding.h, dilation: dilation.h),
                           tw: Self.phaseTaps(phase: pw, kernel: kernel.w, stride: stride.w, padding: padding.w, dilation: dilation.w),
                           gi: (shape.h - ph + stride.h - 1) / stride.h, gj: (shape.w - pw + stride.w - 1) / stride.w)
            }
        }
    }

    private func inputGradientPhases(_ q: CommandQueue, weight: Tensor, dy: Tensor, dx: Tensor, workspace ws: Tensor,
                                     accumulate: Bool) throws(CLNetError) -> Event {
        let cg = inChannels / groups, og = outChannels / groups, n = dx.shape.n, kk = kernel.h * kernel.w
        let h = dx.shape.h, w = dx.shape.w, out = dy.shape
        var last = try q.marker()
        for phase in inputPhases(dx.shape) {
            let (ph, pw, th, tw) = (phase.ph, phase.pw, phase.th, phase.tw)
            if th.count == 0 || tw.count == 0 {
                // Accumulating, nothing runs.
                if !accumulate {
                    last = try q.launchRuns(.implicitGEMM, "implicit_zero_phase", dx.arguments + KernelArgument.counts(
                        [inChannels, h, w, ph, pw, stride.h, stride.w, n]), waitFor: [])
                }
                continue
            }
            let aGroup = try packFilters(q, weight, rows: cg, outer: og, rowStride: kk, outerStride: cg * kk,
                                         th: th, tw: tw, into: ws)
            // dy position of grid column i at tap t: i + (ph + PH - first * DH) / SH - t * (step * DH / SH).
            let bh = (ph + padding.h - th.first * dilation.h) / stride.h
            let bw = (pw + padding.w - tw.first * dilation.w) / stride.w
            let arguments: [KernelArgument] = try dy.arguments + KernelArgument.counts([og, out.h, out.w])
                + ws.vectorArguments + KernelArgument.counts([aGroup])
                + dx.arguments + KernelArgument.counts([cg, h, w, phase.gi, phase.gj]) + [.int(Int32(bh)), .int(Int32(bw))]
                + KernelArgument.counts([ph, pw, stride.h, stride.w, groups, n]) + [.flag(accumulate)]
            last = try launchImplicit(q, "implicit_conv", arguments,
                                      np: implicitColumnPanels(q.context.device, columns: n * phase.gi * phase.gj),
                                      taps: (th.count, tw.count), step: (1, 1),
                                      tapStep: (-th.step * dilation.h / stride.h, -tw.step * dilation.w / stride.w),
                                      floatOutput: dx.storage == .fp32 && dy.storage != .fp32, waitFor: [])
        }
        return last
    }

    private func implicitWeightGradient(_ q: CommandQueue, x: Tensor, dy: Tensor, dweight: Tensor, workspace ws: Tensor,
                                        accumulate: Bool) throws(CLNetError) -> Event {
        let cg = inChannels / groups, og = outChannels / groups, out = dy.shape
        let device = q.context.device, panels = GEMMPanels(device: device)
        let weights = weightShape.count, k = x.shape.n * out.h * out.w
        // Enough items for four per compute unit, each slice at least 256 positions long.
        let np = implicitColumnPanels(device, columns: cg * kernel.h * kernel.w)
        let items = groups * ((cg * kernel.h * kernel.w + np * panels.nr - 1) / (np * panels.nr))
        let wanted = (4 * max(1, device.info.computeUnits) + items - 1) / items
        let slices = max(1, min(wanted, k / 256, ws.shape.count / weights, Self.implicitMostSlices))
        let target = slices == 1 ? dweight : ws
        let arguments: [KernelArgument] = try x.arguments + KernelArgument.counts([cg, x.shape.h, x.shape.w])
            + dy.arguments + KernelArgument.counts([og, out.h, out.w]) + [.int(Int32(padding.h)), .int(Int32(padding.w))]
            + KernelArgument.counts([groups, x.shape.n, slices]) + target.vectorArguments
            + KernelArgument.counts([weights]) + [.flag(accumulate)]
        let product = try launchImplicit(q, "implicit_conv_weight", arguments, np: np, taps: (kernel.h, kernel.w),
                                         step: (stride.h, stride.w), tapStep: (dilation.h, dilation.w), waitFor: [])
        guard slices > 1 else { return product }
        return try q.launch(.conv, "sum_partials", ws.vectorArguments + KernelArgument.counts([slices, weights])
                            + dweight.vectorArguments + [.flag(accumulate)], total: weights, waitFor: [])
    }
}
