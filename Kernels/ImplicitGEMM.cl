// Implicit-GEMM convolution (Sources/CLNet/Ops/Conv+ImplicitGEMM.swift): the product of
// im2col + GEMM with the gather moved into the product kernel. A work item gathers a tile of
// the im2col matrix straight from the input into local memory (which a CPU keeps in its cache)
// and multiplies it there, so no column buffer is written to global memory and none is packed
// again, as im2col + GEMM does with each.
//
// The register block is CLNet's GEMM's (GEMM.cl): MR rows of C by NR columns in MR * NR / VW
// vector accumulators; per k the tile gives NR / VW vectors and A one broadcast per row. A is
// the filters in the GEMM's panels (implicit_pack_filters, a pass over the weights alone), or
// for the weight gradient the output gradient's rows, read where they lie.
//
// implicit_conv: rows of C are output channels, columns the output positions of every sample,
//   k the taps (c, th, tw). Column (n, i, j) of a sample's GI x GJ grid reads input (i*SH + BH +
//   th*DH, j*SW + BW + tw*DW) and writes output (YBH + i*YSH, YBW + j*YSW) of sample n. The forward pass is the
//   plain case; the input gradient runs it on dy once per phase of the stride (the input
//   positions ih = ph + SH*i that the same taps reach), with negative tap steps.
// implicit_conv_weight: rows of C are output channels, columns the taps (c, kh, kw), k the
//   output positions of every sample of a slice: dW = dY col^T.
//
// Macros (set by the host): MR, NR, VW as GEMM.cl; NP, the panels of NR columns an item takes
// (each MR-row block of A then serves NP tiles); KC, the most k rows a tile holds; TH, TW
// (taps per axis), SH, SW (input step per output column), DH, DW (input step per tap, negative
// for the input gradient).

#ifndef VW
#define VW 16
#endif
#ifndef MR
#define MR 8
#endif
#ifndef NR
#define NR (2 * VW)
#endif
#ifndef NP
#define NP 4
#endif
#ifndef KC
#define KC 256
#endif
#ifndef TH
#define TH 3
#endif
#ifndef TW
#define TW 3
#endif
#ifndef SH
#define SH 1
#endif
#ifndef SW
#define SW 1
#endif
#ifndef DH
#define DH 1
#endif
#ifndef DW
#define DW 1
#endif

#define vecw CAT(float, VW)
#define VLOADW CAT(vload, VW)
#define VSTOREW CAT(vstore, VW)
#define NV (NR / VW)

// dst[t * ds] = row[w0 + t * step] for t < len, zero where that position is outside [0, W) or
// the whole row is outside the input (row == 0). The inside range is found once, so the copy
// itself has no test.
inline void gather_run(const __global store_t *row, int w0, int step, int W, uint len, __local float *dst, uint ds) {
    int lo = (int)len, hi = (int)len;
    if (row) {
        lo = w0 >= 0 ? 0 : min((int)len, (-w0 + step - 1) / step);
        hi = W - w0 <= 0 ? lo : clamp((W - w0 + step - 1) / step, lo, (int)len);
    }
    int t = 0;
    for (; t < lo; t++) dst[t * ds] = 0.0f;
    if (row) {
        // From t = lo on, w0 + t * step >= 0: no address before the row is formed.
        // A contiguous run (stride 1 into a row of the tile): vectors of eight.
        if (ds == 1 && step == 1) {
            for (; t + 8 <= hi; t += 8) vstore8(LOADV(8, row + (w0 + t)), 0, dst + t);
        }
        for (; t < hi; t++) dst[t * ds] = LOAD(row, w0 + t * step);
    }
    for (; t < (int)len; t++) dst[t * ds] = 0.0f;
}

#define ZERO_ACC(acc)                                                                             \
    do {                                                                                          \
        _Pragma("unroll") for (uint r = 0; r < MR; r++) {                                         \
            _Pragma("unroll") for (uint v = 0; v < NV; v++) acc[r][v] = (vecw)(0.0f);             \
        }                                                                                         \
    } while (0)

