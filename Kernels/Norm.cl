// Batch norm and group norm, forward and backward, each optionally fused with a following ReLU.
//
// Both normalise over "statistics sets": batch norm has one per channel (all samples and
// pixels), group norm one per (sample, group) (the group's channels and pixels). GROUPS == 0
// selects batch norm; otherwise it is the number of groups. `plane` is H*W.
//
// These kernels are limited by memory, so each reads a tensor once per pass, VEC values at a
// time, along contiguous runs: one channel's plane of one sample (a "row", n * channels + c), or
// a group norm set, whose channels lie together. Integer division happens once per work item,
// never per element. A work item (NL lanes on a GPU, see Common.cl) takes a "part" of a set or a
// "tile" of a row.
//
// The workspace `ws` (offset wso) holds, for S statistics sets: mean[S], invstd[S], then the two
// sums of the backward pass sum1[S], sum2[S], then partial results: each reduction over a set is
// split into parts (see NormKernels.Split), so that a GPU has enough work-groups even when there
// are few sets and a 2-core CPU does not pay for many small ones, and a second kernel combines
// them.
//
// A part covers rows [r0, r0 + rpp) and, within each, the elements [q0, q0 + ceil(len / cpr))
// of the row's `len`: either several whole rows (rpp > 1, cpr == 1) or a slice of one.
//
// Tensor arguments are (buffer, offset, batch stride); see Common.cl. Parameters (gamma, beta,
// running statistics) are (buffer, offset).

// The statistics set of row (n, c).
inline uint stat_of(uint n, uint c, uint channels, uint groups) {
    return groups == 0 ? c : n * groups + c / (channels / groups);
}

// The runs that make up set s, for the statistics: batch norm's are one per sample, `plane`
// long, `xs` apart; group norm's is one run of its channels' planes.
inline void set_runs(uint s, uint xo, uint xs, uint channels, uint plane, uint groups,
                     uint *base, uint *len) {
    if (groups == 0) {
        *base = xo + s * plane;
        *len = plane;
    } else {
        const uint per = channels / groups;
        *base = xo + (s / groups) * xs + (s % groups) * per * plane;
        *len = per * plane;
    }
}

// The rows [r0, r1) and elements [q0, q1) of part `part` (see the top of the file).
inline void part_range(uint part, uint runs, uint len, uint rpp, uint cpr,
                       uint *r0, uint *r1, uint *q0, uint *q1) {
    *r0 = (part / cpr) * rpp;
    *r1 = min(runs, *r0 + rpp);
    const uint cl = (len + cpr - 1) / cpr;
    *q0 = (part % cpr) * cl;
    *q1 = min(len, *q0 + cl);
}

// Work item (s, part): count, mean and M2 (sum of squared deviations) of its part of set s, from
// sums of (v - K) and (v - K)^2 with K the part's first value. The shift keeps float32's digits
// where the mean is large against the spread, and Chan et al.'s pairwise combination in
// norm_stats_finish merges the parts. Sets below `first` are skipped: their statistics are known
// (see norm_stats_finish), and the parts of set s sit at (s - first) * parts.
__kernel void norm_stats_partial(__global const store_t *x, uint xo, uint xs, __global float *ws, uint wso,
                                 uint batch, uint channels, uint plane, uint groups, uint rpp, uint cpr,
                                 uint parts, uint first) {
    __local float scratch[NL];
    const uint lane = get_local_id(0) % NL, sets = groups == 0 ? channels : batch * groups;
    FOR_EACH_RUN(item, (sets - first) * parts) {
        const uint s = first + item / parts, runs = groups == 0 ? batch : 1;
        uint base, len, r0, r1, q0, q1;
        set_runs(s, xo, xs, channels, plane, groups, &base, &len);
        part_range(item % parts, runs, len, rpp, cpr, &r0, &r1, &q0, &q1);
        const float k = LOAD(x, base + r0 * xs + q0);
        const uint full = (q1 - q0) / VEC;
        floatv a1 = 0.0f, a2 = 0.0f;
        float t1 = 0.0f, t2 = 0.0f;
        for (uint r = r0; r < r1; ++r) {
            __global const store_t *row = x + base + r * xs + q0;
            for (uint v = lane; v < full; v += NL) {
                const floatv d = SLOAD(row + v * VEC) - k;
                a1 += d;
                a2 += d * d;
            }
            for (uint q = full * VEC + lane; q < q1 - q0; q += NL) {
                const float d = LOAD(row, q) - k;
                t1 += d;
                t2 += d * d;
            }
        }
        const float s1 = lanes_sum(hsum(a1) + t1, scratch), s2 = lanes_sum(hsum(a2) + t2, scratch);
        if (lane == 0) {
            const float count = (float)((r1 - r0) * (q1 - q0));
            __global float *out = ws + wso + 4 * sets + 3 * item;
            out[0] = count;
            out[1] = k + s1 / count;
            out[2] = max(0.0f, s2 - s1 * (s1 / count));
        }
    }
}

