// Softmax cross-entropy over logits [N, K] with integer labels, mean over the batch, optional
// label smoothing eps (the target is (1 - eps) on the label plus eps / K everywhere, as
// PyTorch's label_smoothing). Logits: (buffer, offset, batch stride), see Common.cl.

// The work-group's maximum of `v`; every work-item gets it.
inline float group_max(float v, __local float *scratch) {
    const uint lid = get_local_id(0);
    scratch[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = RED / 2; s > 0; s >>= 1) {
        if (lid < s) scratch[lid] = fmax(scratch[lid], scratch[lid + s]);
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float r = scratch[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return r;
}

// The work-group's maximum of `v` and its first index, from each item's own best value and
// index (`classes` for an item that saw none); every work-item gets both.
inline uint group_first_max(float v, uint arg, uint classes, __local float *scratch, __local uint *lidx, float *max_out) {
    const uint lid = get_local_id(0);
    scratch[lid] = v; lidx[lid] = arg;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = RED / 2; s > 0; s >>= 1) {
        if (lid < s) {
            const float a = scratch[lid], b = scratch[lid + s];
            const uint ia = lidx[lid], ib = lidx[lid + s];
            if (ib < classes && (ia >= classes || b > a || (b == a && ib < ia))) { scratch[lid] = b; lidx[lid] = ib; }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    *max_out = scratch[0];
    const uint first = lidx[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return first;
}

// One work-group per sample: per[n] = its loss, per[N + n] = 1 if its top-1 prediction (the
// first maximum) is the label. A label outside [0, K) gives a NaN loss, never a wrong number.
__kernel void xent_forward(__global const store_t *z, uint zo, uint zs, __global const int *labels, uint lo,
                           __global float *per, uint po, uint batch, uint classes, float eps) {
    __local float scratch[RED];
    __local uint lidx[RED];
    const uint n = get_group_id(0), lid = get_local_id(0);
    float best = -INFINITY;
    uint arg = classes;
    for (uint k = lid; k < classes; k += RED) {
        const float v = LOAD(z, AT(zo, zs, n, k));
        if (v > best || arg == classes) { best = v; arg = k; }
    }
    // The maximum and its first index.
    float zmax;
    const uint top = group_first_max(best, arg, classes, scratch, lidx, &zmax);
    // The loss is log(sum exp(z - zmax)) + (1 - eps)(zmax - z_label) + eps mean(zmax - z): all
    // terms non-negative, and the first is log1p of the sum without the maximum's own 1, so a
    // well-classified sample's small loss is never the difference of two large numbers.
    float se = 0.0f, sz = 0.0f;
    for (uint k = lid; k < classes; k += RED) {
        const float v = LOAD(z, AT(zo, zs, n, k));
        if (k != top) se += exp(v - zmax);
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
            const float zl = LOAD(z, AT(zo, zs, n, (uint)label));
            per[po + n] = log1p(se) + (1.0f - eps) * (zmax - zl) + eps / (float)classes * sz;
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
__kernel void xent_backward(__global const store_t *z, uint zo, uint zs, __global const int *labels, uint lo,
                            __global store_t *dz, uint dzo, uint dzs, uint batch, uint classes, float eps,
                            float scale, uint accumulate) {
    __local float scratch[RED];
    const uint n = get_group_id(0), lid = get_local_id(0);
    float m = -INFINITY;
    for (uint k = lid; k < classes; k += RED) m = fmax(m, LOAD(z, AT(zo, zs, n, k)));
    const float zmax = group_max(m, scratch);
    // others = the sum of exp(z - zmax) over every class but the label's, so that the label's
    // gradient p - 1 = -others / total keeps its precision when p is close to 1.
    const int label = labels[lo + n];
    const bool valid = label >= 0 && label < (int)classes;
    float others = 0.0f;
    for (uint k = lid; k < classes; k += RED)
        if ((int)k != label) others += exp(LOAD(z, AT(zo, zs, n, k)) - zmax);
    others = group_sum(others, scratch);
    const float total = others + (valid ? exp(LOAD(z, AT(zo, zs, n, (uint)label)) - zmax) : 0.0f);
    const float f = scale / (float)batch, uniform = eps / (float)classes;
    for (uint k = lid; k < classes; k += RED) {
        const float g = (int)k == label ? -others / total + eps - uniform
                                        : exp(LOAD(z, AT(zo, zs, n, k)) - zmax) / total - uniform;
        // A label out of range poisons its sample's gradient, as it does the loss.
        STORE_GRAD_S(dz, AT(dzo, dzs, n, k), valid ? f * g : NAN, accumulate);
    }
}

// Knowledge distillation (Hinton et al. 2015): student logits z and teacher logits t [N, K],
// temperature T and weight a. Per sample:
//   loss = a T^2 KL(softmax(t / T) || softmax(z / T)) + (1 - a) CE(z, label)
// with the cross-entropy's label smoothing eps. One work-group per sample; per[n] and
// per[N + n] as xent_forward writes them, so xent_reduce takes the mean.

// What both distillation kernels need of sample n, for every work-item of the group: the
// maxima of z and t, the sums of exp for softmax(z), softmax(z / T) and softmax(t / T), and the
// sum of z.
typedef struct { float zm, tm, se, seT, stT, sz; } kd_stats;

inline kd_stats kd_statistics(__global const store_t *z, uint zo, uint zs, __global const store_t *t, uint to, uint ts,
                              uint n, uint classes, float temperature, __local float *scratch) {
    const uint lid = get_local_id(0);
    float zm = -INFINITY, tm = -INFINITY;
    for (uint k = lid; k < classes; k += RED) {
        zm = fmax(zm, LOAD(z, AT(zo, zs, n, k)));
        tm = fmax(tm, LOAD(t, AT(to, ts, n, k)));
    }
    kd_stats st;
    st.zm = group_max(zm, scratch);
    st.tm = group_max(tm, scratch);
    float se = 0.0f, seT = 0.0f, stT = 0.0f, sz = 0.0f;
    for (uint k = lid; k < classes; k += RED) {
        const float v = LOAD(z, AT(zo, zs, n, k)), u = LOAD(t, AT(to, ts, n, k));
        se += exp(v - st.zm);
        seT += exp((v - st.zm) / temperature);
        stT += exp((u - st.tm) / temperature);
        sz += v;
    }
    st.se = group_sum(se, scratch);
    st.seT = group_sum(seT, scratch);
    st.stT = group_sum(stT, scratch);
    st.sz = group_sum(sz, scratch);
    return st;
}

__kernel void kd_forward(__global const store_t *z, uint zo, uint zs, __global const store_t *t, uint to, uint ts,
                         __global const int *labels, uint lo, __global float *per, uint po, uint batch, uint classes,
                         float eps, float temperature, float weight) {
    __local float scratch[RED];
    __local uint lidx[RED];
    const uint n = get_group_id(0), lid = get_local_id(0);
    const kd_stats st = kd_statistics(z, zo, zs, t, to, ts, n, classes, temperature, scratch);
    const float zm = st.zm, tm = st.tm, se = st.se, seT = st.seT, stT = st.stT, sz = st.sz;
    // KL = sum p (log p - log q), p = softmax(t / T), q = softmax(z / T).
    float kl = 0.0f, top = -INFINITY;
    uint arg = classes;
    for (uint k = lid; k < classes; k += RED) {
        const float v = LOAD(z, AT(zo, zs, n, k)), u = LOAD(t, AT(to, ts, n, k));
        const float logp = (u - tm) / temperature - log(stT), logq = (v - zm) / temperature - log(seT);
        kl += exp(logp) * (logp - logq);
        if (v > top || arg == classes) { top = v; arg = k; }
    }
    kl = group_sum(kl, scratch);
    // The first maximum of z, for the correct count.
    float unused;
    const uint best = group_first_max(top, arg, classes, scratch, lidx, &unused);
    if (lid == 0) {
        const int label = labels[lo + n];
        if (label < 0 || label >= (int)classes) {
            per[po + n] = NAN;
            per[po + batch + n] = 0.0f;
        } else {
            const float zl = LOAD(z, AT(zo, zs, n, (uint)label));
            const float ce = log(se) + zm - (1.0f - eps) * zl - eps / (float)classes * sz;
            per[po + n] = weight * temperature * temperature * kl + (1.0f - weight) * ce;
            per[po + batch + n] = best == (uint)label ? 1.0f : 0.0f;
        }
    }
}

// dz = scale / N * (a T (softmax(z / T) - softmax(t / T)) + (1 - a) (softmax(z) - target)).
__kernel void kd_backward(__global const store_t *z, uint zo, uint zs, __global const store_t *t, uint to, uint ts,
                          __global const int *labels, uint lo, __global store_t *dz, uint dzo, uint dzs,
                          uint batch, uint classes, float eps, float temperature, float weight, float scale,
                          uint accumulate) {
    __local float scratch[RED];
    const uint n = get_group_id(0), lid = get_local_id(0);
    const kd_stats st = kd_statistics(z, zo, zs, t, to, ts, n, classes, temperature, scratch);
    const float zm = st.zm, tm = st.tm, se = st.se, seT = st.seT, stT = st.stT;
    const int label = labels[lo + n];
    const bool valid = label >= 0 && label < (int)classes;
    const float f = scale / (float)batch, uniform = eps / (float)classes;
    for (uint k = lid; k < classes; k += RED) {
        const float v = LOAD(z, AT(zo, zs, n, k)), u = LOAD(t, AT(to, ts, n, k));
        const float soft = exp((v - zm) / temperature) / seT - exp((u - tm) / temperature) / stT;
        const float hard = exp(v - zm) / se - ((int)k == label ? 1.0f - eps : 0.0f) - uniform;
        STORE_GRAD_S(dz, AT(dzo, dzs, n, k), valid ? f * (weight * temperature * soft + (1.0f - weight) * hard) : NAN,
                   accumulate);
    }
}

// Per-pixel softmax cross-entropy (semantic segmentation) over logits [N, K, H, W] (plane P =
// H * W) against labels [N, H, W]; a pixel labelled `ignore` adds nothing, and the mean is over
// the others, as PyTorch's CrossEntropyLoss(ignore_index=...). The workspace holds per pixel the
// loss, whether its top-1 class (the first maximum) is the label, and whether it counts: three
// runs of N * P floats, then the count of pixels that count, which the backward pass reads.
__kernel void pixel_xent_forward(__global const store_t *z, uint zo, uint zs, __global const int *labels, uint lo,
                                 __global float *ws, uint wo, uint batch, uint classes, uint plane, int ignore) {
    const uint pixels = batch * plane;
    FOR_EACH_ITEM(item, pixels) {
        const uint n = item / plane, p = item % plane;
        __global const store_t *zp = z + AT(zo, zs, n, p);
        float zmax = LOAD(zp, 0);
        uint top = 0;
        for (uint k = 1; k < classes; ++k) {
            const float v = LOAD(zp, k * plane);
            if (v > zmax) { zmax = v; top = k; }
        }
        // log1p of the sum without the maximum's own 1, as xent_forward, so that a confident
        // pixel's small loss is not the difference of two large numbers.
        float se = 0.0f;
        for (uint k = 0; k < classes; ++k)
            if (k != top) se += exp(LOAD(zp, k * plane) - zmax);
        const int label = labels[lo + item];
        float loss = 0.0f, correct = 0.0f, counts = 0.0f;
        if (label != ignore) {
            counts = 1.0f;
            // A label outside [0, K) that is not the ignored one makes the loss NaN, never a wrong number.
            if (label < 0 || label >= (int)classes) loss = NAN;
            else {
                loss = log1p(se) + zmax - LOAD(zp, (uint)label * plane);
                correct = top == (uint)label ? 1.0f : 0.0f;
            }
        }
        ws[wo + item] = loss;
        ws[wo + pixels + item] = correct;
        ws[wo + 2 * pixels + item] = counts;
    }
}

// One work-group: out[0] = the mean loss over the pixels that count (0 when none does),
// out[1] = how many of them are right; the count itself goes to ws[3 N P].
__kernel void pixel_xent_reduce(__global float *ws, uint wo, uint pixels, __global float *out, uint oo) {
    __local float scratch[RED];
    const uint lid = get_local_id(0);
    float l = 0.0f, c = 0.0f, v = 0.0f;
    for (uint k = lid; k < pixels; k += RED) {
        l += ws[wo + k];
        c += ws[wo + pixels + k];
        v += ws[wo + 2 * pixels + k];
    }
    l = group_sum(l, scratch);
    c = group_sum(c, scratch);
    v = group_sum(v, scratch);
    if (lid == 0) {
        out[oo] = v > 0.0f ? l / v : 0.0f;
        out[oo + 1] = c;
        ws[wo + 3 * pixels] = v;
    }
}

// dz = scale / (pixels that count) * (softmax(z) - onehot(label)) at each pixel that counts, and
// 0 at an ignored one. Reads the count the forward pass left in the workspace.
__kernel void pixel_xent_backward(__global const store_t *z, uint zo, uint zs, __global const int *labels, uint lo,
                                  __global const float *ws, uint wo, __global store_t *dz, uint dzo, uint dzs,
                                  uint batch, uint classes, uint plane, int ignore, float scale, uint accumulate) {
    const uint pixels = batch * plane;
    const float counted = ws[wo + 3 * pixels];
    FOR_EACH_ITEM(item, pixels) {
        const uint n = item / plane, p = item % plane;
        __global const store_t *zp = z + AT(zo, zs, n, p);
        __global store_t *dp = dz + AT(dzo, dzs, n, p);
        const int label = labels[lo + item];
        if (label == ignore) {
            for (uint k = 0; k < classes; ++k) STORE_GRAD_S(dp, k * plane, 0.0f, accumulate);
            continue;
        }
        const bool valid = label >= 0 && label < (int)classes;
        float zmax = LOAD(zp, 0);
        for (uint k = 1; k < classes; ++k) zmax = fmax(zmax, LOAD(zp, k * plane));
        // others: the sum without the label's term, so that p - 1 = -others / total keeps its
        // precision when p is close to 1 (as xent_backward).
        float others = 0.0f;
        for (uint k = 0; k < classes; ++k)
            if ((int)k != label) others += exp(LOAD(zp, k * plane) - zmax);
        const float total = others + (valid ? exp(LOAD(zp, (uint)label * plane) - zmax) : 0.0f);
        const float f = scale / counted;
        for (uint k = 0; k < classes; ++k) {
            const float g = (int)k == label ? -others / total : exp(LOAD(zp, k * plane) - zmax) / total;
            STORE_GRAD_S(dp, k * plane, valid ? f * g : NAN, accumulate);
        }
    }
}

// Mean squared error over every element of a prediction and a target of one shape (PyTorch's
// MSELoss, reduction "mean"). Each of the `groups` work-groups sums the squared differences of
// its share of the elements into ws[g].
__kernel void mse_partial(__global const store_t *x, uint xo, uint xs, __global const store_t *t, uint to, uint ts,
                          __global float *ws, uint wo, uint sample, uint batch) {
    __local float scratch[RED];
    const uint g = get_group_id(0), lid = get_local_id(0), groups = get_num_groups(0);
    const uint total = sample * batch, share = (total + groups - 1) / groups;
    const uint i0 = min(total, g * share), i1 = min(total, i0 + share);
    float s = 0.0f;
    for (uint i = i0 + lid; i < i1; i += RED) {
        const uint n = i / sample, e = i % sample;
        const float d = LOAD(x, AT(xo, xs, n, e)) - LOAD(t, AT(to, ts, n, e));
        s += d * d;
    }
    s = group_sum(s, scratch);
    if (lid == 0) ws[wo + g] = s;
}

// One work-group: out[0] = the mean of the partial sums' total over `count` elements; out[1] = 0
// (a regression has no correct count).
__kernel void mse_reduce(__global const float *ws, uint wo, uint groups, uint count, __global float *out, uint oo) {
    __local float scratch[RED];
    const uint lid = get_local_id(0);
    float s = 0.0f;
    for (uint k = lid; k < groups; k += RED) s += ws[wo + k];
    s = group_sum(s, scratch);
    if (lid == 0) { out[oo] = s / (float)count; out[oo + 1] = 0.0f; }
}

// dx = scale * 2 (x - t) / count.
__kernel void mse_backward(__global const store_t *x, uint xo, uint xs, __global const store_t *t, uint to, uint ts,
                           __global store_t *dx, uint dxo, uint dxs, uint sample, uint batch, float scale, uint accumulate) {
    const float f = 2.0f * scale / (float)(sample * batch);
    FOR_EACH_ITEM(i, sample * batch) {
        const uint n = i / sample, e = i % sample;
        STORE_GRAD_S(dx, AT(dxo, dxs, n, e), f * (LOAD(x, AT(xo, xs, n, e)) - LOAD(t, AT(to, ts, n, e))), accumulate);
    }
}
