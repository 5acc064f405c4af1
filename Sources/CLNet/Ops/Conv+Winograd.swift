// Winograd F(2x2, 3x3) and F(4x4, 3x3) for 3x3 stride-1 convolutions: forward, input gradient
// and weight gradient. Kernels: Kernels/Winograd.cl (wino_* and wino4_*), then CLNet's GEMM on
// their panels (GEMM.cl, gemm_panels). Tested against the CPU reference in ConvTests with the
// algorithm forced.
//
// Each direction is three passes: transforms written straight into the GEMM's panel layout, one
// batched product per element of the (m+2)x(m+2) transform, and a transform back. Per mxm
// output tile and channel pair F(2x2) makes 16 multiply-adds and F(4x4) 36, against im2col's 36
// and 144; the transformed input (4x and 2.25x the activation) is smaller than im2col's
// columns (9x).
//   forward:          Y = A^T [U . V] A, U = G w G^T (filters), V = B^T x B (input patches);
//   input gradient:   the same with dy as the input, the filters transposed and turned by 180
//                     degrees, and padding 2 - p (so padding may be 0, 1 or 2);
//   weight gradient:  dU = (A dy A^T) V^T summed over tiles, then dw = G^T dU G.

/// The output tile of a Winograd algorithm, and what follows from it.
struct WinogradTile: Sendable {
    /// Outputs along each side of a tile: 2 or 4.
    let m: Int
    /// The transforms' side, m + 2, and the number of products, its square.
    var side: Int { m + 2 }
    var matrices: Int { side * side }
    /// The kernels' names are "<prefix>_filter", "<prefix>_input", ... (Kernels/Winograd.cl).
    var prefix: String { m == 2 ? "wino" : "wino4" }

    init?(_ algorithm: Conv2D.Algorithm) {
        switch algorithm {
        case .winograd2x2: m = 2
        case .winograd4x4: m = 4
        default: return nil
        }
    }

    /// Tiles along an output side of `n`.
    func tiles(_ n: Int) -> Int { (n + m - 1) / m }
}

extension Conv2D {
    /// Whether Winograd (either tile) can compute this convolution: 3x3, stride 1, no dilation,
    /// one group, and padding of at most 2 (the input gradient pads by 2 - p).
    var winogradApplies: Bool {
        kernel == Pair(3, 3) && stride == Pair(1, 1) && dilation == Pair(1, 1) && groups == 1
            && padding.h <= 2 && padding.w <= 2
    }

    /// The relative error F(4x4, 3x3) is held to, forward and backward, against the Double
    /// reference: 14x the largest `clnet-bench conv-error` measured on the ResNets' layers
    /// (Benchmarks/RESULTS.md). F(2x2) and the other algorithms meet 1e-5 forward, 1e-4 backward.
    static let winograd4x4Bound = 5e-5

    /// The distance of the transformed matrices, at least `floats`: whole cache lines of 16
    /// floats, an odd number of them. With the power-of-two channel counts of these networks
    /// the plain distance is a multiple of 4 KiB, and the transforms' 16 or 36 streams then fell in one
    /// set of the CPU's L1 cache (each transform ran several times slower).
    static func skewed(_ floats: Int) -> Int {
        let lines = (floats + 15) / 16
        return 16 * (lines % 2 == 0 ? lines + 1 : lines)
    }

    /// Floats of the Winograd workspace that do not grow with the batch, and those each sample
    /// adds, over the three directions (they run one after another, so the largest decides).
    private func winogradNeeds(_ x: Shape, _ tile: WinogradTile) throws(CLNetError) -> (fixed: Int, perSample: Int) {
        let y = try outputShape(x)
        // Sized for the largest register block, so that the memory plan does not depend on the device.
        let k = outChannels, c = inChannels, (mr, nr) = GEMMPanels.largest, xn = tile.matrices
        let forwardTiles = tile.tiles(y.h) * tile.tiles(y.w), inputTiles = tile.tiles(x.h) * tile.tiles(x.w)
        // Forward and input gradient: U and the last panel's overhang of V, then V and M per
        // sample. Weight gradient: dU, then both operands' panels per sample.
        // Skewing adds at most 31 floats to each matrix of three operands.
        let fixed = xn * max((k + mr + nr - 2) * c, (c + mr + nr - 2) * k) + 3 * xn * 31
        let perSample = xn * max(forwardTiles * (c + k + mr + nr - 2), inputTiles * (c + k))
        return (fixed, perSample)
    }

