// CLNet's own matrix product for CPUs: C = alpha * op(A) * op(B) + beta * C, row-major, in
// batches whose operands sit a fixed stride apart.
//
// Both operands are first packed into panels that the product reads strictly in order:
// - A into panels of MR rows, each k-major: panel p holds, for every kk, rows p*MR .. p*MR+MR-1;
// - B into panels of NR columns, each k-major: panel q holds, for every kk, NR consecutive columns.
// Rows and columns past the matrix are packed as zeros, so the product needs no bounds inside
// its loop, and a transposed operand costs only its packing.
//
// Each work item of the product then holds an MR x NR block of C in MR * NR / VW vector
// accumulators and, per kk, loads NR / VW vectors of B and broadcasts MR values of A: explicit
// vectors and register blocking, which PoCL's implicit vectoriser does not find by itself.
// The host launches it in work-groups of a few work items: a CPU runs each group on one core.
//
// Macros (set by the host): MR, NR (a multiple of VW), VW (the vector width: 4, 8 or 16),
// TRANS_A, TRANS_B (0 or 1: the operand is stored transposed), KB (kk per packing work item),
// A_AS_B_PANELS (1: gemm_panels reads A from B's panel layout, see there), ROW_STATS (1:
// gemm_panels also writes statistics of each row of C, see there), A_STORED, B_STORED,
// C_STORED (1: that operand is stored as activations are, store_t of Common.cl, rather than
// float: a convolution's input, output and weights are, its workspace and weight gradient not;
// while store_t is float the host sets none). The panels are float.

// Defaults, so that the file builds on its own (clnet compile): the AVX-512 block.
#ifndef VW
#define VW 16
#endif
#ifndef MR
#define MR 6
#endif
#ifndef NR
#define NR (2 * VW)
#endif
#ifndef KB
#define KB 64
#endif
#ifndef TRANS_A
#define TRANS_A 0
#endif
#ifndef TRANS_B
#define TRANS_B 0
#endif
#ifndef A_AS_B_PANELS
#define A_AS_B_PANELS 0
#endif
#ifndef ROW_STATS
#define ROW_STATS 0
#endif

// Each operand's element type, and its loads and stores.
#if A_STORED
typedef store_t a_t;
#define A_LD(p, i) LOAD(p, i)
#else
typedef float a_t;
#define A_LD(p, i) ((p)[i])
#endif
#if B_STORED
typedef store_t b_t;
#define B_LD(p, i) LOAD(p, i)
#define B_LDV(p) LOADV(VW, p)
#else
typedef float b_t;
#define B_LD(p, i) ((p)[i])
#define B_LDV(p) CAT(vload, VW)(0, p)
#endif
#if C_STORED
typedef store_t c_t;
#define C_LD(p, i) LOAD(p, i)
#define C_ST(p, i, v) STORE(p, i, v)
#define C_LDV(p) LOADV(VW, p)
#define C_STV(v, p) STOREV(VW, v, p)
#else
typedef float c_t;
#define C_LD(p, i) ((p)[i])
#define C_ST(p, i, v) ((p)[i] = (v))
#define C_LDV(p) CAT(vload, VW)(0, p)
#define C_STV(v, p) CAT(vstore, VW)(v, 0, p)
#endif

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define vec CAT(float, VW)
#define VLOAD CAT(vload, VW)
#define VSTORE CAT(vstore, VW)
#define NV (NR / VW)

// The sum of a vector's lanes (Common.cl's hsum takes VEC floats, which need not be VW).
inline float vsum(vec v) {
#if VW == 16
    const float8 h = v.lo + v.hi;
    const float4 q = h.lo + h.hi;
#elif VW == 8
    const float4 q = v.lo + v.hi;
#else
    const float4 q = v;
#endif
    return dot(q, (float4)(1.0f));
}

// op(A) is m x k. Element (row, kk), stored k x m when transposed.
#if TRANS_A
#define A_AT(a, lda, row, kk) A_LD(a, (size_t)(kk) * (lda) + (row))
#else
#define A_AT(a, lda, row, kk) A_LD(a, (size_t)(row) * (lda) + (kk))
#endif

// op(B) is k x n. Element (kk, col), stored n x k when transposed.
#if TRANS_B
#define B_AT(b, ldb, kk, col) B_LD(b, (size_t)(col) * (ldb) + (kk))
#else
#define B_AT(b, ldb, kk, col) B_LD(b, (size_t)(kk) * (ldb) + (col))
#endif

