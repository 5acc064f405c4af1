// Deformable convolution kernels (DeformConv.swift), with torchvision's definition
// (`torchvision.ops.deform_conv2d`): kernel tap k = kh*KW + kw of output pixel (oh, ow) samples
// input channel c at
//   h = oh*SH - PH + kh*DH + offset[n][g*2K + 2k][oh][ow],
//   w = ow*SW - PW + kw*DW + offset[n][g*2K + 2k + 1][oh][ow],
// by bilinear interpolation (zero outside the input), times mask[n][g*K + k][oh][ow] when there is
// one (v2). g = c / (C / DG) is the channel's offset group. The products with the weights go
// through GEMM (Device/GEMM.swift) on columns laid out as im2col's wide layout (Conv.cl): row
// r = c*K + k holds the `count` samples of a chunk side by side, col[r][j*OH*OW + p], so that
// each product is one GEMM over the chunk (a product per sample had 16 to 49 columns in a
// ResNet's last stages, and ran at a fifth of the GEMM's rate).
// A work item takes a block of CB channels of one offset group, which share every sample's
// position and corner weights: computed once per block instead of once per channel (the
// gather ran at 11 ns per column entry with one channel per item).
// Tensor arguments are (buffer, offset, batch stride); see Common.cl.

#define GEOMETRY uint C, uint H, uint W, uint OH, uint OW, uint KH, uint KW, \
                 uint SH, uint SW, uint PH, uint PW, uint DH, uint DW, uint DG

// Channels per work item of the gather and the input gradient; the host compiles it in
// (DeformConv2D.channelBlock).
#ifndef CB
#define CB 8
#endif

// Item `i` of a launch over (sample j of the chunk, offset group g, block b of the group's
// channels, rest): the block's channels [c0, c1), and the rest of the index.
inline uint channel_block(uint i, uint rest, uint C, uint DG, uint *j, uint *g, uint *c0, uint *c1) {
    const uint cg = C / DG, blocks = (cg + CB - 1) / CB;
    const uint b = (i / rest) % blocks;
    *g = (i / (rest * blocks)) % DG;
    *j = i / (rest * blocks * DG);
    *c0 = *g * cg + b * CB;
    *c1 = min(*c0 + CB, (*g + 1) * cg);
    return i % rest;
}

// Where tap k of output pixel p = oh*OW + ow samples, for channels of offset group g of sample s.
#define SAMPLE_POSITION(h, w)                                                                                    \
    const uint k_ = kh * KW + kw, og_ = AT(oo, os, s, (g * 2 * KH * KW + 2 * k_) * OH * OW + p);              \
    const float h = (float)((int)(oh * SH) - (int)PH + (int)(kh * DH)) + LOAD(off, og_);                       \
    const float w = (float)((int)(ow * SW) - (int)PW + (int)(kw * DW)) + LOAD(off, og_ + OH * OW)

// The four corners of a bilinear sample at (h, w), and their weights: corner (h0 + i, w0 + j) has
// weight wt[2i + j] and is inside the input when ok[2i + j].
struct corners {
    int h0, w0;
    float lh, lw;
    bool ok[4];
};

inline struct corners corners_of(float h, float w, int H, int W) {
    struct corners q;
    // Far outside (or not finite), every corner is: keep the conversions to int defined.
    if (!(h > -2.0f && h < (float)H + 1.0f)) h = -2.0f;
    if (!(w > -2.0f && w < (float)W + 1.0f)) w = -2.0f;
    const float fh = floor(h), fw = floor(w);
    q.h0 = (int)fh;
    q.w0 = (int)fw;
    q.lh = h - fh;
    q.lw = w - fw;
    const bool top = q.h0 >= 0 && q.h0 < H, bottom = q.h0 >= -1 && q.h0 + 1 < H;
    const bool left = q.w0 >= 0 && q.w0 < W, right = q.w0 >= -1 && q.w0 + 1 < W;
    q.ok[0] = top && left;
    q.ok[1] = top && right;
    q.ok[2] = bottom && left;
    q.ok[3] = bottom && right;
    return q;
}

// The input corners' values, zero where outside.
inline float4 corner_values(__global const store_t *x, uint plane, const struct corners *q, int W) {
    const uint at = plane + (uint)(q->h0 * W + q->w0);
    return (float4)(q->ok[0] ? LOAD(x, at) : 0.0f, q->ok[1] ? LOAD(x, at + 1) : 0.0f,
                    q->ok[2] ? LOAD(x, at + W) : 0.0f, q->ok[3] ? LOAD(x, at + W + 1) : 0.0f);
}

