// Activations: ReLU, PReLU (one learnable slope per channel), dropout and sigmoid.
// Tensor arguments are (buffer, offset, batch stride); see Common.cl. `sample` is the element
// count of one sample (C*H*W) and `plane` is H*W. ReLU and dropout take runs (sample, tile) with
// vector loads (see Common.cl); the others one work item per element of all `total`.

__kernel void relu_forward(__global const store_t *x, uint xo, uint xs,
                           __global store_t *y, uint yo, uint ys, uint sample, uint batch, uint tiles) {
    const uint lane = get_local_id(0) % NL;
    FOR_EACH_RUN(item, batch * tiles) {
        uint q0, q1;
        const uint n = sample_tile(item, sample, tiles, &q0, &q1);
        __global const store_t *a = x + AT(xo, xs, n, q0);
        __global store_t *b = y + AT(yo, ys, n, q0);
        const uint full = (q1 - q0) / VEC;
        for (uint v = lane; v < full; v += NL) SSTORE(RELU_V(SLOAD(a + v * VEC)), b + v * VEC);
        for (uint q = full * VEC + lane; q < q1 - q0; q += NL) STORE(b, q, RELU(LOAD(a, q)));
    }
}

// Uses the output y (y > 0 exactly where x > 0), so ReLU can run in place.
__kernel void relu_backward(__global const store_t *y, uint yo, uint ys,
                            __global const store_t *dy, uint dyo, uint dys,
                            __global store_t *dx, uint dxo, uint dxs, uint sample, uint batch, uint tiles,
                            uint accumulate) {
    const uint lane = get_local_id(0) % NL;
    FOR_EACH_RUN(item, batch * tiles) {
        uint q0, q1;
        const uint n = sample_tile(item, sample, tiles, &q0, &q1);
        __global const store_t *out = y + AT(yo, ys, n, q0), *g = dy + AT(dyo, dys, n, q0);
        __global store_t *d = dx + AT(dxo, dxs, n, q0);
        const uint full = (q1 - q0) / VEC;
        for (uint v = lane; v < full; v += NL) {
            floatv t = select((floatv)(0.0f), SLOAD(g + v * VEC), SLOAD(out + v * VEC) > (floatv)(0.0f));
            if (accumulate) t += SLOAD(d + v * VEC);
            SSTORE(t, d + v * VEC);
        }
        for (uint q = full * VEC + lane; q < q1 - q0; q += NL) STORE_GRAD_S(d, q, LOAD(out, q) > 0.0f ? LOAD(g, q) : 0.0f, accumulate);
    }
}

// PReLU walks runs (a tile of one channel's plane of one sample) as channel scale does, with the
// run's slope loaded once. A NaN stays a NaN: it fails v > 0 and is multiplied by the slope.
__kernel void prelu_forward(__global const store_t *x, uint xo, uint xs, __global const float *slope, uint so,
                            __global store_t *y, uint yo, uint ys, uint batch, uint channels, uint plane, uint tiles) {
    const uint lane = get_local_id(0) % NL;
    FOR_EACH_RUN(item, batch * channels * tiles) {
        uint q0, q1;
        const uint row = plane_tile(item, plane, tiles, &q0, &q1), n = row / channels, c = row % channels;
        const float k = slope[so + c];
        __global const store_t *a = x + AT(xo, xs, n, c * plane + q0);
        __global store_t *b = y + AT(yo, ys, n, c * plane + q0);
        const uint full = (q1 - q0) / VEC;
        for (uint v = lane; v < full; v += NL) {
            const floatv t = SLOAD(a + v * VEC);
            SSTORE(select(t * k, t, t > 0.0f), b + v * VEC);
        }
        for (uint q = full * VEC + lane; q < q1 - q0; q += NL) STORE(b, q, LOAD(a, q) > 0.0f ? LOAD(a, q) : k * LOAD(a, q));
    }
}

