// Channel concatenation. A DenseNet block preallocates its concatenated buffer and each
// producer writes straight into its channel slice (a tensor view with a larger batch stride),
// so the usual path copies nothing. This kernel is the explicit form: it copies a tensor into a
// view of the same shape (forward: into a slice of the output; backward: a slice of the
// gradient out to an input's gradient). Tensor arguments: (buffer, offset, batch stride), see Common.cl.

__kernel void copy_view(__global const float *src, uint so, uint ss, __global float *dst, uint dso, uint dss,
                        uint sample, uint total, uint accumulate) {
    const uint i = get_global_id(0);
    if (i >= total) return;
    const uint n = i / sample, j = i % sample;
    STORE_GRAD(dst, AT(dso, dss, n, j), src[AT(so, ss, n, j)], accumulate);
}