// torchvision's `bilinear_interpolate`: zero once the sample is a pixel or more outside.
inline bool samples_input(float h, float w, int H, int W) {
    return h > -1.0f && h < (float)H && w > -1.0f && w < (float)W;
}

inline float interpolate(float4 v, const struct corners *q) {
    const float hh = 1.0f - q->lh, hw = 1.0f - q->lw;
    return hh * hw * v.x + hh * q->lw * v.y + q->lh * hw * v.z + q->lh * q->lw * v.w;
}

// The columns of `count` samples from n0: col[c*K + k][j*OH*OW + oh*OW + ow] = mask * x(h, w).
// One work item fills one output row (oh) of one tap for a block of channels.
__kernel void deform_im2col(__global const store_t *x, uint xo, uint xs, __global const store_t *off, uint oo, uint os,
                            __global const store_t *mask, uint mo, uint ms, uint masked, __global float *col, uint co,
                            GEOMETRY, uint n0, uint count, uint total) {
    const uint i = get_global_id(0);
    if (i >= total) return;
    uint j, g, c0, c1;
    const uint rest = channel_block(i, KH * KW * OH, C, DG, &j, &g, &c0, &c1);
    const uint oh = rest % OH, kw = (rest / OH) % KW, kh = rest / (OH * KW), s = n0 + j, K = KH * KW;
    const uint row = (count * K) * OH * OW, out = co + (c0 * K * count + (kh * KW + kw) * count + j) * OH * OW + oh * OW;
    for (uint ow = 0; ow < OW; ++ow) {
        const uint p = oh * OW + ow;
        SAMPLE_POSITION(h, w);
        const float m = masked ? LOAD(mask, AT(mo, ms, s, (g * K + k_) * OH * OW + p)) : 1.0f;
        if (!samples_input(h, w, (int)H, (int)W)) {
            for (uint c = c0; c < c1; ++c) col[out + (c - c0) * row + ow] = 0.0f;
            continue;
        }
        const struct corners q = corners_of(h, w, (int)H, (int)W);
        for (uint c = c0; c < c1; ++c) {
            col[out + (c - c0) * row + ow] = m * interpolate(corner_values(x, AT(xo, xs, s, c * H * W), &q, (int)W), &q);
        }
    }
}

// The input gradient's type. Under 16-bit storage the host has the sums built in a float
// workspace (-D DX_FLOAT) and rounds each once: many entries add into one element, and each
// partial sum rounded to 16 bits would lose the small sums where entries cancel.
#ifdef DX_FLOAT
typedef float dx_t;
#define LOAD_DX(p, i) ((p)[i])
#define STORE_DX(p, i, v) ((p)[i] = (v))
#else
typedef store_t dx_t;
#define LOAD_DX(p, i) LOAD(p, i)
#define STORE_DX(p, i, v) STORE(p, i, v)
#endif

// The input gradient from the columns' gradient dcol (same layout): each column entry, times its
// mask, goes to the four corners it was interpolated from. One work item owns the input planes
// of a block of channels of one sample and walks every entry that samples them, so no two work
// items write the same element and the sum needs no atomics (torchvision adds atomically, in no
// fixed order).
__kernel void deform_col2im(__global const float *dcol, uint co, __global const store_t *off, uint oo, uint os,
                            __global const store_t *mask, uint mo, uint ms, uint masked,
                            __global dx_t *dx, uint dxo, uint dxs, GEOMETRY, uint n0, uint count, uint total,
                            uint accumulate) {
    const uint i = get_global_id(0);
    if (i >= total) return;
    uint j, g, c0, c1;
    channel_block(i, 1, C, DG, &j, &g, &c0, &c1);
    const uint s = n0 + j, K = KH * KW, row = count * K * OH * OW;
    if (!accumulate) {
        for (uint c = c0; c < c1; ++c) {
            const uint plane = AT(dxo, dxs, s, c * H * W);
            for (uint e = 0; e < H * W; ++e) STORE_DX(dx, plane + e, 0.0f);
        }
    }
    for (uint kh = 0; kh < KH; ++kh) {
        for (uint kw = 0; kw < KW; ++kw) {
            const uint src = co + (c0 * K * count + (kh * KW + kw) * count + j) * OH * OW;
            for (uint oh = 0; oh < OH; ++oh) {
                for (uint ow = 0; ow < OW; ++ow) {
                    const uint p = oh * OW + ow;
                    SAMPLE_POSITION(h, w);
                    if (!samples_input(h, w, (int)H, (int)W)) continue;
                    const float m = masked ? LOAD(mask, AT(mo, ms, s, (g * K + k_) * OH * OW + p)) : 1.0f;
                    const struct corners q = corners_of(h, w, (int)H, (int)W);
                    const float hh = 1.0f - q.lh, hw = 1.0f - q.lw;
                    const float4 wt = m * (float4)(hh * hw, hh * q.lw, q.lh * hw, q.lh * q.lw);
                    for (uint c = c0; c < c1; ++c) {
                        const float d = dcol[src + (c - c0) * row + p];
                        const uint at = AT(dxo, dxs, s, c * H * W) + (uint)(q.h0 * (int)W + q.w0);
                        if (q.ok[0]) STORE_DX(dx, at, LOAD_DX(dx, at) + d * wt.x);
                        if (q.ok[1]) STORE_DX(dx, at + 1, LOAD_DX(dx, at + 1) + d * wt.y);
                        if (q.ok[2]) STORE_DX(dx, at + W, LOAD_DX(dx, at + W) + d * wt.z);
                        if (q.ok[3]) STORE_DX(dx, at + W + 1, LOAD_DX(dx, at + W + 1) + d * wt.w);
                    }
                }
            }
        }
    }
}