// Items item, item + workers, ... as FOR_EACH_ITEM (Common.cl), but with the work items'
// order bit-reversed (the host makes the grid a power of two): PoCL hands a CPU thread a
// contiguous range of work-groups, so with fewer items than work items (ResNet's 7x7 layers at
// batch 8 make 13) the busy ones all fell to one core and the layer ran at half speed.
inline uint spread_id(void) {
    const uint size = get_global_size(0);
    uint id = get_global_id(0), reversed = 0;
    for (uint bit = 1; bit < size; bit <<= 1) {
        reversed = (reversed << 1) | (id & 1);
        id >>= 1;
    }
    return reversed;
}
#define FOR_EACH_SPREAD(item, count) \
    for (uint item = spread_id(); item < (count); item += get_global_size(0))

// acc += A times kc rows of a tile of NR columns, AV(r, kk) being A's element of row r at kk.
#define TILE_PRODUCT(acc, AV, tile, kc)                                                           \
    do {                                                                                          \
        _Pragma("unroll 4") for (uint kk = 0; kk < (kc); kk++) {                                  \
            vecw bv[NV];                                                                          \
            _Pragma("unroll") for (uint v = 0; v < NV; v++) bv[v] = VLOADW(0, (tile) + kk * NR + v * VW); \
            _Pragma("unroll") for (uint r = 0; r < MR; r++) {                                     \
                const vecw av = (vecw)(AV(r, kk));                                                \
                _Pragma("unroll") for (uint v = 0; v < NV; v++) acc[r][v] = mad(av, bv[v], acc[r][v]); \
            }                                                                                     \
        }                                                                                         \
    } while (0)

// Stores a row of acc at out[0..count) (NR of them, contiguous: vectors), or adds it there: an
// activation (store_row), or a weight gradient, which is float whatever the storage (store_row_float).
inline void store_row(vecw acc[NV], __global store_t *out, uint count, bool add) {
    if (count == NR) {
#pragma unroll
        for (uint v = 0; v < NV; v++) {
            vecw value = acc[v];
            if (add) value += LOADV(VW, out + v * VW);
            STOREV(VW, value, out + v * VW);
        }
        return;
    }
    float lanes[NR];
#pragma unroll
    for (uint v = 0; v < NV; v++) VSTOREW(acc[v], 0, lanes + v * VW);
    for (uint j = 0; j < count; j++) STORE(out, j, add ? LOAD(out, j) + lanes[j] : lanes[j]);
}

inline void store_row_float(vecw acc[NV], __global float *out, uint count, bool add) {
    float lanes[NR];
#pragma unroll
    for (uint v = 0; v < NV; v++) VSTOREW(acc[v], 0, lanes + v * VW);
    if (count == NR) {
#pragma unroll
        for (uint v = 0; v < NV; v++) VSTOREW(add ? acc[v] + VLOADW(0, out + v * VW) : acc[v], 0, out + v * VW);
        return;
    }
    for (uint j = 0; j < count; j++) out[j] = add ? out[j] + lanes[j] : lanes[j];
}

// implicit_conv's output. Under 16-bit storage, where k spans more than one tile, the host has
// the sums built in a float workspace (-D Y_FLOAT) and rounded once: each tile's partial sum
// rounded to 16 bits would add up to a rounding per tile (Conv+ImplicitGEMM.swift).
#ifdef Y_FLOAT
typedef float y_t;
#define Y_LOAD(p, i) ((p)[i])
#define Y_STORE(p, i, v) ((p)[i] = (v))
#define Y_STORE_ROW store_row_float
#else
typedef store_t y_t;
#define Y_LOAD(p, i) LOAD(p, i)
#define Y_STORE(p, i, v) STORE(p, i, v)
#define Y_STORE_ROW store_row
#endif

