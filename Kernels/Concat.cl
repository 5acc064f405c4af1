// Channel concatenation and slicing. A DenseNet block preallocates its concatenated buffer and each
// producer writes straight into its channel slice (a tensor view with a larger batch stride),
// so the usual path copies nothing. copy_view is the explicit form: it copies a tensor into a
// view of the same shape (forward: into a slice of the output; backward: a slice of the
// gradient out to an input's gradient); a channel slice uses it too, with fill_view for the
// rest of its input's gradient. Tensor arguments: (buffer, offset, batch stride), see Common.cl.

// copy_view also converts between storages, so that the host can copy a float tensor into a
// 16-bit one and back: with -D SRC_FLOAT its source is plain float, with -D DST_FLOAT its
// destination; otherwise both are store_t.
#ifdef SRC_FLOAT
typedef float src_t;
#define LOAD_SRC(p, i) ((p)[i])
#define SLOAD_SRC(p) VLOAD(p)
#else
typedef store_t src_t;
#define LOAD_SRC(p, i) LOAD(p, i)
#define SLOAD_SRC(p) SLOAD(p)
#endif
#ifdef DST_FLOAT
typedef float dst_t;
#define LOAD_DST(p, i) ((p)[i])
#define STORE_DST(p, i, v) ((p)[i] = (v))
#define SLOAD_DST(p) VLOAD(p)
#define SSTORE_DST(v, p) VSTORE(v, p)
#else
typedef store_t dst_t;
#define LOAD_DST(p, i) LOAD(p, i)
#define STORE_DST(p, i, v) STORE(p, i, v)
#define SLOAD_DST(p) SLOAD(p)
#define SSTORE_DST(v, p) SSTORE(v, p)
#endif
#define STORE_GRAD_DST(dst, index, value, accumulate) \
    do { const float v_ = (value); STORE_DST(dst, index, (accumulate) ? LOAD_DST(dst, index) + v_ : v_); } while (0)

// Work item (sample, tile): a contiguous slice of one sample, VEC elements at a time.
__kernel void copy_view(__global const src_t *src, uint so, uint ss, __global dst_t *dst, uint dso, uint dss,
                        uint sample, uint batch, uint tiles, uint accumulate) {
    const uint lane = get_local_id(0) % NL;
    FOR_EACH_RUN(item, batch * tiles) {
        uint q0, q1;
        const uint n = sample_tile(item, sample, tiles, &q0, &q1);
        __global const src_t *a = src + AT(so, ss, n, q0);
        __global dst_t *b = dst + AT(dso, dss, n, q0);
        const uint full = (q1 - q0) / VEC;
        for (uint v = lane; v < full; v += NL) {
            floatv t = SLOAD_SRC(a + v * VEC);
            if (accumulate) t += SLOAD_DST(b + v * VEC);
            SSTORE_DST(t, b + v * VEC);
        }
        for (uint q = full * VEC + lane; q < q1 - q0; q += NL) STORE_GRAD_DST(b, q, LOAD_SRC(a, q), accumulate);
    }
}

// Fills a tensor view with `value`: the part of a channel slice's input gradient that the slice
// does not reach (see ChannelSlice in Ops/Concat.swift).
__kernel void fill_view(__global store_t *dst, uint dso, uint dss, uint sample, uint batch, uint tiles, float value) {
    const uint lane = get_local_id(0) % NL;
    FOR_EACH_RUN(item, batch * tiles) {
        uint q0, q1;
        const uint n = sample_tile(item, sample, tiles, &q0, &q1);
        __global store_t *b = dst + AT(dso, dss, n, q0);
        const uint full = (q1 - q0) / VEC;
        const floatv v = (floatv)(value);
        for (uint i = lane; i < full; i += NL) SSTORE(v, b + i * VEC);
        for (uint q = full * VEC + lane; q < q1 - q0; q += NL) STORE(b, q, value);
    }
}
