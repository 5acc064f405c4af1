// Small utility kernels that every part of CLNet uses: filling a range of a buffer (tests poison
// outputs with NaN through it) and a plain copy whose bandwidth is the yardstick for every
// memory-bound kernel.

// dst[offset + i] = value for i in [0, n).
__kernel void fill_f32(__global float *dst, const unsigned int offset, const unsigned int n,
                       const float value) {
    const size_t i = get_global_id(0);
    if (i < n) dst[offset + i] = value;
}

// dst[i] = src[i] for i in [0, n), four floats per work item where it can. The tail of fewer than
// four floats is copied by the last work item, so any n works.
__kernel void copy_f32(__global const float *src, __global float *dst, const unsigned int n) {
    const size_t i = get_global_id(0);
    const unsigned int n4 = n / 4;
    if (i < n4) {
        vstore4(vload4(i, src), i, dst);
    }
    if (i == n4 - 1 || (n4 == 0 && i == 0)) {
        for (unsigned int j = n4 * 4; j < n; ++j) dst[j] = src[j];
    }
}
