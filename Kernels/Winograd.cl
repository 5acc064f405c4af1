// Winograd kernels for 3x3 stride-1 convolutions (Conv+Winograd.swift): the transforms of
// F(2x2, 3x3) and F(4x4, 3x3), written straight into the panels of CLNet's GEMM (GEMM.cl,
// gemm_panels), which computes the element-wise products summed over channels.
// Tensor arguments are (buffer, offset, batch stride); see Common.cl. Weights are OIHW.

// ---- Winograd F(2x2, 3x3) ----
//
// Each 2x2 tile of the output is A^T [(G g G^T) . (B^T d B)] A, where d is the 4x4 input patch
// under it and g the 3x3 filter: 16 products per tile and channel pair instead of 36. The 16
// element-wise products, summed over channels, are 16 matrix products, which CLNet's GEMM
// (GEMM.cl, gemm_panels) computes. The transforms below write their results straight into the
// GEMM's panel layout, so that nothing is packed twice: a matrix with `rows` rows (or columns)
// cut into panels of P, `depth` deep, holds (idx, kk) at (idx / P) * P * depth + kk * P + idx % P,
// and the 16 matrices (xi = 4 * row + column of the 4x4 transform) sit `xs` floats apart.
// Panel rows past the matrix are left as they are where the GEMM never stores their results.
//
// Each work item takes its own items (FOR_EACH_ITEM, Common.cl).

inline uint panel_at(uint idx, uint kk, uint P, uint depth) { return (idx / P) * P * depth + kk * P + idx % P; }

// B^T r B for the 4x4 patch of rows r[0..3]: rows combined first, then each row's columns.
inline void wino_input_tile(const float4 r[4], float4 out[4]) {
    const float4 t[4] = {r[0] - r[2], r[1] + r[2], r[2] - r[1], r[1] - r[3]};
#pragma unroll
    for (uint i = 0; i < 4; i++) out[i] = (float4)(t[i].x, t[i].y, t[i].z, t[i].y) + (float4)(-t[i].z, t[i].z, -t[i].y, -t[i].w);
}

// The three rows of filter (r, kk) as the transforms take it: w[r][kk] (forward), or w[kk][r]
// turned by 180 degrees (flip, the input gradient); zero for a panel row past `rows`.
inline void wino_filter_rows(const __global store_t *wt, uint wo, uint r, uint kk, uint rows, uint depth, uint flip,
                             float3 *a, float3 *b, float3 *c) {
    float g[9];
#pragma unroll
    for (uint e = 0; e < 9; e++) {
        g[e] = r >= rows ? 0.0f : flip ? LOAD(wt, wo + (kk * rows + r) * 9 + 8 - e) : LOAD(wt, wo + (r * depth + kk) * 9 + e);
    }
    *a = (float3)(g[0], g[1], g[2]);
    *b = (float3)(g[3], g[4], g[5]);
    *c = (float3)(g[6], g[7], g[8]);
}

// The filters as the GEMM's A operand, U[xi] of `rows` x `depth`, in panels of MR rows: G g G^T
// of filter (r, d). Forward: rows are output channels and g = w[r][d]. The input gradient is
// the convolution of dy with the filters transposed and turned by 180 degrees (flip): rows are
// input channels and g = w[d][r] turned. Panel rows past `rows` are zero. Items: padded rows x depth.
__kernel void wino_filter(__global const store_t *wt, uint wo, uint rows, uint depth, uint padded, uint flip,
                          __global float *u, uint uo, uint xs, uint MRP) {
    // One item per (panel, kk) walks the panel's MRP rows, so that each of the 16 matrices is
    // written in consecutive floats: one float per row every MRP floats, as one item per row
    // wrote, left each cache line to be fetched again for every row (1.6x slower on PoCL).
    FOR_EACH_ITEM(item, padded / MRP * depth) {
        const uint panel = item / depth, kk = item - panel * depth;
        __global float *at = u + uo + panel_at(panel * MRP, kk, MRP, depth);
        for (uint rr = 0; rr < MRP; rr++, at++) {
            const uint r = panel * MRP + rr;
            float3 a, b, c;
            wino_filter_rows(wt, wo, r, kk, rows, depth, flip, &a, &b, &c);
            // t = G g (4 rows of 3), then each row times G^T.
            const float3 t[4] = {a, 0.5f * (a + b + c), 0.5f * (a - b + c), c};
#pragma unroll
            for (uint i = 0; i < 4; i++) {
                const float x0 = t[i].x, x1 = t[i].y, x2 = t[i].z;
                at[(4 * i) * xs] = x0;
                at[(4 * i + 1) * xs] = 0.5f * (x0 + x1 + x2);
                at[(4 * i + 2) * xs] = 0.5f * (x0 - x1 + x2);
                at[(4 * i + 3) * xs] = x2;
            }
        }
    }
}

