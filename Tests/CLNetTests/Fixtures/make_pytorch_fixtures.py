#!/usr/bin/env python3
"""Makes the PyTorch fixtures that `PyTorchFixtureTests` checks `clnet run` against.

    pip install torch==2.13.0 torchvision==0.28.0 safetensors numpy
    python3 Tests/CLNetTests/Fixtures/make_pytorch_fixtures.py Tests/CLNetTests/Fixtures

Each model is one of torchvision's classes (ResNet, ResNeXt through ResNet's groups, DenseNet),
built small. Their weights are not stored: they come from a formula that the Swift test repeats
bit for bit (`fixture_values` below, `fixtureValues` there), because even the smallest torchvision
ResNet has 4.9 M parameters and the fixtures must stay under 2 MB. PyTorch runs in float64, so the
fixture is the exact answer and CLNet's float32 is what is measured.

Each file holds `input` and `labels`; `eval.logits`; `train.logits`, `train.loss`, the running
statistics after the step as `state.<buffer>`; and every parameter's gradient as `grad.<name>`:
whole for tensors up to 4096 values, else 512 values at the indices in `grad_index.<name>` plus
the whole gradient's norm in `grad_norm.<name>`.
"""
import math, os, sys, types

sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
import numpy as np
import torch
from torchvision.models.densenet import DenseNet
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
from safetensors.numpy import save_file

GOLDEN, M1, M2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def fnv1a(text):
    h = 0xCBF29CE484222325
    for b in text.encode():
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def uniforms(name, n):
    """The first n uniforms in [0, 1) of CLNet's SeededGenerator (SplitMix64) seeded with FNV-1a(name)."""
    with np.errstate(over="ignore"):
        z = np.uint64(fnv1a(name)) + np.arange(1, n + 1, dtype=np.uint64) * GOLDEN
        z = (z ^ (z >> np.uint64(30))) * M1
        z = (z ^ (z >> np.uint64(27))) * M2
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


def fixture_values(name, shape, kind):
    """Float32 values of a parameter, buffer or input, as the Swift test makes them."""
    n = int(np.prod(shape, dtype=np.int64))
    u = uniforms(name, n)
    if kind == "weight":  # convolution or linear: uniform with He's variance, 2 / fan-in
        v = (2 * u - 1) * math.sqrt(6.0 / (n // shape[0]))
    elif kind in ("bias", "norm_bias", "running_mean"):
        v = (2 * u - 1) * 0.2
    elif kind in ("norm_weight", "running_var"):
        v = 0.5 + u
    elif kind == "input":
        v = 2 * u - 1
    else:
        raise ValueError(kind)
    return v.astype(np.float32).reshape(shape)


def set_weights(model):
    for module_name, module in model.named_modules():
        prefix = module_name + "." if module_name else ""
        norm = isinstance(module, torch.nn.modules.batchnorm._BatchNorm)
        for name, p in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
            if name == "num_batches_tracked":
                continue
            kind = {"weight": "norm_weight", "bias": "norm_bias"}.get(name, name) if norm else name
            p.data = torch.from_numpy(fixture_values(prefix + name, tuple(p.shape), kind)).to(p.dtype)


MODELS = {
    # torchvision constructor, CLNet specification, image size
    "resnet": (lambda: ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10), 64),
    "resnext": (lambda: ResNet(Bottleneck, [1, 1, 1, 1], groups=4, width_per_group=4, num_classes=10), 64),
    "densenet": (lambda: DenseNet(growth_rate=8, block_config=(2, 3), num_init_features=16, bn_size=2, num_classes=10), 32),
}


def make(name, out_dir):
    build, size = MODELS[name]
    x = fixture_values("input", (2, 3, size, size), "input")
    labels = np.array([3, 8], dtype=np.int64)
    tensors = {"input": x, "labels": labels}
    model = build()
    set_weights(model)
    model = model.double().eval()
    with torch.no_grad():
        tensors["eval.logits"] = model(torch.from_numpy(x).double()).numpy().astype(np.float32)
    model.train()
    logits = model(torch.from_numpy(x).double())
    loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(labels))
    loss.backward()
    tensors["train.logits"] = logits.detach().numpy().astype(np.float32)
    tensors["train.loss"] = np.array(loss.item(), dtype=np.float32)
    for b, v in model.named_buffers():
        if not b.endswith("num_batches_tracked"):
            tensors["state." + b] = v.numpy().astype(np.float32)
    rng = np.random.default_rng(fnv1a(name) % 2**32)
    for p, v in model.named_parameters():
        g = v.grad.numpy().reshape(-1)
        if g.size <= 4096:
            tensors["grad." + p] = g.astype(np.float32).reshape(v.shape)
        else:
            index = np.sort(rng.choice(g.size, 512, replace=False)).astype(np.int64)
            tensors["grad_index." + p] = index
            tensors["grad." + p] = g[index].astype(np.float32)
            tensors["grad_norm." + p] = np.array(np.linalg.norm(g), dtype=np.float64)
    path = os.path.join(out_dir, f"pytorch_{name}.safetensors")
    save_file(tensors, path, metadata={"torch": torch.__version__, "model": name})
    print(f"{path}: {os.path.getsize(path)} bytes, {sum(p.numel() for p in model.parameters())} parameters, loss {loss.item():.6f}")


if __name__ == "__main__":
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "."
    for name in MODELS:
        make(name, out_dir)
