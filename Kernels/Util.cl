// Filling a range of a buffer: tests poison outputs with NaN through it. (Copies, the yardstick
// of every memory-bound kernel, use clEnqueueCopyBuffer.)

// dst[offset + i] = value for i in [0, n).
__kernel void fill_f32(__global float *dst, const unsigned int offset, const unsigned int n,
                       const float value) {
    const size_t i = get_global_id(0);
    if (i < n) dst[offset + i] = value;
}