// B^T d B of the 4x4 patch of `plane` (H x W) at (h0, w0), zero outside the plane.
inline void wino_patch(const __global store_t *plane, uint H, uint W, int h0, int w0, float4 out[4]) {
    float4 r[4];
    const bool whole = w0 >= 0 && w0 + 3 < (int)W;
#pragma unroll
    for (uint i = 0; i < 4; i++) {
        const int h = h0 + (int)i;
        if (h < 0 || h >= (int)H) {
            r[i] = (float4)(0.0f);
        } else if (whole) {
            r[i] = LOADV(4, plane + (uint)h * W + w0);
        } else {
            float e[4];
#pragma unroll
            for (uint j = 0; j < 4; j++) {
                const int w = w0 + (int)j;
                e[j] = w >= 0 && w < (int)W ? LOAD(plane, (uint)h * W + w) : 0.0f;
            }
            r[i] = (float4)(e[0], e[1], e[2], e[3]);
        }
    }
    wino_input_tile(r, out);
}

inline void wino_store(__global float *at, uint xs, const float4 out[4]) {
#pragma unroll
    for (uint i = 0; i < 4; i++) {
        at[(4 * i) * xs] = out[i].x;
        at[(4 * i + 1) * xs] = out[i].y;
        at[(4 * i + 2) * xs] = out[i].z;
        at[(4 * i + 3) * xs] = out[i].w;
    }
}

// The input patches of `count` samples from n0, as the GEMM's B operand V[xi] of C x tiles (kk =
// channel) in panels of NRP tiles, `xs` floats apart. Tile t = (s * TH + th) * TW + tw covers
// output rows 2th, 2th+1 and columns 2tw, 2tw+1; its patch starts at input (2th - PH, 2tw - PW).
// One item per (sample, channel, tile row), whose tiles are consecutive in every matrix.
__kernel void wino_input(__global const store_t *x, uint xo, uint xbs, uint C, uint H, uint W, uint TH, uint TW,
                         uint PH, uint PW, uint n0, uint count, __global float *v, uint vo, uint xs, uint NRP) {
    FOR_EACH_ITEM(item, count * C * TH) {
        const uint th = item % TH, c = (item / TH) % C, s = item / (TH * C);
        const __global store_t *plane = x + AT(xo, xbs, n0 + s, c * H * W);
        const int h0 = 2 * (int)th - (int)PH;
        const uint t0 = (s * TH + th) * TW;
        uint tw = 0;
        // Four tiles at a time: lane l of every vector is tile tw + l (explicit vectors: PoCL does
        // not vectorise this loop itself). Their ten input columns are two overlapping vector
        // loads per row, or guarded loads at the row's ends.
        for (; tw + 4 <= TW; tw += 4) {
            const int w0 = 2 * (int)tw - (int)PW;
            const uint t = t0 + tw;
            const bool whole = w0 >= 0 && w0 + 10 <= (int)W;
            // col[j][i]: tap column j of patch row i, for the four tiles.
            float4 col[4][4];
#pragma unroll
            for (uint i = 0; i < 4; i++) {
                const int h = h0 + (int)i;
                float8 a = (float8)(0.0f), b = (float8)(0.0f);
                if (h >= 0 && h < (int)H) {
                    const __global store_t *row = plane + (uint)h * W;
                    if (whole) {
                        a = LOADV(8, row + w0);
                        b = LOADV(8, row + w0 + 2);
                    } else {
                        float e[10];
#pragma unroll
                        for (uint j = 0; j < 10; j++) {
                            const int w = w0 + (int)j;
                            e[j] = w >= 0 && w < (int)W ? LOAD(row, w) : 0.0f;
                        }
                        a = (float8)(e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7]);
                        b = (float8)(e[2], e[3], e[4], e[5], e[6], e[7], e[8], e[9]);
                    }
                }
                col[0][i] = a.even; col[1][i] = a.odd; col[2][i] = b.even; col[3][i] = b.odd;
            }
            // Rows combined (B^T), then columns (B), as wino_input_tile does for one tile.
            float4 rt[4][4];
#pragma unroll
            for (uint j = 0; j < 4; j++) {
                rt[0][j] = col[j][0] - col[j][2]; rt[1][j] = col[j][1] + col[j][2];
                rt[2][j] = col[j][2] - col[j][1]; rt[3][j] = col[j][1] - col[j][3];
            }
            float4 out[16];
#pragma unroll
            for (uint i = 0; i < 4; i++) {
                out[4 * i] = rt[i][0] - rt[i][2];
                out[4 * i + 1] = rt[i][1] + rt[i][2];
                out[4 * i + 2] = rt[i][2] - rt[i][1];
                out[4 * i + 3] = rt[i][1] - rt[i][3];
            }
            __global float *at = v + vo + panel_at(t, c, NRP, C);
            if (t % NRP + 4 <= NRP) {
#pragma unroll
                for (uint xi = 0; xi < 16; xi++) vstore4(out[xi], 0, at + xi * xs);
            } else {
                // The four tiles straddle two panels.
                float lanes[16][4];
#pragma unroll
                for (uint xi = 0; xi < 16; xi++) vstore4(out[xi], 0, lanes[xi]);
                for (uint l = 0; l < 4; l++) {
                    __global float *lane = v + vo + panel_at(t + l, c, NRP, C);
                    for (uint xi = 0; xi < 16; xi++) lane[xi * xs] = lanes[xi][l];
                }
            }
        }
        for (; tw < TW; tw++) {
            float4 out[4];
            wino_patch(plane, H, W, h0, 2 * (int)tw - (int)PW, out);
            wino_store(v + vo + panel_at(t0 + tw, c, NRP, C), xs, out);
        }
    }
}

