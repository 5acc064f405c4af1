// Channel concatenation and slicing. A DenseNet block preallocates its concatenated buffer and each
// producer writes straight into its channel slice (a tensor view with a larger batch stride),
// so the usual path copies nothing. copy_view is the explicit form: it copies a tensor into a
// view of the same shape (forward: into a slice of the output; backward: a slice of the
// gradient out to an input's gradient); a channel slice uses it too, with fill_view for the
// rest of its input's gradient. Tensor arguments: (buffer, offset, batch stride), see Common.cl.

// Work item (sample, tile): a contiguous slice of one sample, VEC floats at a time.
__kernel void copy_view(__global const float *src, uint so, uint ss, __global float *dst, uint dso, uint dss,
                        uint sample, uint batch, uint tiles, uint accumulate) {
    const uint lane = get_local_id(0) % NL;
    FOR_EACH_RUN(item, batch * tiles) {
        uint q0, q1;
        const uint n = sample_tile(item, sample, tiles, &q0, &q1);
        __global const float *a = src + AT(so, ss, n, q0);
        __global float *b = dst + AT(dso, dss, n, q0);
        const uint full = (q1 - q0) / VEC;
        for (uint v = lane; v < full; v += NL) {
            floatv t = VLOAD(a + v * VEC);
            if (accumulate) t += VLOAD(b + v * VEC);
            VSTORE(t, b + v * VEC);
        }
        for (uint q = full * VEC + lane; q < q1 - q0; q += NL) STORE_GRAD(b, q, a[q], accumulate);
    }
}

// Fills a tensor view with `value`: the part of a channel slice's input gradient that the slice
// does not reach (see ChannelSlice in Ops/Concat.swift).
__kernel void fill_view(__global float *dst, uint dso, uint dss, uint sample, uint batch, uint tiles, float value) {
    const uint lane = get_local_id(0) % NL;
    FOR_EACH_RUN(item, batch * tiles) {
        uint q0, q1;
        const uint n = sample_tile(item, sample, tiles, &q0, &q1);
        __global float *b = dst + AT(dso, dss, n, q0);
        const uint full = (q1 - q0) / VEC;
        const floatv v = (floatv)(value);
        for (uint i = lane; i < full; i += NL) VSTORE(v, b + i * VEC);
        for (uint q = full * VEC + lane; q < q1 - q0; q += NL) b[q] = value;
    }
}
