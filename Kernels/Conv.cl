// 2-D convolution kernels (Conv.swift, Conv+Winograd.swift): im2col and col2im for the GEMM
// path (the products go through Device/GEMM.swift: CLNet's GEMM or CLBlast), direct kernels for
// grouped convolutions with few channels per group (depthwise included), Winograd's transforms,
// and the register-blocked grouped kernel.
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
__kernel void im2col(__global const float *x, uint xo, uint xs, __global float *col, uint co,
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
        col[out + ow] = (w >= 0 && w < (int)W) ? x[row + (uint)w] : 0.0f;
    }
}

// The adjoint of im2col: every column entry is added to the input element im2col copied it
// from. One work item per input row (s, c, ih) scatters the column rows that read it, tap by tap,
// into that row alone (no other work item touches it), which needs no division per element.
__kernel void col2im(__global const float *col, uint co, __global float *dx, uint dxo, uint dxs,
                     GEOMETRY, uint n0, uint total, uint accumulate) {
    const uint i = get_global_id(0);
    if (i >= total) return;
    const uint ih = i % H, c = (i / H) % C, s = i / (H * C);
    const uint plane = OH * OW, rows = C * KH * KW;
    const uint row = AT(dxo, dxs, n0 + s, (c * H + ih) * W);
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
}

// Direct grouped convolution, for groups of few channels (depthwise included), where per-group
// GEMMs are too small to run well. Each group maps CG input channels to OG output channels;
// weight [C/CG*OG, CG, KH, KW]. Forward: one work item per output element.
__kernel void grouped_forward(__global const float *x, uint xo, uint xs, __global const float *wt, uint wo,
                              __global float *y, uint yo, uint ys, GEOMETRY, uint CG, uint OG, uint total) {
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
                sum += x[AT(xo, xs, n, (xc + h) * W + w)] * wt[wo + (wc + kh) * KW + kw];
            }
        }
    }
    y[AT(yo, ys, n, (oc * OH + oh) * OW + ow)] = sum;
}

// One work item per input element, gathering from the OG output channels of its group.
__kernel void grouped_backward_input(__global const float *dy, uint dyo, uint dys, __global const float *wt, uint wo,
                                     __global float *dx, uint dxo, uint dxs, GEOMETRY, uint CG, uint OG, uint total,
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
                sum += dy[AT(dyo, dys, n, (oc * OH + oh) * OW + ow)] * wt[wo + ((oc * CG + ic) * KH + kh) * KW + kw];
            }
        }
    }
    STORE_GRAD(dx, AT(dxo, dxs, n, (c * H + ih) * W + iw), sum, accumulate);
}

// One work-group per weight element (oc, ic, kh, kw): the sum over samples and output positions.
__kernel void grouped_backward_weight(__global const float *x, uint xo, uint xs,
                                      __global const float *dy, uint dyo, uint dys,
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
            sum += x[AT(xo, xs, n, (c * H + h) * W + w)] * dy[AT(dyo, dys, n, oc * plane + p)];
    }
    sum = group_sum(sum, scratch);
    if (lid == 0) STORE_GRAD(dw, dwo + e, sum, accumulate);
}