// y (or y +=, with accumulate) = A^T M A for each tile, from the GEMM's result M[xi] of K x tiles
// (row-major, `xs` apart): output channel k of `count` samples from n0, of OH x OW. One item per
// (sample, channel, tile row).
//
// With `stats`, each item also writes the batch statistics of the two output rows it made, as
// norm_stats_partial would (Norm.cl): count, mean and M2, shifted by its first value, as part
// (n0 + s) * TH + th in `st`, part by part (part p of channel k at p * K + k), so that the batch
// norm after the convolution need not read y again (MemoryPlan.convolutionStatistics).
__kernel void wino_output(__global const float *m, uint mo, uint xs, __global store_t *y, uint yo, uint ybs, uint K,
                          uint OH, uint OW, uint TH, uint TW, uint n0, uint count, uint accumulate,
                          __global float *st, uint sto, uint stats) {
    const uint tiles = count * TH * TW;
    FOR_EACH_ITEM(item, count * K * TH) {
        const uint th = item % TH, k = (item / TH) % K, s = item / (TH * K);
        const uint plane = AT(yo, ybs, n0 + s, k * OH * OW), oh = 2 * th;
        const __global float *src = m + mo + k * tiles + (s * TH + th) * TW;
        const bool down = oh + 1 < OH;
        float8 a1 = 0.0f, a2 = 0.0f;
        float t1 = 0.0f, t2 = 0.0f, shift = 0.0f;
        uint tw = 0;
        // Four tiles at a time where their eight output columns lie inside the row: lane l of
        // every vector is tile tw + l, and each output row is the two columns interleaved.
        for (; tw + 4 <= TW && 2 * tw + 8 <= OW; tw += 4) {
            float4 p[16];
#pragma unroll
            for (uint xi = 0; xi < 16; xi++) p[xi] = vload4(0, src + xi * xs + tw);
            float4 r[2][4];
#pragma unroll
            for (uint j = 0; j < 4; j++) {
                r[0][j] = p[j] + p[4 + j] + p[8 + j];
                r[1][j] = p[4 + j] - p[8 + j] - p[12 + j];
            }
#pragma unroll
            for (uint a = 0; a < 2; a++) {
                if (a == 1 && !down) break;
                const float4 e = r[a][0] + r[a][1] + r[a][2], o = r[a][1] - r[a][2] - r[a][3];
                float8 out = shuffle2(e, o, (uint8)(0, 4, 1, 5, 2, 6, 3, 7));
                __global store_t *dst = y + plane + (oh + a) * OW + 2 * tw;
                if (accumulate) out += LOADV(8, dst);
                STOREV(8, out, dst);
                if (stats) {
                    if (tw == 0 && a == 0) shift = out.s0;
                    const float8 d = out - shift;
                    a1 += d;
                    a2 += d * d;
                }
            }
        }
        for (; tw < TW; tw++) {
            // p[i] is row i of the tile's 4x4 product; r = A^T p (2 rows), then each row times A.
            float4 p[4];
#pragma unroll
            for (uint i = 0; i < 4; i++) {
                p[i] = (float4)(src[(4 * i) * xs + tw], src[(4 * i + 1) * xs + tw], src[(4 * i + 2) * xs + tw],
                                src[(4 * i + 3) * xs + tw]);
            }
            const float4 r0 = p[0] + p[1] + p[2], r1 = p[1] - p[2] - p[3];
            const float2 o0 = (float2)(r0.x + r0.y + r0.z, r0.y - r0.z - r0.w);
            const float2 o1 = (float2)(r1.x + r1.y + r1.z, r1.y - r1.z - r1.w);
            const uint ow = 2 * tw, at = plane + oh * OW + ow;
            const bool right = ow + 1 < OW;
            STORE_GRAD_S(y, at, o0.x, accumulate);
            if (right) STORE_GRAD_S(y, at + 1, o0.y, accumulate);
            if (down) {
                STORE_GRAD_S(y, at + OW, o1.x, accumulate);
                if (right) STORE_GRAD_S(y, at + OW + 1, o1.y, accumulate);
            }
            if (stats) {
                // The convolution alone: the host asks for statistics only without accumulate.
                if (tw == 0) shift = o0.x;
                const float4 d = (float4)(o0.x, o0.y, o1.x, o1.y) - shift;
                const float4 keep = (float4)(1.0f, right ? 1.0f : 0.0f, down ? 1.0f : 0.0f, right && down ? 1.0f : 0.0f);
                t1 += dot(d, keep);
                t2 += dot(d * d, keep);
            }
        }
        if (stats) {
            const float n = (float)((down ? 2 : 1) * OW);
            const float4 h1 = a1.lo + a1.hi, h2 = a2.lo + a2.hi;
            const float s1 = dot(h1, (float4)(1.0f)) + t1, s2 = dot(h2, (float4)(1.0f)) + t2;
            __global float *out = st + sto + 3 * (((n0 + s) * TH + th) * K + k);
            out[0] = n;
            out[1] = shift + s1 / n;
            out[2] = max(0.0f, s2 - s1 * (s1 / n));
        }
    }
}

