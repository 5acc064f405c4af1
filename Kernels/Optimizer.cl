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

// Runs of the range (tiles of about 4,096 floats) with vector loads; see Common.cl.
__kernel void sgd_update(__global float *p, uint po, __global const float *grad, uint go,
                         __global float *buf, uint bo, uint count,
                         float lr, float momentum, float weight_decay, uint nesterov, float target, float shrink,
                         float lo, float hi, uint tiles) {
    const uint lane = get_local_id(0) % NL;
    FOR_EACH_RUN(item, tiles) {
        uint q0, q1;
        tile_range(item, count, tiles, &q0, &q1);
        __global float *pw = p + po + q0, *pb = buf + bo + q0;
        __global const float *pg = grad + go + q0;
        const uint full = (q1 - q0) / VEC;
        for (uint v = lane; v < full; v += NL) {
            const floatv w = VLOAD(pw + v * VEC);
            floatv g = VLOAD(pg + v * VEC) + weight_decay * w;
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
        }
        for (uint q = full * VEC + lane; q < q1 - q0; q += NL) {
            const float w = pw[q];
            float g = pg[q] + weight_decay * w;
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
            pw[q] = next < lo ? lo : next > hi ? hi : next;
        }
    }
}
