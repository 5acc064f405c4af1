// Activations: ReLU, PReLU (one learnable slope per channel), dropout and sigmoid.
// Tensor arguments are (buffer, offset, batch stride); see Common.cl. `sample` is the element
// count of one sample (C*H*W) and `plane` is H*W. ReLU and dropout take runs (sample, tile) with
// vector loads (see Common.cl); the others one work item per element of all `total`.

__kernel void relu_forward(__global const float *x, uint xo, uint xs,
                           __global float *y, uint yo, uint ys, uint sample, uint batch, uint tiles) {
    const uint lane = get_local_id(0) % NL;
    FOR_EACH_RUN(item, batch * tiles) {
        uint q0, q1;
        const uint n = sample_tile(item, sample, tiles, &q0, &q1);
        __global const float *a = x + AT(xo, xs, n, q0);
        __global float *b = y + AT(yo, ys, n, q0);
        const uint full = (q1 - q0) / VEC;
        for (uint v = lane; v < full; v += NL) VSTORE(RELU_V(VLOAD(a + v * VEC)), b + v * VEC);
        for (uint q = full * VEC + lane; q < q1 - q0; q += NL) b[q] = RELU(a[q]);
    }
}

// Uses the output y (y > 0 exactly where x > 0), so ReLU can run in place.
__kernel void relu_backward(__global const float *y, uint yo, uint ys,
                            __global const float *dy, uint dyo, uint dys,
                            __global float *dx, uint dxo, uint dxs, uint sample, uint batch, uint tiles,
                            uint accumulate) {
    const uint lane = get_local_id(0) % NL;
    FOR_EACH_RUN(item, batch * tiles) {
        uint q0, q1;
        const uint n = sample_tile(item, sample, tiles, &q0, &q1);
        __global const float *out = y + AT(yo, ys, n, q0), *g = dy + AT(dyo, dys, n, q0);
        __global float *d = dx + AT(dxo, dxs, n, q0);
        const uint full = (q1 - q0) / VEC;
        for (uint v = lane; v < full; v += NL) {
            floatv t = select((floatv)(0.0f), VLOAD(g + v * VEC), VLOAD(out + v * VEC) > (floatv)(0.0f));
            if (accumulate) t += VLOAD(d + v * VEC);
            VSTORE(t, d + v * VEC);
        }
        for (uint q = full * VEC + lane; q < q1 - q0; q += NL) STORE_GRAD(d, q, out[q] > 0.0f ? g[q] : 0.0f, accumulate);
    }
}

// PReLU walks runs (a tile of one channel's plane of one sample) as channel scale does, with the
// run's slope loaded once. A NaN stays a NaN: it fails v > 0 and is multiplied by the slope.
__kernel void prelu_forward(__global const float *x, uint xo, uint xs, __global const float *slope, uint so,
                            __global float *y, uint yo, uint ys, uint batch, uint channels, uint plane, uint tiles) {
    const uint lane = get_local_id(0) % NL;
    FOR_EACH_RUN(item, batch * channels * tiles) {
        uint q0, q1;
        const uint row = plane_tile(item, plane, tiles, &q0, &q1), n = row / channels, c = row % channels;
        const float k = slope[so + c];
        __global const float *a = x + AT(xo, xs, n, c * plane + q0);
        __global float *b = y + AT(yo, ys, n, c * plane + q0);
        const uint full = (q1 - q0) / VEC;
        for (uint v = lane; v < full; v += NL) {
            const floatv t = VLOAD(a + v * VEC);
            VSTORE(select(t * k, t, t > 0.0f), b + v * VEC);
        }
        for (uint q = full * VEC + lane; q < q1 - q0; q += NL) b[q] = a[q] > 0.0f ? a[q] : k * a[q];
    }
}

// dx = dy where x > 0, slope * dy elsewhere.
__kernel void prelu_backward_input(__global const float *x, uint xo, uint xs, __global const float *slope, uint so,
                                   __global const float *dy, uint dyo, uint dys,
                                   __global float *dx, uint dxo, uint dxs,
                                   uint batch, uint channels, uint plane, uint tiles, uint accumulate) {
    const uint lane = get_local_id(0) % NL;
    FOR_EACH_RUN(item, batch * channels * tiles) {
        uint q0, q1;
        const uint row = plane_tile(item, plane, tiles, &q0, &q1), n = row / channels, c = row % channels;
        const float k = slope[so + c];
        const uint at = c * plane + q0;
        __global const float *a = x + AT(xo, xs, n, at), *g = dy + AT(dyo, dys, n, at);
        __global float *b = dx + AT(dxo, dxs, n, at);
        const uint full = (q1 - q0) / VEC;
        for (uint v = lane; v < full; v += NL) {
            const floatv d = VLOAD(g + v * VEC);
            floatv t = select(d * k, d, VLOAD(a + v * VEC) > 0.0f);
            if (accumulate) t += VLOAD(b + v * VEC);
            VSTORE(t, b + v * VEC);
        }
        for (uint q = full * VEC + lane; q < q1 - q0; q += NL) STORE_GRAD(b, q, a[q] > 0.0f ? g[q] : k * g[q], accumulate);
    }
}

