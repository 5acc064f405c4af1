// Stochastic gradient descent with momentum, Nesterov momentum and weight decay, as PyTorch's
// torch.optim.SGD (dampening 0): one launch updates a contiguous range of the parameter arena.
//   g = grad + wd * p;  buf = momentum * buf + g;  step = nesterov ? g + momentum * buf : buf
//   p -= lr * step
// With momentum 0 the buffer is not touched (it may be any buffer). PyTorch starts the buffer
// as g on the first step; with dampening 0 that equals starting it at zero, which CLNet does.

__kernel void sgd_update(__global float *p, uint po, __global const float *grad, uint go,
                         __global float *buf, uint bo, uint count,
                         float lr, float momentum, float weight_decay, uint nesterov) {
    const uint i = get_global_id(0);
    if (i >= count) return;
    const float w = p[po + i];
    float g = grad[go + i] + weight_decay * w;
    if (momentum != 0.0f) {
        const float b = momentum * buf[bo + i] + g;
        buf[bo + i] = b;
        g = nesterov ? g + momentum * b : b;
    }
    p[po + i] = w - lr * g;
}