// dst[c][s*plane + p] = src[n0 + s][c*plane + p] for `count` samples.
__kernel void channel_major(__global const float *src, uint so, uint ss, __global float *dst, uint dso,
                            uint channels, uint plane, uint n0, uint count, uint total) {
    const uint i = get_global_id(0);
    if (i >= total) return;
    const uint width = count * plane, q = i % width, c = i / width, s = q / plane, p = q % plane;
    dst[dso + i] = src[AT(so, ss, n0 + s, c * plane + p)];
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

// ---- Winograd F(2x2, 3x3), for 3x3 stride-1 convolutions (Conv+Winograd.swift) ----
//
// Each 2x2 tile of the output is A^T [(G g G^T) . (B^T d B)] A, where d is the 4x4 input patch
// under it and g the 3x3 filter: 16 products per tile and channel pair instead of 36. The 16
// element-wise products, summed over channels, are 16 matrix products, which CLNet's GEMM
// (GEMM.cl, gemm_panels) computes. The transforms below write their results straight into the
// GEMM's panel layout, so that nothing is packed twice: a matrix with `rows` rows (or columns)
// cut into panels of P, `depth` deep, holds (idx, kk) at (idx / P) * P * depth + kk * P + idx % P,
// and the 16 matrices (xi = 4 * row + column of the 4x4 transform) sit `xs` floats apart.
// Panel rows past the matrix are left as they are where the GEMM never stores their results.
//
// Each work item takes its own items (FOR_EACH_ITEM, Common.cl).

inline uint panel_at(uint idx, uint kk, uint P, uint depth) { return (idx / P) * P * depth + kk * P + idx % P; }

// B^T r B for the 4x4 patch of rows r[0..3]: rows combined first, then each row's columns.
inline void wino_input_tile(const float4 r[4], float4 out[4]) {
    const float4 t[4] = {r[0] - r[2], r[1] + r[2], r[2] - r[1], r[1] - r[3]};
#pragma unroll
    for (uint i = 0; i < 4; i++) out[i] = (float4)(t[i].x, t[i].y, t[i].z, t[i].y) + (float4)(-t[i].z, t[i].z, -t[i].y, -t[i].w);
}

// The filters as the GEMM's A operand, U[xi] of `rows` x `depth`, in panels of MR rows: G g G^T
// of filter (r, d). Forward: rows are output channels and g = w[r][d]. The input gradient is
// the convolution of dy with the filters transposed and turned by 180 degrees (flip): rows are
// input channels and g = w[d][r] turned. Panel rows past `rows` are zero. Items: padded rows x depth.
__kernel void wino_filter(__global const float *wt, uint wo, uint rows, uint depth, uint padded, uint flip,
                          __global float *u, uint uo, uint xs, uint MRP) {
    // One item per (panel, kk) walks the panel's MRP rows, so that each of the 16 matrices is
    // written in consecutive floats: one float per row every MRP floats, as one item per row
    // wrote, left each cache line to be fetched again for every row (1.6x slower on PoCL).
    FOR_EACH_ITEM(item, padded / MRP * depth) {
        const uint panel = item / depth, kk = item - panel * depth;
        __global float *at = u + uo + panel_at(panel * MRP, kk, MRP, depth);
        for (uint rr = 0; rr < MRP; rr++, at++) {
            const uint r = panel * MRP + rr;
            float g[9];
#pragma unroll
            for (uint e = 0; e < 9; e++) {
                g[e] = r >= rows ? 0.0f : flip ? wt[wo + (kk * rows + r) * 9 + 8 - e] : wt[wo + (r * depth + kk) * 9 + e];
            }
            // t = G g (4 rows of 3), then each row times G^T.
            const float3 a = (float3)(g[0], g[1], g[2]), b = (float3)(g[3], g[4], g[5]), c = (float3)(g[6], g[7], g[8]);
            const float3 t[4] = {a, 0.5f * (a + b + c), 0.5f * (a - b + c), c};
#pragma unroll
            for (uint i = 0; i < 4; i++) {
                const float x0 = t[i].x, x1 = t[i].y, x2 = t[i].z;
                at[(4 * i) * xs] = x0;
                at[(4 * i + 1) * xs] = 0.5f * (x0 + x1 + x2);
                at[(4 * i + 2) * xs] = 0.5f * (x0 - x1 + x2);
                at[(4 * i + 3) * xs] = x2;
            }
        }
    }
}

// B^T d B of the 4x4 patch of `plane` (H x W) at (h0, w0), zero outside the plane.
inline void wino_patch(const __global float *plane, uint H, uint W, int h0, int w0, float4 out[4]) {
    float4 r[4];
    const bool whole = w0 >= 0 && w0 + 3 < (int)W;
#pragma unroll
    for (uint i = 0; i < 4; i++) {
        const int h = h0 + (int)i;
        if (h < 0 || h >= (int)H) {
            r[i] = (float4)(0.0f);
        } else if (whole) {
            r[i] = vload4(0, plane + (uint)h * W + w0);
        } else {
            float e[4];
#pragma unroll
            for (uint j = 0; j < 4; j++) {
                const int w = w0 + (int)j;
                e[j] = w >= 0 && w < (int)W ? plane[(uint)h * W + w] : 0.0f;
            }
            r[i] = (float4)(e[0], e[1], e[2], e[3]);
        }
    }
    wino_input_tile(r, out);
}

inline void wino_store(__global float *at, uint xs, const float4 out[4]) {
#pragma unroll
    for (uint i = 0; i < 4; i++) {
        at[(4 * i) * xs] = out[i].x;
        at[(4 * i + 1) * xs] = out[i].y;
        at[(4 * i + 2) * xs] = out[i].z;
        at[(4 * i + 3) * xs] = out[i].w;
    }
}

// The input patches of `count` samples from n0, as the GEMM's B operand V[xi] of C x tiles (kk =
// channel) in panels of NRP tiles, `xs` floats apart. Tile t = (s * TH + th) * TW + tw covers
// output rows 2th, 2th+1 and columns 2tw, 2tw+1; its patch starts at input (2th - PH, 2tw - PW).
// One item per (sample, channel, tile row), whose tiles are consecutive in every matrix.
__kernel void wino_input(__global const float *x, uint xo, uint xbs, uint C, uint H, uint W, uint TH, uint TW,
                         uint PH, uint PW, uint n0, uint count, __global float *v, uint vo, uint xs, uint NRP) {
    FOR_EACH_ITEM(item, count * C * TH) {
        const uint th = item % TH, c = (item / TH) % C, s = item / (TH * C);
        const __global float *plane = x + AT(xo, xbs, n0 + s, c * H * W);
        const int h0 = 2 * (int)th - (int)PH;
        const uint t0 = (s * TH + th) * TW;
        uint tw = 0;
        // Four tiles at a time: lane l of every vector is tile tw + l (explicit vectors: PoCL does
        // not vectorise this loop itself). Their ten input columns are two overlapping vector
        // loads per row, or guarded loads at the row's ends.
        for (; tw + 4 <= TW; tw += 4) {
            const int w0 = 2 * (int)tw - (int)PW;
            const uint t = t0 + tw;
            const bool whole = w0 >= 0 && w0 + 10 <= (int)W;
            // col[j][i]: tap column j of patch row i, for the four tiles.
            float4 col[4][4];
#pragma unroll
            for (uint i = 0; i < 4; i++) {
                const int h = h0 + (int)i;
                float8 a = (float8)(0.0f), b = (float8)(0.0f);
                if (h >= 0 && h < (int)H) {
                    const __global float *row = plane + (uint)h * W;
                    if (whole) {
                        a = vload8(0, row + w0);
                        b = vload8(0, row + w0 + 2);
                    } else {
                        float e[10];
#pragma unroll
                        for (uint j = 0; j < 10; j++) {
                            const int w = w0 + (int)j;
                            e[j] = w >= 0 && w < (int)W ? row[w] : 0.0f;
                        }
                        a = (float8)(e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7]);
                        b = (float8)(e[2], e[3], e[4], e[5], e[6], e[7], e[8], e[9]);
                    }
                }
                col[0][i] = a.even; col[1][i] = a.odd; col[2][i] = b.even; col[3][i] = b.odd;
            }
            // Rows combined (B^T), then columns (B), as wino_input_tile does for one tile.
            float4 rt[4][4];
#pragma unroll
            for (uint j = 0; j < 4; j++) {
                rt[0][j] = col[j][0] - col[j][2]; rt[1][j] = col[j][1] + col[j][2];
                rt[2][j] = col[j][2] - col[j][1]; rt[3][j] = col[j][1] - col[j][3];
            }
            float4 out[16];
#pragma unroll
            for (uint i = 0; i < 4; i++) {
                out[4 * i] = rt[i][0] - rt[i][2];
                out[4 * i + 1] = rt[i][1] + rt[i][2];
                out[4 * i + 2] = rt[i][2] - rt[i][1];
                out[4 * i + 3] = rt[i][1] - rt[i][3];
            }
            __global float *at = v + vo + panel_at(t, c, NRP, C);
            if (t % NRP + 4 <= NRP) {
#pragma unroll
                for (uint xi = 0; xi < 16; xi++) vstore4(out[xi], 0, at + xi * xs);
            } else {
                // The four tiles straddle two panels.
                float lanes[16][4];
#pragma unroll
                for (uint xi = 0; xi < 16; xi++) vstore4(out[xi], 0, lanes[xi]);
                for (uint l = 0; l < 4; l++) {
                    __global float *lane = v + vo + panel_at(t + l, c, NRP, C);
                    for (uint xi = 0; xi < 16; xi++) lane[xi * xs] = lanes[xi][l];
                }
            }
        }
        for (; tw < TW; tw++) {
            float4 out[4];
            wino_patch(plane, H, W, h0, 2 * (int)tw - (int)PW, out);
            wino_store(v + vo + panel_at(t0 + tw, c, NRP, C), xs, out);
        }
    }
}