    /// Samples per chunk for a workspace of `count` floats.
    private func winogradChunk(_ x: Shape, _ tile: WinogradTile, workspace count: Int) throws(CLNetError) -> Int {
        let needs = try winogradNeeds(x, tile)
        return max(1, min(x.n, (count - needs.fixed) / needs.perSample))
    }

    /// The workspace floats of the Winograd algorithm for input `x`: whole chunks of samples up to
    /// about `budget` floats, and at least one sample.
    func winogradWorkspaceCount(_ x: Shape, _ tile: WinogradTile, budget: Int) throws(CLNetError) -> Int {
        let needs = try winogradNeeds(x, tile)
        return needs.fixed + (try winogradChunk(x, tile, workspace: budget)) * needs.perSample
    }

    func checkWinogradWorkspace(_ x: Shape, _ tile: WinogradTile, _ workspace: Tensor?,
                                _ label: String) throws(CLNetError) -> Tensor {
        let needs = try winogradNeeds(x, tile), least = needs.fixed + needs.perSample
        guard let workspace, workspace.isDense, workspace.shape.count >= least else {
            throw .invalidShape(operation: "Conv2D(\(self))\(label)",
                                message: "Winograd needs a workspace of at least \(least) floats (see workspaceCount)")
        }
        return workspace
    }

    /// One convolution by Winograd: `input` [N, depth, H, W] to `output` [N, rows, OH, OW], with
    /// the filters as they are (forward) or transposed and turned (`flip`, the input gradient).
    private func winogradPass(_ q: CommandQueue, _ tile: WinogradTile, input: Tensor, weight: Tensor, flip: Bool,
                              output: Tensor, padding ph: Int, _ pw: Int, workspace ws: Tensor, chunk: Int,
                              accumulate: Bool, statistics: RowStatistics? = nil,
                              waitFor: [Event]) throws(CLNetError) -> Event {
        let panels = GEMMPanels(device: q.context.device), xn = tile.matrices, name = tile.prefix
        let depth = input.shape.c, rows = output.shape.c, h = input.shape.h, w = input.shape.w
        let oh = output.shape.h, ow = output.shape.w, th = tile.tiles(oh), tw = tile.tiles(ow)
        let paddedRows = (rows + panels.mr - 1) / panels.mr * panels.mr
        let uStride = Self.skewed(paddedRows * depth)
        var last = try q.launchRuns(.winograd, name + "_filter", weight.vectorArguments + KernelArgument.counts(
            [rows, depth, paddedRows, flip ? 1 : 0]) + ws.vectorArguments + KernelArgument.counts([uStride, panels.mr]),
            waitFor: waitFor)
        for n0 in Swift.stride(from: 0, to: input.shape.n, by: chunk) {
            let count = min(chunk, input.shape.n - n0), tiles = count * th * tw
            let vStride = Self.skewed((tiles + panels.nr - 1) / panels.nr * panels.nr * depth)
            let mStride = Self.skewed(rows * tiles)
            let vOffset = ws.offset + xn * uStride, mOffset = vOffset + xn * vStride
            _ = try q.launchRuns(.winograd, name + "_input", input.arguments + KernelArgument.counts(
                [depth, h, w, th, tw, ph, pw, n0, count]) + [.buffer(ws.buffer)] + KernelArgument.counts(
                [vOffset, vStride, panels.nr]), waitFor: [])
            _ = try q.panelProduct(m: rows, n: tiles, k: depth, a: ws.buffer, aOffset: ws.offset, strideA: uStride,
                                   b: ws.buffer, bOffset: vOffset, strideB: vStride, beta: 0, c: ws.buffer,
                                   cOffset: mOffset, ldc: tiles, strideC: mStride, batch: xn)
            last = try q.launchRuns(.winograd, name + "_output", [.buffer(ws.buffer)] + KernelArgument.counts(
                [mOffset, mStride]) + output.arguments + KernelArgument.counts([rows, oh, ow, th, tw, n0, count]) +
                [.flag(accumulate), .buffer(statistics?.buffer ?? ws.buffer)] +
                [try .count(statistics?.offset ?? 0), .flag(statistics != nil)],
                waitFor: [])
        }
        return last
    }

