// Filling a range of a buffer: tests poison outputs with NaN through it. fill_f32 fills floats;
// fill_u16 fills 16-bit elements (half or bfloat16) with a bit pattern the host encodes. (Copies,
// the yardstick of every memory-bound kernel, use clEnqueueCopyBuffer.)

// dst[offset + i] = value for i in [0, n).
__kernel void fill_f32(__global float *dst, const unsigned int offset, const unsigned int n,
                       const float value) {
    const size_t i = get_global_id(0);
    if (i < n) dst[offset + i] = value;
}

// The same for 16-bit elements: `value` is the bits of a half or a bfloat16.
__kernel void fill_u16(__global ushort *dst, const unsigned int offset, const unsigned int n,
                       const ushort value) {
    const size_t i = get_global_id(0);
    if (i < n) dst[offset + i] = value;
}