// y (or y +=, with accumulate) = A^T M A for each tile, from the GEMM's result M[xi] of K x tiles
// (row-major, `xs` apart): output channel k of `count` samples from n0, of OH x OW. One item per
// (sample, channel, tile row).
//
// With `stats`, each item also writes the batch statistics of the two output rows it made, as
// norm_stats_partial would (Norm.cl): count, mean and M2, shifted by its first value, as part
// (n0 + s) * TH + th in `st`, part by part (part p of channel k at p * K + k), so that the batch
// norm after the convolution need not read y again (MemoryPlan.convolutionStatistics).
__kernel void wino_output(__global const float *m, uint mo, uint xs, __global float *y, uint yo, uint ybs, uint K,
                          uint OH, uint OW, uint TH, uint TW, uint n0, uint count, uint accumulate,
                          __global float *st, uint sto, uint stats) {
    const uint tiles = count * TH * TW;
    FOR_EACH_ITEM(item, count * K * TH) {
        const uint th = item % TH, k = (item / TH) % K, s = item / (TH * K);
        const uint plane = AT(yo, ybs, n0 + s, k * OH * OW), oh = 2 * th;
        const __global float *src = m + mo + k * tiles + (s * TH + th) * TW;
        const bool down = oh + 1 < OH;
        float8 a1 = 0.0f, a2 = 0.0f;
        float t1 = 0.0f, t2 = 0.0f, shift = 0.0f;
        uint tw = 0;
        // Four tiles at a time where their eight output columns lie inside the row: lane l of
        // every vector is tile tw + l, and each output row is the two columns interleaved.
        for (; tw + 4 <= TW && 2 * tw + 8 <= OW; tw += 4) {
            float4 p[16];
#pragma unroll
            for (uint xi = 0; xi < 16; xi++) p[xi] = vload4(0, src + xi * xs + tw);
            float4 r[2][4];
#pragma unroll
            for (uint j = 0; j < 4; j++) {
                r[0][j] = p[j] + p[4 + j] + p[8 + j];
                r[1][j] = p[4 + j] - p[8 + j] - p[12 + j];
            }
#pragma unroll
            for (uint a = 0; a < 2; a++) {
                if (a == 1 && !down) break;
                const float4 e = r[a][0] + r[a][1] + r[a][2], o = r[a][1] - r[a][2] - r[a][3];
                float8 out = shuffle2(e, o, (uint8)(0, 4, 1, 5, 2, 6, 3, 7));
                __global float *dst = y + plane + (oh + a) * OW + 2 * tw;
                if (accumulate) out += vload8(0, dst);
                vstore8(out, 0, dst);
                if (stats) {
                    if (tw == 0 && a == 0) shift = out.s0;
                    const float8 d = out - shift;
                    a1 += d;
                    a2 += d * d;
                }
            }
        }
        for (; tw < TW; tw++) {
            // p[i] is row i of the tile's 4x4 product; r = A^T p (2 rows), then each row times A.
            float4 p[4];
#pragma unroll
            for (uint i = 0; i < 4; i++) {
                p[i] = (float4)(src[(4 * i) * xs + tw], src[(4 * i + 1) * xs + tw], src[(4 * i + 2) * xs + tw],
                                src[(4 * i + 3) * xs + tw]);
            }
            const float4 r0 = p[0] + p[1] + p[2], r1 = p[1] - p[2] - p[3];
            const float2 o0 = (float2)(r0.x + r0.y + r0.z, r0.y - r0.z - r0.w);
            const float2 o1 = (float2)(r1.x + r1.y + r1.z, r1.y - r1.z - r1.w);
            const uint ow = 2 * tw, at = plane + oh * OW + ow;
            const bool right = ow + 1 < OW;
            STORE_GRAD(y, at, o0.x, accumulate);
            if (right) STORE_GRAD(y, at + 1, o0.y, accumulate);
            if (down) {
                STORE_GRAD(y, at + OW, o1.x, accumulate);
                if (right) STORE_GRAD(y, at + OW + 1, o1.y, accumulate);
            }
            if (stats) {
                // The convolution alone: the host asks for statistics only without accumulate.
                if (tw == 0) shift = o0.x;
                const float4 d = (float4)(o0.x, o0.y, o1.x, o1.y) - shift;
                const float4 keep = (float4)(1.0f, right ? 1.0f : 0.0f, down ? 1.0f : 0.0f, right && down ? 1.0f : 0.0f);
                t1 += dot(d, keep);
                t2 += dot(d * d, keep);
            }
        }
        if (stats) {
            const float n = (float)((down ? 2 : 1) * OW);
            const float4 h1 = a1.lo + a1.hi, h2 = a2.lo + a2.hi;
            const float s1 = dot(h1, (float4)(1.0f)) + t1, s2 = dot(h2, (float4)(1.0f)) + t2;
            __global float *out = st + sto + 3 * (((n0 + s) * TH + th) * K + k);
            out[0] = n;
            out[1] = shift + s1 / n;
            out[2] = max(0.0f, s2 - s1 * (s1 / n));
        }
    }
}

