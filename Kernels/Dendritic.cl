// Dendritic ReLU convolutions and linear layers (Dendritic.swift): every connection from an
// input channel c to an output channel o applies a ReLU of its own, shifted by a bias of its own,
// before the weighted sum (the dendrites-activated connections of Metta et al. 2023):
//   y[n][o][p] = bias[o] + sum over the group's channels i and the taps t of
//                w[o][i][t] * relu(x[n][c][p moved by t] + b[o][i]).
// A tap that lands in the zero padding adds nothing: the padding is of the dendrite's output,
// as a convolution of relu(x + b) pads it.
// Tensor arguments are (buffer, offset, batch stride); see Common.cl. Weights are OIHW, the
// dendrites' biases [O][C / groups].
//
// The ReLU differs per output channel, so no GEMM can do the products. The kernels take eight
// output channels of a group as one float8 (PoCL does not vectorise the loops by itself): an
// input value, broadcast, meets eight biases and eight weights. For that the host packs the
// weights and biases output-channel-last, each group's channels padded with zeros to OP, a
// multiple of 8 (dendritic_pack), and the backward passes read dy the same way
// (dendritic_channels_last). Eight channels per vector measured faster than eight pixels per
// vector, which wasted most lanes on the 7x7 and 4x4 maps of a ResNet's last stages.
// The host compiles in the kernel size (DK_KH, DK_KW) so that the tap loops unroll.

#define GEOMETRY uint C, uint H, uint W, uint OH, uint OW, uint KH, uint KW, \
                 uint SH, uint SW, uint PH, uint PW, uint DH, uint DW
#ifndef DK_KH
#define DK_KH 3
#define DK_KW 3
#endif
#define KK (DK_KH * DK_KW)
// Pixels per work item of the forward and input-gradient kernels: each weight vector loaded
// serves PX of them.
#define PX 8

// ReLU that keeps a NaN a NaN (as RELU in Common.cl), on eight lanes.
#define RELU8(v) select((v), (float8)(0.0f), (v) < 0.0f)

inline float sum8(float8 v) {
    const float4 a = v.lo + v.hi;
    return (a.x + a.y) + (a.z + a.w);
}

// The packed parameters: wp[(g*CG + i)*KK + t][m] = w[g*OG + m][i][t] and
// bp[g*CG + i][m] = b[g*OG + m][i], rows of OP with zeros past OG.
__kernel void dendritic_pack(__global const store_t *wt, uint wo, __global const store_t *db, uint dbo,
                             __global float *ws, uint wpo, uint bpo, uint G, uint CG, uint OG, uint OP) {
    const uint weights = G * CG * KK * OP, total = weights + G * CG * OP;
    FOR_EACH_ITEM(e, total) {
        const uint m = e % OP, row = e / OP;
        if (e < weights) {
            const uint t = row % KK, gi = row / KK, g = gi / CG, i = gi % CG;
            ws[wpo + e] = m < OG ? LOAD(wt, wo + ((g * OG + m) * CG + i) * KK + t) : 0.0f;
        } else {
            const uint gi = row - G * CG * KK, g = gi / CG, i = gi % CG;
            ws[bpo + gi * OP + m] = m < OG ? LOAD(db, dbo + (g * OG + m) * CG + i) : 0.0f;
        }
    }
}

// dyc[((s*G + g)*OH*OW + p)*OP + m] = dy[n0 + s][g*OG + m][p], zero past OG, for `count` samples.
__kernel void dendritic_channels_last(__global const store_t *dy, uint dyo, uint dys, __global float *ws, uint dco,
                                      uint G, uint OG, uint OP, uint plane, uint n0, uint count) {
    FOR_EACH_ITEM(e, count * G * plane * OP) {
        const uint m = e % OP, p = (e / OP) % plane, g = (e / (OP * plane)) % G, s = e / (OP * plane * G);
        ws[dco + e] = m < OG ? LOAD(dy, AT(dyo, dys, n0 + s, (g * OG + m) * plane + p)) : 0.0f;
    }
}

