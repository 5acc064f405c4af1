// Dilated convolution with learnable spacings (DCLS.swift; Khalfaoui-Hassani et al. 2023): the
// kernel of each (output, input) channel pair is built from M weights at learned real positions
// inside a KH x KW footprint, each spread over its four nearest taps by bilinear interpolation
// (DCLS's "v0" construction); the convolution then runs on the built kernel (Conv.cl, GEMM.cl).
// The built kernel is the convolution engine's weight, so it is stored as the engine reads its
// weights: store_t (Common.cl). Weights, positions, their gradients and the built kernel's
// gradient, which the engine writes in float, stay float.
// Weights are [O][C/groups][M], positions [2][O][C/groups][M] (rows, then columns), counted
// from the footprint's centre and clamped to +-(size / 2) per axis; a corner outside the
// footprint is dropped.

// The four taps of element (position ph, pw) and their weights: rows r, r + 1 and columns
// c, c + 1, with fractions ah, aw.
struct taps {
    int r, c;
    float ah, aw;
};

inline struct taps taps_of(float ph, float pw, uint KH, uint KW) {
    const float lh = (float)(KH / 2), lw = (float)(KW / 2);
    const float h = clamp(ph, -lh, lh) + lh, w = clamp(pw, -lw, lw) + lw;
    struct taps t;
    const float fh = floor(h), fw = floor(w);
    t.r = (int)fh;
    t.c = (int)fw;
    t.ah = h - fh;
    t.aw = w - fw;
    return t;
}

inline bool inside(int r, int c, uint KH, uint KW) { return r >= 0 && r < (int)KH && c >= 0 && c < (int)KW; }

inline bool covers(struct taps t, int r, int c) { return r >= t.r && r <= t.r + 1 && c >= t.c && c <= t.c + 1; }

// k[pair][KH][KW] = sum over m of w[pair][m] at its taps. One item per (output, input) pair,
// which writes its own taps alone: no atomics, and a fixed order. Each tap is summed in float,
// over m in order, and stored once, so that a 16-bit kernel is rounded once (as the float sum
// stored) rather than after every addition: the first element with a corner on a tap (the tap's
// owner) sums every element's share of it. That costs M^2 taps per pair rather than M; with M
// about 9, nothing beside the convolution on the kernel.
__kernel void dcls_construct(__global const float *wt, uint wo, __global const float *pos, uint po,
                             __global store_t *k, uint ko, uint pairs, uint M, uint KH, uint KW) {
    FOR_EACH_ITEM(pair, pairs) {
        __global store_t *dst = k + ko + pair * KH * KW;
        for (uint e = 0; e < KH * KW; e++) STORE(dst, e, 0.0f);
        const __global float *w = wt + wo + pair * M, *ph = pos + po + pair * M, *pw = ph + pairs * M;
        for (uint m = 0; m < M; m++) {
            const struct taps t = taps_of(ph[m], pw[m], KH, KW);
            // Corner i is tap (t.r + i / 2, t.c + i % 2); m owns those inside that no earlier
            // element covers.
            uint own = 0;
            for (uint i = 0; i < 4; i++) own |= inside(t.r + (int)(i / 2), t.c + (int)(i % 2), KH, KW) ? 1u << i : 0u;
            for (uint j = 0; j < m && own; j++) {
                const struct taps u = taps_of(ph[j], pw[j], KH, KW);
                for (uint i = 0; i < 4; i++)
                    if (covers(u, t.r + (int)(i / 2), t.c + (int)(i % 2))) own &= ~(1u << i);
            }
            if (!own) continue;
            float sum[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            for (uint j = m; j < M; j++) {
                const struct taps u = taps_of(ph[j], pw[j], KH, KW);
                for (uint i = 0; i < 4; i++) {
                    const int r = t.r + (int)(i / 2), c = t.c + (int)(i % 2);
                    if ((own >> i & 1u) && covers(u, r, c))
                        sum[i] += w[j] * (r == u.r ? 1.0f - u.ah : u.ah) * (c == u.c ? 1.0f - u.aw : u.aw);
                }
            }
            for (uint i = 0; i < 4; i++)
                if (own >> i & 1u) STORE(dst, (t.r + (int)(i / 2)) * KW + t.c + (int)(i % 2), sum[i]);
        }
    }
}

// The weights' and positions' gradients from the built kernel's, dk (float, as the convolution
// engine writes weight gradients): one item per element.
// A position clamped at its bound passes the gradient (as PyTorch's clamp does at the bound);
// one beyond it gets none.
__kernel void dcls_construct_backward(__global const float *wt, uint wo, __global const float *pos, uint po,
                                      __global const float *dk, uint dko, __global float *dw, uint dwo, uint has_dw,
                                      __global float *dpos, uint dpo, uint has_dpos, uint pairs, uint M, uint KH, uint KW,
                                      uint accumulate) {
    FOR_EACH_ITEM(i, pairs * M) {
        const uint pair = i / M;
        const float ph = pos[po + i], pw = pos[po + pairs * M + i];
        const struct taps t = taps_of(ph, pw, KH, KW);
        const __global float *g = dk + dko + pair * KH * KW;
        const float g00 = inside(t.r, t.c, KH, KW) ? g[t.r * KW + t.c] : 0.0f;
        const float g01 = inside(t.r, t.c + 1, KH, KW) ? g[t.r * KW + t.c + 1] : 0.0f;
        const float g10 = inside(t.r + 1, t.c, KH, KW) ? g[(t.r + 1) * KW + t.c] : 0.0f;
        const float g11 = inside(t.r + 1, t.c + 1, KH, KW) ? g[(t.r + 1) * KW + t.c + 1] : 0.0f;
        if (has_dw) {
            const float v = (1.0f - t.ah) * ((1.0f - t.aw) * g00 + t.aw * g01) + t.ah * ((1.0f - t.aw) * g10 + t.aw * g11);
            STORE_GRAD(dw, dwo + i, v, accumulate);
        }
        if (has_dpos) {
            const float w = wt[wo + i], lh = (float)(KH / 2), lw = (float)(KW / 2);
            const float dh = (ph >= -lh && ph <= lh) ? w * ((1.0f - t.aw) * (g10 - g00) + t.aw * (g11 - g01)) : 0.0f;
            const float dwv = (pw >= -lw && pw <= lw) ? w * ((1.0f - t.ah) * (g01 - g00) + t.ah * (g11 - g10)) : 0.0f;
            STORE_GRAD(dpos, dpo + i, dh, accumulate);
            STORE_GRAD(dpos, dpo + pairs * M + i, dwv, accumulate);
        }
    }
}
