#!/usr/bin/env python3
"""timm's SE and selective-kernel ResNets and RepVGG through CLNet and back, strictly, as a user would:

    python3 Benchmarks/timm_roundtrip.py [CLNET] [NAME ...]     (default: .build/debug/clnet, every name)

For each timm model (2 classes, random weights, randomised batch-norm statistics): timm's
state_dict is saved as safetensors and `clnet run` gives its eval logits, against timm's own in
float64; then `clnet train` fine-tunes it for one step on a small image folder, and what CLNet
writes (model.safetensors) is loaded into `timm.create_model(name).load_state_dict(strict=True)`,
whose float64 eval logits are compared with `clnet run` on the same file. timm's own float32 is
shown beside each, as the floor that float32 arithmetic sets. Needs timm 1.0.31, torch,
safetensors and Pillow.
"""
import copy, os, subprocess, sys, tempfile, types

sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
import numpy as np
import timm
import torch
from PIL import Image
from safetensors.numpy import load_file, save_file

NAMES = ["seresnet18", "seresnet34", "seresnet50", "seresnext50_32x4d", "skresnet18", "skresnet34", "skresnet50",
         "skresnext50_32x4d", "repvgg_a0", "repvgg_b0"]


def randomise(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))


def logits(model, x):
    """timm's eval logits in float32 and in float64."""
    with torch.no_grad():
        single = model(torch.from_numpy(x)).numpy()
        double = copy.deepcopy(model).double()(torch.from_numpy(x).double()).numpy()
    return single, double


def relative(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def clnet_logits(clnet, name, weights, x, work):
    io, out = os.path.join(work, "io.safetensors"), os.path.join(work, "out.safetensors")
    save_file({"input": x}, io)
    subprocess.run([clnet, "run", "--model", f"{name}:classes=2", "--weights", weights, "--input", io, "--output", out],
                   check=True, capture_output=True)
    return load_file(out)["logits"]


def main():
    clnet = sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1] in NAMES else ".build/debug/clnet"
    names = [n for n in sys.argv[1:] if n in NAMES] or NAMES
    work = tempfile.mkdtemp(prefix="clnet-timm-")
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for label in ("cat", "dog"):
            os.makedirs(os.path.join(work, "images", split, label))
            for i in range(4):
                Image.fromarray(rng.integers(0, 256, (80, 72, 3), dtype=np.uint8)).save(
                    os.path.join(work, "images", split, label, f"{i}.png"))
    x = rng.uniform(-1, 1, (2, 3, 64, 64)).astype(np.float32)
    print("| model | timm's weights: CLNet (timm float32) | CLNet's weights into timm | CLNet's weights: CLNet (timm float32) |")
    print("| --- | --- | --- | --- |")
    for name in names:
        model = timm.create_model(name, num_classes=2).eval()
        randomise(model, 1)
        state = {k: v.numpy() for k, v in model.state_dict().items()}
        weights = os.path.join(work, f"{name}.safetensors")
        save_file(state, weights)
        single, want = logits(model, x)
        forward = f"{relative(clnet_logits(clnet, name, weights, x, work), want):.1e} ({relative(single, want):.1e})"

        run = os.path.join(work, f"{name}-run")
        subprocess.run([clnet, "train", "--model", name, "--weights", weights, "--data", f"imagefolder:{os.path.join(work, 'images')}",
                        "--image-size", "64", "--batch-size", "4", "--max-steps", "1", "--lr", "0.001", "--output", run],
                       check=True, capture_output=True)
        written = os.path.join(run, "model.safetensors")
        back = timm.create_model(name, num_classes=2).eval()
        back.load_state_dict({k: torch.from_numpy(v) for k, v in load_file(written).items()}, strict=True)
        single, theirs = logits(back, x)
        reverse = f"{relative(clnet_logits(clnet, name, written, x, work), theirs):.1e} ({relative(single, theirs):.1e})"
        print(f"| {name} | {forward} | strict, {len(load_file(written))} tensors | {reverse} |", flush=True)


if __name__ == "__main__":
    main()