// The weight gradient's B operand: A dy A^T of each 2x2 tile of dy (zero past its edges), as
// dYt[xi]^T of tiles x K in panels of PANEL channels (the GEMM's NR). One item per (sample, tile row, panel of channels)
// walks the panel's channels tile by tile, so that every matrix is written in consecutive floats.
__kernel void wino_output_grad(__global const store_t *dy, uint dyo, uint dybs, uint K, uint OH, uint OW, uint TH,
                               uint TW, uint n0, uint count, __global float *u, uint uo, uint xs, uint PANEL) {
    const uint tiles = count * TH * TW, panels = (K + PANEL - 1) / PANEL;
    FOR_EACH_ITEM(item, count * TH * panels) {
        const uint panel = item % panels, th = (item / panels) % TH, s = item / (panels * TH);
        const uint k0 = panel * PANEL, k1 = min(K, k0 + PANEL), oh = 2 * th;
        uint t = (s * TH + th) * TW;
        for (uint tw = 0; tw < TW; tw++, t++) {
            const uint ow = 2 * tw;
            __global float *at = u + uo + panel_at(k0, t, PANEL, tiles);
            for (uint k = k0; k < k1; k++, at++) {
                const __global store_t *g = dy + AT(dyo, dybs, n0 + s, k * OH * OW) + oh * OW + ow;
                const bool right = ow + 1 < OW, down = oh + 1 < OH;
                const float2 top = (float2)(LOAD(g, 0), right ? LOAD(g, 1) : 0.0f);
                const float2 bottom = down ? (float2)(LOAD(g, OW), right ? LOAD(g, OW + 1) : 0.0f) : (float2)(0.0f);
                // t = A g (4 rows of 2; A's rows are (1,0), (1,1), (1,-1), (0,-1)), then each row times A^T.
                const float2 ag[4] = {top, top + bottom, top - bottom, -bottom};
#pragma unroll
                for (uint i = 0; i < 4; i++) {
                    at[(4 * i) * xs] = ag[i].x;
                    at[(4 * i + 1) * xs] = ag[i].x + ag[i].y;
                    at[(4 * i + 2) * xs] = ag[i].x - ag[i].y;
                    at[(4 * i + 3) * xs] = -ag[i].y;
                }
            }
        }
    }
}

// dw[k][c] (=, or += with accumulate) G^T dU G, from the GEMM's dU[xi]^T of C x K (row-major,
// `xs` apart). One item per (k, c).
__kernel void wino_filter_grad(__global const float *du, uint duo, uint xs, uint K, uint C, __global float *dw, uint dwo,
                               uint accumulate) {
    FOR_EACH_ITEM(item, K * C) {
        const uint k = item / C, ch = item - k * C;
        float p[16], t[12];
#pragma unroll
        for (uint xi = 0; xi < 16; xi++) p[xi] = du[duo + xi * xs + ch * K + k];
        // t = G^T p (3x4), then G^T t^T per row; G^T's rows are (1,.5,.5,0), (0,.5,-.5,0), (0,.5,.5,1).
#pragma unroll
        for (uint j = 0; j < 4; j++) {
            const float a = p[j], b = p[4 + j], c = p[8 + j], e = p[12 + j];
            t[j] = a + 0.5f * (b + c); t[4 + j] = 0.5f * (b - c); t[8 + j] = 0.5f * (b + c) + e;
        }
#pragma unroll
        for (uint i = 0; i < 3; i++) {
            const float a = t[4 * i], b = t[4 * i + 1], c = t[4 * i + 2], e = t[4 * i + 3];
            STORE_GRAD(dw, dwo + item * 9 + 3 * i, a + 0.5f * (b + c), accumulate);
            STORE_GRAD(dw, dwo + item * 9 + 3 * i + 1, 0.5f * (b - c), accumulate);
            STORE_GRAD(dw, dwo + item * 9 + 3 * i + 2, 0.5f * (b + c) + e, accumulate);
        }
    }
}


