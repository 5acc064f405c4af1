extension Reference {
    /// torchvision's `deform_conv2d(x, offset, weight, bias, stride, padding, dilation, mask)`: each
    /// kernel tap samples the input at its place moved by its offset, by bilinear interpolation
    /// (zero outside), times the mask where there is one; then the convolution's weighted sum.
    public static func deformConv2d(_ x: [Double], shape: Shape, offset: [Double], mask: [Double]?, weight: [Double],
                                    bias: [Double]?, op: DeformConv2D) -> [Double] {
        let conv = op.conv, out = convShape(shape, conv), plane = out.h * out.w, kk = conv.kernel.h * conv.kernel.w
        let cg = conv.inChannels / conv.groups, og = conv.outChannels / conv.groups
        var y = [Double](repeating: 0, count: out.count)
        for n in 0..<shape.n {
            let col = deformColumns(x, shape: shape, offset: offset, mask: mask, op: op, out: out, sample: n)
            for o in 0..<conv.outChannels {
                let g = o / og
                for r in 0..<cg * kk {
                    let w = weight[o * cg * kk + r], row = (g * cg * kk + r) * plane
                    guard w != 0 else { continue }
                    for p in 0..<plane { y[(n * conv.outChannels + o) * plane + p] += w * col[row + p] }
                }
                if let bias { for p in 0..<plane { y[(n * conv.outChannels + o) * plane + p] += bias[o] } }
            }
        }
        return y
    }

    /// Gradients of `deformConv2d` with respect to the input, the offsets, the mask (nil without
    /// one), the weights and the bias: the adjoint of the bilinear sampling, and the offsets' as
    /// torchvision computes them (the bilinear form's slope between the corners).
    public static func deformConv2dBackward(_ x: [Double], shape: Shape, offset: [Double], mask: [Double]?,
                                            weight: [Double], op: DeformConv2D, dy: [Double])
        -> (dx: [Double], doffset: [Double], dmask: [Double]?, dweight: [Double], dbias: [Double]) {
        let conv = op.conv, out = convShape(shape, conv), plane = out.h * out.w, kk = conv.kernel.h * conv.kernel.w
        let cg = conv.inChannels / conv.groups, og = conv.outChannels / conv.groups, dg = op.offsetGroups
        var dx = [Double](repeating: 0, count: x.count), doffset = [Double](repeating: 0, count: offset.count)
        var dmask = mask.map { [Double](repeating: 0, count: $0.count) }
        var dw = [Double](repeating: 0, count: weight.count), db = [Double](repeating: 0, count: conv.outChannels)
        let planeIn = shape.h * shape.w
        for n in 0..<shape.n {
            let col = deformColumns(x, shape: shape, offset: offset, mask: mask, op: op, out: out, sample: n)
            var dcol = [Double](repeating: 0, count: col.count)
            for o in 0..<conv.outChannels {
                let g = o / og, yrow = (n * conv.outChannels + o) * plane
                for p in 0..<plane { db[o] += dy[yrow + p] }
                for r in 0..<cg * kk {
                    let row = (g * cg * kk + r) * plane, w = weight[o * cg * kk + r]
                    var sum = 0.0
                    for p in 0..<plane {
                        sum += dy[yrow + p] * col[row + p]
                        dcol[row + p] += w * dy[yrow + p]
                    }
                    dw[o * cg * kk + r] += sum
                }
            }
            for c in 0..<conv.inChannels {
                let g = c / (conv.inChannels / dg), xbase = (n * shape.c + c) * planeIn
                for k in 0..<kk {
                    for p in 0..<plane {
                        let (h, w) = samplePosition(op, out: out, offset: offset, sample: n, group: g, tap: k, pixel: p)
                        let mi = ((n * dg + g) * kk + k) * plane + p, m = mask?[mi] ?? 1
                        let d = dcol[(c * kk + k) * plane + p]
                        let q = BilinearCorners(h: h, w: w, height: shape.h, width: shape.w)
                        let v = q.values(x, base: xbase, width: shape.w)
                        let oi = ((n * dg + g) * 2 * kk + 2 * k) * plane + p
                        doffset[oi] += m * d * ((q.lw * (v[3] - v[1])) + (1 - q.lw) * (v[2] - v[0]))
                        doffset[oi + plane] += m * d * ((q.lh * (v[3] - v[2])) + (1 - q.lh) * (v[1] - v[0]))
                        guard q.inside else { continue }
                        if mask != nil { dmask![mi] += d * q.interpolate(v) }
                        for (corner, weight) in q.weights.enumerated() where q.ok[corner] {
                            dx[xbase + q.index(corner, width: shape.w)] += m * d * weight
                        }
                    }
                }
            }
        }
        return (dx, doffset, dmask, dw, db)
    }

    /// Sample `sample`'s columns [C*K x OH*OW] (row c*K + k), as Kernels/DeformConv.cl lays them out.
    static func deformColumns(_ x: [Double], shape: Shape, offset: [Double], mask: [Double]?, op: DeformConv2D,
                              out: Shape, sample n: Int) -> [Double] {
        let conv = op.conv, plane = out.h * out.w, kk = conv.kernel.h * conv.kernel.w, dg = op.offsetGroups
        var col = [Double](repeating: 0, count: conv.inChannels * kk * plane)
        for c in 0..<conv.inChannels {
            let g = c / (conv.inChannels / dg), xbase = (n * shape.c + c) * shape.h * shape.w
            for k in 0..<kk {
                for p in 0..<plane {
                    let (h, w) = samplePosition(op, out: out, offset: offset, sample: n, group: g, tap: k, pixel: p)
                    let q = BilinearCorners(h: h, w: w, height: shape.h, width: shape.w)
                    guard q.inside else { continue }
                    let m = mask?[((n * dg + g) * kk + k) * plane + p] ?? 1
                    col[(c * kk + k) * plane + p] = m * q.interpolate(q.values(x, base: xbase, width: shape.w))
                }
            }
        }
        return col
    }

    /// Where tap k of output pixel p samples, for offset group g.
    static func samplePosition(_ op: DeformConv2D, out: Shape, offset: [Double], sample n: Int, group g: Int, tap k: Int,
                               pixel p: Int) -> (Double, Double) {
        let conv = op.conv, plane = out.h * out.w, kk = conv.kernel.h * conv.kernel.w
        let oh = p / out.w, ow = p % out.w, kh = k / conv.kernel.w, kw = k % conv.kernel.w
        let oi = ((n * op.offsetGroups + g) * 2 * kk + 2 * k) * plane + p
        return (Double(oh * conv.stride.h - conv.padding.h + kh * conv.dilation.h) + offset[oi],
                Double(ow * conv.stride.w - conv.padding.w + kw * conv.dilation.w) + offset[oi + plane])
    }
}

