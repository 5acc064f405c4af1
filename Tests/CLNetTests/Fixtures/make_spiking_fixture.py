#!/usr/bin/env python3
"""Makes `spiking.safetensors`, which `SpikingTests` checks CLNet's spiking neurons against:
SpikingJelly 2.0's `IFNode` and `LIFNode` in multi-step mode, forward and backward through time,
in float64.

    pip install spikingjelly==2.0.0 loguru h5py   # and what its imports ask for
    /opt/torchenv/bin/python Tests/CLNetTests/Fixtures/make_spiking_fixture.py Tests/CLNetTests/Fixtures

For each case of CASES (which SpikingTests.fixtureCases repeats, in order) the file holds, under
`case<i>.`: `x` [T, 2, 3, 5, 4] (float32 values), the spikes' gradient `r`, and SpikingJelly's
spikes `y` and input gradient `dx` of sum(y * r). An input is drawn again while any neuron's
potential lies within 1e-3 of the threshold, where float32 could fire where float64 does not.
"""
import os, sys

import numpy as np
import torch
from safetensors.numpy import save_file
from spikingjelly.activation_based import neuron, surrogate

# (T, leaky tau or None, hard reset, surrogate ("atan" or "sigmoid"), alpha, detach reset)
CASES = [
    (4, None, True, "atan", 2.0, True),
    (3, None, True, "atan", 2.0, False),
    (4, 2.0, True, "sigmoid", 4.0, False),
    (5, 1.5, False, "sigmoid", 4.0, True),
    (2, None, False, "sigmoid", 3.0, False),
]


def potentials(x, tau, hard):
    """H at every step, before the reset (to check the margin)."""
    v, hs = np.zeros_like(x[0]), []
    for t in range(x.shape[0]):
        h = v + x[t] if tau is None else v + (x[t] - v) / tau
        s = (h >= 1.0).astype(np.float64)
        v = h * (1 - s) if hard else h - s
        hs.append(h)
    return np.stack(hs)


def main(out_dir):
    rng = np.random.default_rng(20261207)
    tensors = {}
    for i, (steps, tau, hard, grad, alpha, detach) in enumerate(CASES):
        fn = surrogate.ATan(alpha=alpha) if grad == "atan" else surrogate.Sigmoid(alpha=alpha)
        kw = dict(v_threshold=1.0, v_reset=0.0 if hard else None, surrogate_function=fn, detach_reset=detach, step_mode="m")
        node = neuron.IFNode(**kw) if tau is None else neuron.LIFNode(tau=tau, **kw)
        while True:
            x = (1.2 * rng.standard_normal((steps, 2, 3, 5, 4)) + 0.4).astype(np.float32).astype(np.float64)
            if np.abs(potentials(x, tau, hard) - 1.0).min() > 1e-3:
                break
        xt = torch.from_numpy(x).requires_grad_()
        node.reset()
        y = node(xt)
        r = torch.from_numpy(rng.standard_normal(y.shape).astype(np.float32).astype(np.float64))
        (y * r).sum().backward()
        tensors[f"case{i}.x"] = x.astype(np.float32)
        tensors[f"case{i}.r"] = r.numpy().astype(np.float32)
        tensors[f"case{i}.y"] = y.detach().numpy()
        tensors[f"case{i}.dx"] = xt.grad.numpy()
    import spikingjelly
    save_file(tensors, os.path.join(out_dir, "spiking.safetensors"),
              metadata={"torch": torch.__version__, "spikingjelly": getattr(spikingjelly, "__version__", "2.0.0")})


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
