// Max pooling, average pooling and global average pooling over NCHW, forward and backward.
// Tensor arguments are (buffer, offset, batch stride); see Common.cl. Geometry: input H x W,
// output OH x OW, window KH x KW, stride SH, SW, zero padding PH, PW (no dilation, no ceil mode).
// Backward passes gather: each input element sums the outputs whose windows cover it, so no
// two work items write the same element and the result does not depend on scheduling.
//
// These are limited by memory, so a work item takes a whole row, (n, c, output row) forward and
// (n, c, input row) backward, and walks its columns (NL lanes interleaved on a GPU, see
// Common.cl): the row's indices are divided out once, not per element.

#define GEOMETRY uint channels, uint H, uint W, uint OH, uint OW, uint KH, uint KW, \
                 uint SH, uint SW, uint PH, uint PW

// The range of output rows (or columns) whose windows cover input row i.
inline void covering(uint i, uint k, uint s, uint p, uint out, uint *lo, uint *hi) {
    const int top = (int)i + (int)p - (int)k + 1;  // first window start that still covers i
    *lo = top <= 0 ? 0 : (uint)((top + (int)s - 1) / (int)s);
    *hi = min((i + p) / s + 1, out);               // one past the last
}

// The same for column i, moved on from the range of an earlier column: windows only move
// right, so this costs a comparison or two instead of two divisions.
inline void covering_next(uint i, uint k, uint s, uint p, uint out, uint *lo, uint *hi) {
    while (*lo < out && *lo * s + k <= i + p) ++*lo;
    while (*hi < out && *hi * s <= i + p) ++*hi;
}

// The window's rows [k0, k1) that fall inside the input, for a window starting at `start`.
inline void inside(int start, uint k, uint size, uint *k0, uint *k1) {
    *k0 = start < 0 ? (uint)(-start) : 0;
    *k1 = (uint)min((int)k, (int)size - start);
}

// Output row `item` = (n, c, oh) of a forward pass: where its input plane and its output row
// start, the first window row h0, and the window rows [kh0, kh1) that fall inside the input.
inline void output_row(uint item, uint xo, uint xs, uint yo, uint ys, GEOMETRY,
                       uint *in_at, uint *out_at, int *h0, uint *kh0, uint *kh1) {
    const uint oh = item % OH, nc = item / OH, c = nc % channels, n = nc / channels;
    *h0 = (int)(oh * SH) - (int)PH;
    inside(*h0, KH, H, kh0, kh1);
    *in_at = AT(xo, xs, n, c * H * W);
    *out_at = AT(yo, ys, n, (c * OH + oh) * OW);
}

// Stride-2 windows, the stems' and DenseNet's: PV outputs at once from loads of 2 * PV floats,
// whose even elements are one tap of PV consecutive windows. PoCL runs the scalar loop at a few
// percent of copy bandwidth.
#if VEC >= 8
#define PV 8
typedef float8 poolv;
typedef uint8 poolu;
#define TAPS(p) (vload16(0, (p)).even)
#define PIOTA ((poolu)(0, 1, 2, 3, 4, 5, 6, 7))
#else
#define PV 4
typedef float4 poolv;
typedef uint4 poolu;
#define TAPS(p) (vload8(0, (p)).even)
#define PIOTA ((poolu)(0, 1, 2, 3))
#endif

// The blocks of PV outputs from column `lo` whose every load stays inside the input row (none
// unless the stride is 2); the outputs before `lo` and after the blocks go one at a time.
inline void vector_blocks(uint SW, uint PW, uint KW, uint W, uint *lo, uint *blocks) {
    *lo = (PW + 1) / 2;
    *blocks = 0;
    // The last load of a block at ow reads up to 2 * ow - PW + KW - 1 + 2 * PV - 1 <= W - 1.
    const int twice = (int)W - (int)KW + (int)PW - 2 * PV + 1;  // the largest 2 * ow
    if (SW == 2 && twice >= 0 && twice / 2 >= (int)*lo) *blocks = ((uint)twice / 2 - *lo) / PV + 1;
}

// The i-th column done one at a time: those before the blocks, then those after.
inline uint scalar_column(uint i, uint lo, uint blocks) { return i < lo ? i : i + blocks * PV; }