// The weight gradient's B operand: A dy A^T of each 2x2 tile of dy (zero past its edges), as
// dYt[xi]^T of tiles x K in panels of PANEL channels (the GEMM's NR). One item per (sample, tile row, panel of channels)
// walks the panel's channels tile by tile, so that every matrix is written in consecutive floats.
__kernel void wino_output_grad(__global const float *dy, uint dyo, uint dybs, uint K, uint OH, uint OW, uint TH,
                               uint TW, uint n0, uint count, __global float *u, uint uo, uint xs, uint PANEL) {
    const uint tiles = count * TH * TW, panels = (K + PANEL - 1) / PANEL;
    FOR_EACH_ITEM(item, count * TH * panels) {
        const uint panel = item % panels, th = (item / panels) % TH, s = item / (panels * TH);
        const uint k0 = panel * PANEL, k1 = min(K, k0 + PANEL), oh = 2 * th;
        uint t = (s * TH + th) * TW;
        for (uint tw = 0; tw < TW; tw++, t++) {
            const uint ow = 2 * tw;
            __global float *at = u + uo + panel_at(k0, t, PANEL, tiles);
            for (uint k = k0; k < k1; k++, at++) {
                const __global float *g = dy + AT(dyo, dybs, n0 + s, k * OH * OW) + oh * OW + ow;
                const bool right = ow + 1 < OW, down = oh + 1 < OH;
                const float2 top = (float2)(g[0], right ? g[1] : 0.0f);
                const float2 bottom = down ? (float2)(g[OW], right ? g[OW + 1] : 0.0f) : (float2)(0.0f);
                // t = A g (4 rows of 2; A's rows are (1,0), (1,1), (1,-1), (0,-1)), then each row times A^T.
                const float2 ag[4] = {top, top + bottom, top - bottom, -bottom};
#pragma unroll
                for (uint i = 0; i < 4; i++) {
                    at[(4 * i) * xs] = ag[i].x;
                    at[(4 * i + 1) * xs] = ag[i].x + ag[i].y;
                    at[(4 * i + 2) * xs] = ag[i].x - ag[i].y;
                    at[(4 * i + 3) * xs] = -ag[i].y;
                }
            }
        }
    }
}