// One item per (group, block of NP panels of NR columns); the columns run over every sample's
// grid, so that small planes (7x7) fill whole panels. Tiles of KC rows of k, one per panel, are
// gathered; then each MR-row block of A runs over all NP tiles while its rows of this tile of k
// stay in the L1 cache. The sums of later tiles of k are added to what the first stored.
// `runs` holds the block's columns cut where a grid row or a panel ends: (sample, grid row,
// grid column, length).
__kernel void implicit_conv(__global const store_t *x, uint xo, uint xs, uint XC, uint H, uint W,
                            __global const float *a, uint ao, uint aGroup,
                            __global y_t *y, uint yo, uint ys, uint M, uint YH, uint YW,
                            uint GI, uint GJ, int BH, int BW, uint YBH, uint YBW, uint YSH, uint YSW,
                            uint G, uint batch, uint accumulate, __local float *tile, __local uint *runs) {
    const uint K = XC * TH * TW, plane = GI * GJ, cols = batch * plane;
    const uint blocks = (cols + NP * NR - 1) / (NP * NR);
    FOR_EACH_SPREAD(item, G * blocks) {
        const uint b = item % blocks, g = item / blocks;
        const uint col0 = b * NP * NR, ncols = min((uint)(NP * NR), cols - col0), npanels = (ncols + NR - 1) / NR;
        // panelRuns[pn] .. panelRuns[pn + 1]: the runs of panel pn.
        uint segs = 0, panelRuns[NP + 1];
        for (uint jo = 0; jo < ncols; segs++) {
            if (jo % NR == 0) panelRuns[jo / NR] = segs;
            const uint col = col0 + jo, n = col / plane, rest = col % plane, i = rest / GJ, j = rest % GJ;
            const uint len = min(min(GJ - j, ncols - jo), NR - jo % NR);
            runs[4 * segs] = n;
            runs[4 * segs + 1] = i;
            runs[4 * segs + 2] = j;
            runs[4 * segs + 3] = len;
            jo += len;
        }
        panelRuns[npanels] = segs;
        const __global store_t *input = x + xo + g * XC * H * W;
        for (uint k0 = 0; k0 < K; k0 += KC) {
            const uint kc = min((uint)KC, K - k0);
            for (uint kk = 0; kk < kc; kk++) {
                const uint r = k0 + kk, tw = r % TW, th = (r / TW) % TH, c = r / (TW * TH);
                const __global store_t *channel = input + c * H * W;
                uint jo = 0;
                for (uint s = 0; s < segs; s++) {
                    const uint n = runs[4 * s], len = runs[4 * s + 3];
                    const int h = (int)(runs[4 * s + 1] * SH) + BH + (int)th * (DH);
                    const __global store_t *row = h >= 0 && h < (int)H ? channel + n * xs + (uint)h * W : 0;
                    __local float *dst = tile + (jo / NR) * KC * NR + kk * NR + jo % NR;
                    gather_run(row, (int)(runs[4 * s + 2] * SW) + BW + (int)tw * (DW), SW, (int)W, len, dst, 1);
                    jo += len;
                }
                // The last panel's columns past the block's end.
                for (; jo < npanels * NR; jo++) tile[(jo / NR) * KC * NR + kk * NR + jo % NR] = 0.0f;
            }
            const bool add = accumulate || k0 > 0;
            for (uint p = 0; p * MR < M; p++) {
                const __global float *ap = a + ao + g * aGroup + (p * K + k0) * MR;
#define PACKED(r, kk) ap[(kk) * MR + (r)]
                for (uint pn = 0; pn < npanels; pn++) {
                    vecw acc[MR][NV];
                    ZERO_ACC(acc);
                    TILE_PRODUCT(acc, PACKED, tile + pn * KC * NR, kc);
#pragma unroll
                    for (uint r = 0; r < MR; r++) {
                        if (p * MR + r >= M) break;
                        __global y_t *out = y + yo + (g * M + p * MR + r) * YH * YW;
                        float lanes[NR];
                        if (panelRuns[pn + 1] - panelRuns[pn] > 1 || YSW != 1) {
#pragma unroll
                            for (uint v = 0; v < NV; v++) VSTOREW(acc[r][v], 0, lanes + v * VW);
                        }
                        uint jo = 0;
                        for (uint s = panelRuns[pn]; s < panelRuns[pn + 1]; s++) {
                            const uint len = runs[4 * s + 3];
                            __global y_t *dst = out + runs[4 * s] * ys + (YBH + runs[4 * s + 1] * YSH) * YW + YBW
                                                  + runs[4 * s + 2] * YSW;
                            if (YSW == 1 && panelRuns[pn + 1] - panelRuns[pn] == 1) {
                                Y_STORE_ROW(acc[r], dst, len, add);
                            } else {
                                for (uint t = 0; t < len; t++) {
                                    Y_STORE(dst, t * YSW, add ? Y_LOAD(dst, t * YSW) + lanes[jo + t] : lanes[jo + t]);
                                }
                            }
                            jo += len;
                        }
                    }
                }
            }
        }
    }
}