// The offsets' and the mask's gradients: one work item per (j, g, k, oh, ow) sums over the group's
// channels. The position's derivative is torchvision's `get_coordinate_weight`: the bilinear
// form's slope from the four corners, with no check that the sample is inside (so that a tap on
// the padding's edge, as a zero offset puts it, still has one).
__kernel void deform_col2im_coord(__global const float *dcol, uint co, __global const store_t *x, uint xo, uint xs,
                                  __global const store_t *off, uint oo, uint os, __global const store_t *mask, uint mo,
                                  uint ms, uint masked, __global store_t *doff, uint doo, uint dos, uint offset_gradient,
                                  uint accumulate_offset, __global store_t *dmask, uint dmo, uint dms, uint mask_gradient,
                                  uint accumulate_mask, GEOMETRY, uint n0, uint count, uint total) {
    const uint i = get_global_id(0);
    if (i >= total) return;
    const uint K = KH * KW, p = i % (OH * OW), k = (i / (OH * OW)) % K, g = (i / (OH * OW * K)) % DG;
    const uint j = i / (OH * OW * K * DG), s = n0 + j, ow = p % OW, oh = p / OW, kh = k / KW, kw = k % KW;
    const uint cg = C / DG, row = count * K * OH * OW;
    SAMPLE_POSITION(h, w);
    const float m = masked ? LOAD(mask, AT(mo, ms, s, (g * K + k) * OH * OW + p)) : 1.0f;
    const struct corners q = corners_of(h, w, (int)H, (int)W);
    const bool inside = samples_input(h, w, (int)H, (int)W);
    float dh = 0.0f, dw = 0.0f, dm = 0.0f;
    const uint src = co + (g * cg * K * count + k * count + j) * OH * OW + p;
    for (uint c = g * cg; c < (g + 1) * cg; ++c) {
        const float d = dcol[src + (c - g * cg) * row];
        const float4 v = corner_values(x, AT(xo, xs, s, c * H * W), &q, (int)W);
        dh += d * (q.lw * (v.w - v.y) + (1.0f - q.lw) * (v.z - v.x));
        dw += d * (q.lh * (v.w - v.z) + (1.0f - q.lh) * (v.y - v.x));
        if (inside) dm += d * interpolate(v, &q);
    }
    const uint at = AT(doo, dos, s, (g * 2 * K + 2 * k) * OH * OW + p);
    if (offset_gradient) {
        STORE_GRAD_S(doff, at, m * dh, accumulate_offset);
        STORE_GRAD_S(doff, at + OH * OW, m * dw, accumulate_offset);
    }
    if (mask_gradient) STORE_GRAD_S(dmask, AT(dmo, dms, s, (g * K + k) * OH * OW + p), dm, accumulate_mask);
}

// The product's result, channel-major (ycm[o][j*OH*OW + p], what one GEMM over the chunk
// writes), into the NCHW output, with the bias added.
__kernel void deform_output(__global const float *ycm, uint yco, __global const float *bias, uint bo, uint has_bias,
                            __global store_t *y, uint yo, uint ys, uint channels, uint plane, uint n0, uint count,
                            uint total) {
    const uint i = get_global_id(0);
    if (i >= total) return;
    const uint p = i % plane, o = (i / plane) % channels, j = i / (plane * channels);
    STORE(y, AT(yo, ys, n0 + j, o * plane + p), ycm[yco + (o * count + j) * plane + p] + (has_bias ? bias[bo + o] : 0.0f));
}
