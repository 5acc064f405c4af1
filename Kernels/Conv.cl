// 2-D convolution kernels (Conv.swift): im2col and col2im for the GEMM path (the products go
// through Device/GEMM.swift: CLNet's GEMM or CLBlast), direct kernels for grouped convolutions
// with few channels per group (depthwise included), and the register-blocked grouped kernel.
// Winograd's transforms are in Winograd.cl.
// Tensor arguments are (buffer, offset, batch stride); see Common.cl. Weights are OIHW.
// Geometry: C input channels of H x W, output OH x OW, kernel KH x KW, stride SH, SW,
// zero padding PH, PW, dilation DH, DW.

#define GEOMETRY uint C, uint H, uint W, uint OH, uint OW, uint KH, uint KW, \
                 uint SH, uint SW, uint PH, uint PW, uint DH, uint DW

// The output position (along one axis) whose kernel tap k lands on input position i, if any:
// i = o*S - P + k*D. Backward passes gather through it.
inline bool tap_output(uint i, uint k, uint P, uint D, uint S, uint O, uint *o) {
    const int t = (int)i + (int)P - (int)(k * D);
    if (t < 0 || t % (int)S != 0) return false;
    *o = (uint)t / S;
    return *o < O;
}


// The columns of `count` samples from n0, in one of two layouts:
//   per sample (wide == 0): col[s][r][p], a [rows x OH*OW] matrix per sample, for the forward
//     and input-gradient GEMMs batched over samples;
//   wide (wide == 1): col[r][s*OH*OW + p], the samples side by side, so that the weight gradient
//     is one GEMM per chunk (per-sample GEMMs ran at a tenth of the GEMM rate on an H100).
// Column row r = (c*KH + kh)*KW + kw at output pixel (oh, ow) holds
// x[n][c][oh*SH - PH + kh*DH][ow*SW - PW + kw*DW], zero outside the input. One work item fills
// one output row (s, r, oh): the index arithmetic, whose integer divisions cost more than the
// copy itself on a CPU, is paid once per row instead of once per element (6x faster on PoCL).
__kernel void im2col(__global const store_t *x, uint xo, uint xs, __global float *col, uint co,
                     GEOMETRY, uint n0, uint count, uint wide, uint total) {
    const uint i = get_global_id(0);
    if (i >= total) return;
    const uint rows = C * KH * KW;
    const uint oh = i % OH, r = (i / OH) % rows, s = i / (OH * rows);
    const uint kw = r % KW, kh = (r / KW) % KH, c = r / (KW * KH);
    const uint out = co + (wide ? (r * count + s) * OH * OW + oh * OW : ((s * rows + r) * OH + oh) * OW);
    const int h = (int)(oh * SH) - (int)PH + (int)(kh * DH);
    if (h < 0 || h >= (int)H) {
        for (uint ow = 0; ow < OW; ++ow) col[out + ow] = 0.0f;
        return;
    }
    const uint row = AT(xo, xs, n0 + s, (c * H + (uint)h) * W);
    int w = (int)(kw * DW) - (int)PW;
    for (uint ow = 0; ow < OW; ++ow, w += (int)SW) {
        col[out + ow] = (w >= 0 && w < (int)W) ? LOAD(x, row + (uint)w) : 0.0f;
    }
}

