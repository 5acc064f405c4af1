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

// The forward kernels have the window compiled in: -D WKH, WKW (size), WSH, WSW (stride), WPH,
// WPW (padding), so that their taps unroll (with the window as arguments, PoCL ran them at a
// few percent of copy bandwidth). A program built without them has only the backward kernels.
// A block computes PV windows of a row, which the host sets with the window (`Pool2D.forwardMacros`):
// 16 where the device loads 16 floats (AVX-512, whose even/odd split of 32 floats is one permute
// per tap) and the rows have 16 windows inside, else 8 or 4, so that narrower rows keep blocks.
#ifdef WKH
#if !defined(PV) && VEC >= 8
#define PV 8
#elif !defined(PV)
#define PV 4
#endif
#if PV == 16
typedef float16 poolv;
typedef uint16 poolu;
typedef int16 pooli;
#define PIOTA ((poolu)(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15))
// The even and odd elements of 32 consecutive elements: stride-2 taps of 16 windows.
inline float16 load32_even(__global const store_t *p) {
    const float16 a = LOADV(16, p), b = LOADV(16, p + 16);
    return (float16)(a.even, b.even);
}
inline float16 load32_odd(__global const store_t *p) {
    const float16 a = LOADV(16, p), b = LOADV(16, p + 16);
    return (float16)(a.odd, b.odd);
}
#define LOAD2_EVEN(p) load32_even(p)
#define LOAD2_ODD(p) load32_odd(p)
#elif PV == 8
typedef float8 poolv;
typedef uint8 poolu;
typedef int8 pooli;
#define PIOTA ((poolu)(0, 1, 2, 3, 4, 5, 6, 7))
#define LOAD2_EVEN(p) LOADV(16, (p)).even
#define LOAD2_ODD(p) LOADV(16, (p)).odd
#else
typedef float4 poolv;
typedef uint4 poolu;
typedef int4 pooli;
#define PIOTA ((poolu)(0, 1, 2, 3))
#define LOAD2_EVEN(p) LOADV(8, (p)).even
#define LOAD2_ODD(p) LOADV(8, (p)).odd
#endif

// Tap kw of PV consecutive windows starting at column w0: every WSW-th element from w0 + kw. With
// stride 2 the load of 2 * PV elements starts one early for kw > 0 and takes the odd elements, so
// that it never reads past the last tap of the block.
#if WSW == 2
#define TAP(p, w0, kw) ((kw) == 0 ? LOAD2_EVEN((p) + (w0)) : LOAD2_ODD((p) + (w0) + (kw) - 1))
#define TAP_AT(w0, kw) ((poolu)((w0) + (kw)) + 2 * PIOTA)
#else
#define TAP(p, w0, kw) LOADV(PV, (p) + (w0) + (kw))
#define TAP_AT(w0, kw) ((poolu)((w0) + (kw)) + WSW * PIOTA)
#endif

// The output columns whose windows lie inside the row, [lo, hi): the vector blocks cover them,
// the last block moved back to end at hi (it recomputes a few outputs). The windows outside go
// one at a time. No blocks where the row has fewer than PV such columns, or for strides other
// than 1 and 2.
inline void inner_columns(uint W, uint OW, uint *lo, uint *hi, uint *blocks) {
    *lo = (WPW + WSW - 1) / WSW;
    const int last = ((int)W + (int)WPW - (int)WKW) / (int)WSW;  // the last window inside
    *hi = (uint)clamp(last + 1, (int)*lo, (int)OW);
    *blocks = (WSW <= 2 && (WSW == 1 || WKW >= 2) && *hi - *lo >= PV) ? (*hi - *lo + PV - 1) / PV : 0;
    if (*blocks == 0) *hi = *lo;
}

inline uint block_start(uint b, uint lo, uint hi) { return min(lo + b * PV, hi - PV); }

// The i-th column outside the blocks.
inline uint edge_column(uint i, uint lo, uint hi) { return i < lo ? i : i - lo + hi; }