// Packing: one work item per (panel, block of KB consecutive kk, batch entry), copying the
// panel's MR (or NR) values of each kk. Blocks this large keep the work-groups few: a CPU pays
// for each one, and element-sized work left packing slower than the product.
// A row-major A is copied row by row, so that its reads run along kk; the other layouts are
// copied kk by kk (on PoCL the transposed B measured no faster copied column by column).
__kernel void gemm_pack_a(__global const a_t *a, uint ao, uint lda, uint strideA, uint m, uint k,
                          __global float *packed) {
    const uint p = get_global_id(0), block = get_global_id(1), b = get_global_id(2);
    const uint panels = get_global_size(0);
    const __global a_t *src = a + ao + (size_t)b * strideA;
    __global float *dst = packed + ((size_t)b * panels + p) * MR * k;
    const uint start = block * KB, end = min(k, start + KB);
#if TRANS_A
    for (uint kk = start; kk < end; kk++) {
        for (uint r = 0; r < MR; r++) {
            const uint row = p * MR + r;
            dst[kk * MR + r] = row < m ? A_AT(src, lda, row, kk) : 0.0f;
        }
    }
#else
    for (uint r = 0; r < MR; r++) {
        const uint row = p * MR + r;
        for (uint kk = start; kk < end; kk++) dst[kk * MR + r] = row < m ? A_AT(src, lda, row, kk) : 0.0f;
    }
#endif
}

__kernel void gemm_pack_b(__global const b_t *bm, uint bo, uint ldb, uint strideB, uint n, uint k,
                          __global float *packed, uint po) {
    const uint q = get_global_id(0), block = get_global_id(1), b = get_global_id(2);
    const uint panels = get_global_size(0);
    const __global b_t *src = bm + bo + (size_t)b * strideB;
    __global float *dst = packed + po + ((size_t)b * panels + q) * NR * k;
    const uint start = block * KB, end = min(k, start + KB), col0 = q * NR;
#if TRANS_B
    for (uint kk = start; kk < end; kk++) {
        for (uint j = 0; j < NR; j++) {
            const uint col = col0 + j;
            dst[kk * NR + j] = col < n ? B_AT(src, ldb, kk, col) : 0.0f;
        }
    }
#else
    if (col0 + NR <= n) {
        // Whole rows of the panel: vector copies.
        for (uint kk = start; kk < end; kk++) {
            const __global b_t *row = src + (size_t)kk * ldb + col0;
            for (uint v = 0; v < NV; v++) VSTORE(B_LDV(row + v * VW), 0, dst + kk * NR + v * VW);
        }
    } else {
        for (uint kk = start; kk < end; kk++) {
            for (uint j = 0; j < NR; j++) {
                const uint col = col0 + j;
                dst[kk * NR + j] = col < n ? B_AT(src, ldb, kk, col) : 0.0f;
            }
        }
    }
#endif
}