// The adjoint of im2col: every column entry is added to the input element im2col copied it
// from. One work item per input row (s, c, ih) scatters the column rows that read it, tap by tap,
// into that row alone (no other work item touches it), which needs no division per element.
__kernel void col2im(__global const float *col, uint co, __global store_t *dx, uint dxo, uint dxs,
                     GEOMETRY, uint n0, uint total, uint accumulate) {
    const uint i = get_global_id(0);
    if (i >= total) return;
    const uint ih = i % H, c = (i / H) % C, s = i / (H * C);
    const uint plane = OH * OW, rows = C * KH * KW;
    const uint row = AT(dxo, dxs, n0 + s, (c * H + ih) * W);
#if defined(CLNET_STORAGE_HALF) || defined(CLNET_STORAGE_BF16)
    // A 16-bit dx: each element gathers its taps in float, in the same order, and is stored
    // once; adding them into dx one by one would round every partial sum to 16 bits.
    for (uint iw = 0; iw < W; ++iw) {
        float sum = accumulate ? LOAD(dx, row + iw) : 0.0f;
        for (uint kh = 0; kh < KH; ++kh) {
            uint oh, ow;
            if (!tap_output(ih, kh, PH, DH, SH, OH, &oh)) continue;
            for (uint kw = 0; kw < KW; ++kw) {
                if (tap_output(iw, kw, PW, DW, SW, OW, &ow)) {
                    sum += col[co + (s * rows + (c * KH + kh) * KW + kw) * plane + oh * OW + ow];
                }
            }
        }
        STORE(dx, row + iw, sum);
    }
#else
    if (!accumulate) {
        for (uint iw = 0; iw < W; ++iw) dx[row + iw] = 0.0f;
    }
    for (uint kh = 0; kh < KH; ++kh) {
        uint oh;
        if (!tap_output(ih, kh, PH, DH, SH, OH, &oh)) continue;
        for (uint kw = 0; kw < KW; ++kw) {
            const uint src = co + (s * rows + (c * KH + kh) * KW + kw) * plane + oh * OW;
            int iw = (int)(kw * DW) - (int)PW;
            for (uint ow = 0; ow < OW; ++ow, iw += (int)SW) {
                if (iw >= 0 && iw < (int)W) dx[row + (uint)iw] += col[src + ow];
            }
        }
    }
#endif
}

// Direct grouped convolution, for groups of few channels (depthwise included), where per-group
// GEMMs are too small to run well. Each group maps CG input channels to OG output channels;
// weight [C/CG*OG, CG, KH, KW]. Forward: one work item per output element.
__kernel void grouped_forward(__global const store_t *x, uint xo, uint xs, __global const store_t *wt, uint wo,
                              __global store_t *y, uint yo, uint ys, GEOMETRY, uint CG, uint OG, uint total) {
    const uint i = get_global_id(0);
    if (i >= total) return;
    const uint OC = C / CG * OG;
    const uint ow = i % OW, oh = (i / OW) % OH, oc = (i / (OW * OH)) % OC, n = i / (OW * OH * OC);
    const uint c0 = oc / OG * CG;
    const int h0 = (int)(oh * SH) - (int)PH, w0 = (int)(ow * SW) - (int)PW;
    float sum = 0.0f;
    for (uint ic = 0; ic < CG; ++ic) {
        const uint xc = (c0 + ic) * H, wc = (oc * CG + ic) * KH;
        for (uint kh = 0; kh < KH; ++kh) {
            const int h = h0 + (int)(kh * DH);
            if (h < 0 || h >= (int)H) continue;
            for (uint kw = 0; kw < KW; ++kw) {
                const int w = w0 + (int)(kw * DW);
                if (w < 0 || w >= (int)W) continue;
                sum += LOAD(x, AT(xo, xs, n, (xc + h) * W + w)) * LOAD(wt, wo + (wc + kh) * KW + kw);
            }
        }
    }
    STORE(y, AT(yo, ys, n, (oc * OH + oh) * OW + ow), sum);
}

// One work item per input element, gathering from the OG output channels of its group.
__kernel void grouped_backward_input(__global const store_t *dy, uint dyo, uint dys, __global const store_t *wt, uint wo,
                                     __global store_t *dx, uint dxo, uint dxs, GEOMETRY, uint CG, uint OG, uint total,
                                     uint accumulate) {
    const uint i = get_global_id(0);
    if (i >= total) return;
    const uint iw = i % W, ih = (i / W) % H, c = (i / (W * H)) % C, n = i / (W * H * C);
    const uint g = c / CG, ic = c % CG;
    float sum = 0.0f;
    for (uint kh = 0; kh < KH; ++kh) {
        uint oh, ow;
        if (!tap_output(ih, kh, PH, DH, SH, OH, &oh)) continue;
        for (uint kw = 0; kw < KW; ++kw) {
            if (!tap_output(iw, kw, PW, DW, SW, OW, &ow)) continue;
            for (uint m = 0; m < OG; ++m) {
                const uint oc = g * OG + m;
                sum += LOAD(dy, AT(dyo, dys, n, (oc * OH + oh) * OW + ow)) * LOAD(wt, wo + ((oc * CG + ic) * KH + kh) * KW + kw);
            }
        }
    }
    STORE_GRAD_S(dx, AT(dxo, dxs, n, (c * H + ih) * W + iw), sum, accumulate);
}