// One item per (slice of k, group, block of NP panels of NR taps). Its tiles are KC output
// positions, across samples where a slice crosses them, gathered transposed (tap j of position
// kk at kk * NR + j, one tile per panel), and multiplied with the output gradient's rows, which
// lie along k already (a run of them per sample). C is dw, or with several slices the slice's
// own partial sums (`sliceStride` apart), which sum_partials (Conv.cl) then adds up. An empty
// slice still writes its zeros. `runs` holds the tile's positions cut where an output row ends:
// (sample, output row, output column, length).
__kernel void implicit_conv_weight(__global const store_t *x, uint xo, uint xs, uint XC, uint H, uint W,
                                   __global const store_t *dy, uint dyo, uint dys, uint M, uint OH, uint OW,
                                   int PH, int PW, uint G, uint batch, uint slices,
                                   __global float *dw, uint dwo, uint sliceStride, uint accumulate,
                                   __local float *tile, __local uint *runs) {
    const uint taps = XC * TH * TW, blocks = (taps + NP * NR - 1) / (NP * NR), P = OH * OW;
    FOR_EACH_SPREAD(item, slices * G * blocks) {
        const uint b = item % blocks, g = (item / blocks) % G, s = item / (blocks * G);
        uint kbeg, kend;
        tile_range(s, batch * P, slices, &kbeg, &kend);
        const uint j0 = b * NP * NR, ntaps = min((uint)(NP * NR), taps - j0), npanels = (ntaps + NR - 1) / NR;
        __global float *C = dw + dwo + s * sliceStride + g * M * taps + j0;
        bool first = true;
        for (uint k = kbeg; k < kend || first; ) {
            const uint kc = min((uint)KC, kend - k);
            uint segs = 0;
            for (uint done = 0; done < kc; segs++) {
                const uint pix = k + done, n = pix / P, p = pix % P, oh = p / OW, ow = p % OW, len = min(OW - ow, kc - done);
                runs[4 * segs] = n;
                runs[4 * segs + 1] = oh;
                runs[4 * segs + 2] = ow;
                runs[4 * segs + 3] = len;
                done += len;
            }
            for (uint j = 0; j < npanels * NR; j++) {
                __local float *dst = tile + (j / NR) * KC * NR + j % NR;
                if (j >= ntaps) {
                    for (uint kk = 0; kk < kc; kk++) dst[kk * NR] = 0.0f;
                    continue;
                }
                const uint t = j0 + j, kw = t % TW, kh = (t / TW) % TH, c = t / (TW * TH);
                const __global store_t *channel = x + xo + (g * XC + c) * H * W;
                uint done = 0;
                for (uint sg = 0; sg < segs; sg++) {
                    const uint len = runs[4 * sg + 3];
                    const int h = (int)(runs[4 * sg + 1] * SH) - PH + (int)kh * (DH);
                    const __global store_t *row = h >= 0 && h < (int)H ? channel + runs[4 * sg] * xs + (uint)h * W : 0;
                    gather_run(row, (int)(runs[4 * sg + 2] * SW) - PW + (int)kw * (DW), SW, (int)W, len,
                               dst + done * NR, NR);
                    done += len;
                }
            }
            const bool add = !first || (accumulate && slices == 1);
            for (uint p = 0; p * MR < M; p++) {
                for (uint pn = 0; pn < npanels; pn++) {
                    vecw acc[MR][NV];
                    ZERO_ACC(acc);
                    // One run of the output gradient's rows per sample in the tile.
                    for (uint done = 0; done < kc; ) {
                        const uint pix = k + done, n = pix / P, p0 = pix % P, len = min(P - p0, kc - done);
                        const __global store_t *arow[MR];
#pragma unroll
                        for (uint r = 0; r < MR; r++) arow[r] = dy + AT(dyo, dys, n, (g * M + min(p * MR + r, M - 1)) * P + p0);
#define ROWS(r, kk) LOAD(arow[r], kk)
                        TILE_PRODUCT(acc, ROWS, tile + pn * KC * NR + done * NR, len);
                        done += len;
                    }
                    const uint count = min((uint)NR, ntaps - pn * NR);
#pragma unroll
                    for (uint r = 0; r < MR; r++) {
                        if (p * MR + r >= M) break;
                        store_row_float(acc[r], C + (p * MR + r) * taps + pn * NR, count, add);
                    }
                }
            }
            first = false;
            k += kc;
        }
    }
}

