// Bias terms of the fully connected layer and of convolutions: y[n, c, p] = x[n, c, p] + bias[c]
// over `plane` positions p (1 for a fully connected layer), and its gradient, the sum of dy over
// samples and positions. The matrix products themselves go through Device/GEMM.swift.
// Tensor arguments: (buffer, offset, batch stride), see Common.cl; parameters: (buffer, offset).

// y = x + bias[c] (when has_bias), plus a residual r (when residual), then max(., 0) (when relu):
// the epilogue of a GEMM, for the fully connected layer and convolutions. The executor also hands it a residual
// block's addition and ReLU when they directly follow a convolution with a bias (a folded
// network: see MemoryPlan.epilogues), so that one pass does what batch norm and the addition
// did in two. y may be x or r (in place).
// Work items are (position in the channel plane, channel, sample): see launchPlanes.
__kernel void bias_epilogue(__global const store_t *x, uint xo, uint xs, __global const float *bias, uint bo,
                            __global const store_t *r, uint ro, uint rs, __global store_t *y, uint yo, uint ys,
                            uint plane, uint channels, uint batch, uint has_bias, uint residual, uint relu) {
    const uint p = get_global_id(0), c = get_global_id(1), n = get_global_id(2);
    if (p >= plane || c >= channels || n >= batch) return;
    const uint j = c * plane + p;
    float v = LOAD(x, AT(xo, xs, n, j));
    if (has_bias) v += bias[bo + c];
    if (residual) v += LOAD(r, AT(ro, rs, n, j));
    STORE(y, AT(yo, ys, n, j), relu ? RELU(v) : v);
}

// One work-group per channel.
__kernel void bias_backward(__global const store_t *dy, uint dyo, uint dys, __global float *dbias, uint dbo,
                            uint batch, uint channels, uint plane, uint accumulate) {
    __local float scratch[RED];
    const uint c = get_group_id(0), lid = get_local_id(0), count = batch * plane;
    float sum = 0.0f;
    for (uint k = lid; k < count; k += RED) sum += LOAD(dy, AT(dyo, dys, k / plane, c * plane + k % plane));
    sum = group_sum(sum, scratch);
    if (lid == 0) STORE_GRAD(dbias, dbo + c, sum, accumulate);
}