// One work-group per weight element (oc, ic, kh, kw): the sum over samples and output positions.
__kernel void grouped_backward_weight(__global const store_t *x, uint xo, uint xs,
                                      __global const store_t *dy, uint dyo, uint dys,
                                      __global float *dw, uint dwo, GEOMETRY, uint CG, uint OG, uint batch,
                                      uint accumulate) {
    __local float scratch[RED];
    const uint e = get_group_id(0), lid = get_local_id(0);
    const uint kw = e % KW, kh = (e / KW) % KH, ic = (e / (KW * KH)) % CG, oc = e / (KW * KH * CG);
    const uint c = oc / OG * CG + ic;
    const uint plane = OH * OW, count = batch * plane;
    float sum = 0.0f;
    for (uint k = lid; k < count; k += RED) {
        const uint n = k / plane, p = k % plane, oh = p / OW, ow = p % OW;
        const int h = (int)(oh * SH) - (int)PH + (int)(kh * DH);
        const int w = (int)(ow * SW) - (int)PW + (int)(kw * DW);
        if (h >= 0 && h < (int)H && w >= 0 && w < (int)W)
            sum += LOAD(x, AT(xo, xs, n, (c * H + h) * W + w)) * LOAD(dy, AT(dyo, dys, n, oc * plane + p));
    }
    sum = group_sum(sum, scratch);
    if (lid == 0) STORE_GRAD(dw, dwo + e, sum, accumulate);
}

// dst[c][s*plane + p] = src[n0 + s][c*plane + p] for `count` samples.
__kernel void channel_major(__global const store_t *src, uint so, uint ss, __global float *dst, uint dso,
                            uint channels, uint plane, uint n0, uint count, uint total) {
    const uint i = get_global_id(0);
    if (i >= total) return;
    const uint width = count * plane, q = i % width, c = i / width, s = q / plane, p = q % plane;
    dst[dso + i] = LOAD(src, AT(so, ss, n0 + s, c * plane + p));
}

// Split-K reduction of the weight gradient: dw[i] (=, or += with accumulate) the sum of the
// `slices` partial products, each `count` floats apart.
__kernel void sum_partials(__global const float *partials, uint po, uint slices, uint count,
                           __global float *dw, uint dwo, uint accumulate) {
    const uint i = get_global_id(0);
    if (i >= count) return;
    float sum = 0.0f;
    for (uint s = 0; s < slices; ++s) sum += partials[po + s * count + i];
    STORE_GRAD(dw, dwo + i, sum, accumulate);
}