// Batch entry b's panels of A start b * strideA floats after its first, and B's b * strideB: 0
// for an operand every entry shares (a convolution's weight), which is packed once. Winograd
// convolutions (Conv.cl) write their panels themselves and call this directly.
//
// With ROW_STATS each work item also writes, for each row of its block, the count, mean and M2
// of the values it stored there, as norm_stats_partial would (Norm.cl): a convolution's output
// channels are C's rows, and the batch norm after it then need not read the output again
// (MemoryPlan.convolutionStatistics). They lie part by part, row `row` of part p at p * m + row in
// `st`; the block's part is part0 + b * qtotal + qoff + q (qoff: the column slice's first panel,
// see GEMM.swift).
__kernel void gemm_panels(__global const float *pa, uint pao, uint strideA, __global const float *pb, uint pbo,
                          uint strideB, __global c_t *c, uint co, uint ldc, uint strideC, uint m, uint n, uint k,
                          float alpha, float beta
#if ROW_STATS
                          , __global float *st, uint sto, uint part0, uint qtotal, uint qoff
#endif
                          ) {
    const uint p = get_global_id(0), q = get_global_id(1), b = get_global_id(2);
    const __global float *B = pb + pbo + (size_t)b * strideB + (size_t)q * NR * k;
    vec acc[MR][NV];
#pragma unroll
    for (uint r = 0; r < MR; r++) {
#pragma unroll
        for (uint v = 0; v < NV; v++) acc[r][v] = (vec)(0.0f);
    }
#if A_AS_B_PANELS
    // A is stored as B's panels would hold its transpose: element (row, kk) of the m x k matrix
    // at (kk / NR) * NR * m + row * NR + kk % NR. The weight gradient of a Winograd convolution
    // reads the input transform this way, written as the forward writes it (Conv+Winograd.swift).
    // Rows past m read row m - 1; their results are not stored.
    const __global float *A = pa + pao + (size_t)b * strideA;
    uint rowAt[MR];
#pragma unroll
    for (uint r = 0; r < MR; r++) rowAt[r] = min(p * MR + r, m - 1) * NR;
    for (uint k0 = 0; k0 < k; k0 += NR) {
        const __global float *block = A + (size_t)k0 * m;
        const uint end = min((uint)NR, k - k0);
#pragma unroll 4
        for (uint j = 0; j < end; j++) {
            const uint kk = k0 + j;
            vec bv[NV];
#pragma unroll
            for (uint v = 0; v < NV; v++) bv[v] = VLOAD(0, B + kk * NR + v * VW);
#pragma unroll
            for (uint r = 0; r < MR; r++) {
                const vec av = (vec)(block[rowAt[r] + j]);
#pragma unroll
                for (uint v = 0; v < NV; v++) acc[r][v] = mad(av, bv[v], acc[r][v]);
            }
        }
    }
#else
    const __global float *A = pa + pao + (size_t)b * strideA + (size_t)p * MR * k;
#pragma unroll 4
    for (uint kk = 0; kk < k; kk++) {
        vec bv[NV];
#pragma unroll
        for (uint v = 0; v < NV; v++) bv[v] = VLOAD(0, B + kk * NR + v * VW);
#pragma unroll
        for (uint r = 0; r < MR; r++) {
            const vec av = (vec)(A[kk * MR + r]);
#pragma unroll
            for (uint v = 0; v < NV; v++) acc[r][v] = mad(av, bv[v], acc[r][v]);
        }
    }
#endif
    __global c_t *C = c + co + (size_t)b * strideC;
    const uint col0 = q * NR;
    // beta = 0 must not read C: it may hold anything, NaN included.
    const bool readC = beta != 0.0f;
#pragma unroll
    for (uint r = 0; r < MR; r++) {
        const uint row = p * MR + r;
        if (row >= m) break;
        __global c_t *out = C + (size_t)row * ldc + col0;
#if ROW_STATS
        // Sums of (value - first value) and its square: the shift keeps float32's digits.
        vec s1 = (vec)(0.0f), s2 = (vec)(0.0f);
        float t1 = 0.0f, t2 = 0.0f, shift = 0.0f;
#endif
        if (col0 + NR <= n) {
#pragma unroll
            for (uint v = 0; v < NV; v++) {
                vec value = alpha * acc[r][v];
                if (readC) value += beta * C_LDV(out + v * VW);
                C_STV(value, out + v * VW);
#if ROW_STATS && C_STORED
                // The statistics describe C as stored (rounded to 16 bits), as the tail's do.
                value = C_LDV(out + v * VW);
#endif
#if ROW_STATS
                if (v == 0) shift = value.s0;
                const vec d = value - shift;
                s1 += d;
                s2 += d * d;
#endif
            }
        } else {
            float lanes[NR];
#pragma unroll
            for (uint v = 0; v < NV; v++) VSTORE(acc[r][v], 0, lanes + v * VW);
            for (uint j = 0; col0 + j < n; j++) {
                const float value = alpha * lanes[j];
                C_ST(out, j, readC ? value + beta * C_LD(out, j) : value);
#if ROW_STATS
                if (j == 0) shift = C_LD(out, 0);
                const float d = C_LD(out, j) - shift;
                t1 += d;
                t2 += d * d;
#endif
            }
        }
#if ROW_STATS
        const float h1 = t1 + vsum(s1), h2 = t2 + vsum(s2);
        const float count = (float)min((uint)NR, n - col0);
        __global float *part = st + sto + 3 * ((size_t)(part0 + b * qtotal + qoff + q) * m + row);
        part[0] = count;
        part[1] = shift + h1 / count;
        part[2] = max(0.0f, h2 - h1 * (h1 / count));
#endif
    }
}
