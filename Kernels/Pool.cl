// Max pooling, average pooling and global average pooling over NCHW, forward and backward.
// Tensor arguments are (buffer, offset, batch stride); see Common.cl. Geometry: input H x W,
// output OH x OW, window KH x KW, stride SH, SW, zero padding PH, PW (no dilation, no ceil mode).
// Backward passes gather: each input element sums the outputs whose windows cover it, so no
// two work items write the same element and the result does not depend on scheduling.

#define GEOMETRY uint channels, uint H, uint W, uint OH, uint OW, uint KH, uint KW, \
                 uint SH, uint SW, uint PH, uint PW

// The range of output rows (or columns) whose windows cover input row i.
inline void covering(uint i, uint k, uint s, uint p, uint out, uint *lo, uint *hi) {
    const int top = (int)i + (int)p - (int)k + 1;  // first window start that still covers i
    *lo = top <= 0 ? 0 : (uint)((top + (int)s - 1) / (int)s);
    *hi = min((i + p) / s + 1, out);               // one past the last
}

// y = the window's maximum; idx = its position h*W + w in the input plane (the first one on ties,
// a NaN wins, as in PyTorch). Padding never wins.
__kernel void maxpool_forward(__global const float *x, uint xo, uint xs, __global float *y, uint yo, uint ys,
                              __global uint *idx, GEOMETRY, uint total) {
    const uint i = get_global_id(0);
    if (i >= total) return;
    const uint ow = i % OW, oh = (i / OW) % OH, c = (i / (OW * OH)) % channels, n = i / (OW * OH * channels);
    const int h0 = (int)(oh * SH) - (int)PH, w0 = (int)(ow * SW) - (int)PW;
    float best = -INFINITY;
    uint arg = 0;
    bool found = false;
    for (uint kh = 0; kh < KH; ++kh) {
        const int h = h0 + (int)kh;
        if (h < 0 || h >= (int)H) continue;
        for (uint kw = 0; kw < KW; ++kw) {
            const int w = w0 + (int)kw;
            if (w < 0 || w >= (int)W) continue;
            const float v = x[AT(xo, xs, n, (c * H + h) * W + w)];
            if (!found || v > best || isnan(v)) {
                best = v; arg = (uint)(h * (int)W + w); found = true;
                if (isnan(v)) { kh = KH; break; }
            }
        }
    }
    y[AT(yo, ys, n, (c * OH + oh) * OW + ow)] = best;
    idx[i] = arg;
}

__kernel void maxpool_backward(__global const float *dy, uint dyo, uint dys, __global const uint *idx,
                               __global float *dx, uint dxo, uint dxs, GEOMETRY, uint total, uint accumulate) {
    const uint i = get_global_id(0);
    if (i >= total) return;
    const uint iw = i % W, ih = (i / W) % H, c = (i / (W * H)) % channels, n = i / (W * H * channels);
    uint oh0, oh1, ow0, ow1;
    covering(ih, KH, SH, PH, OH, &oh0, &oh1);
    covering(iw, KW, SW, PW, OW, &ow0, &ow1);
    const uint me = ih * W + iw;
    float sum = 0.0f;
    for (uint oh = oh0; oh < oh1; ++oh)
        for (uint ow = ow0; ow < ow1; ++ow) {
            const uint o = ((n * channels + c) * OH + oh) * OW + ow;
            if (idx[o] == me) sum += dy[AT(dyo, dys, n, (c * OH + oh) * OW + ow)];
        }
    STORE_GRAD(dx, AT(dxo, dxs, n, (c * H + ih) * W + iw), sum, accumulate);
}

// PyTorch's divisor with count_include_pad: the window clipped to the padded input.
inline float avg_divisor(uint oh, uint ow, uint H, uint W, uint KH, uint KW, uint SH, uint SW, uint PH, uint PW) {
    const int hs = (int)(oh * SH) - (int)PH, ws = (int)(ow * SW) - (int)PW;
    const int he = min(hs + (int)KH, (int)(H + PH)), we = min(ws + (int)KW, (int)(W + PW));
    return (float)((he - hs) * (we - ws));
}

__kernel void avgpool_forward(__global const float *x, uint xo, uint xs, __global float *y, uint yo, uint ys,
                              GEOMETRY, uint total) {
    const uint i = get_global_id(0);
    if (i >= total) return;
    const uint ow = i % OW, oh = (i / OW) % OH, c = (i / (OW * OH)) % channels, n = i / (OW * OH * channels);
    const int h0 = (int)(oh * SH) - (int)PH, w0 = (int)(ow * SW) - (int)PW;
    float sum = 0.0f;
    for (uint kh = 0; kh < KH; ++kh) {
        const int h = h0 + (int)kh;
        if (h < 0 || h >= (int)H) continue;
        for (uint kw = 0; kw < KW; ++kw) {
            const int w = w0 + (int)kw;
            if (w >= 0 && w < (int)W) sum += x[AT(xo, xs, n, (c * H + h) * W + w)];
        }
    }
    y[AT(yo, ys, n, (c * OH + oh) * OW + ow)] = sum / avg_divisor(oh, ow, H, W, KH, KW, SH, SW, PH, PW);
}

__kernel void avgpool_backward(__global const float *dy, uint dyo, uint dys,
                               __global float *dx, uint dxo, uint dxs, GEOMETRY, uint total, uint accumulate) {
    const uint i = get_global_id(0);
    if (i >= total) return;
    const uint iw = i % W, ih = (i / W) % H, c = (i / (W * H)) % channels, n = i / (W * H * channels);
    uint oh0, oh1, ow0, ow1;
    covering(ih, KH, SH, PH, OH, &oh0, &oh1);
    covering(iw, KW, SW, PW, OW, &ow0, &ow1);
    float sum = 0.0f;
    for (uint oh = oh0; oh < oh1; ++oh)
        for (uint ow = ow0; ow < ow1; ++ow)
            sum += dy[AT(dyo, dys, n, (c * OH + oh) * OW + ow)] / avg_divisor(oh, ow, H, W, KH, KW, SH, SW, PH, PW);
    STORE_GRAD(dx, AT(dxo, dxs, n, (c * H + ih) * W + iw), sum, accumulate);
}

// One work-group per (sample, channel): the plane's mean, into y[n, c].
__kernel void global_avgpool_forward(__global const float *x, uint xo, uint xs, __global float *y, uint yo, uint ys,
                                     uint channels, uint plane) {
    __local float scratch[RED];
    const uint nc = get_group_id(0), lid = get_local_id(0), n = nc / channels, c = nc % channels;
    float sum = 0.0f;
    for (uint k = lid; k < plane; k += RED) sum += x[AT(xo, xs, n, c * plane + k)];
    sum = group_sum(sum, scratch);
    if (lid == 0) y[AT(yo, ys, n, c)] = sum / (float)plane;
}

__kernel void global_avgpool_backward(__global const float *dy, uint dyo, uint dys,
                                      __global float *dx, uint dxo, uint dxs, uint channels, uint plane,
                                      uint total, uint accumulate) {
    const uint i = get_global_id(0);
    if (i >= total) return;
    const uint sample = channels * plane, n = i / sample, j = i % sample;
    STORE_GRAD(dx, AT(dxo, dxs, n, j), dy[AT(dyo, dys, n, j / plane)] / (float)plane, accumulate);
}
