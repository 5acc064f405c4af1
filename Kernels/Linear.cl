// Bias terms of the fully connected layer and of convolutions: y[n, c, p] += bias[c] over
// `plane` positions p (1 for a fully connected layer), and its gradient, the sum of dy over
// samples and positions. The matrix products themselves go through CLBlast.
// Tensor arguments: (buffer, offset, batch stride), see Common.cl; parameters: (buffer, offset).

__kernel void bias_forward(__global float *y, uint yo, uint ys, __global const float *bias, uint bo,
                           uint channels, uint plane, uint total) {
    const uint i = get_global_id(0);
    if (i >= total) return;
    const uint sample = channels * plane, n = i / sample, j = i % sample;
    y[AT(yo, ys, n, j)] += bias[bo + j / plane];
}

// One work-group per channel.
__kernel void bias_backward(__global const float *dy, uint dyo, uint dys, __global float *dbias, uint dbo,
                            uint batch, uint channels, uint plane, uint accumulate) {
    __local float scratch[RED];
    const uint c = get_group_id(0), lid = get_local_id(0), count = batch * plane;
    float sum = 0.0f;
    for (uint k = lid; k < count; k += RED) sum += dy[AT(dyo, dys, k / plane, c * plane + k % plane)];
    sum = group_sum(sum, scratch);
    if (lid == 0) STORE_GRAD(dbias, dbo + c, sum, accumulate);
}
