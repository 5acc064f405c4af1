// Residual additions and channel-wise scaling. Tensor arguments are (buffer, offset, batch
// stride); see Common.cl. `sample` is C*H*W, `plane` is H*W.

// y = a + b, and with RELU set, y = max(a + b, 0): the fused form of a residual block's end.
// y may be a or b (in place). Runs (sample, tile) with vector loads, as Common.cl describes.
__kernel void add_forward(__global const store_t *a, uint ao, uint as,
                          __global const store_t *b, uint bo, uint bs,
                          __global store_t *y, uint yo, uint ys, uint sample, uint batch, uint tiles, uint relu) {
    const uint lane = get_local_id(0) % NL;
    FOR_EACH_RUN(item, batch * tiles) {
        uint q0, q1;
        const uint n = sample_tile(item, sample, tiles, &q0, &q1);
        __global const store_t *p = a + AT(ao, as, n, q0), *r = b + AT(bo, bs, n, q0);
        __global store_t *out = y + AT(yo, ys, n, q0);
        const uint full = (q1 - q0) / VEC;
        for (uint v = lane; v < full; v += NL) {
            floatv t = SLOAD(p + v * VEC) + SLOAD(r + v * VEC);
            if (relu) t = RELU_V(t);
            SSTORE(t, out + v * VEC);
        }
        for (uint q = full * VEC + lane; q < q1 - q0; q += NL) {
            const float t = LOAD(p, q) + LOAD(r, q);
            STORE(out, q, relu ? RELU(t) : t);
        }
    }
}

// y = a * b element by element (attention residual learning's (1 + M) * T), and with GRAD set
// the gradient for one factor, y = dy * other, added to y's old value when `accumulate`.
// Runs (sample, tile) with vector loads, as add_forward.
__kernel void multiply(__global const store_t *a, uint ao, uint as,
                       __global const store_t *b, uint bo, uint bs,
                       __global store_t *y, uint yo, uint ys, uint sample, uint batch, uint tiles, uint accumulate) {
    const uint lane = get_local_id(0) % NL;
    FOR_EACH_RUN(item, batch * tiles) {
        uint q0, q1;
        const uint n = sample_tile(item, sample, tiles, &q0, &q1);
        __global const store_t *p = a + AT(ao, as, n, q0), *r = b + AT(bo, bs, n, q0);
        __global store_t *out = y + AT(yo, ys, n, q0);
        const uint full = (q1 - q0) / VEC;
        for (uint v = lane; v < full; v += NL) {
            floatv t = SLOAD(p + v * VEC) * SLOAD(r + v * VEC);
            if (accumulate) t += SLOAD(out + v * VEC);
            SSTORE(t, out + v * VEC);
        }
        for (uint q = full * VEC + lane; q < q1 - q0; q += NL) STORE_GRAD_S(out, q, LOAD(p, q) * LOAD(r, q), accumulate);
    }
}

// y[n, c, :] = x[n, c, :] * s[n, c]: squeeze-and-excitation's rescaling, and its input
// gradient dx = dy * s. Work item (row n * channels + c, tile of its plane).
__kernel void channel_scale_apply(__global const store_t *x, uint xo, uint xs, __global const store_t *s, uint so,
                                  __global store_t *y, uint yo, uint ys,
                                  uint batch, uint channels, uint plane, uint tiles, uint accumulate) {
    const uint lane = get_local_id(0) % NL;
    FOR_EACH_RUN(item, batch * channels * tiles) {
        uint q0, q1;
        const uint row = plane_tile(item, plane, tiles, &q0, &q1), n = row / channels, c = row % channels;
        const float k = LOAD(s, so + row);
        __global const store_t *a = x + AT(xo, xs, n, c * plane + q0);
        __global store_t *b = y + AT(yo, ys, n, c * plane + q0);
        const uint full = (q1 - q0) / VEC;
        for (uint v = lane; v < full; v += NL) {
            floatv t = SLOAD(a + v * VEC) * k;
            if (accumulate) t += SLOAD(b + v * VEC);
            SSTORE(t, b + v * VEC);
        }
        for (uint q = full * VEC + lane; q < q1 - q0; q += NL) STORE_GRAD_S(b, q, LOAD(a, q) * k, accumulate);
    }
}