// dw[k][c] (=, or += with accumulate) G^T dU G, from the GEMM's dU[xi]^T of C x K (row-major,
// `xs` apart). One item per (k, c).
__kernel void wino_filter_grad(__global const float *du, uint duo, uint xs, uint K, uint C, __global float *dw, uint dwo,
                               uint accumulate) {
    FOR_EACH_ITEM(item, K * C) {
        const uint k = item / C, ch = item - k * C;
        float p[16], t[12];
#pragma unroll
        for (uint xi = 0; xi < 16; xi++) p[xi] = du[duo + xi * xs + ch * K + k];
        // t = G^T p (3x4), then G^T t^T per row; G^T's rows are (1,.5,.5,0), (0,.5,-.5,0), (0,.5,.5,1).
#pragma unroll
        for (uint j = 0; j < 4; j++) {
            const float a = p[j], b = p[4 + j], c = p[8 + j], e = p[12 + j];
            t[j] = a + 0.5f * (b + c); t[4 + j] = 0.5f * (b - c); t[8 + j] = 0.5f * (b + c) + e;
        }
#pragma unroll
        for (uint i = 0; i < 3; i++) {
            const float a = t[4 * i], b = t[4 * i + 1], c = t[4 * i + 2], e = t[4 * i + 3];
            STORE_GRAD(dw, dwo + item * 9 + 3 * i, a + 0.5f * (b + c), accumulate);
            STORE_GRAD(dw, dwo + item * 9 + 3 * i + 1, 0.5f * (b - c), accumulate);
            STORE_GRAD(dw, dwo + item * 9 + 3 * i + 2, 0.5f * (b + c) + e, accumulate);
        }
    }
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
__kernel void grouped_blocked(__global const float *x, uint xo, uint xs, __global const float *wt, uint wo,
                              __global float *y, uint yo, uint ys, GEOMETRY, uint CG, uint OG, uint flip, uint batch,
                              uint accumulate) {
    const uint G = C / CG, blocks = (OG + OB - 1) / OB, KK = GB_KH * GB_KW;
    FOR_EACH_ITEM(item, batch * G * blocks * OH) {
        const uint oh = item % OH, b = (item / OH) % blocks, g = (item / (OH * blocks)) % G;
        const uint n = item / (OH * blocks * G), o0 = b * OB, on = min((uint)OB, OG - o0);
        // Weight of tap t of (output o, input i) of this pass.
#define WEIGHT(o, i, t) (GB_FLIP ? wt[wo + ((g * CG + (i)) * OG + o0 + (o)) * KK + KK - 1 - (t)] \
                              : wt[wo + ((g * OG + o0 + (o)) * CG + (i)) * KK + (t)])
        __global float *out[OB];
#pragma unroll
        for (uint o = 0; o < OB; o++) out[o] = y + AT(yo, ys, n, ((g * OG + o0 + min(o, on - 1)) * OH + oh) * OW);
        uint ow0 = 0;
        for (; ow0 + 8 <= OW; ow0 += 8) {
            float8 acc[OB];
#pragma unroll
            for (uint o = 0; o < OB; o++) acc[o] = (float8)(0.0f);
            for (uint i = 0; i < CG; i++) {
                const __global float *plane = x + AT(xo, xs, n, (g * CG + i) * H * W);
                for (uint kh = 0; kh < GB_KH; kh++) {
                    const int ih = (int)(oh * SH) - (int)PH + (int)(kh * DH);
                    if (ih < 0 || ih >= (int)H) continue;
                    const __global float *row = plane + (uint)ih * W;
                    for (uint kw = 0; kw < GB_KW; kw++) {
                        const int iw0 = (int)(ow0 * GB_SW) - (int)PW + (int)(kw * DW);
                        float8 v;
                        if (iw0 >= 0 && iw0 + 7 * (int)GB_SW < (int)W) {
                            v = GB_SW == 1 ? vload8(0, row + iw0) : GB_SW == 2 ? vload16(0, row + iw0).even
                                : (float8)(row[iw0], row[iw0 + GB_SW], row[iw0 + 2 * GB_SW], row[iw0 + 3 * GB_SW],
                                           row[iw0 + 4 * GB_SW], row[iw0 + 5 * GB_SW], row[iw0 + 6 * GB_SW], row[iw0 + 7 * GB_SW]);
                        } else {
                            float e[8];
#pragma unroll
                            for (uint l = 0; l < 8; l++) {
                                const int iw = iw0 + (int)(l * GB_SW);
                                e[l] = iw >= 0 && iw < (int)W ? row[iw] : 0.0f;
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
                __global float *dst = out[o] + ow0;
                vstore8(accumulate ? acc[o] + vload8(0, dst) : acc[o], 0, dst);
            }
        }
        for (; ow0 < OW; ow0++) {
            float acc[OB];
#pragma unroll
            for (uint o = 0; o < OB; o++) acc[o] = 0.0f;
            for (uint i = 0; i < CG; i++) {
                const __global float *plane = x + AT(xo, xs, n, (g * CG + i) * H * W);
                for (uint kh = 0; kh < GB_KH; kh++) {
                    const int ih = (int)(oh * SH) - (int)PH + (int)(kh * DH);
                    if (ih < 0 || ih >= (int)H) continue;
                    for (uint kw = 0; kw < GB_KW; kw++) {
                        const int iw = (int)(ow0 * GB_SW) - (int)PW + (int)(kw * DW);
                        if (iw < 0 || iw >= (int)W) continue;
                        const float v = plane[(uint)ih * W + (uint)iw];
#pragma unroll
                        for (uint o = 0; o < OB; o++) acc[o] += v * (o < on ? WEIGHT(o, i, kh * GB_KW + kw) : 0.0f);
                    }
                }
            }
#pragma unroll
            for (uint o = 0; o < OB; o++) {
                if (o >= on) break;
                STORE_GRAD(out[o], ow0, acc[o], accumulate);
            }
        }
#undef WEIGHT
    }
}