// y = the window's maximum; idx = its position h*W + w in the input plane (the first one on
// ties, a NaN wins, as in PyTorch). Window rows and columns outside the input are clamped into
// it: the clamped tap repeats one already in the window, which changes neither the maximum nor
// its first position, so padding never wins and the taps need no tests. A later value wins only
// if larger, or if it is a NaN and the best is not: selects, not branches.
__kernel void maxpool_forward(__global const store_t *x, uint xo, uint xs, __global store_t *y, uint yo, uint ys,
                              __global uint *idx, uint channels, uint H, uint W, uint OH, uint OW, uint rows) {
    const uint lane = get_local_id(0) % NL;
    uint lo, hi, blocks;
    inner_columns(W, OW, &lo, &hi, &blocks);
    FOR_EACH_RUN(item, rows) {
        const uint oh = item % OH, nc = item / OH, c = nc % channels, n = nc / channels;
        __global const store_t *plane = x + AT(xo, xs, n, c * H * W);
        __global store_t *out = y + AT(yo, ys, n, (c * OH + oh) * OW);
        __global uint *arg_out = idx + item * OW;
        uint row[WKH];
#pragma unroll
        for (uint kh = 0; kh < WKH; ++kh) row[kh] = (uint)clamp((int)(oh * WSH + kh) - WPH, 0, (int)H - 1) * W;
        for (uint b = lane; b < blocks; b += NL) {
            const uint ow = block_start(b, lo, hi), w0 = ow * WSW - WPW;
            poolv best = TAP(plane + row[0], w0, 0);
            poolu arg = TAP_AT(row[0] + w0, 0);
#pragma unroll
            for (uint kh = 0; kh < WKH; ++kh) {
#pragma unroll
                for (uint kw = 0; kw < WKW; ++kw) {
                    if (kh == 0 && kw == 0) continue;
                    const poolv v = TAP(plane + row[kh], w0, kw);
                    const pooli wins = (v > best) | ((v != v) & (best == best));
                    best = select(best, v, wins);
                    arg = select(arg, TAP_AT(row[kh] + w0, kw), wins);
                }
            }
            STOREV(PV, best, out + ow);
            CAT(vstore, PV)(arg, 0, arg_out + ow);
        }
        for (uint i = lane; i + hi - lo < OW; i += NL) {
            const uint ow = edge_column(i, lo, hi);
            uint col[WKW];
#pragma unroll
            for (uint kw = 0; kw < WKW; ++kw) col[kw] = (uint)clamp((int)(ow * WSW + kw) - WPW, 0, (int)W - 1);
            uint arg = row[0] + col[0];
            float best = LOAD(plane, arg);
#pragma unroll
            for (uint kh = 0; kh < WKH; ++kh) {
#pragma unroll
                for (uint kw = 0; kw < WKW; ++kw) {
                    const uint at = row[kh] + col[kw];
                    const float v = LOAD(plane, at);
                    // v != v rather than isnan, which PoCL calls out of line, at more than the rest of the kernel.
                    const bool wins = v > best || (v != v && best == best);
                    best = wins ? v : best;
                    arg = wins ? at : arg;
                }
            }
            STORE(out, ow, best);
            arg_out[ow] = arg;
        }
    }
}


#endif  // WKH

