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

// Sum of v over a work-group of `size` (a power of two) work items; every one receives it. The
// last barrier keeps a fast work item from overwriting scratch before every other one has read
// the result.
inline float local_sum(float v, __local float *scratch, uint size) {
    const uint lid = get_local_id(0);
    scratch[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = size / 2; s > 0; s >>= 1) {
        if (lid < s) scratch[lid] += scratch[lid + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float r = scratch[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return r;
}

// Sum of v over the work-group of a reduction kernel (RED work items).
inline float group_sum(float v, __local float *scratch) { return local_sum(v, scratch, RED); }

// ReLU that keeps a NaN a NaN, as PyTorch's does (fmax would turn it into 0 and hide it).
#define RELU(v) ((v) < 0.0f ? 0.0f : (v))

// Gradient outputs either overwrite or add (a tensor used twice receives the sum). Selecting
// rather than multiplying by 0 keeps a NaN-poisoned destination from leaking into the result.
#define STORE_GRAD(dst, index, value, accumulate) \
    do { const float v_ = (value); dst[index] = (accumulate) ? dst[index] + v_ : v_; } while (0)

// Memory-bound kernels load VEC floats at a time (the host sets it from the device's preferred
// float vector width: PoCL does not vectorise these loops itself) and split a contiguous run
// among NL lanes of a work-group, interleaved by vector so that a GPU's loads coalesce. On a CPU
// NL is 1 and one work item walks its run alone.
#ifndef VEC
#define VEC 4
#endif
#ifndef NL
#define NL 1
#endif
#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
typedef CAT(float, VEC) floatv;
#define VLOAD(p) CAT(vload, VEC)(0, (p))
#define VSTORE(v, p) CAT(vstore, VEC)((v), 0, (p))

// The sum of a vector's components.
inline float hsum(floatv v) {
#if VEC == 16
    const float8 a = v.lo + v.hi;
    const float4 b = a.lo + a.hi;
#elif VEC == 8
    const float4 b = v.lo + v.hi;
#else
    const float4 b = v;
#endif
    return (b.x + b.y) + (b.z + b.w);
}

// Each work item (each work-group of NL lanes) takes an equal contiguous share of the `count`
// runs: worker w of W takes [w * count / W, (w + 1) * count / W). Contiguous, because
// neighbouring runs share cache lines and a CPU's prefetcher follows them; spread over the whole
// grid, because PoCL hands each CPU thread a contiguous range of work-groups, so with fewer runs
// than workers, runs given out round-robin all landed on the first thread.
// The grid is the same size at every launch (CommandQueue.launchRuns): PoCL 3.1 keeps one
// compiled kernel per local size and largest grid so far, and releases them by local size alone,
// so one kernel running on two queues at two grid sizes could decrement the wrong one and abort
// (`pocl_release_dlhandle_cache: Assertion found->ref_count > 0`). The lanes of a work-group
// share their items, so a barrier inside the loop is reached by all of them.
inline uint run_bound(uint worker, uint count) {
    return (uint)((ulong)worker * count / (get_global_size(0) / NL));
}
#define FOR_EACH_RUN(item, count)                                                        \
    for (uint item = run_bound((uint)get_global_id(0) / NL, (count)),                 \
              item##_end = run_bound((uint)get_global_id(0) / NL + 1, (count));       \
         item < item##_end; ++item)

// The same grid for kernels whose work items each take items of their own (no lanes shared):
// item, item + workers, ...
#define FOR_EACH_ITEM(item, count) \
    for (uint item = get_global_id(0); item < (count); item += get_global_size(0))

// Elements [q0, q1) of tile `tile` of a run of `len` floats cut into `tiles`.
inline void tile_range(uint tile, uint len, uint tiles, uint *q0, uint *q1) {
    const uint size = (len + tiles - 1) / tiles;
    *q0 = min(len, tile * size);
    *q1 = min(len, *q0 + size);
}

// Run `item` of a batch of [channels, plane] samples, each channel's plane cut into `tiles`:
// returns its row (sample * channels + channel), and the elements [q0, q1) of that plane.
inline uint plane_tile(uint item, uint plane, uint tiles, uint *q0, uint *q1) {
    tile_range(item % tiles, plane, tiles, q0, q1);
    return item / tiles;
}

// Run `item` of a batch of samples of `sample` floats, each cut into `tiles`: returns the sample,
// and the elements [q0, q1) of it.
inline uint sample_tile(uint item, uint sample, uint tiles, uint *q0, uint *q1) {
    tile_range(item % tiles, sample, tiles, q0, q1);
    return item / tiles;
}

typedef CAT(uint, VEC) uintv;
#if VEC == 16
#define IOTA ((uintv)(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15))
#elif VEC == 8
#define IOTA ((uintv)(0, 1, 2, 3, 4, 5, 6, 7))
#else
#define IOTA ((uintv)(0, 1, 2, 3))
#endif

// Sum of v over the NL lanes of a work-group; every lane receives it.
inline float lanes_sum(float v, __local float *scratch) {
#if NL > 1
    v = local_sum(v, scratch, NL);
#endif
    return v;
}

// ReLU of a vector, keeping NaN as RELU does.
#define RELU_V(v) select((v), (floatv)(0.0f), (v) < (floatv)(0.0f))

// The type activations, and the weights the convolution engine reads, are stored in: float, or
// with -D CLNET_STORAGE_HALF IEEE half, read and written through vload_half and vstore_half,
// which every OpenCL 1.2 device has (cl_khr_fp16 or not). Arithmetic is float either way: a
// kernel loads with LOAD/LOADV, stores with STORE/STOREV, and declares such buffers `store_t`.
// Workspaces, GEMM panels and weight gradients stay float.
#ifdef CLNET_STORAGE_HALF
typedef half store_t;
#define LOAD(p, i) vload_half((i), (p))
#define STORE(p, i, v) vstore_half((v), (i), (p))
#define LOADV(n, p) CAT(vload_half, n)(0, (p))
#define STOREV(n, v, p) CAT(vstore_half, n)((v), 0, (p))
#else
typedef float store_t;
#define LOAD(p, i) ((p)[i])
#define STORE(p, i, v) ((p)[i] = (v))
#define LOADV(n, p) CAT(vload, n)(0, (p))
#define STOREV(n, v, p) CAT(vstore, n)((v), 0, (p))
#endif

// STORE_GRAD for a buffer of store_t.
#define STORE_GRAD_S(dst, index, value, accumulate) \
    do { const float v_ = (value); STORE(dst, index, (accumulate) ? LOAD(dst, index) + v_ : v_); } while (0)
