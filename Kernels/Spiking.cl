// Spiking neurons over time steps (Spiking.swift), as SpikingJelly's multi-step mode runs them: a
// tensor of T*N samples holds time step t of sample n at t*N + n, so that convolutions and norms
// run on every step at once and only the neurons carry state from one step to the next.
// Tensor arguments are (buffer, offset, batch stride); see Common.cl.
//
// The neuron is compiled in: SPIKE_T time steps; LEAKY 0 (integrate-and-fire: H = V + X) or 1
// (leaky, with TAU: H = V + (X - V) / TAU); a spike S = (H >= VTH); then a hard reset to 0
// (HARD_RESET 1: V = H (1 - S)) or a soft one (V = H - VTH S). DETACH_RESET 1 takes the reset's S
// as a constant in the backward pass. The spike's gradient is a surrogate's, at u = H - VTH:
// SURROGATE 0 the arctangent's, (ALPHA / 2) / (1 + (pi / 2 ALPHA u)^2); 1 the sigmoid's,
// ALPHA s (1 - s) with s = sigmoid(ALPHA u).

// Defaults, for the time and connection kernels, which take none of them.
#ifndef SPIKE_T
#define SPIKE_T 4
#define LEAKY 0
#define TAU 2.0f
#define VTH 1.0f
#define HARD_RESET 1
#define DETACH_RESET 1
#define SURROGATE 0
#define ALPHA 2.0f
#endif

inline float charge(float v, float x) {
#if LEAKY
    return v + (x - v) / TAU;
#else
    return v + x;
#endif
}

inline float reset(float h, float s) {
#if HARD_RESET
    return h * (1.0f - s);
#else
    return h - VTH * s;
#endif
}

inline float surrogate_gradient(float u) {
#if SURROGATE == 0
    const float a = 1.57079632679f * ALPHA * u;
    return 0.5f * ALPHA / (1.0f + a * a);
#else
    const float s = 1.0f / (1.0f + exp(-ALPHA * u));
    return ALPHA * s * (1.0f - s);
#endif
}

// One work item per element e of a sample n walks its T steps; the grid is (e, 1, n)
// (CommandQueue.launchPlanes), which needs no division.
__kernel void spike_forward(__global const store_t *x, uint xo, uint xs, __global store_t *y, uint yo, uint ys,
                            uint batch) {
    const uint e = get_global_id(0), n = get_global_id(2);
    float v = 0.0f;
    for (uint t = 0; t < SPIKE_T; ++t) {
        const float h = charge(v, LOAD(x, AT(xo, xs, t * batch + n, e)));
        const float s = h >= VTH ? 1.0f : 0.0f;
        STORE(y, AT(yo, ys, t * batch + n, e), s);
        v = reset(h, s);
    }
}

// Backpropagation through time: the forward pass again, keeping H, then the steps in reverse with
// the gradient of the membrane potential carried from each step to the one before.
__kernel void spike_backward(__global const store_t *x, uint xo, uint xs, __global const store_t *dy, uint dyo,
                             uint dys, __global store_t *dx, uint dxo, uint dxs, uint batch, uint accumulate) {
    const uint e = get_global_id(0), n = get_global_id(2);
    float h[SPIKE_T];
    float v = 0.0f;
    for (uint t = 0; t < SPIKE_T; ++t) {
        h[t] = charge(v, LOAD(x, AT(xo, xs, t * batch + n, e)));
        v = reset(h[t], h[t] >= VTH ? 1.0f : 0.0f);
    }
#if LEAKY
    const float dh_dx = 1.0f / TAU, dh_dv = 1.0f - 1.0f / TAU;
#else
    const float dh_dx = 1.0f, dh_dv = 1.0f;
#endif
    float dv = 0.0f;
    for (uint k = SPIKE_T; k-- > 0;) {
        const float s = h[k] >= VTH ? 1.0f : 0.0f;
#if HARD_RESET
        const float dv_dh = 1.0f - s, dv_ds = -h[k];
#else
        const float dv_dh = 1.0f, dv_ds = -VTH;
#endif
        float ds = LOAD(dy, AT(dyo, dys, k * batch + n, e));
#if !DETACH_RESET
        ds += dv * dv_ds;
#endif
        const float dh = ds * surrogate_gradient(h[k] - VTH) + dv * dv_dh;
        STORE_GRAD_S(dx, AT(dxo, dxs, k * batch + n, e), dh * dh_dx, accumulate);
        dv = dh * dh_dv;
    }
}

