// Nearest and bilinear upsampling of NCHW tensors, as PyTorch's `F.interpolate` with
// align_corners=False. Tensor arguments are (buffer, offset, batch stride); see Common.cl.
//
// `rh` and `rw` are the input-per-output ratios PyTorch computes in float (1 / scale_factor when
// a factor was given, else in / out), and the source coordinates are computed from them in float
// exactly as ATen does: a nearest source index on the edge of two pixels must match, bit for bit.
#pragma OPENCL FP_CONTRACT OFF

// Nearest: output index j reads input min(floor(j * r), in - 1).
inline uint nearest_source(uint j, float r, uint in) { return min((uint)floor((float)j * r), in - 1); }

// Bilinear: output index j reads inputs i0 and i1 with weights l0 and l1.
inline void linear_source(uint j, float r, uint in, uint *i0, uint *i1, float *l0, float *l1) {
    const float s = fmax(r * ((float)j + 0.5f) - 0.5f, 0.0f);
    *i0 = min((uint)s, in - 1);
    *i1 = *i0 + (*i0 < in - 1 ? 1 : 0);
    *l1 = s - (float)*i0;
    *l0 = 1.0f - *l1;
}

// The weight with which output index j reads input index i along one axis.
inline float tap_weight(uint j, uint i, float r, uint in) {
#ifdef BILINEAR
    uint i0, i1;
    float l0, l1;
    linear_source(j, r, in, &i0, &i1, &l0, &l1);
    return (i0 == i ? l0 : 0.0f) + (i1 == i ? l1 : 0.0f);
#else
    return nearest_source(j, r, in) == i ? 1.0f : 0.0f;
#endif
}

// The output indices that can read input index i. Output j reads inputs within one of j * r
// (bilinear: floor(r (j + 1/2) - 1/2) and the next), so j lies in ((i - 1) / r, (i + 2) / r);
// a margin of two outputs each side covers float rounding, and tap_weight decides exactly.
inline void readers(uint i, float r, uint out, uint *j0, uint *j1) {
    const float lo = ((float)i - 1.0f) / r - 2.0f, hi = (float)(i + 2) / r + 2.0f;
    *j0 = lo <= 0.0f ? 0 : min((uint)lo, out);
    *j1 = min((uint)hi + 1, out);
}

// Work item (output pixel, channel, sample).
__kernel void upsample_forward(__global const store_t *x, uint xo, uint xs, __global store_t *y, uint yo, uint ys,
                               uint ih, uint iw, uint oh, uint ow, float rh, float rw) {
    const uint p = get_global_id(0), c = get_global_id(1), n = get_global_id(2);
    const uint oy = p / ow, ox = p % ow;
    __global const store_t *plane = x + AT(xo, xs, n, c * ih * iw);
#ifdef BILINEAR
    uint y0, y1, x0, x1;
    float a0, a1, b0, b1;
    linear_source(oy, rh, ih, &y0, &y1, &a0, &a1);
    linear_source(ox, rw, iw, &x0, &x1, &b0, &b1);
    const float v = a0 * (b0 * LOAD(plane, y0 * iw + x0) + b1 * LOAD(plane, y0 * iw + x1))
                  + a1 * (b0 * LOAD(plane, y1 * iw + x0) + b1 * LOAD(plane, y1 * iw + x1));
#else
    const float v = LOAD(plane, nearest_source(oy, rh, ih) * iw + nearest_source(ox, rw, iw));
#endif
    STORE(y, AT(yo, ys, n, c * oh * ow + p), v);
}

// The input gradient, gathered: work item (input pixel, channel, sample) sums dy over the
// outputs that read it, each times the weight it was read with. No atomics, so the sum's order
// is fixed and the result deterministic.
__kernel void upsample_backward(__global const store_t *dy, uint dyo, uint dys, __global store_t *dx, uint dxo, uint dxs,
                                uint ih, uint iw, uint oh, uint ow, float rh, float rw, uint accumulate) {
    const uint p = get_global_id(0), c = get_global_id(1), n = get_global_id(2);
    const uint iy = p / iw, ix = p % iw;
    __global const store_t *g = dy + AT(dyo, dys, n, c * oh * ow);
    uint jy0, jy1, jx0, jx1;
    readers(iy, rh, oh, &jy0, &jy1);
    readers(ix, rw, ow, &jx0, &jx1);
    float sum = 0.0f;
    for (uint jy = jy0; jy < jy1; ++jy) {
        const float wy = tap_weight(jy, iy, rh, ih);
        if (wy == 0.0f) continue;
        float row = 0.0f;
        for (uint jx = jx0; jx < jx1; ++jx) {
            const float wx = tap_weight(jx, ix, rw, iw);
            if (wx != 0.0f) row += wx * LOAD(g, jy * ow + jx);
        }
        sum += wy * row;
    }
    __global store_t *d = dx + AT(dxo, dxs, n, c * ih * iw);
    STORE_GRAD_S(d, p, sum, accumulate);
}