// A of implicit_conv, in the GEMM's panels (GEMM.cl): for each group, panels of MR rows, each
// k-major, rows past M zero. Row `row`, k = (o, th, tw) is w[wo + g*GS + row*RS + o*OS +
// (kh0 + th*stepH)*KW + kw0 + tw*stepW]: the weights as they are for the forward pass (o the
// input channel), or one phase's taps of the filters transposed for the input gradient (row
// the input channel, o the output channel). One item per (group, panel row).
__kernel void implicit_pack_filters(__global const store_t *w, uint wo, uint M, uint outer, uint RS, uint OS, uint GS,
                                    uint KW, uint kh0, uint kw0, uint stepH, uint stepW, uint th, uint tw, uint G,
                                    __global float *out, uint oo) {
    const uint rows = (M + MR - 1) / MR * MR, K = outer * th * tw;
    FOR_EACH_ITEM(item, G * rows) {
        const uint row = item % rows, g = item / rows;
        __global float *dst = out + oo + (g * rows + row / MR * MR) * K + row % MR;
        const __global store_t *src = w + wo + g * GS + min(row, M - 1) * RS;
        for (uint o = 0, k = 0; o < outer; o++) {
            for (uint i = 0; i < th; i++) {
                for (uint j = 0; j < tw; j++, k++) {
                    dst[k * MR] = row < M ? LOAD(src, o * OS + (kh0 + i * stepH) * KW + kw0 + j * stepW) : 0.0f;
                }
            }
        }
    }
}

// Zeros the input gradient at the positions of a phase that no tap reaches (a 1x1 stride-2
// layer's odd rows and columns): ih = ph + SH*i, iw = pw + SW*j. One item per (sample, channel, i).
__kernel void implicit_zero_phase(__global store_t *dx, uint dxo, uint dxs, uint C, uint H, uint W, uint ph, uint pw,
                                  uint sh, uint sw, uint batch) {
    const uint rows = (H - ph + sh - 1) / sh;
    FOR_EACH_ITEM(item, batch * C * rows) {
        const uint i = item % rows, c = (item / rows) % C, n = item / (rows * C);
        __global store_t *row = dx + AT(dxo, dxs, n, (c * H + ph + i * sh) * W);
        for (uint iw = pw; iw < W; iw += sw) STORE(row, iw, 0.0f);
    }
}