// Work item per (sample, channel): ds[n, c] = sum over the plane of dy * x.
__kernel void channel_scale_backward_scale(__global const store_t *x, uint xo, uint xs,
                                           __global const store_t *dy, uint dyo, uint dys,
                                           __global store_t *ds, uint dso, uint batch, uint channels, uint plane,
                                           uint accumulate) {
    __local float scratch[NL];
    const uint lane = get_local_id(0) % NL;
    FOR_EACH_RUN(row, batch * channels) {
        const uint n = row / channels, c = row % channels;
        __global const store_t *a = x + AT(xo, xs, n, c * plane);
        __global const store_t *g = dy + AT(dyo, dys, n, c * plane);
        const uint full = plane / VEC;
        floatv acc = 0.0f;
        float tail = 0.0f;
        for (uint v = lane; v < full; v += NL) acc += SLOAD(a + v * VEC) * SLOAD(g + v * VEC);
        for (uint q = full * VEC + lane; q < plane; q += NL) tail += LOAD(a, q) * LOAD(g, q);
        const float sum = lanes_sum(hsum(acc) + tail, scratch);
        if (lane == 0) STORE_GRAD_S(ds, dso + row, sum, accumulate);
    }
}

// Selective kernels' fusion (Li et al. 2019): up to four branches U_m [N, C, H, W], each its
// own tensor (unused ones repeat branch 0 and are not read), and attention logits z [N, M*C]
// (dense); the weights are softmax over m of z[n, m*C + c].
#define BRANCHES __global const store_t *u0, uint u0o, uint u0s, __global const store_t *u1, uint u1o, uint u1s, \
                 __global const store_t *u2, uint u2o, uint u2s, __global const store_t *u3, uint u3o, uint u3s
#define BRANCH(m, n, j) ((m) == 0 ? LOAD(u0, AT(u0o, u0s, n, j)) : (m) == 1 ? LOAD(u1, AT(u1o, u1s, n, j)) \
                         : (m) == 2 ? LOAD(u2, AT(u2o, u2s, n, j)) : LOAD(u3, AT(u3o, u3s, n, j)))

inline float sk_weight(__global const store_t *z, uint zo, uint n, uint c, uint m, uint channels, uint branches) {
    float top = -INFINITY;
    for (uint k = 0; k < branches; ++k) top = fmax(top, LOAD(z, zo + (n * branches + k) * channels + c));
    float sum = 0.0f;
    for (uint k = 0; k < branches; ++k) sum += exp(LOAD(z, zo + (n * branches + k) * channels + c) - top);
    return exp(LOAD(z, zo + (n * branches + m) * channels + c) - top) / sum;
}

__kernel void selective_sum_forward(BRANCHES, __global const store_t *z, uint zo,
                                    __global store_t *y, uint yo, uint ys,
                                    uint channels, uint plane, uint branches, uint total) {
    const uint i = get_global_id(0);
    if (i >= total) return;
    const uint sample = channels * plane, n = i / sample, j = i % sample, c = j / plane;
    float v = 0.0f;
    for (uint m = 0; m < branches; ++m) v += sk_weight(z, zo, n, c, m, channels, branches) * BRANCH(m, n, j);
    STORE(y, AT(yo, ys, n, j), v);
}

// dU_m = a_m * dy for branch `m`.
__kernel void selective_sum_backward_branch(__global const store_t *z, uint zo,
                                            __global const store_t *dy, uint dyo, uint dys,
                                            __global store_t *du, uint duo, uint dus,
                                            uint channels, uint plane, uint branches, uint m, uint total, uint accumulate) {
    const uint i = get_global_id(0);
    if (i >= total) return;
    const uint sample = channels * plane, n = i / sample, j = i % sample, c = j / plane;
    STORE_GRAD_S(du, AT(duo, dus, n, j), sk_weight(z, zo, n, c, m, channels, branches) * LOAD(dy, AT(dyo, dys, n, j)), accumulate);
}

