#!/usr/bin/env python3
"""Makes `upsample.safetensors`, which `UpsampleTests` checks CLNet's upsampling against:
PyTorch's `F.interpolate(mode=..., align_corners=False)` forward and backward in float32, the
precision whose coordinate arithmetic CLNet repeats (PyTorch computes source coordinates in the
tensor's own precision).

    /opt/torchenv/bin/python Tests/CLNetTests/Fixtures/make_upsample_fixture.py Tests/CLNetTests/Fixtures

For each case of CASES (which UpsampleTests.fixtureCases repeats, in order) the file holds, under
`case<i>.`: the input `x`, the output's gradient `r`, and PyTorch's output `y` and input gradient
`dx` of sum(y * r).
"""
import os, sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

# (mode, input shape, scale factor or None, output size or None)
CASES = [
    ("nearest", (2, 3, 4, 5), 2.0, None),
    ("bilinear", (2, 3, 4, 5), 2.0, None),
    ("bilinear", (1, 2, 5, 3), 3.0, None),
    ("nearest", (1, 2, 5, 3), 3.0, None),
    ("bilinear", (1, 2, 7, 6), 1.5, None),
    ("nearest", (1, 2, 7, 6), 1.5, None),
    ("bilinear", (2, 2, 5, 7), None, (13, 9)),
    ("nearest", (2, 2, 5, 7), None, (13, 9)),
    ("bilinear", (1, 3, 9, 8), None, (4, 5)),
    ("bilinear", (1, 2, 3, 3), 8.0, None),
]


def main(out_dir):
    torch.manual_seed(0)
    tensors = {}
    for i, (mode, shape, factor, size) in enumerate(CASES):
        x = torch.randn(shape).requires_grad_()
        kw = {"scale_factor": factor} if factor is not None else {"size": size}
        if mode == "bilinear":
            kw["align_corners"] = False
        y = F.interpolate(x, mode=mode, **kw)
        r = torch.randn(y.shape)
        (y * r).sum().backward()
        tensors[f"case{i}.x"] = x.detach().float()
        tensors[f"case{i}.r"] = r
        tensors[f"case{i}.y"] = y.detach().float()
        tensors[f"case{i}.dx"] = x.grad.float()
    save_file(tensors, os.path.join(out_dir, "upsample.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
