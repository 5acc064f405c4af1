extension Reference {
    /// Per output index along one axis: the input indices it reads and their weights. The
    /// coordinates are computed in float, as PyTorch (and the kernels) compute them; the
    /// weights are then used in Double.
    static func upsampleTaps(out: Int, input: Int, ratio: Float, mode: Upsample.Mode) -> [(i0: Int, i1: Int, l0: Double, l1: Double)] {
        (0..<out).map { j in
            switch mode {
            case .nearest:
                let i = min(Int((Float(j) * ratio).rounded(.down)), input - 1)
                return (i, i, 1, 0)
            case .bilinear:
                let s = max(ratio * (Float(j) + 0.5) - 0.5, 0)
                let i0 = min(Int(s), input - 1), i1 = i0 + (i0 < input - 1 ? 1 : 0)
                let l1 = Double(s - Float(i0))
                return (i0, i1, 1 - l1, l1)
            }
        }
    }

    /// `op` applied to x of `shape` (NCHW).
    public static func upsample(_ x: [Double], shape: Shape, op: Upsample) -> [Double] {
        let r = op.ratios(input: shape)
        let ty = upsampleTaps(out: op.height, input: shape.h, ratio: r.h, mode: op.mode)
        let tx = upsampleTaps(out: op.width, input: shape.w, ratio: r.w, mode: op.mode)
        var y = [Double](repeating: 0, count: shape.n * shape.c * op.height * op.width)
        for plane in 0..<shape.n * shape.c {
            let xi = plane * shape.h * shape.w, yi = plane * op.height * op.width
            for (oy, a) in ty.enumerated() {
                for (ox, b) in tx.enumerated() {
                    func at(_ iy: Int, _ ix: Int) -> Double { x[xi + iy * shape.w + ix] }
                    y[yi + oy * op.width + ox] = a.l0 * (b.l0 * at(a.i0, b.i0) + b.l1 * at(a.i0, b.i1))
                        + a.l1 * (b.l0 * at(a.i1, b.i0) + b.l1 * at(a.i1, b.i1))
                }
            }
        }
        return y
    }

    /// The input gradient of `upsample`: each output's gradient scattered back with its weights.
    public static func upsampleBackward(dy: [Double], shape: Shape, op: Upsample) -> [Double] {
        let r = op.ratios(input: shape)
        let ty = upsampleTaps(out: op.height, input: shape.h, ratio: r.h, mode: op.mode)
        let tx = upsampleTaps(out: op.width, input: shape.w, ratio: r.w, mode: op.mode)
        var dx = [Double](repeating: 0, count: shape.count)
        for plane in 0..<shape.n * shape.c {
            let xi = plane * shape.h * shape.w, yi = plane * op.height * op.width
            for (oy, a) in ty.enumerated() {
                for (ox, b) in tx.enumerated() {
                    let g = dy[yi + oy * op.width + ox]
                    dx[xi + a.i0 * shape.w + b.i0] += a.l0 * b.l0 * g
                    dx[xi + a.i0 * shape.w + b.i1] += a.l0 * b.l1 * g
                    dx[xi + a.i1 * shape.w + b.i0] += a.l1 * b.l0 * g
                    dx[xi + a.i1 * shape.w + b.i1] += a.l1 * b.l1 * g
                }
            }
        }
        return dx
    }
}