    func winogradForward(_ q: CommandQueue, _ tile: WinogradTile, x: Tensor, weight: Tensor, y: Tensor,
                         workspace: Tensor?, statistics: RowStatistics?, waitFor: [Event]) throws(CLNetError) -> Event {
        let ws = try checkWinogradWorkspace(x.shape, tile, workspace, "")
        return try winogradPass(q, tile, input: x, weight: weight, flip: false, output: y, padding: padding.h,
                                padding.w, workspace: ws, chunk: winogradChunk(x.shape, tile, workspace: ws.shape.count),
                                accumulate: false, statistics: statistics, waitFor: waitFor)
    }

    func winogradBackward(_ q: CommandQueue, _ tile: WinogradTile, x: Tensor, weight: Tensor, dy: Tensor, dx: Tensor?,
                          dweight: Tensor?, workspace: Tensor?, accumulate: Bool,
                          waitFor: [Event]) throws(CLNetError) -> Event {
        let ws = try checkWinogradWorkspace(x.shape, tile, workspace, " backward")
        let chunk = try winogradChunk(x.shape, tile, workspace: ws.shape.count)
        var last = try q.marker(waitFor: waitFor)
        if let dweight { last = try winogradWeightGradient(q, tile, x: x, dy: dy, dweight: dweight, workspace: ws,
                                                           chunk: chunk, accumulate: accumulate) }
        if let dx {
            last = try winogradPass(q, tile, input: dy, weight: weight, flip: true, output: dx, padding: 2 - padding.h,
                                    2 - padding.w, workspace: ws, chunk: chunk, accumulate: accumulate, waitFor: [])
        }
        return last
    }

    /// dU[xi]^T (C x K) = V[xi] (C x tiles) dYt[xi]^T (tiles x K), summed over the chunks of
    /// samples by the GEMM's beta, then dw = G^T dU G. V is the input transform as the forward
    /// writes it, which the GEMM reads as its A (`aAsBPanels`); dYt^T is its B.
    private func winogradWeightGradient(_ q: CommandQueue, _ tile: WinogradTile, x: Tensor, dy: Tensor, dweight: Tensor,
                                        workspace ws: Tensor, chunk: Int, accumulate: Bool) throws(CLNetError) -> Event {
        let panels = GEMMPanels(device: q.context.device), xn = tile.matrices, name = tile.prefix
        let k = outChannels, c = inChannels, oh = dy.shape.h, ow = dy.shape.w, th = tile.tiles(oh), tw = tile.tiles(ow)
        let duStride = Self.skewed(c * k), duOffset = ws.offset
        for n0 in Swift.stride(from: 0, to: x.shape.n, by: chunk) {
            let count = min(chunk, x.shape.n - n0), tiles = count * th * tw
            let vStride = Self.skewed((tiles + panels.nr - 1) / panels.nr * panels.nr * c)
            let dStride = Self.skewed((k + panels.nr - 1) / panels.nr * panels.nr * tiles)
            let vOffset = duOffset + xn * duStride, dOffset = vOffset + xn * vStride
            _ = try q.launchRuns(.winograd, name + "_input", x.arguments + KernelArgument.counts(
                [c, x.shape.h, x.shape.w, th, tw, padding.h, padding.w, n0, count]) + [.buffer(ws.buffer)] +
                KernelArgument.counts([vOffset, vStride, panels.nr]), waitFor: [])
            _ = try q.launchRuns(.winograd, name + "_output_grad", dy.arguments + KernelArgument.counts(
                [k, oh, ow, th, tw, n0, count]) + [.buffer(ws.buffer)] + KernelArgument.counts([dOffset, dStride, panels.nr]),
                waitFor: [])
            _ = try q.panelProduct(m: c, n: k, k: tiles, a: ws.buffer, aOffset: vOffset, strideA: vStride, aAsBPanels: true,
                                   b: ws.buffer, bOffset: dOffset, strideB: dStride, beta: n0 == 0 ? 0 : 1, c: ws.buffer,
                                   cOffset: duOffset, ldc: k, strideC: duStride, batch: xn)
        }
        return try q.launchRuns(.winograd, name + "_filter_grad", [.buffer(ws.buffer)] + KernelArgument.counts(
            [duOffset, duStride, k, c]) + dweight.vectorArguments + [.flag(accumulate)], waitFor: [])
    }
}
