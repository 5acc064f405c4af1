#!/usr/bin/env python3
"""Makes `deform_conv.safetensors`, which `DeformConvTests` checks CLNet's deformable convolution
against: torchvision's `torchvision.ops.deform_conv2d`, forward and backward, in float64.

    /opt/torchenv/bin/python Tests/CLNetTests/Fixtures/make_deform_conv_fixture.py Tests/CLNetTests/Fixtures

For each case of CASES (which DeformConvTests.fixtureCases repeats, in order) the file holds, under
`case<i>.`: the inputs `x`, `offset`, `mask` (modulated cases only), `weight` and `bias` (cases
with one), all float32 values so that CLNet reads exactly what torchvision used; `r`, the output
gradient; and torchvision's `y` and the gradients of sum(y * r) with respect to every input,
`dx`, `doffset`, `dmask`, `dweight`, `dbias`, as float64. Offsets are drawn with a spread of two
pixels, so that samples fall off the input's edges as well as between its pixels.
"""
import os, sys

import numpy as np
import torch
from safetensors.numpy import save_file
from torchvision.ops import deform_conv2d

# (x shape, out channels, kernel, stride, padding, dilation, groups, offset groups, modulated, bias)
CASES = [
    ((2, 4, 7, 6), 6, (3, 3), (1, 1), (1, 1), (1, 1), 1, 1, False, True),
    ((1, 6, 9, 8), 4, (3, 3), (2, 2), (1, 1), (1, 1), 2, 3, True, False),
    ((2, 3, 8, 9), 5, (3, 3), (1, 1), (2, 2), (2, 2), 1, 1, True, True),
    ((1, 2, 6, 7), 3, (2, 3), (1, 2), (0, 1), (1, 1), 1, 2, False, False),
]


def main(out_dir):
    torch.manual_seed(20261207)
    tensors = {}
    for i, (shape, out, k, s, p, d, g, dg, modulated, bias) in enumerate(CASES):
        n, c, h, w = shape
        oh = (h + 2 * p[0] - (d[0] * (k[0] - 1) + 1)) // s[0] + 1
        ow = (w + 2 * p[1] - (d[1] * (k[1] - 1) + 1)) // s[1] + 1
        f32 = lambda t: t.float().double().requires_grad_()
        x = f32(torch.randn(shape))
        offset = f32(2 * torch.randn(n, 2 * dg * k[0] * k[1], oh, ow))
        mask = f32(torch.rand(n, dg * k[0] * k[1], oh, ow)) if modulated else None
        weight = f32(torch.randn(out, c // g, *k) / np.sqrt(c // g * k[0] * k[1]))
        b = f32(torch.randn(out)) if bias else None
        y = deform_conv2d(x, offset, weight, b, stride=s, padding=p, dilation=d, mask=mask)
        r = torch.randn(y.shape).float().double()
        (y * r).sum().backward()
        t = {"x": x, "offset": offset, "weight": weight}
        if modulated:
            t["mask"] = mask
        if bias:
            t["bias"] = b
        for name, v in t.items():
            tensors[f"case{i}.{name}"] = v.detach().numpy().astype(np.float32)
            tensors[f"case{i}.d{name}"] = v.grad.numpy()
        tensors[f"case{i}.r"] = r.numpy().astype(np.float32)
        tensors[f"case{i}.y"] = y.detach().numpy()
    save_file(tensors, os.path.join(out_dir, "deform_conv.safetensors"),
              metadata={"torch": torch.__version__, "torchvision": __import__("torchvision").__version__})


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
