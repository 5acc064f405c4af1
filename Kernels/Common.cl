// Prepended to every kernel file of CLNet when it is built (see KernelSource.text), so that the
// families share one way of addressing tensors and one work-group reduction.
//
// A tensor argument is passed as three values: the buffer, the offset of its first element and
// the distance between samples (its batch stride), all in floats. Within a sample the layout is
// dense NCHW. AT(off, bs, sample, i) is the index of element i of `sample`.
#define AT(off, bs, sample, i) ((off) + (sample) * (bs) + (i))

// RED, the work-group size of every reduction kernel, is a power of two set by the host with -D.
#ifndef RED
#define RED 256
#endif

// Sum of v over the work-group; every work item receives it. The last barrier keeps a fast work
// item from overwriting scratch before every other one has read the result.
inline float group_sum(float v, __local float *scratch) {
    const uint lid = get_local_id(0);
    scratch[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = RED / 2; s > 0; s >>= 1) {
        if (lid < s) scratch[lid] += scratch[lid + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float r = scratch[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return r;
}

// ReLU that keeps a NaN a NaN, as PyTorch's does (fmax would turn it into 0 and hide it).
#define RELU(v) ((v) < 0.0f ? 0.0f : (v))

// Gradient outputs either overwrite or add (a tensor used twice receives the sum). Selecting
// rather than multiplying by 0 keeps a NaN-poisoned destination from leaking into the result.
#define STORE_GRAD(dst, index, value, accumulate) \
    do { const float v_ = (value); dst[index] = (accumulate) ? dst[index] + v_ : v_; } while (0)