// y = the window's maximum; idx = its position h*W + w in the input plane (the first one on ties,
// a NaN wins, as in PyTorch). Padding never wins. A later value wins only if larger, or if it is
// the first NaN (nothing beats a NaN): selects, not branches, which PoCL ran 10x slower.
__kernel void maxpool_forward(__global const float *x, uint xo, uint xs, __global float *y, uint yo, uint ys,
                              __global uint *idx, GEOMETRY, uint rows) {
    const uint lane = get_local_id(0) % NL;
    uint lo, blocks;
    vector_blocks(SW, PW, KW, W, &lo, &blocks);
    FOR_EACH_RUN(item, rows) {
        uint in_at, out_at, kh0, kh1;
        int h0;
        output_row(item, xo, xs, yo, ys, channels, H, W, OH, OW, KH, KW, SH, SW, PH, PW, &in_at, &out_at, &h0, &kh0, &kh1);
        __global const float *plane = x + in_at;
        __global float *out = y + out_at;
        __global uint *arg_out = idx + item * OW;
        for (uint b = lane; b < blocks; b += NL) {
            const uint ow = lo + b * PV, w0 = 2 * ow - PW;
            poolu arg = (poolu)((uint)(h0 + (int)kh0) * W + w0) + 2 * PIOTA;
            poolv best = TAPS(plane + (uint)(h0 + (int)kh0) * W + w0);
            for (uint kh = kh0; kh < kh1; ++kh) {
                const uint h = (uint)(h0 + (int)kh);
                for (uint kw = 0; kw < KW; ++kw) {
                    const uint at = h * W + w0 + kw;
                    const poolv v = TAPS(plane + at);
                    const CAT(int, PV) wins = v > best | (isnan(v) & ~isnan(best));
                    best = select(best, v, wins);
                    arg = select(arg, (poolu)(at) + 2 * PIOTA, wins);
                }
            }
            CAT(vstore, PV)(best, 0, out + ow);
            CAT(vstore, PV)(arg, 0, arg_out + ow);
        }
        for (uint i = lane; i + blocks * PV < OW; i += NL) {
            const uint ow = scalar_column(i, lo, blocks);
            const int w0 = (int)(ow * SW) - (int)PW;
            uint kw0, kw1;
            inside(w0, KW, W, &kw0, &kw1);
            uint arg = (uint)(h0 + (int)kh0) * W + (uint)(w0 + (int)kw0);
            float best = plane[arg];
            for (uint kh = kh0; kh < kh1; ++kh) {
                const uint h = (uint)(h0 + (int)kh);
                for (uint kw = kw0; kw < kw1; ++kw) {
                    const uint at = h * W + (uint)(w0 + (int)kw);
                    const float v = plane[at];
                    const bool wins = v > best || (isnan(v) && !isnan(best));
                    best = wins ? v : best;
                    arg = wins ? at : arg;
                }
            }
            out[ow] = best;
            arg_out[ow] = arg;
        }
    }
}

#if NL == 1
// One work item per (n, c) plane: it clears the plane (unless accumulating), then adds each
// output's gradient at its argmax, in output order. Owning the plane, it needs no atomics where
// windows overlap, and the plane stays in a CPU's cache: the gather below ran at 0.02 of copy on
// PoCL. Each input sums its outputs in the same order as the gather does.
__kernel void maxpool_backward(__global const float *dy, uint dyo, uint dys, __global const uint *idx,
                               __global float *dx, uint dxo, uint dxs, GEOMETRY, uint planes, uint accumulate) {
    FOR_EACH_RUN(item, planes) {
        const uint c = item % channels, n = item / channels, count = OH * OW;
        __global float *out = dx + AT(dxo, dxs, n, c * H * W);
        __global const float *grad = dy + AT(dyo, dys, n, c * count);
        __global const uint *args = idx + item * count;
        if (!accumulate) {
            const uint full = H * W / VEC;
            for (uint v = 0; v < full; ++v) VSTORE((floatv)(0.0f), out + v * VEC);
            for (uint q = full * VEC; q < H * W; ++q) out[q] = 0.0f;
        }
        for (uint o = 0; o < count; ++o) out[args[o]] += grad[o];
    }
}
#else
// With lanes (GPUs), one work item per input element of a row, gathering from the outputs whose
// windows cover it: no two work items write the same element.
__kernel void maxpool_backward(__global const float *dy, uint dyo, uint dys, __global const uint *idx,
                               __global float *dx, uint dxo, uint dxs, GEOMETRY, uint rows, uint accumulate) {
    const uint lane = get_local_id(0) % NL;
    FOR_EACH_RUN(item, rows) {
        const uint ih = item % H, nc = item / H, c = nc % channels, n = nc / channels;
        uint oh0, oh1, ow0 = 0, ow1 = 0;
        covering(ih, KH, SH, PH, OH, &oh0, &oh1);
        __global const float *grad = dy + AT(dyo, dys, n, c * OH * OW);
        __global const uint *args = idx + nc * OH * OW;
        __global float *out = dx + AT(dxo, dxs, n, (c * H + ih) * W);
        for (uint iw = lane; iw < W; iw += NL) {
            covering_next(iw, KW, SW, PW, OW, &ow0, &ow1);
            const uint me = ih * W + iw;
            float sum = 0.0f;
            for (uint oh = oh0; oh < oh1; ++oh)
                for (uint ow = ow0; ow < ow1; ++ow)
                    if (args[oh * OW + ow] == me) sum += grad[oh * OW + ow];
            STORE_GRAD(out, iw, sum, accumulate);
        }
    }
}
#endif

// PyTorch's divisor with count_include_pad: the window clipped to the padded input.
inline float avg_divisor(uint oh, uint ow, uint H, uint W, uint KH, uint KW, uint SH, uint SW, uint PH, uint PW) {
    const int hs = (int)(oh * SH) - (int)PH, ws = (int)(ow * SW) - (int)PW;
    const int he = min(hs + (int)KH, (int)(H + PH)), we = min(ws + (int)KW, (int)(W + PW));
    return (float)((he - hs) * (we - ws));
}