// Forward: one item per (sample, group, block of eight output channels, run of PX output
// pixels of the flattened plane).
__kernel void dendritic_forward(__global const store_t *x, uint xo, uint xs, __global const float *ws, uint wpo, uint bpo,
                                __global const float *bias, uint bo, uint has_bias, __global store_t *y, uint yo, uint ys,
                                GEOMETRY, uint CG, uint OG, uint OP, uint batch) {
    const uint G = C / CG, blocks = OP / 8, plane = OH * OW, runs = (plane + PX - 1) / PX;
    FOR_EACH_ITEM(item, batch * G * blocks * runs) {
        const uint r = item % runs, b = (item / runs) % blocks, g = (item / (runs * blocks)) % G;
        const uint n = item / (runs * blocks * G), p0 = r * PX;
        // Each pixel's top-left tap; pixels past the plane repeat the last one and are not stored.
        int h0[PX], w0[PX];
#pragma unroll
        for (uint k = 0; k < PX; k++) {
            const uint p = min(p0 + k, plane - 1);
            h0[k] = (int)(p / OW * SH) - (int)PH;
            w0[k] = (int)(p % OW * SW) - (int)PW;
        }
        float8 acc[PX];
#pragma unroll
        for (uint k = 0; k < PX; k++) acc[k] = (float8)(0.0f);
        for (uint i = 0; i < CG; i++) {
            const uint gi = g * CG + i;
            const float8 beta = vload8(0, ws + bpo + gi * OP + b * 8);
            const __global store_t *xc = x + AT(xo, xs, n, gi * H * W);
#pragma unroll
            for (uint kh = 0; kh < DK_KH; kh++) {
#pragma unroll
                for (uint kw = 0; kw < DK_KW; kw++) {
                    const float8 w = vload8(0, ws + wpo + (gi * KK + kh * DK_KW + kw) * OP + b * 8);
#pragma unroll
                    for (uint k = 0; k < PX; k++) {
                        const int ih = h0[k] + (int)(kh * DH), iw = w0[k] + (int)(kw * DW);
                        if (ih >= 0 && ih < (int)H && iw >= 0 && iw < (int)W)
                            acc[k] = mad(RELU8((float8)(LOAD(xc, (uint)ih * W + (uint)iw)) + beta), w, acc[k]);
                    }
                }
            }
        }
        const uint on = min(8u, OG - b * 8), pn = min((uint)PX, plane - p0);
        for (uint l = 0; l < on; l++) {
            const uint o = g * OG + b * 8 + l;
            const float add = has_bias ? bias[bo + o] : 0.0f;
            __global store_t *dst = y + AT(yo, ys, n, o * plane + p0);
            float e[PX];
#pragma unroll
            for (uint k = 0; k < PX; k++) {
                float lanes[8];
                vstore8(acc[k], 0, lanes);
                e[k] = lanes[l];
            }
            for (uint k = 0; k < pn; k++) STORE(dst, k, e[k] + add);
        }
    }
}

// The input gradient for samples n0 ..< n0 + count, from dy packed channel-last at dco:
//   dx[n][c][q] = sum over the group's output channels o of
//                 [x[n][c][q] + b[o][i] > 0] * (sum over the taps t that reach an output p of w[o][i][t] dy[n][o][p]).
// One item per (sample, input channel, run of PX input pixels of the flattened plane).
__kernel void dendritic_backward_input(__global const store_t *x, uint xo, uint xs, __global const float *ws, uint wpo,
                                       uint bpo, uint dco, __global store_t *dx, uint dxo, uint dxs, GEOMETRY, uint CG,
                                       uint OG, uint OP, uint n0, uint count, uint accumulate) {
    const uint G = C / CG, blocks = OP / 8, plane = H * W, oplane = OH * OW, runs = (plane + PX - 1) / PX;
    FOR_EACH_ITEM(item, count * C * runs) {
        const uint r = item % runs, c = (item / runs) % C, s = item / (runs * C), n = n0 + s;
        const uint g = c / CG, q0 = r * PX;
        // Where in the packed dy each pixel's tap t reads (the output p with q = p*S - P + t*D), or
        // -1: the same for every block of output channels, and its divisions cost more than a
        // block's products when done inside the loop.
        int at[KK][PX];
        float xv[PX];
#pragma unroll
        for (uint k = 0; k < PX; k++) {
            const uint q = min(q0 + k, plane - 1);
            const int qh = (int)(q / W) + (int)PH, qw = (int)(q % W) + (int)PW;
            xv[k] = LOAD(x, AT(xo, xs, n, c * plane + q));
#pragma unroll
            for (uint kh = 0; kh < DK_KH; kh++) {
#pragma unroll
                for (uint kw = 0; kw < DK_KW; kw++) {
                    const int th = qh - (int)(kh * DH), tw = qw - (int)(kw * DW);
                    const bool reached = th >= 0 && tw >= 0 && th % (int)SH == 0 && tw % (int)SW == 0 &&
                                         th / (int)SH < (int)OH && tw / (int)SW < (int)OW;
                    at[kh * DK_KW + kw][k] = reached ? (th / (int)SH * (int)OW + tw / (int)SW) * (int)OP : -1;
                }
            }
        }
        const __global float *dyc = ws + dco + (s * G + g) * oplane * OP;
        float8 acc[PX];
#pragma unroll
        for (uint k = 0; k < PX; k++) acc[k] = (float8)(0.0f);
        for (uint b = 0; b < blocks; b++) {
            const float8 beta = vload8(0, ws + bpo + c * OP + b * 8);
            float8 inner[PX];
#pragma unroll
            for (uint k = 0; k < PX; k++) inner[k] = (float8)(0.0f);
#pragma unroll
            for (uint t = 0; t < KK; t++) {
                const float8 w = vload8(0, ws + wpo + (c * KK + t) * OP + b * 8);
#pragma unroll
                for (uint k = 0; k < PX; k++) {
                    if (at[t][k] >= 0) inner[k] = mad(vload8(0, dyc + at[t][k] + b * 8), w, inner[k]);
                }
            }
#pragma unroll
            for (uint k = 0; k < PX; k++) acc[k] += select((float8)(0.0f), inner[k], (float8)(xv[k]) + beta > 0.0f);
        }
        const uint pn = min((uint)PX, plane - q0);
        __global store_t *dst = dx + AT(dxo, dxs, n, c * plane + q0);
        float e[PX];
#pragma unroll
        for (uint k = 0; k < PX; k++) e[k] = sum8(acc[k]);
        for (uint k = 0; k < pn; k++) STORE_GRAD_S(dst, k, e[k], accumulate);
    }
}