// ---- Grouped convolution in register blocks, for CPUs (the grouped-blocked algorithm) ----
//
// One item per (sample, block of OB output channels of one group, output row) walks the row
// eight outputs at a time: each kernel tap is one vector of eight inputs and OB broadcast
// weights, so every input load feeds OB multiply-adds (the direct kernel above makes one per
// load, and ran at 0.02 of the GEMM rate on PoCL). The groups and samples are one launch.
// With `flip`, it computes the input gradient of a stride-1 convolution instead: the same
// convolution of dy with each group's filters transposed and turned by 180 degrees (this pass's
// CG is the layer's output channels per group, OG its input channels, PH and PW are D*(K-1) - P).
// The host fixes the kernel's size, stride and flip with -D (GB_KH, GB_KW, GB_SW, GB_FLIP) so
// that the tap loops unroll: with them as arguments the kernel ran 4x slower on PoCL.
#ifndef GB_KH
#define GB_KH KH
#define GB_KW KW
#define GB_SW SW
#define GB_FLIP flip
#endif
#define OB 4
__kernel void grouped_blocked(__global const store_t *x, uint xo, uint xs, __global const store_t *wt, uint wo,
                              __global store_t *y, uint yo, uint ys, GEOMETRY, uint CG, uint OG, uint flip, uint batch,
                              uint accumulate) {
    const uint G = C / CG, blocks = (OG + OB - 1) / OB, KK = GB_KH * GB_KW;
    FOR_EACH_ITEM(item, batch * G * blocks * OH) {
        const uint oh = item % OH, b = (item / OH) % blocks, g = (item / (OH * blocks)) % G;
        const uint n = item / (OH * blocks * G), o0 = b * OB, on = min((uint)OB, OG - o0);
        // Weight of tap t of (output o, input i) of this pass.
#define WEIGHT(o, i, t) (GB_FLIP ? LOAD(wt, wo + ((g * CG + (i)) * OG + o0 + (o)) * KK + KK - 1 - (t)) \
                              : LOAD(wt, wo + ((g * OG + o0 + (o)) * CG + (i)) * KK + (t)))
        __global store_t *out[OB];
#pragma unroll
        for (uint o = 0; o < OB; o++) out[o] = y + AT(yo, ys, n, ((g * OG + o0 + min(o, on - 1)) * OH + oh) * OW);
        uint ow0 = 0;
        for (; ow0 + 8 <= OW; ow0 += 8) {
            float8 acc[OB];
#pragma unroll
            for (uint o = 0; o < OB; o++) acc[o] = (float8)(0.0f);
            for (uint i = 0; i < CG; i++) {
                const __global store_t *plane = x + AT(xo, xs, n, (g * CG + i) * H * W);
                for (uint kh = 0; kh < GB_KH; kh++) {
                    const int ih = (int)(oh * SH) - (int)PH + (int)(kh * DH);
                    if (ih < 0 || ih >= (int)H) continue;
                    const __global store_t *row = plane + (uint)ih * W;
                    for (uint kw = 0; kw < GB_KW; kw++) {
                        const int iw0 = (int)(ow0 * GB_SW) - (int)PW + (int)(kw * DW);
                        float8 v;
                        // Stride 2 loads sixteen floats and keeps the even ones: all must lie in the row.
                        if (iw0 >= 0 && iw0 + (GB_SW == 2 ? 15 : 7 * (int)GB_SW) < (int)W) {
                            v = GB_SW == 1 ? LOADV(8, row + iw0) : GB_SW == 2 ? LOADV(16, row + iw0).even
                                : (float8)(LOAD(row, iw0), LOAD(row, iw0 + GB_SW), LOAD(row, iw0 + 2 * GB_SW),
                                           LOAD(row, iw0 + 3 * GB_SW), LOAD(row, iw0 + 4 * GB_SW), LOAD(row, iw0 + 5 * GB_SW),
                                           LOAD(row, iw0 + 6 * GB_SW), LOAD(row, iw0 + 7 * GB_SW));
                        } else {
                            float e[8];
#pragma unroll
                            for (uint l = 0; l < 8; l++) {
                                const int iw = iw0 + (int)(l * GB_SW);
                                e[l] = iw >= 0 && iw < (int)W ? LOAD(row, iw) : 0.0f;
                            }
                            v = (float8)(e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7]);
                        }
                        const uint t = kh * GB_KW + kw;
#pragma unroll
                        for (uint o = 0; o < OB; o++) acc[o] = mad(v, (float8)(o < on ? WEIGHT(o, i, t) : 0.0f), acc[o]);
                    }
                }
            }
#pragma unroll
            for (uint o = 0; o < OB; o++) {
                if (o >= on) break;
                __global store_t *dst = out[o] + ow0;
                STOREV(8, accumulate ? acc[o] + LOADV(8, dst) : acc[o], dst);
            }
        }
        for (; ow0 < OW; ow0++) {
            float acc[OB];
#pragma unroll
            for (uint o = 0; o < OB; o++) acc[o] = 0.0f;
            for (uint i = 0; i < CG; i++) {
                const __global store_t *plane = x + AT(xo, xs, n, (g * CG + i) * H * W);
                for (uint kh = 0; kh < GB_KH; kh++) {
                    const int ih = (int)(oh * SH) - (int)PH + (int)(kh * DH);
                    if (ih < 0 || ih >= (int)H) continue;
                    for (uint kw = 0; kw < GB_KW; kw++) {
                        const int iw = (int)(ow0 * GB_SW) - (int)PW + (int)(kw * DW);
                        if (iw < 0 || iw >= (int)W) continue;
                        const float v = LOAD(plane, (uint)ih * W + (uint)iw);
#pragma unroll
                        for (uint o = 0; o < OB; o++) acc[o] += v * (o < on ? WEIGHT(o, i, kh * GB_KW + kw) : 0.0f);
                    }
                }
            }
#pragma unroll
            for (uint o = 0; o < OB; o++) {
                if (o >= on) break;
                STORE_GRAD_S(out[o], ow0, acc[o], accumulate);
            }
        }
#undef WEIGHT
    }
}
