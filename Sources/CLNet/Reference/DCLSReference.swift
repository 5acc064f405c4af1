extension Reference {
    /// DCLS's bilinear kernel construction (see `DCLSConv2D`): the [O, C / groups, KH, KW]
    /// kernel from weights [O, C / groups, M] and positions [2, O, C / groups, M].
    public static func dclsKernel(weight: [Double], positions: [Double], op: DCLSConv2D) -> [Double] {
        var k = [Double](repeating: 0, count: op.conv.weightShape.count)
        forEachDCLSTap(positions: positions, op: op) { i, tap, factor, _, _ in k[tap] += weight[i] * factor }
        return k
    }

    /// The weights' and positions' gradients from the built kernel's, `dkernel`. A position at
    /// its bound passes the gradient, one beyond it gets none (PyTorch's clamp).
    public static func dclsKernelBackward(weight: [Double], positions: [Double], op: DCLSConv2D,
                                          dkernel: [Double]) -> (dweight: [Double], dpositions: [Double]) {
        let elements = weight.count, bound = Double(op.positionBound)
        var dw = [Double](repeating: 0, count: elements), dp = [Double](repeating: 0, count: positions.count)
        forEachDCLSTap(positions: positions, op: op) { i, tap, factor, dh, dwidth in
            dw[i] += dkernel[tap] * factor
            if abs(positions[i]) <= bound { dp[i] += weight[i] * dkernel[tap] * dh }
            if abs(positions[elements + i]) <= bound { dp[elements + i] += weight[i] * dkernel[tap] * dwidth }
        }
        return (dw, dp)
    }

    /// y = the convolution of x with the built kernel, plus the bias.
    public static func dclsConv2d(_ x: [Double], shape: Shape, weight: [Double], positions: [Double], bias: [Double]?,
                                  op: DCLSConv2D) -> [Double] {
        conv2d(x, shape: shape, weight: dclsKernel(weight: weight, positions: positions, op: op), bias: bias, conv: op.conv)
    }

    /// Gradients of `dclsConv2d` with respect to the input, the weights, the positions and the bias.
    public static func dclsConv2dBackward(_ x: [Double], shape: Shape, weight: [Double], positions: [Double],
                                          op: DCLSConv2D, dy: [Double])
        -> (dx: [Double], dweight: [Double], dpositions: [Double], dbias: [Double]) {
        let kernel = dclsKernel(weight: weight, positions: positions, op: op)
        let g = conv2dBackward(x, shape: shape, weight: kernel, conv: op.conv, dy: dy)
        let k = dclsKernelBackward(weight: weight, positions: positions, op: op, dkernel: g.dweight)
        return (g.dx, k.dweight, k.dpositions, g.dbias)
    }

    /// Calls `body(element, kernel index, interpolation factor, its derivatives along the rows
    /// and along the columns)` for each of the four taps of every element that land inside
    /// the footprint.
    static func forEachDCLSTap(positions: [Double], op: DCLSConv2D, _ body: (Int, Int, Double, Double, Double) -> Void) {
        let kh = op.conv.kernel.h, kw = op.conv.kernel.w, elements = op.weightShape.count
        let lh = Double(kh / 2), lw = Double(kw / 2)
        for i in 0..<elements {
            let pair = i / op.count
            let h = min(max(positions[i], -lh), lh) + lh, w = min(max(positions[elements + i], -lw), lw) + lw
            let r = Int(h.rounded(.down)), c = Int(w.rounded(.down)), ah = h - Double(r), aw = w - Double(c)
            for (dr, fh, gh) in [(0, 1 - ah, -1.0), (1, ah, 1.0)] {
                for (dc, fw, gw) in [(0, 1 - aw, -1.0), (1, aw, 1.0)] {
                    let row = r + dr, col = c + dc
                    guard row >= 0, row < kh, col >= 0, col < kw else { continue }
                    body(i, (pair * kh + row) * kw + col, fh * fw, gh * fw, fh * gw)
                }
            }
        }
    }
}