// ---- Winograd F(4x4, 3x3) ----
//
// The same three passes and layouts over 6x6 transforms, with Lavin and Gray's points (0, ±1,
// ±2, ∞): 36 matrices (xi = 6 * row + column) and 36 products per 4x4 output tile and channel
// pair, 2.25 per output against F(2x2)'s 4 and a direct convolution's 9. The transformed input
// is 2.25x the activation where F(2x2)'s is 4x. The larger constants cost digits: the error is
// measured against the Double reference in ConvTests (winograd4x4Bound, Conv+Winograd.swift).
// The macros take scalars or vectors, so that the transforms run several tiles per vector
// (the input's eight, the output's four).

// o = B^T d, B^T's rows (4,0,-5,0,1,0), (0,-4,-4,1,1,0), (0,4,-4,-1,1,0), (0,-2,-1,2,1,0),
// (0,2,-1,-2,1,0), (0,4,0,-5,0,1).
#define W4_BT(d0, d1, d2, d3, d4, d5, o0, o1, o2, o3, o4, o5) do { \
    o0 = 4.0f * (d0) - 5.0f * (d2) + (d4); \
    o1 = (d3) + (d4) - 4.0f * ((d1) + (d2)); \
    o2 = (d4) - (d3) + 4.0f * ((d1) - (d2)); \
    o3 = (d4) - (d2) + 2.0f * ((d3) - (d1)); \
    o4 = (d4) - (d2) - 2.0f * ((d3) - (d1)); \
    o5 = 4.0f * (d1) - 5.0f * (d3) + (d5); } while (0)

// o = A^T m, A^T's rows (1,1,1,1,1,0), (0,1,-1,2,-2,0), (0,1,1,4,4,0), (0,1,-1,8,-8,1).
#define W4_AT(m0, m1, m2, m3, m4, m5, o0, o1, o2, o3) do { \
    o0 = (m0) + ((m1) + (m2)) + ((m3) + (m4)); \
    o1 = ((m1) - (m2)) + 2.0f * ((m3) - (m4)); \
    o2 = ((m1) + (m2)) + 4.0f * ((m3) + (m4)); \
    o3 = ((m1) - (m2)) + 8.0f * ((m3) - (m4)) + (m5); } while (0)

// o = A g, the transpose of the above: A's rows (1,0,0,0), (1,1,1,1), (1,-1,1,-1), (1,2,4,8),
// (1,-2,4,-8), (0,0,0,1).
#define W4_A(g0, g1, g2, g3, o0, o1, o2, o3, o4, o5) do { \
    o0 = (g0); \
    o1 = ((g0) + (g2)) + ((g1) + (g3)); \
    o2 = ((g0) + (g2)) - ((g1) + (g3)); \
    o3 = ((g0) + 4.0f * (g2)) + 2.0f * ((g1) + 4.0f * (g3)); \
    o4 = ((g0) + 4.0f * (g2)) - 2.0f * ((g1) + 4.0f * (g3)); \
    o5 = (g3); } while (0)

// o = G g, G's rows (1/4,0,0), (-1/6,-1/6,-1/6), (-1/6,1/6,-1/6), (1/24,1/12,1/6),
// (1/24,-1/12,1/6), (0,0,1).
#define W4_G(g0, g1, g2, o0, o1, o2, o3, o4, o5) do { \
    o0 = 0.25f * (g0); \
    o1 = -((g0) + (g1) + (g2)) / 6.0f; \
    o2 = -((g0) - (g1) + (g2)) / 6.0f; \
    o3 = (g0) / 24.0f + (g1) / 12.0f + (g2) / 6.0f; \
    o4 = (g0) / 24.0f - (g1) / 12.0f + (g2) / 6.0f; \
    o5 = (g2); } while (0)

