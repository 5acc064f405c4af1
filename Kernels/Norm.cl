// Batch norm and group norm, forward and backward, each optionally fused with a following ReLU.
//
// Both normalise over "statistics sets": batch norm has one per channel (all samples and
// pixels), group norm one per (sample, group) (the group's channels and pixels). GROUPS == 0
// selects batch norm; otherwise it is the number of groups. `plane` is H*W.
//
// The workspace `ws` (offset wso) holds, for S statistics sets: mean[S], invstd[S], then two
// sums of the backward pass sum1[S], sum2[S], then 3*S*P floats of partial results: each
// reduction over a set is split into P parts (P work-groups), so that a GPU has enough
// work-groups even when there are few sets (a batch norm of 64 channels), and a second kernel
// combines the parts.
//
// Tensor arguments are (buffer, offset, batch stride); see Common.cl. Parameters (gamma, beta,
// running statistics) are (buffer, offset).

// The statistics set of element j (dense index within sample n).
inline uint stat_of(uint n, uint c, uint channels, uint groups) {
    return groups == 0 ? c : n * groups + c / (channels / groups);
}

// Elements of set s, enumerated by k in [0, count): returns sample and in-sample index.
inline void element_of(uint s, uint k, uint batch, uint channels, uint plane, uint groups,
                       uint *n, uint *j) {
    if (groups == 0) {
        *n = k / plane;
        *j = s * plane + k % plane;
    } else {
        const uint per = channels / groups;
        *n = s / groups;
        *j = (s % groups) * per * plane + k;
    }
}