// y[n][e] (=, or += with accumulate) scale * sum over t of x[t*N + n][e]: the mean over time
// (scale 1 / T) and the gradient of a repetition over time (scale 1).
__kernel void time_sum(__global const store_t *x, uint xo, uint xs, __global store_t *y, uint yo, uint ys, uint steps,
                       uint batch, uint sample, float scale, uint total, uint accumulate) {
    const uint i = get_global_id(0);
    if (i >= total) return;
    const uint n = i / sample, e = i % sample;
    float sum = 0.0f;
    for (uint t = 0; t < steps; ++t) sum += LOAD(x, AT(xo, xs, t * batch + n, e));
    STORE_GRAD_S(y, AT(yo, ys, n, e), scale * sum, accumulate);
}

// y[t*N + n][e] (=, or +=) scale * x[n][e] for every t: a repetition over time (scale 1) and the
// gradient of the mean over time (scale 1 / T).
__kernel void time_broadcast(__global const store_t *x, uint xo, uint xs, __global store_t *y, uint yo, uint ys,
                             uint steps, uint batch, uint sample, float scale, uint total, uint accumulate) {
    const uint i = get_global_id(0);
    if (i >= total) return;
    const uint n = i / sample, e = i % sample;
    const float v = scale * LOAD(x, AT(xo, xs, n, e));
    for (uint t = 0; t < steps; ++t) STORE_GRAD_S(y, AT(yo, ys, t * batch + n, e), v, accumulate);
}

// Spike-element-wise connections of SEW ResNet, with a the shortcut and b the branch: ADD a + b
// (mode 0), AND a b (1), IAND a (1 - b) (2).
inline float connect(float a, float b, uint mode) {
    return mode == 0 ? a + b : mode == 1 ? a * b : a * (1.0f - b);
}

__kernel void sew_connect(__global const store_t *a, uint ao, uint as, __global const store_t *b, uint bo, uint bs,
                          __global store_t *y, uint yo, uint ys, uint mode, uint sample, uint total) {
    const uint i = get_global_id(0);
    if (i >= total) return;
    const uint n = i / sample, e = i % sample;
    STORE(y, AT(yo, ys, n, e), connect(LOAD(a, AT(ao, as, n, e)), LOAD(b, AT(bo, bs, n, e)), mode));
}

__kernel void sew_connect_backward(__global const store_t *a, uint ao, uint as, __global const store_t *b, uint bo,
                                   uint bs, __global const store_t *dy, uint dyo, uint dys, __global store_t *da,
                                   uint dao, uint das, uint has_da, uint accumulate_a, __global store_t *db, uint dbo,
                                   uint dbs, uint has_db, uint accumulate_b, uint mode, uint sample, uint total) {
    const uint i = get_global_id(0);
    if (i >= total) return;
    const uint n = i / sample, e = i % sample;
    const float g = LOAD(dy, AT(dyo, dys, n, e));
    // ADD reads neither input (the memory plan does not keep them for it).
    if (has_da) {
        const float bv = mode == 0 ? 0.0f : LOAD(b, AT(bo, bs, n, e));
        STORE_GRAD_S(da, AT(dao, das, n, e), mode == 0 ? g : mode == 1 ? g * bv : g * (1.0f - bv), accumulate_a);
    }
    if (has_db) {
        const float av = mode == 0 ? 0.0f : LOAD(a, AT(ao, as, n, e));
        STORE_GRAD_S(db, AT(dbo, dbs, n, e), mode == 0 ? g : mode == 1 ? g * av : -g * av, accumulate_b);
    }
}