// o = G^T p, the transpose of the above.
#define W4_GT(p0, p1, p2, p3, p4, p5, o0, o1, o2) do { \
    o0 = 0.25f * (p0) - ((p1) + (p2)) / 6.0f + ((p3) + (p4)) / 24.0f; \
    o1 = ((p2) - (p1)) / 6.0f + ((p3) - (p4)) / 12.0f; \
    o2 = ((p3) + (p4) - (p1) - (p2)) / 6.0f + (p5); } while (0)

// U[xi] = G g G^T, as wino_filter (same arguments and layout).
__kernel void wino4_filter(__global const store_t *wt, uint wo, uint rows, uint depth, uint padded, uint flip,
                           __global float *u, uint uo, uint xs, uint MRP) {
    FOR_EACH_ITEM(item, padded / MRP * depth) {
        const uint panel = item / depth, kk = item - panel * depth;
        __global float *at = u + uo + panel_at(panel * MRP, kk, MRP, depth);
        for (uint rr = 0; rr < MRP; rr++, at++) {
            const uint r = panel * MRP + rr;
            float3 a, b, c;
            wino_filter_rows(wt, wo, r, kk, rows, depth, flip, &a, &b, &c);
            // t = G g (6 rows of 3), then each row times G^T.
            float3 t[6];
            W4_G(a, b, c, t[0], t[1], t[2], t[3], t[4], t[5]);
#pragma unroll
            for (uint i = 0; i < 6; i++) {
                float o[6];
                W4_G(t[i].x, t[i].y, t[i].z, o[0], o[1], o[2], o[3], o[4], o[5]);
#pragma unroll
                for (uint j = 0; j < 6; j++) at[(6 * i + j) * xs] = o[j];
            }
        }
    }
}

// n consecutive floats of `row` from w, zero outside [0, W): one vector load where all lie inside.
inline float16 w4_row16(const __global store_t *row, int w, uint W) {
    if (w >= 0 && w + 16 <= (int)W) return LOADV(16, row + w);
    float e[16];
#pragma unroll
    for (uint j = 0; j < 16; j++) e[j] = w + (int)j >= 0 && w + (int)j < (int)W ? LOAD(row, w + (int)j) : 0.0f;
    return vload16(0, e);
}

inline float2 w4_row2(const __global store_t *row, int w, uint W) {
    if (w >= 0 && w + 2 <= (int)W) return LOADV(2, row + w);
    return (float2)(w >= 0 && w < (int)W ? LOAD(row, w) : 0.0f, w + 1 >= 0 && w + 1 < (int)W ? LOAD(row, w + 1) : 0.0f);
}

// V[xi] = B^T d B, as wino_input (same arguments and layout), for tiles of 4x4 outputs: tile t
// = (s * TH + th) * TW + tw has its 6x6 patch at input (4th - PH, 4tw - PW). One item per
// (sample, channel, tile row) takes eight tiles at a time, lane l of every vector tile tw + l:
// their 34 input columns are two 16-wide loads and a 2-wide one per row, each guarded only
// where it crosses the row's ends (with every column guarded, both groups of four tiles that
// a 32-wide row had were loaded element by element).
__kernel void wino4_input(__global const store_t *x, uint xo, uint xbs, uint C, uint H, uint W, uint TH, uint TW,
                          uint PH, uint PW, uint n0, uint count, __global float *v, uint vo, uint xs, uint NRP) {
    FOR_EACH_ITEM(item, count * C * TH) {
        const uint th = item % TH, c = (item / TH) % C, s = item / (TH * C);
        const __global store_t *plane = x + AT(xo, xbs, n0 + s, c * H * W);
        const int h0 = 4 * (int)th - (int)PH;
        const uint t0 = (s * TH + th) * TW;
        for (uint tw = 0; tw < TW; tw += 8) {
            const int w0 = 4 * (int)tw - (int)PW;
            // d[i][j]: column j of patch row i, for the eight tiles.
            float8 d[6][6];
#pragma unroll
            for (uint i = 0; i < 6; i++) {
                const int h = h0 + (int)i;
                float16 a = (float16)(0.0f), b = (float16)(0.0f);
                float2 e = (float2)(0.0f);
                if (h >= 0 && h < (int)H) {
                    const __global store_t *row = plane + (uint)h * W;
                    a = w4_row16(row, w0, W);
                    b = w4_row16(row, w0 + 16, W);
                    e = w4_row2(row, w0 + 32, W);
                }
                d[i][0] = shuffle2(a, b, (uint8)(0, 4, 8, 12, 16, 20, 24, 28));
                d[i][1] = shuffle2(a, b, (uint8)(1, 5, 9, 13, 17, 21, 25, 29));
                d[i][2] = shuffle2(a, b, (uint8)(2, 6, 10, 14, 18, 22, 26, 30));
                d[i][3] = shuffle2(a, b, (uint8)(3, 7, 11, 15, 19, 23, 27, 31));
                d[i][4] = shuffle2(a, b, (uint8)(4, 8, 12, 16, 20, 24, 28, 0));
                d[i][5] = shuffle2(a, b, (uint8)(5, 9, 13, 17, 21, 25, 29, 0));
                d[i][4].s7 = e.x;
                d[i][5].s7 = e.y;
            }
            // Rows combined (B^T), then columns (B).
            float8 rt[6][6], out[36];
#pragma unroll
            for (uint j = 0; j < 6; j++) {
                W4_BT(d[0][j], d[1][j], d[2][j], d[3][j], d[4][j], d[5][j],
                      rt[0][j], rt[1][j], rt[2][j], rt[3][j], rt[4][j], rt[5][j]);
            }
#pragma unroll
            for (uint i = 0; i < 6; i++) {
                W4_BT(rt[i][0], rt[i][1], rt[i][2], rt[i][3], rt[i][4], rt[i][5],
                      out[6 * i], out[6 * i + 1], out[6 * i + 2], out[6 * i + 3], out[6 * i + 4], out[6 * i + 5]);
            }
            const uint t = t0 + tw, lanes = min(8u, TW - tw);
            __global float *at = v + vo + panel_at(t, c, NRP, C);
            if (lanes == 8 && t % NRP + 8 <= NRP) {
#pragma unroll
                for (uint xi = 0; xi < 36; xi++) vstore8(out[xi], 0, at + xi * xs);
            } else {
                // Fewer than eight tiles, or eight that straddle two panels.
                float spread[36][8];
#pragma unroll
                for (uint xi = 0; xi < 36; xi++) vstore8(out[xi], 0, spread[xi]);
                for (uint l = 0; l < lanes; l++) {
                    __global float *lane = v + vo + panel_at(t + l, c, NRP, C);
                    for (uint xi = 0; xi < 36; xi++) lane[xi * xs] = spread[xi][l];
                }
            }
        }
    }
}