// Work-group (s, p) covers part p of set s: count, mean and M2 (sum of squared deviations) in
// one pass over x (Welford per work item, then Chan et al.'s pairwise combination).
__kernel void norm_stats_partial(__global const float *x, uint xo, uint xs, __global float *ws, uint wso,
                                 uint batch, uint channels, uint plane, uint groups, uint parts) {
    __local float l_n[RED], l_mean[RED], l_m2[RED];
    const uint wg = get_group_id(0), s = wg / parts, part = wg % parts, lid = get_local_id(0);
    const uint sets = groups == 0 ? channels : batch * groups;
    const uint count = groups == 0 ? batch * plane : (channels / groups) * plane;
    const uint len = (count + parts - 1) / parts, k0 = part * len, k1 = min(count, k0 + len);
    float cnt = 0.0f, mean = 0.0f, m2 = 0.0f;
    for (uint k = k0 + lid; k < k1; k += RED) {
        uint n, j;
        element_of(s, k, batch, channels, plane, groups, &n, &j);
        const float v = x[AT(xo, xs, n, j)];
        cnt += 1.0f;
        const float d = v - mean;
        mean += d / cnt;
        m2 += d * (v - mean);
    }
    l_n[lid] = cnt; l_mean[lid] = mean; l_m2[lid] = m2;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint h = RED / 2; h > 0; h >>= 1) {
        if (lid < h) {
            const float na = l_n[lid], nb = l_n[lid + h], nt = na + nb;
            if (nt > 0.0f) {
                const float d = l_mean[lid + h] - l_mean[lid];
                l_mean[lid] = l_mean[lid] + d * (nb / nt);
                l_m2[lid] = l_m2[lid] + l_m2[lid + h] + d * d * (na * nb / nt);
                l_n[lid] = nt;
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0) {
        __global float *out = ws + wso + 4 * sets + 3 * wg;
        out[0] = l_n[0]; out[1] = l_mean[0]; out[2] = l_m2[0];
    }
}

// One work item per set: combines its parts into mean and 1/sqrt(var + eps). In batch-norm
// training it also updates the running statistics as PyTorch does: momentum-weighted, with the
// unbiased variance.
__kernel void norm_stats_finish(__global float *ws, uint wso,
                                __global float *run_mean, uint rmo, __global float *run_var, uint rvo,
                                uint sets, uint parts, float eps, float momentum, uint update_running) {
    const uint s = get_global_id(0);
    if (s >= sets) return;
    __global const float *part = ws + wso + 4 * sets + 3 * s * parts;
    float n = 0.0f, mean = 0.0f, m2 = 0.0f;
    for (uint p = 0; p < parts; ++p) {
        const float nb = part[3 * p], nt = n + nb;
        if (nb == 0.0f) continue;
        const float d = part[3 * p + 1] - mean;
        mean += d * (nb / nt);
        m2 += part[3 * p + 2] + d * d * (n * nb / nt);
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

// y = (x - mean) * invstd * gamma[c] + beta[c], then ReLU when asked. With FROM_RUNNING the
// statistics are batch norm's running mean and variance (inference) instead of the workspace.
__kernel void norm_apply(__global const float *x, uint xo, uint xs,
                         __global const float *gamma, uint go, __global const float *beta, uint bo,
                         __global const float *mean, uint mo, __global const float *second, uint so,
                         __global float *y, uint yo, uint ys,
                         uint batch, uint channels, uint plane, uint groups,
                         uint from_running, float eps, uint relu) {
    const uint p = get_global_id(0), c = get_global_id(1), n = get_global_id(2);
    if (p >= plane || c >= channels || n >= batch) return;
    const uint j = c * plane + p;
    const uint s = stat_of(n, c, channels, groups);
    const float invstd = from_running ? rsqrt(second[so + s] + eps) : second[so + s];
    const float v = (x[AT(xo, xs, n, j)] - mean[mo + s]) * invstd * gamma[go + c] + beta[bo + c];
    y[AT(yo, ys, n, j)] = relu ? RELU(v) : v;
}

// The upstream gradient, masked by the fused ReLU (recomputing y from x), and x-hat.
inline void grad_and_xhat(__global const float *x, uint xi, __global const float *dy, uint dyi,
                          float mean, float invstd, float gamma, float beta, uint relu,
                          float *g, float *xhat) {
    *xhat = (x[xi] - mean) * invstd;
    *g = dy[dyi];
    if (relu && *xhat * gamma + beta <= 0.0f) *g = 0.0f;
}

// Group norm: one work-group per (sample, group): sum1 = sum of gamma*g, sum2 = sum of
// gamma*g*xhat over the set. (Batch norm gets these from norm_backward_params.)
__kernel void norm_backward_sums(__global const float *x, uint xo, uint xs,
                                 __global const float *dy, uint dyo, uint dys,
                                 __global const float *gamma, uint go, __global const float *beta, uint bo,
                                 __global float *ws, uint wso,
                                 uint batch, uint channels, uint plane, uint groups, uint relu) {
    __local float scratch[RED];
    const uint s = get_group_id(0), lid = get_local_id(0);
    const uint sets = batch * groups, count = (channels / groups) * plane;
    const float mean = ws[wso + s], invstd = ws[wso + sets + s];
    float s1 = 0.0f, s2 = 0.0f;
    for (uint k = lid; k < count; k += RED) {
        uint n, j;
        element_of(s, k, batch, channels, plane, groups, &n, &j);
        const uint c = j / plane;
        float g, xhat;
        grad_and_xhat(x, AT(xo, xs, n, j), dy, AT(dyo, dys, n, j), mean, invstd, gamma[go + c], beta[bo + c],
                      relu, &g, &xhat);
        s1 += g * gamma[go + c];
        s2 += g * gamma[go + c] * xhat;
    }
    s1 = group_sum(s1, scratch);
    s2 = group_sum(s2, scratch);
    if (lid == 0) {
        ws[wso + 2 * sets + s] = s1;
        ws[wso + 3 * sets + s] = s2;
    }
}

// Work-group (c, p) covers part p of channel c's samples and pixels: the sums of g * xhat and
// of g, written to the workspace's partial area.
__kernel void norm_params_partial(__global const float *x, uint xo, uint xs,
                                  __global const float *dy, uint dyo, uint dys,
                                  __global const float *gamma, uint go, __global const float *beta, uint bo,
                                  __global float *ws, uint wso,
                                  uint batch, uint channels, uint plane, uint groups, uint relu, uint parts) {
    __local float scratch[RED];
    const uint wg = get_group_id(0), c = wg / parts, part = wg % parts, lid = get_local_id(0);
    const uint sets = groups == 0 ? channels : batch * groups, count = batch * plane;
    const uint len = (count + parts - 1) / parts, k0 = part * len, k1 = min(count, k0 + len);
    float sg = 0.0f, sgx = 0.0f;
    for (uint k = k0 + lid; k < k1; k += RED) {
        const uint n = k / plane, j = c * plane + k % plane;
        const uint s = stat_of(n, c, channels, groups);
        float g, xhat;
        grad_and_xhat(x, AT(xo, xs, n, j), dy, AT(dyo, dys, n, j), ws[wso + s], ws[wso + sets + s],
                      gamma[go + c], beta[bo + c], relu, &g, &xhat);
        sg += g;
        sgx += g * xhat;
    }
    sg = group_sum(sg, scratch);
    sgx = group_sum(sgx, scratch);
    if (lid == 0) {
        __global float *out = ws + wso + 4 * sets + 2 * wg;
        out[0] = sgx; out[1] = sg;
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

// dx = invstd * (gamma*g - sum1/M - xhat * sum2/M), M the size of the statistics set.
__kernel void norm_backward_input(__global const float *x, uint xo, uint xs,
                                  __global const float *dy, uint dyo, uint dys,
                                  __global const float *gamma, uint go, __global const float *beta, uint bo,
                                  __global const float *ws, uint wso,
                                  __global float *dx, uint dxo, uint dxs,
                                  uint batch, uint channels, uint plane, uint groups,
                                  uint relu, uint accumulate) {
    const uint p = get_global_id(0), c = get_global_id(1), n = get_global_id(2);
    if (p >= plane || c >= channels || n >= batch) return;
    const uint j = c * plane + p;
    const uint s = stat_of(n, c, channels, groups);
    const uint sets = groups == 0 ? channels : batch * groups;
    const float m = groups == 0 ? (float)(batch * plane) : (float)((channels / groups) * plane);
    const float invstd = ws[wso + sets + s];
    float g, xhat;
    grad_and_xhat(x, AT(xo, xs, n, j), dy, AT(dyo, dys, n, j), ws[wso + s], invstd, gamma[go + c], beta[bo + c],
                  relu, &g, &xhat);
    const float v = invstd * (gamma[go + c] * g - ws[wso + 2 * sets + s] / m - xhat * ws[wso + 3 * sets + s] / m);
    STORE_GRAD(dx, AT(dxo, dxs, n, j), v, accumulate);
}