// dx = dy where x > 0, slope * dy elsewhere.
__kernel void prelu_backward_input(__global const store_t *x, uint xo, uint xs, __global const float *slope, uint so,
                                   __global const store_t *dy, uint dyo, uint dys,
                                   __global store_t *dx, uint dxo, uint dxs,
                                   uint batch, uint channels, uint plane, uint tiles, uint accumulate) {
    const uint lane = get_local_id(0) % NL;
    FOR_EACH_RUN(item, batch * channels * tiles) {
        uint q0, q1;
        const uint row = plane_tile(item, plane, tiles, &q0, &q1), n = row / channels, c = row % channels;
        const float k = slope[so + c];
        const uint at = c * plane + q0;
        __global const store_t *a = x + AT(xo, xs, n, at), *g = dy + AT(dyo, dys, n, at);
        __global store_t *b = dx + AT(dxo, dxs, n, at);
        const uint full = (q1 - q0) / VEC;
        for (uint v = lane; v < full; v += NL) {
            const floatv d = SLOAD(g + v * VEC);
            floatv t = select(d * k, d, SLOAD(a + v * VEC) > 0.0f);
            if (accumulate) t += SLOAD(b + v * VEC);
            SSTORE(t, b + v * VEC);
        }
        for (uint q = full * VEC + lane; q < q1 - q0; q += NL) STORE_GRAD_S(b, q, LOAD(a, q) > 0.0f ? LOAD(g, q) : k * LOAD(g, q), accumulate);
    }
}

// dslope[c] = sum over samples and pixels of dy * x where x <= 0: a run per channel, walked
// sample by sample with vector loads (NL lanes share it on a GPU). A NaN x is left out, as x <= 0
// is false for it; a NaN dy where x <= 0 makes the sum a NaN.
__kernel void prelu_backward_slope(__global const store_t *x, uint xo, uint xs,
                                   __global const store_t *dy, uint dyo, uint dys,
                                   __global float *dslope, uint dso, uint batch, uint channels, uint plane,
                                   uint accumulate) {
    __local float scratch[NL];
    const uint lane = get_local_id(0) % NL, full = plane / VEC;
    FOR_EACH_RUN(c, channels) {
        floatv acc = 0.0f;
        float tail = 0.0f;
        for (uint n = 0; n < batch; ++n) {
            __global const store_t *a = x + AT(xo, xs, n, c * plane), *g = dy + AT(dyo, dys, n, c * plane);
            for (uint v = lane; v < full; v += NL) {
                const floatv t = SLOAD(a + v * VEC);
                acc += select((floatv)(0.0f), SLOAD(g + v * VEC) * t, t <= 0.0f);
            }
            for (uint q = full * VEC + lane; q < plane; q += NL) tail += LOAD(a, q) <= 0.0f ? LOAD(g, q) * LOAD(a, q) : 0.0f;
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
__kernel void dropout_apply(__global const store_t *x, uint xo, uint xs,
                            __global store_t *y, uint yo, uint ys, uint sample, uint batch, uint tiles,
                            float p, uint seed, uint accumulate) {
    const uint lane = get_local_id(0) % NL;
    const float scale = 1.0f / (1.0f - p);
    FOR_EACH_RUN(item, batch * tiles) {
        uint q0, q1;
        const uint n = sample_tile(item, sample, tiles, &q0, &q1);
        __global const store_t *a = x + AT(xo, xs, n, q0);
        __global store_t *b = y + AT(yo, ys, n, q0);
        const uint first = n * sample + q0, full = (q1 - q0) / VEC;
        for (uint v = lane; v < full; v += NL) {
            const floatv keep = select((floatv)(0.0f), (floatv)(scale),
                                       dropout_uniform_v(seed, first + v * VEC) >= (floatv)(p));
            floatv t = SLOAD(a + v * VEC) * keep;
            if (accumulate) t += SLOAD(b + v * VEC);
            SSTORE(t, b + v * VEC);
        }
        for (uint q = full * VEC + lane; q < q1 - q0; q += NL) {
            const float keep = dropout_uniform(seed, first + q) >= p ? scale : 0.0f;
            STORE_GRAD_S(b, q, LOAD(a, q) * keep, accumulate);
        }
    }
}

__kernel void sigmoid_forward(__global const store_t *x, uint xo, uint xs,
                              __global store_t *y, uint yo, uint ys, uint sample, uint total) {
    const uint i = get_global_id(0);
    if (i >= total) return;
    const uint n = i / sample, j = i % sample;
    STORE(y, AT(yo, ys, n, j), 1.0f / (1.0f + exp(-LOAD(x, AT(xo, xs, n, j)))));
}

// From the output: dsigmoid/dx = y (1 - y).
__kernel void sigmoid_backward(__global const store_t *y, uint yo, uint ys,
                               __global const store_t *dy, uint dyo, uint dys,
                               __global store_t *dx, uint dxo, uint dxs, uint sample, uint total, uint accumulate) {
    const uint i = get_global_id(0);
    if (i >= total) return;
    const uint n = i / sample, j = i % sample;
    const float s = LOAD(y, AT(yo, ys, n, j));
    STORE_GRAD_S(dx, AT(dxo, dxs, n, j), LOAD(dy, AT(dyo, dys, n, j)) * s * (1.0f - s), accumulate);
}