__kernel void avgpool_forward(__global const float *x, uint xo, uint xs, __global float *y, uint yo, uint ys,
                              GEOMETRY, uint rows) {
    const uint lane = get_local_id(0) % NL;
    uint lo, blocks;
    vector_blocks(SW, PW, KW, W, &lo, &blocks);
    FOR_EACH_RUN(item, rows) {
        uint in_at, out_at, kh0, kh1;
        int h0;
        output_row(item, xo, xs, yo, ys, channels, H, W, OH, OW, KH, KW, SH, SW, PH, PW, &in_at, &out_at, &h0, &kh0, &kh1);
        __global const float *plane = x + in_at;
        __global float *out = y + out_at;
        const uint oh = item % OH;
        for (uint b = lane; b < blocks; b += NL) {
            const uint ow = lo + b * PV, w0 = 2 * ow - PW;
            poolv sum = 0.0f;
            for (uint kh = kh0; kh < kh1; ++kh)
                for (uint kw = 0; kw < KW; ++kw) sum += TAPS(plane + (uint)(h0 + (int)kh) * W + w0 + kw);
            // Inside the row, every window of the block has the same divisor.
            CAT(vstore, PV)(sum / avg_divisor(oh, ow, H, W, KH, KW, SH, SW, PH, PW), 0, out + ow);
        }
        for (uint i = lane; i + blocks * PV < OW; i += NL) {
            const uint ow = scalar_column(i, lo, blocks);
            const int w0 = (int)(ow * SW) - (int)PW;
            uint kw0, kw1;
            inside(w0, KW, W, &kw0, &kw1);
            float sum = 0.0f;
            for (uint kh = kh0; kh < kh1; ++kh)
                for (uint kw = kw0; kw < kw1; ++kw) sum += plane[(uint)(h0 + (int)kh) * W + (uint)(w0 + (int)kw)];
            out[ow] = sum / avg_divisor(oh, ow, H, W, KH, KW, SH, SW, PH, PW);
        }
    }
}

__kernel void avgpool_backward(__global const float *dy, uint dyo, uint dys,
                               __global float *dx, uint dxo, uint dxs, GEOMETRY, uint rows, uint accumulate) {
    const uint lane = get_local_id(0) % NL;
    FOR_EACH_RUN(item, rows) {
        const uint ih = item % H, nc = item / H, c = nc % channels, n = nc / channels;
        uint oh0, oh1, ow0 = 0, ow1 = 0;
        covering(ih, KH, SH, PH, OH, &oh0, &oh1);
        __global const float *grad = dy + AT(dyo, dys, n, c * OH * OW);
        __global float *out = dx + AT(dxo, dxs, n, (c * H + ih) * W);
        for (uint iw = lane; iw < W; iw += NL) {
            covering_next(iw, KW, SW, PW, OW, &ow0, &ow1);
            float sum = 0.0f;
            for (uint oh = oh0; oh < oh1; ++oh)
                for (uint ow = ow0; ow < ow1; ++ow)
                    sum += grad[oh * OW + ow] / avg_divisor(oh, ow, H, W, KH, KW, SH, SW, PH, PW);
            STORE_GRAD(out, iw, sum, accumulate);
        }
    }
}

// One work item per (sample, channel): the plane's mean, into y[n, c].
__kernel void global_avgpool_forward(__global const float *x, uint xo, uint xs, __global float *y, uint yo, uint ys,
                                     uint channels, uint plane, uint rows) {
    __local float scratch[NL];
    const uint lane = get_local_id(0) % NL;
    FOR_EACH_RUN(item, rows) {
        const uint n = item / channels, c = item % channels;
        __global const float *src = x + AT(xo, xs, n, c * plane);
        const uint full = plane / VEC;
        floatv a = 0.0f;
        float t = 0.0f;
        for (uint v = lane; v < full; v += NL) a += VLOAD(src + v * VEC);
        for (uint q = full * VEC + lane; q < plane; q += NL) t += src[q];
        const float sum = lanes_sum(hsum(a) + t, scratch);
        if (lane == 0) y[AT(yo, ys, n, c)] = sum / (float)plane;
    }
}

__kernel void global_avgpool_backward(__global const float *dy, uint dyo, uint dys,
                                      __global float *dx, uint dxo, uint dxs, uint channels, uint plane,
                                      uint rows, uint accumulate) {
    const uint lane = get_local_id(0) % NL;
    FOR_EACH_RUN(item, rows) {
        const uint n = item / channels, c = item % channels;
        const float g = dy[AT(dyo, dys, n, c)] / (float)plane;
        __global float *out = dx + AT(dxo, dxs, n, c * plane);
        const uint full = plane / VEC;
        for (uint v = lane; v < full; v += NL) {
            floatv t = (floatv)g;
            if (accumulate) t += VLOAD(out + v * VEC);
            VSTORE(t, out + v * VEC);
        }
        for (uint q = full * VEC + lane; q < plane; q += NL) STORE_GRAD(out, q, g, accumulate);
    }
}