// One work-group per (sample, channel): g_m = sum over the plane of dy * U_m for every branch,
// then the softmax's backward dz_m = a_m * (g_m - sum_k a_k g_k).
__kernel void selective_sum_backward_logits(BRANCHES, __global const store_t *z, uint zo,
                                            __global const store_t *dy, uint dyo, uint dys,
                                            __global store_t *dz, uint dzo,
                                            uint channels, uint plane, uint branches, uint accumulate) {
    __local float scratch[RED];
    const uint nc = get_group_id(0), lid = get_local_id(0);
    const uint n = nc / channels, c = nc % channels;
    float g[4];
    for (uint m = 0; m < branches; ++m) {
        float sum = 0.0f;
        for (uint k = lid; k < plane; k += RED) {
            const uint j = c * plane + k;
            sum += LOAD(dy, AT(dyo, dys, n, j)) * BRANCH(m, n, j);
        }
        g[m] = group_sum(sum, scratch);
    }
    if (lid != 0) return;
    float mean = 0.0f;
    for (uint m = 0; m < branches; ++m) mean += sk_weight(z, zo, n, c, m, channels, branches) * g[m];
    for (uint m = 0; m < branches; ++m) {
        const float a = sk_weight(z, zo, n, c, m, channels, branches);
        STORE_GRAD_S(dz, dzo + (n * branches + m) * channels + c, a * (g[m] - mean), accumulate);
    }
}

// Fixup's scalar multiplier and bias: y = x * s + b, with s and b one value each (s = 1 and
// b = 0 when absent, passed as HAS flags so one kernel serves all three forms).
__kernel void scalar_affine_forward(__global const store_t *x, uint xo, uint xs,
                                    __global const float *p, uint po, uint has_scale, uint has_bias,
                                    __global store_t *y, uint yo, uint ys, uint sample, uint total) {
    const uint i = get_global_id(0);
    if (i >= total) return;
    const uint n = i / sample, j = i % sample;
    const float s = has_scale ? p[po] : 1.0f, b = has_bias ? p[po + has_scale] : 0.0f;
    STORE(y, AT(yo, ys, n, j), LOAD(x, AT(xo, xs, n, j)) * s + b);
}

__kernel void scalar_affine_backward_input(__global const store_t *dy, uint dyo, uint dys,
                                           __global const float *p, uint po, uint has_scale,
                                           __global store_t *dx, uint dxo, uint dxs, uint sample, uint total,
                                           uint accumulate) {
    const uint i = get_global_id(0);
    if (i >= total) return;
    const uint n = i / sample, j = i % sample;
    STORE_GRAD_S(dx, AT(dxo, dxs, n, j), LOAD(dy, AT(dyo, dys, n, j)) * (has_scale ? p[po] : 1.0f), accumulate);
}

// Stage 1 of the scalar gradients: each work-group sums a slice of dy * x and of dy into
// partial[po + 2 * group] and partial[po + 2 * group + 1].
__kernel void scalar_affine_backward_partial(__global const store_t *x, uint xo, uint xs,
                                             __global const store_t *dy, uint dyo, uint dys,
                                             __global float *partial, uint po, uint has_scale, uint sample, uint total) {
    __local float scratch[RED];
    const uint group = get_group_id(0), groups = get_num_groups(0), lid = get_local_id(0);
    float sx = 0.0f, s1 = 0.0f;
    for (uint i = group * RED + lid; i < total; i += groups * RED) {
        const uint n = i / sample, j = i % sample;
        const float g = LOAD(dy, AT(dyo, dys, n, j));
        // Without a scale the memory plan may already have reused x: it is not read.
        if (has_scale) sx += g * LOAD(x, AT(xo, xs, n, j));
        s1 += g;
    }
    sx = group_sum(sx, scratch);
    s1 = group_sum(s1, scratch);
    if (lid == 0) {
        partial[po + 2 * group] = sx;
        partial[po + 2 * group + 1] = s1;
    }
}

