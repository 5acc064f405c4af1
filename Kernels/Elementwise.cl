// Residual additions and channel-wise scaling. Tensor arguments are (buffer, offset, batch
// stride); see Common.cl. `sample` is C*H*W, `plane` is H*W.

// y = a + b, and with RELU set, y = max(a + b, 0): the fused form of a residual block's end.
// y may be a or b (in place).
__kernel void add_forward(__global const float *a, uint ao, uint as,
                          __global const float *b, uint bo, uint bs,
                          __global float *y, uint yo, uint ys, uint sample, uint total, uint relu) {
    const uint i = get_global_id(0);
    if (i >= total) return;
    const uint n = i / sample, j = i % sample;
    const float v = a[AT(ao, as, n, j)] + b[AT(bo, bs, n, j)];
    y[AT(yo, ys, n, j)] = relu ? RELU(v) : v;
}

// Stochastic depth: y = x + scale[n] * branch, scale being the per-sample 0/1 keep mask in
// training and the survival probability at inference.
__kernel void scaled_add_forward(__global const float *x, uint xo, uint xs,
                                 __global const float *branch, uint bo, uint bs, __global const float *scale, uint so,
                                 __global float *y, uint yo, uint ys, uint sample, uint total, uint relu) {
    const uint i = get_global_id(0);
    if (i >= total) return;
    const uint n = i / sample, j = i % sample;
    const float v = x[AT(xo, xs, n, j)] + scale[so + n] * branch[AT(bo, bs, n, j)];
    y[AT(yo, ys, n, j)] = relu ? RELU(v) : v;
}

// Gradient of an addition with respect to one addend, dx = factor * dy where factor is scale[n]
// when scale is given (USE_SCALE) and 1 otherwise; with RELU, dy is first masked by y > 0.
__kernel void add_backward(__global const float *y, uint yo, uint ys,
                           __global const float *dy, uint dyo, uint dys, __global const float *scale, uint so,
                           __global float *dx, uint dxo, uint dxs, uint sample, uint total,
                           uint relu, uint use_scale, uint accumulate) {
    const uint i = get_global_id(0);
    if (i >= total) return;
    const uint n = i / sample, j = i % sample;
    float g = dy[AT(dyo, dys, n, j)];
    if (relu && y[AT(yo, ys, n, j)] <= 0.0f) g = 0.0f;
    if (use_scale) g *= scale[so + n];
    STORE_GRAD(dx, AT(dxo, dxs, n, j), g, accumulate);
}

// y[n, c, :] = x[n, c, :] * s[n, c]: squeeze-and-excitation's rescaling.
__kernel void channel_scale_forward(__global const float *x, uint xo, uint xs, __global const float *s, uint so,
                                    __global float *y, uint yo, uint ys,
                                    uint channels, uint plane, uint total) {
    const uint i = get_global_id(0);
    if (i >= total) return;
    const uint sample = channels * plane, n = i / sample, j = i % sample;
    y[AT(yo, ys, n, j)] = x[AT(xo, xs, n, j)] * s[so + n * channels + j / plane];
}

__kernel void channel_scale_backward_input(__global const float *dy, uint dyo, uint dys, __global const float *s, uint so,
                                           __global float *dx, uint dxo, uint dxs,
                                           uint channels, uint plane, uint total, uint accumulate) {
    const uint i = get_global_id(0);
    if (i >= total) return;
    const uint sample = channels * plane, n = i / sample, j = i % sample;
    STORE_GRAD(dx, AT(dxo, dxs, n, j), dy[AT(dyo, dys, n, j)] * s[so + n * channels + j / plane], accumulate);
}

// One work-group per (sample, channel): ds[n, c] = sum over the plane of dy * x.
__kernel void channel_scale_backward_scale(__global const float *x, uint xo, uint xs,
                                           __global const float *dy, uint dyo, uint dys,
                                           __global float *ds, uint dso, uint channels, uint plane, uint accumulate) {
    __local float scratch[RED];
    const uint nc = get_group_id(0), lid = get_local_id(0);
    const uint n = nc / channels, c = nc % channels;
    float sum = 0.0f;
    for (uint k = lid; k < plane; k += RED) {
        const uint j = c * plane + k;
        sum += x[AT(xo, xs, n, j)] * dy[AT(dyo, dys, n, j)];
    }
    sum = group_sum(sum, scratch);
    if (lid == 0) STORE_GRAD(ds, dso + nc, sum, accumulate);
}

// The parameter-free "option A" shortcut of the CIFAR ResNets (He et al. 2015, section 4.2):
// subsample by `stride` and pad channels with zeros, PAD before and the rest after, so that
// y[n, c, h, w] = x[n, c - PAD, h*stride, w*stride] for PAD <= c < PAD + C, else 0.
__kernel void pad_shortcut_forward(__global const float *x, uint xo, uint xs, __global float *y, uint yo, uint ys,
                                   uint C, uint H, uint W, uint OC, uint OH, uint OW, uint stride, uint pad, uint total) {
    const uint i = get_global_id(0);
    if (i >= total) return;
    const uint ow = i % OW, oh = (i / OW) % OH, oc = (i / (OW * OH)) % OC, n = i / (OW * OH * OC);
    float v = 0.0f;
    if (oc >= pad && oc < pad + C) v = x[AT(xo, xs, n, ((oc - pad) * H + oh * stride) * W + ow * stride)];
    y[AT(yo, ys, n, (oc * OH + oh) * OW + ow)] = v;
}

// Its gradient: each input element takes the output element it was copied to, or nothing.
__kernel void pad_shortcut_backward(__global const float *dy, uint dyo, uint dys, __global float *dx, uint dxo, uint dxs,
                                    uint C, uint H, uint W, uint OC, uint OH, uint OW, uint stride, uint pad, uint total,
                                    uint accumulate) {
    const uint i = get_global_id(0);
    if (i >= total) return;
    const uint iw = i % W, ih = (i / W) % H, c = (i / (W * H)) % C, n = i / (W * H * C);
    float g = 0.0f;
    if (ih % stride == 0 && iw % stride == 0 && ih / stride < OH && iw / stride < OW)
        g = dy[AT(dyo, dys, n, ((c + pad) * OH + ih / stride) * OW + iw / stride)];
    STORE_GRAD(dx, AT(dxo, dxs, n, (c * H + ih) * W + iw), g, accumulate);
}
