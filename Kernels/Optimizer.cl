// Stochastic gradient descent with momentum, Nesterov momentum and weight decay, as PyTorch's
// torch.optim.SGD (dampening 0): one launch updates a contiguous range of the parameter arena.
//   g = grad + wd * p;  buf = momentum * buf + g;  step = nesterov ? g + momentum * buf : buf
//   p -= lr * step
// With an L1 prior lambda * |p - target| (prior > 0, the shrink lr * lambda), its proximal step
// follows: p moves toward target by the shrink and stops there, so that it can reach target
// exactly (the partially linear networks' PReLU slopes, pulled to 1). A NaN stays a NaN.
// Then the parameter is clamped into [lo, hi] (DCLS's kernel positions; infinite bounds for
// the others), NaN passing through.
// With momentum 0 the buffer is not touched (it may be any buffer). PyTorch starts the buffer
// as g on the first step; with dampening 0 that equals starting it at zero, which CLNet does.
// Mixed precision (Precision.swift) adds two things, in this same pass so that the gradient and
// the parameters are read once rather than once more by a kernel of their own:
// - Dynamic loss scaling (PyTorch's GradScaler): grad is multiplied by inv_scale (1 when the loss
//   is not scaled) before anything else. If an unscaled element is not finite (inf or NaN),
//   overflow[oo] is set to 1 (left alone otherwise): the host then restores the step's backup
//   and lowers the scale, so what this launch wrote does not matter.
// - With -D WEIGHT_COPY, every new parameter value is also stored into copy (store_t, Common.cl)
//   at its index: the 16-bit copy of the weight that the convolution engine reads.

// Runs of the range (tiles of about 4,096 floats) with vector loads; see Common.cl.
__kernel void sgd_update(__global float *p, uint po, __global const float *grad, uint go,
                         __global float *buf, uint bo, uint count,
                         float lr, float momentum, float weight_decay, uint nesterov, float target, float shrink,
                         float lo, float hi, uint tiles, float inv_scale, __global uint *overflow, uint oo
#ifdef WEIGHT_COPY
                         , __global store_t *copy, uint co
#endif
                         ) {
    const uint lane = get_local_id(0) % NL;
    int overflowed = 0;
    FOR_EACH_RUN(item, tiles) {
        uint q0, q1;
        tile_range(item, count, tiles, &q0, &q1);
        __global float *pw = p + po + q0, *pb = buf + bo + q0;
        __global const float *pg = grad + go + q0;
#ifdef WEIGHT_COPY
        __global store_t *pc = copy + co + q0;
#endif
        const uint full = (q1 - q0) / VEC;
        for (uint v = lane; v < full; v += NL) {
            const floatv w = VLOAD(pw + v * VEC);
            // A statement of its own, so that the product is not fused into the weight decay's
            // sum: with inv_scale 1, g rounds as it did without scaling.
            const floatv u = VLOAD(pg + v * VEC) * inv_scale;
            overflowed |= any(!isfinite(u));
            floatv g = u + weight_decay * w;
            if (momentum != 0.0f) {
                const floatv b = momentum * VLOAD(pb + v * VEC) + g;
                VSTORE(b, pb + v * VEC);
                g = nesterov ? g + momentum * b : b;
            }
            floatv next = w - lr * g;
            if (shrink > 0.0f) {
                const floatv d = next - target, left = fabs(d) - shrink;
                next = select(target + copysign(left, d), (floatv)(target), left <= 0.0f);
            }
            next = select(next, (floatv)(lo), next < lo);
            next = select(next, (floatv)(hi), next > hi);
            VSTORE(next, pw + v * VEC);
#ifdef WEIGHT_COPY
            SSTORE(next, pc + v * VEC);
#endif
        }
        for (uint q = full * VEC + lane; q < q1 - q0; q += NL) {
            const float w = pw[q];
            const float u = pg[q] * inv_scale;
            overflowed |= !isfinite(u);
            float g = u + weight_decay * w;
            if (momentum != 0.0f) {
                const float b = momentum * pb[q] + g;
                pb[q] = b;
                g = nesterov ? g + momentum * b : b;
            }
            float next = w - lr * g;
            if (shrink > 0.0f) {
                const float d = next - target, left = fabs(d) - shrink;
                next = left <= 0.0f ? target : target + copysign(left, d);
            }
            next = next < lo ? lo : next > hi ? hi : next;
            pw[q] = next;
#ifdef WEIGHT_COPY
            STORE(pc, q, next);
#endif
        }
    }
    if (overflowed) overflow[oo] = 1u;
}
