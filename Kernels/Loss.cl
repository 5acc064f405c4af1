// Softmax cross-entropy over logits [N, K] with integer labels, mean over the batch, optional
// label smoothing eps (the target is (1 - eps) on the label plus eps / K everywhere, as
// PyTorch's label_smoothing). Logits: (buffer, offset, batch stride), see Common.cl.

// One work-group per sample: per[n] = its loss, per[N + n] = 1 if its top-1 prediction (the
// first maximum) is the label. A label outside [0, K) gives a NaN loss, never a wrong number.
__kernel void xent_forward(__global const float *z, uint zo, uint zs, __global const int *labels, uint lo,
                           __global float *per, uint po, uint batch, uint classes, float eps) {
    __local float scratch[RED];
    __local uint lidx[RED];
    const uint n = get_group_id(0), lid = get_local_id(0);
    float best = -INFINITY;
    uint arg = classes;
    for (uint k = lid; k < classes; k += RED) {
        const float v = z[AT(zo, zs, n, k)];
        if (v > best || arg == classes) { best = v; arg = k; }
    }
    // The maximum and its first index.
    scratch[lid] = best; lidx[lid] = arg;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = RED / 2; s > 0; s >>= 1) {
        if (lid < s) {
            const float a = scratch[lid], b = scratch[lid + s];
            const uint ia = lidx[lid], ib = lidx[lid + s];
            if (ib < classes && (ia >= classes || b > a || (b == a && ib < ia))) { scratch[lid] = b; lidx[lid] = ib; }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float zmax = scratch[0];
    const uint top = lidx[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    // sz sums zmax - z (never negative), so that the loss below adds non-negative terms: a
    // well-classified sample's small loss is not the difference of two large numbers.
    float se = 0.0f, sz = 0.0f;
    for (uint k = lid; k < classes; k += RED) {
        const float v = z[AT(zo, zs, n, k)];
        se += exp(v - zmax);
        sz += zmax - v;
    }
    se = group_sum(se, scratch);
    sz = group_sum(sz, scratch);
    if (lid == 0) {
        const int label = labels[lo + n];
        if (label < 0 || label >= (int)classes) {
            per[po + n] = NAN;
            per[po + batch + n] = 0.0f;
        } else {
            // lse - (1 - eps) z_label - eps mean(z), rearranged around zmax.
            const float zl = z[AT(zo, zs, n, (uint)label)];
            per[po + n] = log(se) + (1.0f - eps) * (zmax - zl) + eps / (float)classes * sz;
            per[po + batch + n] = top == (uint)label ? 1.0f : 0.0f;
        }
    }
}

// One work-group: out[0] = mean loss, out[1] = number of correct predictions.
__kernel void xent_reduce(__global const float *per, uint po, uint batch, __global float *out, uint oo) {
    __local float scratch[RED];
    const uint lid = get_local_id(0);
    float l = 0.0f, c = 0.0f;
    for (uint k = lid; k < batch; k += RED) { l += per[po + k]; c += per[po + batch + k]; }
    l = group_sum(l, scratch);
    c = group_sum(c, scratch);
    if (lid == 0) { out[oo] = l / (float)batch; out[oo + 1] = c; }
}

// dz = scale / N * (softmax(z) - target), one work-group per sample.
__kernel void xent_backward(__global const float *z, uint zo, uint zs, __global const int *labels, uint lo,
                            __global float *dz, uint dzo, uint dzs, uint batch, uint classes, float eps,
                            float scale, uint accumulate) {
    __local float scratch[RED];
    const uint n = get_group_id(0), lid = get_local_id(0);
    float m = -INFINITY;
    for (uint k = lid; k < classes; k += RED) m = fmax(m, z[AT(zo, zs, n, k)]);
    // Maximum by a sum-free reduction: reuse the scratch tree with fmax.
    scratch[lid] = m;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = RED / 2; s > 0; s >>= 1) {
        if (lid < s) scratch[lid] = fmax(scratch[lid], scratch[lid + s]);
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float zmax = scratch[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    float se = 0.0f;
    for (uint k = lid; k < classes; k += RED) se += exp(z[AT(zo, zs, n, k)] - zmax);
    se = group_sum(se, scratch);
    const int label = labels[lo + n];
    const float f = scale / (float)batch;
    for (uint k = lid; k < classes; k += RED) {
        const float p = exp(z[AT(zo, zs, n, k)] - zmax) / se;
        const float t = (label == (int)k ? 1.0f - eps : 0.0f) + eps / (float)classes;
        STORE_GRAD(dz, AT(dzo, dzs, n, k), f * (p - t), accumulate);
    }
}