// y (or y +=) = A^T M A for each 4x4 tile, and the batch statistics of its rows with `stats`,
// as wino_output (same arguments, layouts and parts: one per sample and row of tiles). Four
// tiles at a time: each output row of them is 16 consecutive columns, the tiles' four
// columns interleaved.
__kernel void wino4_output(__global const float *m, uint mo, uint xs, __global store_t *y, uint yo, uint ybs, uint K,
                           uint OH, uint OW, uint TH, uint TW, uint n0, uint count, uint accumulate,
                           __global float *st, uint sto, uint stats) {
    const uint tiles = count * TH * TW;
    const int16 column = (int16)(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    FOR_EACH_ITEM(item, count * K * TH) {
        const uint th = item % TH, k = (item / TH) % K, s = item / (TH * K);
        const uint plane = AT(yo, ybs, n0 + s, k * OH * OW), oh = 4 * th, down = min(4u, OH - oh);
        const __global float *src = m + mo + k * tiles + (s * TH + th) * TW;
        float16 a1 = (float16)(0.0f), a2 = (float16)(0.0f);
        float shift = 0.0f;
        for (uint tw = 0; tw < TW; tw += 4) {
            const uint lanes = min(4u, TW - tw), ow = 4 * tw, cols = min(16u, OW - ow);
            float4 p[36];
            if (lanes == 4) {
#pragma unroll
                for (uint xi = 0; xi < 36; xi++) p[xi] = vload4(0, src + xi * xs + tw);
            } else {
#pragma unroll
                for (uint xi = 0; xi < 36; xi++) {
                    float e[4];
#pragma unroll
                    for (uint l = 0; l < 4; l++) e[l] = l < lanes ? src[xi * xs + tw + l] : 0.0f;
                    p[xi] = vload4(0, e);
                }
            }
            float4 r[4][6];
#pragma unroll
            for (uint j = 0; j < 6; j++) {
                W4_AT(p[j], p[6 + j], p[12 + j], p[18 + j], p[24 + j], p[30 + j], r[0][j], r[1][j], r[2][j], r[3][j]);
            }
#pragma unroll
            for (uint a = 0; a < 4; a++) {
                if (a >= down) break;
                float4 o0, o1, o2, o3;
                W4_AT(r[a][0], r[a][1], r[a][2], r[a][3], r[a][4], r[a][5], o0, o1, o2, o3);
                const float16 out = shuffle((float16)(o0, o1, o2, o3),
                                            (uint16)(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15));
                __global store_t *dst = y + plane + (oh + a) * OW + ow;
                if (cols == 16) {
                    STOREV(16, accumulate ? out + LOADV(16, dst) : out, dst);
                } else {
                    float e[16];
                    vstore16(out, 0, e);
                    for (uint q = 0; q < cols; q++) STORE_GRAD_S(y, plane + (oh + a) * OW + ow + q, e[q], accumulate);
                }
                if (stats) {
                    // The convolution alone: the host asks for statistics only without accumulate.
                    if (tw == 0 && a == 0) shift = out.s0;
                    const float16 dv = select((float16)(0.0f), out - shift, column < (int16)((int)cols));
                    a1 += dv;
                    a2 += dv * dv;
                }
            }
        }
        if (stats) {
            const float n = (float)(down * OW);
            const float4 h1 = a1.lo.lo + a1.lo.hi + a1.hi.lo + a1.hi.hi, h2 = a2.lo.lo + a2.lo.hi + a2.hi.lo + a2.hi.hi;
            const float s1 = dot(h1, (float4)(1.0f)), s2 = dot(h2, (float4)(1.0f));
            __global float *out = st + sto + 3 * (((n0 + s) * TH + th) * K + k);
            out[0] = n;
            out[1] = shift + s1 / n;
            out[2] = max(0.0f, s2 - s1 * (s1 / n));
        }
    }
}

// The weight gradient's B operand: A dy A^T of each 4x4 tile of dy (zero past its edges), as
// wino_output_grad (same arguments and layout).
__kernel void wino4_output_grad(__global const store_t *dy, uint dyo, uint dybs, uint K, uint OH, uint OW, uint TH,
                                uint TW, uint n0, uint count, __global float *u, uint uo, uint xs, uint PANEL) {
    const uint tiles = count * TH * TW, panels = (K + PANEL - 1) / PANEL;
    FOR_EACH_ITEM(item, count * TH * panels) {
        const uint panel = item % panels, th = (item / panels) % TH, s = item / (panels * TH);
        const uint k0 = panel * PANEL, k1 = min(K, k0 + PANEL), oh = 4 * th, down = min(4u, OH - oh);
        uint t = (s * TH + th) * TW;
        for (uint tw = 0; tw < TW; tw++, t++) {
            const uint ow = 4 * tw, cols = min(4u, OW - ow);
            __global float *at = u + uo + panel_at(k0, t, PANEL, tiles);
            for (uint k = k0; k < k1; k++, at++) {
                const __global store_t *g = dy + AT(dyo, dybs, n0 + s, k * OH * OW) + oh * OW + ow;
                float4 rows[4];
#pragma unroll
                for (uint i = 0; i < 4; i++) {
                    if (i >= down) {
                        rows[i] = (float4)(0.0f);
                    } else if (cols == 4) {
                        rows[i] = LOADV(4, g + i * OW);
                    } else {
                        float e[4];
#pragma unroll
                        for (uint j = 0; j < 4; j++) e[j] = j < cols ? LOAD(g, i * OW + j) : 0.0f;
                        rows[i] = vload4(0, e);
                    }
                }
                // Rows combined (A), then each row's columns (A^T on the right).
                float4 ag[6];
                W4_A(rows[0], rows[1], rows[2], rows[3], ag[0], ag[1], ag[2], ag[3], ag[4], ag[5]);
#pragma unroll
                for (uint i = 0; i < 6; i++) {
                    float o[6];
                    W4_A(ag[i].x, ag[i].y, ag[i].z, ag[i].w, o[0], o[1], o[2], o[3], o[4], o[5]);
#pragma unroll
                    for (uint j = 0; j < 6; j++) at[(6 * i + j) * xs] = o[j];
                }
            }
        }
    }
}

// dw[k][c] (=, or += with accumulate) G^T dU G, as wino_filter_grad (same arguments and layout).
__kernel void wino4_filter_grad(__global const float *du, uint duo, uint xs, uint K, uint C, __global float *dw, uint dwo,
                                uint accumulate) {
    FOR_EACH_ITEM(item, K * C) {
        const uint k = item / C, ch = item - k * C;
        float p[36], t[18];
#pragma unroll
        for (uint xi = 0; xi < 36; xi++) p[xi] = du[duo + xi * xs + ch * K + k];
#pragma unroll
        for (uint j = 0; j < 6; j++) W4_GT(p[j], p[6 + j], p[12 + j], p[18 + j], p[24 + j], p[30 + j], t[j], t[6 + j], t[12 + j]);
#pragma unroll
        for (uint i = 0; i < 3; i++) {
            float o[3];
            W4_GT(t[6 * i], t[6 * i + 1], t[6 * i + 2], t[6 * i + 3], t[6 * i + 4], t[6 * i + 5], o[0], o[1], o[2]);
#pragma unroll
            for (uint j = 0; j < 3; j++) STORE_GRAD(dw, dwo + item * 9 + 3 * i + j, o[j], accumulate);
        }
    }
}