/// The four input pixels around a bilinear sample, as torchvision's `bilinear_interpolate` and
/// `get_coordinate_weight` take them: corner i*2 + j is (h0 + i, w0 + j).
struct BilinearCorners {
    let h0, w0: Int
    let lh, lw: Double
    /// Which corners are inside the input.
    let ok: [Bool]
    /// Whether the sample is less than a pixel outside, where the forward pass reads it at all.
    let inside: Bool

    init(h: Double, w: Double, height: Int, width: Int) {
        let fh = h.rounded(.down), fw = w.rounded(.down)
        // Far outside (or NaN), every corner is: keep the integers small.
        h0 = fh.isFinite && abs(fh) < 1e9 ? Int(fh) : -2
        w0 = fw.isFinite && abs(fw) < 1e9 ? Int(fw) : -2
        lh = h - fh
        lw = w - fw
        let rows = [h0 >= 0 && h0 < height, h0 + 1 >= 0 && h0 + 1 < height]
        let cols = [w0 >= 0 && w0 < width, w0 + 1 >= 0 && w0 + 1 < width]
        ok = [rows[0] && cols[0], rows[0] && cols[1], rows[1] && cols[0], rows[1] && cols[1]]
        inside = h > -1 && h < Double(height) && w > -1 && w < Double(width)
    }

    var weights: [Double] { [(1 - lh) * (1 - lw), (1 - lh) * lw, lh * (1 - lw), lh * lw] }

    func index(_ corner: Int, width: Int) -> Int { (h0 + corner / 2) * width + w0 + corner % 2 }

    func values(_ x: [Double], base: Int, width: Int) -> [Double] {
        (0..<4).map { ok[$0] ? x[base + index($0, width: width)] : 0 }
    }

    func interpolate(_ v: [Double]) -> Double { zip(weights, v).reduce(0) { $0 + $1.0 * $1.1 } }
}