// One work item per set: combines its parts into mean and 1/sqrt(var + eps). In batch-norm
// training it also updates the running statistics as PyTorch does: momentum-weighted, with the
// unbiased variance.
//
// Sets below `first` take their mean and variance from `known` instead, the workspace of another
// batch norm over the same first channels (`known_sets` of them), whose forward already ran: a
// DenseNet layer's norm reads the block's buffer, whose earlier channels a norm before it has
// measured (MemoryPlan.sharedStatistics). `count` is then each set's number of values.
//
// The parts (from `first` on) are read from `pt` (offset pto), part p of set s at 3 * ((s - first)
// * ss + p * ps): norm_stats_partial's, in the workspace after its first 4 * sets floats, set by
// set (ss = parts, ps = 1), or those the convolution before wrote as it stored x
// (MemoryPlan.convolutionStatistics), part by part (ss = 1, ps = sets), so that each of its work
// items writes its channels' parts side by side.
__kernel void norm_stats_finish(__global float *ws, uint wso,
                                __global float *run_mean, uint rmo, __global float *run_var, uint rvo,
                                uint sets, uint parts, float eps, float momentum, uint update_running,
                                __global const float *known, uint ko, uint known_sets, uint first, float count,
                                __global const float *pt, uint pto, uint ss, uint ps) {
    const uint s = get_global_id(0);
    if (s >= sets) return;
    float n = 0.0f, mean = 0.0f, m2 = 0.0f;
    if (s < first) {
        n = count;
        mean = known[ko + s];
        m2 = known[ko + 2 * known_sets + s] * count;
    }
    __global const float *part = pt + pto + 3 * (s - first) * ss;
    for (uint p = 0; s >= first && p < parts; ++p) {
        __global const float *at = part + 3 * p * ps;
        const float nb = at[0], nt = n + nb;
        if (nb == 0.0f) continue;
        const float d = at[1] - mean;
        mean += d * (nb / nt);
        m2 += at[2] + d * d * (n * nb / nt);
        n = nt;
    }
    ws[wso + s] = mean;
    ws[wso + sets + s] = rsqrt(m2 / n + eps);
    // The variance too, where the backward pass's sums go later: synchronised batch norm
    // combines the replicas' means and variances on the host.
    ws[wso + 2 * sets + s] = m2 / n;
    if (update_running) {
        run_mean[rmo + s] = (1.0f - momentum) * run_mean[rmo + s] + momentum * mean;
        run_var[rvo + s] = (1.0f - momentum) * run_var[rvo + s] + momentum * m2 / (n - 1.0f);
    }
}

// The fused ReLU's test, written once so that the forward and the backward agree on every
// element: fma rounds once whatever the compiler contracts.
#define PRE_RELU(d, scale, beta) fma((d), (scale), (beta))

// Work item (row, tile): y = (x - mean) * invstd * gamma[c] + beta[c], then ReLU when asked.
// With from_running the statistics are batch norm's running mean and variance (inference)
// instead of the workspace.
__kernel void norm_apply(__global const store_t *x, uint xo, uint xs,
                         __global const float *gamma, uint go, __global const float *beta, uint bo,
                         __global const float *mean, uint mo, __global const float *second, uint so,
                         __global store_t *y, uint yo, uint ys,
                         uint batch, uint channels, uint plane, uint groups,
                         uint from_running, float eps, uint relu, uint tiles) {
    const uint lane = get_local_id(0) % NL;
    FOR_EACH_RUN(item, batch * channels * tiles) {
        const uint row = item / tiles;
        const uint n = row / channels, c = row % channels, s = stat_of(n, c, channels, groups);
        uint q0, q1;
        tile_range(item % tiles, plane, tiles, &q0, &q1);
        const float invstd = from_running ? rsqrt(second[so + s] + eps) : second[so + s];
        const float m = mean[mo + s], scale = invstd * gamma[go + c], b = beta[bo + c];
        __global const store_t *src = x + AT(xo, xs, n, c * plane + q0);
        __global store_t *dst = y + AT(yo, ys, n, c * plane + q0);
        const uint full = (q1 - q0) / VEC;
        for (uint v = lane; v < full; v += NL) {
            floatv t = PRE_RELU(SLOAD(src + v * VEC) - m, (floatv)scale, (floatv)b);
            if (relu) t = RELU_V(t);
            SSTORE(t, dst + v * VEC);
        }
        for (uint q = full * VEC + lane; q < q1 - q0; q += NL) {
            const float t = PRE_RELU(LOAD(src, q) - m, scale, b);
            STORE(dst, q, relu ? RELU(t) : t);
        }
    }
}