// The gradients of the weights and of the dendrites' biases over samples n0 ..< n0 + count,
// from dy packed channel-last at dco: one item per (input channel, block of eight output
// channels of its group) sums over the samples and output pixels
//   dw[o][i][t] = sum of dy[n][o][p] relu(x + b[o][i]) at the input tap t of p reads,
//   db[o][i]    = sum over t of w[o][i][t] * (sum of dy[n][o][p] where x + b[o][i] > 0),
// adding to what the gradients hold when `accumulate` (a later chunk, or a parameter used twice).
// Every item writes only its own connections' values: no atomics, and a fixed order.
__kernel void dendritic_backward_params(__global const store_t *x, uint xo, uint xs, __global const float *ws, uint wpo,
                                        uint bpo, uint dco, __global float *dw, uint dwo, uint has_dw, __global float *ddb,
                                        uint ddbo, uint has_ddb, GEOMETRY, uint CG, uint OG, uint OP, uint n0, uint count,
                                        uint accumulate) {
    const uint G = C / CG, blocks = OP / 8, oplane = OH * OW;
    FOR_EACH_ITEM(item, C * blocks) {
        const uint b = item % blocks, c = item / blocks, g = c / CG, i = c % CG;
        const float8 beta = vload8(0, ws + bpo + c * OP + b * 8);
        float8 gw[KK], gb[KK];
#pragma unroll
        for (uint t = 0; t < KK; t++) {
            gw[t] = (float8)(0.0f);
            gb[t] = (float8)(0.0f);
        }
        for (uint s = 0; s < count; s++) {
            const __global store_t *xc = x + AT(xo, xs, n0 + s, c * H * W);
            const __global float *dyc = ws + dco + (s * G + g) * oplane * OP + b * 8;
            for (uint oh = 0; oh < OH; oh++) {
                for (uint ow = 0; ow < OW; ow++) {
                    const float8 d = vload8(0, dyc + (oh * OW + ow) * OP);
#pragma unroll
                    for (uint kh = 0; kh < DK_KH; kh++) {
                        const int ih = (int)(oh * SH) - (int)PH + (int)(kh * DH);
                        if (ih < 0 || ih >= (int)H) continue;
#pragma unroll
                        for (uint kw = 0; kw < DK_KW; kw++) {
                            const int iw = (int)(ow * SW) - (int)PW + (int)(kw * DW);
                            if (iw < 0 || iw >= (int)W) continue;
                            const float8 a = (float8)(LOAD(xc, (uint)ih * W + (uint)iw)) + beta;
                            const uint t = kh * DK_KW + kw;
                            gw[t] = mad(d, RELU8(a), gw[t]);
                            gb[t] += select((float8)(0.0f), d, a > 0.0f);
                        }
                    }
                }
            }
        }
        const uint on = min(8u, OG - b * 8);
        float db[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
        for (uint t = 0; t < KK; t++) {
            float lw[8], lb[8], wv[8];
            vstore8(gw[t], 0, lw);
            vstore8(gb[t], 0, lb);
            vstore8(vload8(0, ws + wpo + (c * KK + t) * OP + b * 8), 0, wv);
            for (uint l = 0; l < on; l++) {
                const uint o = g * OG + b * 8 + l;
                if (has_dw) STORE_GRAD(dw, dwo + (o * CG + i) * KK + t, lw[l], accumulate);
                db[l] += wv[l] * lb[l];
            }
        }
        if (has_ddb) {
            for (uint l = 0; l < on; l++) STORE_GRAD(ddb, ddbo + (g * OG + b * 8 + l) * CG + i, db[l], accumulate);
        }
    }
}
