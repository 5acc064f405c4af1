// Prepended to every kernel file of CLNet when it is built (see KernelSource.text), so that the
// families share one way of addressing tensors and one work-group reduction.
//
// A tensor argument is passed as three values: the buffer, the offset of its first element and
// the distance between samples (its batch stride), all in elements of the buffer's type. Within a sample the layout is
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

// The type activations, their gradients, and the weights the convolution engine reads, are
// stored in: float by default; with -D CLNET_STORAGE_HALF IEEE half; with -D CLNET_STORAGE_BF16
// bfloat16, the upper half of a float's bits. Both 16-bit formats round to nearest even.
// Arithmetic is float either way: a kernel loads with LOAD/LOADV (SLOAD for VEC elements),
// stores with STORE/STOREV (SSTORE), and declares such buffers `store_t`. Workspaces, GEMM
// panels, parameters and their gradients stay float. The host sets the macro from the buffers
// a launch passes (Precision.swift), so one file serves all three.
//
// Half is converted here, in integer arithmetic, rather than by vload_half/vstore_half: PoCL
// 3.1 lowers vload_halfN/vstore_halfN (N >= 8) to aligned vector moves, which fault on the
// unaligned views kernels take (a channel slice, a tile of a run). Integer code needs neither
// cl_khr_fp16 nor denormal support, vectorises on every device, and rounds as vstore_half_rte.
#define HALF_CONVERSIONS(N)                                                                       \
inline CAT(float, N) CAT(half_to_float, N)(CAT(ushort, N) bits) {                                 \
    const CAT(uint, N) h = CAT(convert_uint, N)(bits), em = h & 0x7FFFu;                          \
    /* Normal: rebias the exponent; subnormal: the integer significand times 2^-24 (exact). */   \
    CAT(uint, N) f = select((em << 13) + 0x38000000u, CAT(as_uint, N)(CAT(convert_float, N)(em) * 0x1p-24f), \
                            em < 0x400u);                                                        \
    f = select(f, (em << 13) | 0x7F800000u, em >= 0x7C00u);                                       \
    return CAT(as_float, N)(f | ((h & 0x8000u) << 16));                                           \
}                                                                                                 \
inline CAT(ushort, N) CAT(float_to_half, N)(CAT(float, N) v) {                                    \
    const CAT(uint, N) x = CAT(as_uint, N)(v), a = x & 0x7FFFFFFFu;                               \
    /* Normal: drop 13 bits, rounding half to even; a carry runs into the exponent, to infinity. */ \
    CAT(uint, N) h = min((a - 0x38000000u + 0xFFFu + ((a >> 13) & 1u)) >> 13, (CAT(uint, N))0x7C00u); \
    /* Below 2^-14: the value in units of 2^-24, rounded to nearest even by rint. */             \
    h = select(h, CAT(convert_uint, N)(rint(CAT(as_float, N)(a) * 0x1p24f)), a < 0x38800000u);    \
    h = select(h, (CAT(uint, N))0x7E00u, a > 0x7F800000u);                                        \
    return CAT(convert_ushort, N)(h | ((x >> 16) & 0x8000u));                                     \
}
#define NOSUFFIX
HALF_CONVERSIONS(NOSUFFIX)
HALF_CONVERSIONS(2)
HALF_CONVERSIONS(4)
HALF_CONVERSIONS(8)
HALF_CONVERSIONS(16)

#if defined(CLNET_STORAGE_HALF)
typedef ushort store_t;
#define LOAD(p, i) half_to_float((p)[i])
#define STORE(p, i, v) ((p)[i] = float_to_half(v))
#define LOADV(n, p) CAT(half_to_float, n)(CAT(vload, n)(0, (p)))
#define STOREV(n, v, p) CAT(vstore, n)(CAT(float_to_half, n)(v), 0, (p))
#elif defined(CLNET_STORAGE_BF16)
typedef ushort store_t;
// Round to nearest even on the 16 bits dropped; a NaN stays a (quiet) NaN rather than rounding
// into infinity.
#define BF16_BITS(u) (((u) + 0x7FFFu + (((u) >> 16) & 1u)) >> 16)
inline ushort bf16_round(float v) {
    const uint u = as_uint(v);
    return isnan(v) ? (ushort)((u >> 16) | 0x40u) : (ushort)BF16_BITS(u);
}
#define LOAD(p, i) as_float((uint)(p)[i] << 16)
#define STORE(p, i, v) ((p)[i] = bf16_round(v))
#define LOADV(n, p) CAT(as_float, n)(CAT(convert_uint, n)(CAT(vload, n)(0, (p))) << 16)
#define STOREV(n, v, p) CAT(vstore, n)(CAT(bf16_round, n)(v), 0, (p))
inline ushort2 bf16_round2(float2 v) { return (ushort2)(bf16_round(v.x), bf16_round(v.y)); }
inline ushort4 bf16_round4(float4 v) { return (ushort4)(bf16_round2(v.lo), bf16_round2(v.hi)); }
inline ushort8 bf16_round8(float8 v) { return (ushort8)(bf16_round4(v.lo), bf16_round4(v.hi)); }
inline ushort16 bf16_round16(float16 v) { return (ushort16)(bf16_round8(v.lo), bf16_round8(v.hi)); }
#else
typedef float store_t;
#define LOAD(p, i) ((p)[i])
#define STORE(p, i, v) ((p)[i] = (v))
#define LOADV(n, p) CAT(vload, n)(0, (p))
#define STOREV(n, v, p) CAT(vstore, n)((v), 0, (p))
#endif
// VEC elements of a store_t buffer, as the memory-bound kernels' VLOAD/VSTORE.
#define SLOAD(p) LOADV(VEC, p)
#define SSTORE(v, p) STOREV(VEC, v, p)

// STORE_GRAD for a buffer of store_t.
#define STORE_GRAD_S(dst, index, value, accumulate) \
    do { const float v_ = (value); STORE(dst, index, (accumulate) ? LOAD(dst, index) + v_ : v_); } while (0)