// Work item (c, part), over channel c's rows (one per sample): the sums of g and of
// g * (x - mean), g the upstream gradient masked by the fused ReLU (recomputed from x), times
// invstd: the sums of g and g * xhat. Group norm's parts never span rows (rpp == 1), since
// each row has its own statistics; norm_group_sums then needs the per-row sums.
//
// When the memory plan gave the norm the backward of the ReLU or residual addition after it,
// dy is that node's output gradient: with use_mask it passes only where the node's output
// (`mask`) is positive, which is the node's ReLU, and with write_shortcut the result is also the
// gradient of the addition's other input, written here on the way (overwriting). The pass the
// consumer's own backward would make over dy, and the read of its result, are saved.
__kernel void norm_params_partial(__global const store_t *x, uint xo, uint xs,
                                  __global const store_t *dy, uint dyo, uint dys,
                                  __global const float *gamma, uint go, __global const float *beta, uint bo,
                                  __global float *ws, uint wso,
                                  __global const store_t *mask, uint mko, uint mks, uint use_mask,
                                  __global store_t *shortcut, uint sco, uint scs, uint write_shortcut,
                                  uint batch, uint channels, uint plane, uint groups, uint relu,
                                  uint rpp, uint cpr, uint parts) {
    __local float scratch[NL];
    const uint lane = get_local_id(0) % NL;
    FOR_EACH_RUN(item, channels * parts) {
        const uint c = item / parts, sets = groups == 0 ? channels : batch * groups;
        uint r0, r1, q0, q1;
        part_range(item % parts, batch, plane, rpp, cpr, &r0, &r1, &q0, &q1);
        const uint s = stat_of(r0, c, channels, groups);
        const float m = ws[wso + s], invstd = ws[wso + sets + s], g0 = gamma[go + c], b = beta[bo + c];
        const float scale = invstd * g0;
        const uint full = (q1 - q0) / VEC;
        floatv ag = 0.0f, agd = 0.0f;
        float tg = 0.0f, tgd = 0.0f;
        for (uint r = r0; r < r1; ++r) {
            __global const store_t *xr = x + AT(xo, xs, r, c * plane + q0);
            __global const store_t *dr = dy + AT(dyo, dys, r, c * plane + q0);
            __global const store_t *mr = mask + AT(mko, mks, r, c * plane + q0);
            __global store_t *sr = shortcut + AT(sco, scs, r, c * plane + q0);
            for (uint v = lane; v < full; v += NL) {
                const floatv d = SLOAD(xr + v * VEC) - m;
                floatv g = SLOAD(dr + v * VEC);
                if (use_mask) g = select((floatv)(0.0f), g, SLOAD(mr + v * VEC) > (floatv)(0.0f));
                if (write_shortcut) SSTORE(g, sr + v * VEC);
                if (relu) g = select(g, (floatv)(0.0f), PRE_RELU(d, (floatv)scale, (floatv)b) <= (floatv)(0.0f));
                ag += g;
                agd += g * d;
            }
            for (uint q = full * VEC + lane; q < q1 - q0; q += NL) {
                const float d = LOAD(xr, q) - m;
                float g = use_mask && !(LOAD(mr, q) > 0.0f) ? 0.0f : LOAD(dr, q);
                if (write_shortcut) STORE(sr, q, g);
                if (relu && PRE_RELU(d, scale, b) <= 0.0f) g = 0.0f;
                tg += g;
                tgd += g * d;
            }
        }
        const float sg = lanes_sum(hsum(ag) + tg, scratch), sgd = lanes_sum(hsum(agd) + tgd, scratch);
        if (lane == 0) {
            __global float *out = ws + wso + 4 * sets + 2 * item;
            out[0] = sgd * invstd;
            out[1] = sg;
        }
    }
}

// One work item per channel: dgamma[c] = sum of g * xhat, dbeta[c] = sum of g. In batch norm
// these are also the sums the input gradient needs (times gamma), so they go to the workspace.
__kernel void norm_params_finish(__global const float *gamma, uint go, __global float *ws, uint wso,
                                 __global float *dgamma, uint dgo, __global float *dbeta, uint dbo,
                                 uint batch, uint channels, uint groups, uint parts,
                                 uint write_params, uint accumulate) {
    const uint c = get_global_id(0);
    if (c >= channels) return;
    const uint sets = groups == 0 ? channels : batch * groups;
    __global const float *part = ws + wso + 4 * sets + 2 * c * parts;
    float sgx = 0.0f, sg = 0.0f;
    for (uint p = 0; p < parts; ++p) { sgx += part[2 * p]; sg += part[2 * p + 1]; }
    if (write_params) {
        STORE_GRAD(dgamma, dgo + c, sgx, accumulate);
        STORE_GRAD(dbeta, dbo + c, sg, accumulate);
    }
    if (groups == 0) {
        ws[wso + 2 * sets + c] = sg * gamma[go + c];
        ws[wso + 3 * sets + c] = sgx * gamma[go + c];
    }
}