// Stage 2, one work-group: the scale's and the bias's gradients from the partial sums, in the
// parameters' order (scale first).
__kernel void scalar_affine_backward_final(__global const float *partial, uint po, uint groups,
                                           __global float *dp, uint dpo, uint has_scale, uint has_bias,
                                           uint accumulate) {
    __local float scratch[RED];
    const uint lid = get_local_id(0);
    float sx = 0.0f, s1 = 0.0f;
    for (uint k = lid; k < groups; k += RED) {
        sx += partial[po + 2 * k];
        s1 += partial[po + 2 * k + 1];
    }
    sx = group_sum(sx, scratch);
    s1 = group_sum(s1, scratch);
    if (lid == 0) {
        if (has_scale) STORE_GRAD(dp, dpo, sx, accumulate);
        if (has_bias) STORE_GRAD(dp, dpo + has_scale, s1, accumulate);
    }
}

// The parameter-free "option A" shortcut of the CIFAR ResNets (He et al. 2015, section 4.2):
// subsample by `stride` and pad channels with zeros, PAD before and the rest after, so that
// y[n, c, h, w] = x[n, c - PAD, h*stride, w*stride] for PAD <= c < PAD + C, else 0.
// One item per output row: a flat index split per element by / and % ran at 0.05 of a copy on
// PoCL. Stride 2 (every CIFAR ResNet's) takes the even lanes of vector loads.
__kernel void pad_shortcut_forward(__global const store_t *x, uint xo, uint xs, __global store_t *y, uint yo, uint ys,
                                   uint C, uint H, uint W, uint OC, uint OH, uint OW, uint stride, uint pad, uint N) {
    FOR_EACH_ITEM(item, N * OC * OH) {
        const uint oh = item % OH, oc = (item / OH) % OC, n = item / (OH * OC);
        __global store_t *dst = y + AT(yo, ys, n, (oc * OH + oh) * OW);
        uint ow = 0;
        if (oc < pad || oc >= pad + C) {
            for (; ow + 4 <= OW; ow += 4) STOREV(4, (float4)(0.0f), dst + ow);
            for (; ow < OW; ow++) STORE(dst, ow, 0.0f);
            continue;
        }
        const __global store_t *src = x + AT(xo, xs, n, ((oc - pad) * H + oh * stride) * W);
        if (stride == 2) {
            for (; ow + 4 <= OW && 2 * ow + 8 <= W; ow += 4) STOREV(4, LOADV(8, src + 2 * ow).even, dst + ow);
        }
        for (; ow < OW; ow++) STORE(dst, ow, LOAD(src, ow * stride));
    }
}

// Its gradient: each input element takes the output element it was copied to, or nothing. One
// item per input row.
__kernel void pad_shortcut_backward(__global const store_t *dy, uint dyo, uint dys, __global store_t *dx, uint dxo, uint dxs,
                                    uint C, uint H, uint W, uint OC, uint OH, uint OW, uint stride, uint pad, uint N,
                                    uint accumulate) {
    FOR_EACH_ITEM(item, N * C * H) {
        const uint ih = item % H, c = (item / H) % C, n = item / (H * C);
        __global store_t *dst = dx + AT(dxo, dxs, n, (c * H + ih) * W);
        // OH and OW are H and W over the stride, rounded up, so every row and column it lands on exists.
        const uint oh = ih / stride;
        const bool hit = oh * stride == ih;
        const __global store_t *src = dy + AT(dyo, dys, n, ((c + pad) * OH + oh) * OW);
        uint iw = 0;
        if (hit && stride == 2) {
            for (; iw + 8 <= W; iw += 8) {
                float8 g = shuffle2(LOADV(4, src + iw / 2), (float4)(0.0f), (uint8)(0, 4, 1, 4, 2, 4, 3, 4));
                if (accumulate) g += LOADV(8, dst + iw);
                STOREV(8, g, dst + iw);
            }
        }
        for (; iw < W; iw++) {
            const uint ow = iw / stride;
            STORE_GRAD_S(dst, iw, hit && ow * stride == iw ? LOAD(src, ow) : 0.0f, accumulate);
        }
    }
}
