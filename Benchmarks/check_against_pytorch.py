#!/usr/bin/env python3
"""Checks `clnet run` against PyTorch and torchvision on a torchvision ResNet-18.

Usage: python3 Benchmarks/check_against_pytorch.py .build/release/clnet [device]
Needs torch, torchvision and safetensors (pip). Compares CLNet's logits, loss, gradients and
running statistics with PyTorch in float32 and in float64; the float64 run is the reference.
"""
import subprocess, sys, tempfile, types, os

# torchvision's compiled operators do not load on some CPU builds of torch; its model classes do
# not need them.
sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
import torch, torchvision
from safetensors.torch import save_file, load_file

clnet, device = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "0")
tmp = tempfile.mkdtemp()
w, io, out_path = (os.path.join(tmp, n) for n in ("w.safetensors", "io.safetensors", "out.safetensors"))
torch.manual_seed(0)
save_file(torchvision.models.resnet18(num_classes=10).state_dict(), w)
x, y = torch.randn(2, 3, 64, 64), torch.tensor([1, 7])
save_file({"input": x, "labels": y}, io)
subprocess.run([clnet, "run", "--model", "resnet18:classes=10", "--weights", w, "--input", io, "--output", out_path,
                "--mode", "train", "--grads", "--device", device], check=True)
out = load_file(out_path)

def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()

for dtype in (torch.float32, torch.float64):
    model = torchvision.models.resnet18(num_classes=10)
    model.load_state_dict(load_file(w))
    model = model.to(dtype).train()
    logits = model(x.to(dtype))
    loss = torch.nn.functional.cross_entropy(logits, y)
    loss.backward()
    grads = sorted((rel(out["grad." + n], p.grad), n) for n, p in model.named_parameters())
    state = model.state_dict()
    stats = max(rel(out["state." + n], state[n]) for n in state if n.endswith(("running_mean", "running_var")))
    print(f"PyTorch {str(dtype)[6:]}: logits {rel(out['logits'], logits.detach()):.2e}  "
          f"loss {abs(out['loss'].item() - loss.item()) / loss.item():.2e}  "
          f"gradients median {grads[len(grads) // 2][0]:.2e} worst {grads[-1][0]:.2e} ({grads[-1][1]})  "
          f"running statistics worst {stats:.2e}")