// Group norm, one work item per set (n, g): sum1 = sum of gamma*g, sum2 = sum of gamma*g*xhat
// over the set, from norm_params_partial's per-row sums (cpr parts per row).
__kernel void norm_group_sums(__global const float *gamma, uint go, __global float *ws, uint wso,
                              uint batch, uint channels, uint groups, uint cpr) {
    const uint s = get_global_id(0), sets = batch * groups;
    if (s >= sets) return;
    const uint n = s / groups, per = channels / groups, parts = batch * cpr;
    float s1 = 0.0f, s2 = 0.0f;
    for (uint c = (s % groups) * per; c < (s % groups + 1) * per; ++c) {
        __global const float *part = ws + wso + 4 * sets + 2 * (c * parts + n * cpr);
        float sgx = 0.0f, sg = 0.0f;
        for (uint p = 0; p < cpr; ++p) { sgx += part[2 * p]; sg += part[2 * p + 1]; }
        s1 += gamma[go + c] * sg;
        s2 += gamma[go + c] * sgx;
    }
    ws[wso + 2 * sets + s] = s1;
    ws[wso + 3 * sets + s] = s2;
}

// Work item (row, tile): dx = invstd * (gamma*g - sum1/M - xhat * sum2/M), M the size of the
// statistics set. use_mask is norm_params_partial's; where that pass wrote the shortcut's
// gradient, the host passes it here as dy, already masked.
__kernel void norm_backward_input(__global const store_t *x, uint xo, uint xs,
                                  __global const store_t *dy, uint dyo, uint dys,
                                  __global const float *gamma, uint go, __global const float *beta, uint bo,
                                  __global const float *ws, uint wso,
                                  __global const store_t *mask, uint mko, uint mks, uint use_mask,
                                  __global store_t *dx, uint dxo, uint dxs,
                                  uint batch, uint channels, uint plane, uint groups,
                                  uint relu, uint accumulate, uint tiles) {
    const uint lane = get_local_id(0) % NL;
    FOR_EACH_RUN(item, batch * channels * tiles) {
        const uint row = item / tiles;
        const uint n = row / channels, c = row % channels, s = stat_of(n, c, channels, groups);
        const uint sets = groups == 0 ? channels : batch * groups;
        uint q0, q1;
        tile_range(item % tiles, plane, tiles, &q0, &q1);
        const float count = groups == 0 ? (float)(batch * plane) : (float)((channels / groups) * plane);
        const float m = ws[wso + s], invstd = ws[wso + sets + s], g0 = gamma[go + c], b = beta[bo + c];
        // dx = a * g - e - f * (x - mean)
        const float scale = invstd * g0, e = invstd * (ws[wso + 2 * sets + s] / count);
        const float f = invstd * invstd * (ws[wso + 3 * sets + s] / count);
        __global const store_t *xr = x + AT(xo, xs, n, c * plane + q0);
        __global const store_t *dr = dy + AT(dyo, dys, n, c * plane + q0);
        __global const store_t *mr = mask + AT(mko, mks, n, c * plane + q0);
        __global store_t *out = dx + AT(dxo, dxs, n, c * plane + q0);
        const uint full = (q1 - q0) / VEC;
        for (uint v = lane; v < full; v += NL) {
            const floatv d = SLOAD(xr + v * VEC) - m;
            floatv g = SLOAD(dr + v * VEC);
            if (use_mask) g = select((floatv)(0.0f), g, SLOAD(mr + v * VEC) > (floatv)(0.0f));
            if (relu) g = select(g, (floatv)(0.0f), PRE_RELU(d, (floatv)scale, (floatv)b) <= (floatv)(0.0f));
            floatv t = scale * g - e - f * d;
            if (accumulate) t += SLOAD(out + v * VEC);
            SSTORE(t, out + v * VEC);
        }
        for (uint q = full * VEC + lane; q < q1 - q0; q += NL) {
            const float d = LOAD(xr, q) - m;
            const float g = (use_mask && !(LOAD(mr, q) > 0.0f)) || (relu && PRE_RELU(d, scale, b) <= 0.0f) ? 0.0f : LOAD(dr, q);
            STORE_GRAD_S(out, q, scale * g - e - f * d, accumulate);
        }
    }
}