// dslope[c] = sum over samples and pixels of dy * x where x <= 0: a run per channel, walked
// sample by sample with vector loads (NL lanes share it on a GPU). A NaN x is left out, as x <= 0
// is false for it; a NaN dy where x <= 0 makes the sum a NaN.
__kernel void prelu_backward_slope(__global const float *x, uint xo, uint xs,
                                   __global const float *dy, uint dyo, uint dys,
                                   __global float *dslope, uint dso, uint batch, uint channels, uint plane,
                                   uint accumulate) {
    __local float scratch[NL];
    const uint lane = get_local_id(0) % NL, full = plane / VEC;
    FOR_EACH_RUN(c, channels) {
        floatv acc = 0.0f;
        float tail = 0.0f;
        for (uint n = 0; n < batch; ++n) {
            __global const float *a = x + AT(xo, xs, n, c * plane), *g = dy + AT(dyo, dys, n, c * plane);
            for (uint v = lane; v < full; v += NL) {
                const floatv t = VLOAD(a + v * VEC);
                acc += select((floatv)(0.0f), VLOAD(g + v * VEC) * t, t <= 0.0f);
            }
            for (uint q = full * VEC + lane; q < plane; q += NL) tail += a[q] <= 0.0f ? g[q] * a[q] : 0.0f;
        }
        const float sum = lanes_sum(hsum(acc) + tail, scratch);
        if (lane == 0) STORE_GRAD(dslope, dso + c, sum, accumulate);
    }
}

// A counter-based generator: the keep decision for element i depends only on (seed, i), so the
// backward pass regenerates the mask instead of storing it.
inline float dropout_uniform(uint seed, uint i) {
    uint h = i * 0x9E3779B9u ^ seed;
    h ^= h >> 16; h *= 0x7FEB352Du;
    h ^= h >> 15; h *= 0x846CA68Bu;
    h ^= h >> 16;
    return (float)(h >> 8) * (1.0f / 16777216.0f);
}

// The same hash for VEC consecutive elements from i.
inline floatv dropout_uniform_v(uint seed, uint i) {
    uintv h = ((uintv)(i) + IOTA) * 0x9E3779B9u ^ seed;
    h ^= h >> 16; h *= 0x7FEB352Du;
    h ^= h >> 15; h *= 0x846CA68Bu;
    h ^= h >> 16;
    return CAT(convert_float, VEC)(h >> 8) * (1.0f / 16777216.0f);
}

// Training-mode dropout: each element is zeroed with probability p, the rest scaled by 1/(1-p);
// dx = dy times the same mask. The element index is the dense NCHW index, so the mask does not
// depend on the layout. Work item (sample, tile), as copy_view.
__kernel void dropout_apply(__global const float *x, uint xo, uint xs,
                            __global float *y, uint yo, uint ys, uint sample, uint batch, uint tiles,
                            float p, uint seed, uint accumulate) {
    const uint lane = get_local_id(0) % NL;
    const float scale = 1.0f / (1.0f - p);
    FOR_EACH_RUN(item, batch * tiles) {
        uint q0, q1;
        const uint n = sample_tile(item, sample, tiles, &q0, &q1);
        __global const float *a = x + AT(xo, xs, n, q0);
        __global float *b = y + AT(yo, ys, n, q0);
        const uint first = n * sample + q0, full = (q1 - q0) / VEC;
        for (uint v = lane; v < full; v += NL) {
            const floatv keep = select((floatv)(0.0f), (floatv)(scale),
                                       dropout_uniform_v(seed, first + v * VEC) >= (floatv)(p));
            floatv t = VLOAD(a + v * VEC) * keep;
            if (accumulate) t += VLOAD(b + v * VEC);
            VSTORE(t, b + v * VEC);
        }
        for (uint q = full * VEC + lane; q < q1 - q0; q += NL) {
            const float keep = dropout_uniform(seed, first + q) >= p ? scale : 0.0f;
            STORE_GRAD(b, q, a[q] * keep, accumulate);
        }
    }
}

__kernel void sigmoid_forward(__global const float *x, uint xo, uint xs,
                              __global float *y, uint yo, uint ys, uint sample, uint total) {
    const uint i = get_global_id(0);
    if (i >= total) return;
    const uint n = i / sample, j = i % sample;
    y[AT(yo, ys, n, j)] = 1.0f / (1.0f + exp(-x[AT(xo, xs, n, j)]));
}

// From the output: dsigmoid/dx = y (1 - y).
__kernel void sigmoid_backward(__global const float *y, uint yo, uint ys,
                               __global const float *dy, uint dyo, uint dys,
                               __global float *dx, uint dxo, uint dxs, uint sample, uint total, uint accumulate) {
    const uint i = get_global_id(0);
    if (i >= total) return;
    const uint n = i / sample, j = i % sample;
    const float s = y[AT(yo, ys, n, j)];
    STORE_GRAD(dx, AT(dxo, dxs, n, j), dy[AT(dyo, dys, n, j)] * s * (1.0f - s), accumulate);
}