#if NL == 1 && (defined(CLNET_STORAGE_HALF) || defined(CLNET_STORAGE_BF16))
// One work item per (n, c) plane, as below, but with 16-bit storage the sums cannot run in dx
// (each addition would round to it): each input row is summed in float in pieces of PIECE
// columns, from the outputs whose windows reach the piece, in output order, and stored once.
#define PIECE 64
__kernel void maxpool_backward(__global const store_t *dy, uint dyo, uint dys, __global const uint *idx,
                               __global store_t *dx, uint dxo, uint dxs, GEOMETRY, uint planes, uint accumulate) {
    FOR_EACH_RUN(item, planes) {
        const uint c = item % channels, n = item / channels;
        __global store_t *out = dx + AT(dxo, dxs, n, c * H * W);
        __global const store_t *grad = dy + AT(dyo, dys, n, c * OH * OW);
        __global const uint *args = idx + item * OH * OW;
        for (uint ih = 0; ih < H; ++ih) {
            uint oh0, oh1;
            covering(ih, KH, SH, PH, OH, &oh0, &oh1);
            for (uint w0 = 0; w0 < W; w0 += PIECE) {
                const uint len = min((uint)PIECE, W - w0), first = ih * W + w0;
                uint ow0, ow1, last0, last1;
                covering(w0, KW, SW, PW, OW, &ow0, &ow1);
                covering(w0 + len - 1, KW, SW, PW, OW, &last0, &last1);
                float sum[PIECE];
                for (uint t = 0; t < len; ++t) sum[t] = accumulate ? LOAD(out, first + t) : 0.0f;
                for (uint oh = oh0; oh < oh1; ++oh) {
                    for (uint ow = ow0; ow < last1; ++ow) {
                        const uint t = args[oh * OW + ow] - first;  // wraps past len when before the piece
                        if (t < len) sum[t] += LOAD(grad, oh * OW + ow);
                    }
                }
                for (uint t = 0; t < len; ++t) STORE(out, first + t, sum[t]);
            }
        }
    }
}
#elif NL == 1
// One work item per (n, c) plane: it clears the plane (unless accumulating), then adds each
// output's gradient at its argmax, in output order. Owning the plane, it needs no atomics where
// windows overlap, and the plane stays in a CPU's cache: the gather below ran at 0.02 of copy on
// PoCL. Each input sums its outputs in the same order as the kernels above and below do.
__kernel void maxpool_backward(__global const store_t *dy, uint dyo, uint dys, __global const uint *idx,
                               __global store_t *dx, uint dxo, uint dxs, GEOMETRY, uint planes, uint accumulate) {
    FOR_EACH_RUN(item, planes) {
        const uint c = item % channels, n = item / channels, count = OH * OW;
        __global store_t *out = dx + AT(dxo, dxs, n, c * H * W);
        __global const store_t *grad = dy + AT(dyo, dys, n, c * count);
        __global const uint *args = idx + item * count;
        if (!accumulate) {
            const uint full = H * W / VEC;
            for (uint v = 0; v < full; ++v) SSTORE((floatv)(0.0f), out + v * VEC);
            for (uint q = full * VEC; q < H * W; ++q) STORE(out, q, 0.0f);
        }
        for (uint o = 0; o < count; ++o) STORE(out, args[o], LOAD(out, args[o]) + LOAD(grad, o));
    }
}
#else
// With lanes (GPUs), one work item per input element of a row, gathering from the outputs whose
// windows cover it: no two work items write the same element.
__kernel void maxpool_backward(__global const store_t *dy, uint dyo, uint dys, __global const uint *idx,
                               __global store_t *dx, uint dxo, uint dxs, GEOMETRY, uint rows, uint accumulate) {
    const uint lane = get_local_id(0) % NL;
    FOR_EACH_RUN(item, rows) {
        const uint ih = item % H, nc = item / H, c = nc % channels, n = nc / channels;
        uint oh0, oh1, ow0 = 0, ow1 = 0;
        covering(ih, KH, SH, PH, OH, &oh0, &oh1);
        __global const store_t *grad = dy + AT(dyo, dys, n, c * OH * OW);
        __global const uint *args = idx + nc * OH * OW;
        __global store_t *out = dx + AT(dxo, dxs, n, (c * H + ih) * W);
        for (uint iw = lane; iw < W; iw += NL) {
            covering_next(iw, KW, SW, PW, OW, &ow0, &ow1);
            const uint me = ih * W + iw;
            float sum = 0.0f;
            for (uint oh = oh0; oh < oh1; ++oh)
                for (uint ow = ow0; ow < ow1; ++ow)
                    if (args[oh * OW + ow] == me) sum += LOAD(grad, oh * OW + ow);
            STORE_GRAD_S(out, iw, sum, accumulate);
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

#ifdef WKH
// y = the window's mean over WKH * WKW (PyTorch's count_include_pad: without ceil mode every
// window lies inside the padded input). Taps outside the input count 0: a row outside is read
// clamped and weighed 0, a column outside (edge columns only) likewise.
__kernel void avgpool_forward(__global const store_t *x, uint xo, uint xs, __global store_t *y, uint yo, uint ys,
                              uint channels, uint H, uint W, uint OH, uint OW, uint rows) {
    const uint lane = get_local_id(0) % NL;
    uint lo, hi, blocks;
    inner_columns(W, OW, &lo, &hi, &blocks);
    const float scale = 1.0f / (float)(WKH * WKW);
    FOR_EACH_RUN(item, rows) {
        const uint oh = item % OH, nc = item / OH, c = nc % channels, n = nc / channels;
        __global const store_t *plane = x + AT(xo, xs, n, c * H * W);
        __global store_t *out = y + AT(yo, ys, n, (c * OH + oh) * OW);
        uint row[WKH];
        float weight[WKH];
#pragma unroll
        for (uint kh = 0; kh < WKH; ++kh) {
            const int h = (int)(oh * WSH + kh) - WPH;
            row[kh] = (uint)clamp(h, 0, (int)H - 1) * W;
            weight[kh] = h >= 0 && h < (int)H ? scale : 0.0f;
        }
        for (uint b = lane; b < blocks; b += NL) {
            const uint ow = block_start(b, lo, hi), w0 = ow * WSW - WPW;
            poolv sum = 0.0f;
#pragma unroll
            for (uint kh = 0; kh < WKH; ++kh) {
                poolv r = 0.0f;
#pragma unroll
                for (uint kw = 0; kw < WKW; ++kw) r += TAP(plane + row[kh], w0, kw);
                sum += r * weight[kh];
            }
            STOREV(PV, sum, out + ow);
        }
        for (uint i = lane; i + hi - lo < OW; i += NL) {
            const uint ow = edge_column(i, lo, hi);
            float sum = 0.0f;
#pragma unroll
            for (uint kw = 0; kw < WKW; ++kw) {
                const int w = (int)(ow * WSW + kw) - WPW;
                const uint at = (uint)clamp(w, 0, (int)W - 1);
                float column = 0.0f;
#pragma unroll
                for (uint kh = 0; kh < WKH; ++kh) column += LOAD(plane, row[kh] + at) * weight[kh];
                sum += w >= 0 && w < (int)W ? column : 0.0f;
            }
            STORE(out, ow, sum);
        }
    }
}
#endif  // WKH

__kernel void avgpool_backward(__global const store_t *dy, uint dyo, uint dys,
                               __global store_t *dx, uint dxo, uint dxs, GEOMETRY, uint rows, uint accumulate) {
    const uint lane = get_local_id(0) % NL;
    FOR_EACH_RUN(item, rows) {
        const uint ih = item % H, nc = item / H, c = nc % channels, n = nc / channels;
        uint oh0, oh1, ow0 = 0, ow1 = 0;
        covering(ih, KH, SH, PH, OH, &oh0, &oh1);
        __global const store_t *grad = dy + AT(dyo, dys, n, c * OH * OW);
        __global store_t *out = dx + AT(dxo, dxs, n, (c * H + ih) * W);
        for (uint iw = lane; iw < W; iw += NL) {
            covering_next(iw, KW, SW, PW, OW, &ow0, &ow1);
            float sum = 0.0f;
            for (uint oh = oh0; oh < oh1; ++oh)
                for (uint ow = ow0; ow < ow1; ++ow)
                    sum += LOAD(grad, oh * OW + ow) / avg_divisor(oh, ow, H, W, KH, KW, SH, SW, PH, PW);
            STORE_GRAD_S(out, iw, sum, accumulate);
        }
    }
}

// One work item per (sample, channel): the plane's mean, into y[n, c].
__kernel void global_avgpool_forward(__global const store_t *x, uint xo, uint xs, __global store_t *y, uint yo, uint ys,
                                     uint channels, uint plane, uint rows) {
    __local float scratch[NL];
    const uint lane = get_local_id(0) % NL;
    FOR_EACH_RUN(item, rows) {
        const uint n = item / channels, c = item % channels;
        __global const store_t *src = x + AT(xo, xs, n, c * plane);
        const uint full = plane / VEC;
        floatv a = 0.0f;
        float t = 0.0f;
        for (uint v = lane; v < full; v += NL) a += SLOAD(src + v * VEC);
        for (uint q = full * VEC + lane; q < plane; q += NL) t += LOAD(src, q);
        const float sum = lanes_sum(hsum(a) + t, scratch);
        if (lane == 0) STORE(y, AT(yo, ys, n, c), sum / (float)plane);
    }
}

__kernel void global_avgpool_backward(__global const store_t *dy, uint dyo, uint dys,
                                      __global store_t *dx, uint dxo, uint dxs, uint channels, uint plane,
                                      uint rows, uint accumulate) {
    const uint lane = get_local_id(0) % NL;
    FOR_EACH_RUN(item, rows) {
        const uint n = item / channels, c = item % channels;
        const float g = LOAD(dy, AT(dyo, dys, n, c)) / (float)plane;
        __global store_t *out = dx + AT(dxo, dxs, n, c * plane);
        const uint full = plane / VEC;
        for (uint v = lane; v < full; v += NL) {
            floatv t = (floatv)g;
            if (accumulate) t += SLOAD(out + v * VEC);
            SSTORE(t, out + v * VEC);
        }
        for (uint q = full * VEC + lane; q < plane; q += NL) STORE_GRAD_S(out, q, g, accumulate);
    }
}
