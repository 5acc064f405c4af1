#!/usr/bin/env python3
"""The PyTorch side of `clnet-bench model`: the same model, batch and mode, the same rules.

Usage:
  python3 Benchmarks/pytorch_baseline.py --model resnet50 --batch 8 --mode train [--size 224]
      [--warmup 2 --iters 10] [--device cuda|cpu] [--precision default|fp32|tf32] [--json]

Rules shared with `clnet-bench model` (Benchmarks/clnet-bench/Model.swift):
- a step is, in train mode, forward, mean cross-entropy against random labels, backward and one
  SGD update (momentum 0.9, weight decay 5e-4); in infer mode, the forward pass with batch norm in
  eval mode and no autograd;
- inputs are uniform in [-1, 1], weights the framework's own initialisation;
- `warmup` untimed steps, then `iters` timed ones; each timed step runs from the first enqueue
  until the device is idle (torch.cuda.synchronize on a GPU); median, p10 and p90 by nearest
  rank, as CLNet's `Timing`;
- device time per step from CUDA events around the step (absent on the CPU, which has no such
  clock), and peak memory from torch.cuda.max_memory_allocated (absent on the CPU).

--precision: `default` leaves PyTorch's defaults (cuDNN may use TF32 for convolutions, matmuls
do not), `fp32` turns TF32 off everywhere, `tf32` turns it on everywhere. cuDNN's autotuner
(torch.backends.cudnn.benchmark) is on, as most training scripts set it; --no-cudnn-benchmark
turns it off.

Model names are CLNet's: torchvision's constructors (resnet18, resnet50, resnext50_32x4d,
wide_resnet50_2, densenet121, ...), an optional `:classes=N`, and the CIFAR ResNets of He et al.
(resnet20, resnet32, resnet44, resnet56, resnet110, resnet1202), written out below as CLNet
builds them (option-A shortcuts).
"""
import argparse, json, statistics, sys, time, types

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:
    print("pytorch_baseline.py: PyTorch is not installed here (pip install torch torchvision); "
          "the CLNet side runs without it", file=sys.stderr)
    sys.exit(3)
# torchvision's compiled operators do not load with some CPU builds of torch; its model classes
# do not need them.
sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
try:
    import torchvision
except ImportError:
    print("pytorch_baseline.py: torchvision is not installed here (pip install torchvision)", file=sys.stderr)
    sys.exit(3)

CIFAR_DEPTHS = {20, 32, 44, 56, 110, 1202}


class CIFARBlock(nn.Module):
    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.stride, self.pad = stride, planes - cin

    def forward(self, x):
        z = F.relu(self.bn1(self.conv1(x)))
        z = self.bn2(self.conv2(z))
        s = x
        if self.stride != 1 or self.pad:
            s = x[:, :, ::self.stride, ::self.stride]
            s = F.pad(s, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return F.relu(z + s)


class CIFARResNet(nn.Module):
    def __init__(self, depth, classes=10, in_channels=3):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, cin = [], 16
        for stage in range(3):
            planes = 16 << stage
            for i in range(n):
                layers.append(CIFARBlock(cin, planes, 2 if i == 0 and stage > 0 else 1))
                cin = planes
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        x = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def build(spec):
    """A model from a CLNet model name with an optional `:classes=N`; returns (model, image size)."""
    name, _, options = spec.partition(":")
    kwargs = {}
    for item in filter(None, options.split(",")):
        key, _, value = item.partition("=")
        if key != "classes":
            raise SystemExit(f"pytorch_baseline.py: option '{key}' of '{spec}' has no PyTorch counterpart here; "
                             "only classes=N is understood")
        kwargs["num_classes"] = int(value)
    if name.startswith("resnet") and name[6:].isdigit() and int(name[6:]) in CIFAR_DEPTHS:
        return CIFARResNet(int(name[6:]), classes=kwargs.get("num_classes", 10)), 32
    constructor = getattr(torchvision.models, name, None)
    if constructor is None or not callable(constructor):
        raise SystemExit(f"pytorch_baseline.py: no torchvision model '{name}'; use a torchvision name "
                         "(resnet50, resnext50_32x4d, densenet121, ...) or a CIFAR ResNet (resnet20, ...)")
    return constructor(**kwargs), 224


def timing(samples_seconds):
    """Median, p10 and p90 (nearest rank) in milliseconds, as CLNet's Timing."""
    s = sorted(x * 1e3 for x in samples_seconds)
    at = lambda q: s[min(len(s) - 1, int(round(q * (len(s) - 1))))]
    return {"median": statistics.median(s), "p10": at(0.1), "p90": at(0.9), "samples": len(s)}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet50")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=None, help="image size (default: the model's own, 224 or 32)")
    p.add_argument("--mode", choices=["train", "infer"], default="train")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--precision", choices=["default", "fp32", "tf32"], default="default")
    p.add_argument("--no-cudnn-benchmark", action="store_true")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()

    device = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    if a.precision != "default":
        on = a.precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = on
        torch.backends.cudnn.allow_tf32 = on
    torch.backends.cudnn.benchmark = not a.no_cudnn_benchmark
    torch.manual_seed(0)
    model, default_size = build(a.model)
    size = a.size or default_size
    model = model.to(device)
    classes = model.fc.out_features if hasattr(model, "fc") else model.classifier.out_features
    x = (torch.rand(a.batch, 3, size, size, device=device) * 2 - 1)
    y = torch.randint(0, classes, (a.batch,), device=device)
    train = a.mode == "train"
    model.train(train)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def step():
        if train:
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
        else:
            with torch.inference_mode():
                model(x)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    for _ in range(a.warmup):
        step()
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    wall, device_times = [], []
    for _ in range(max(1, a.iters)):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        t = time.perf_counter()
        step()
        if cuda:
            end.record()
        sync()
        wall.append(time.perf_counter() - t)
        if cuda:
            device_times.append(start.elapsed_time(end) * 1e-3)

    name = torch.cuda.get_device_name(device) if cuda else f"CPU ({torch.get_num_threads()} threads)"
    ms = timing(wall)
    report = {
        "framework": "pytorch",
        "model": a.model,
        "batch": a.batch,
        "size": size,
        "mode": a.mode,
        "device": name,
        "warmup": a.warmup,
        "iters": max(1, a.iters),
        "imagesPerSecond": a.batch / (ms["median"] * 1e-3),
        "milliseconds": ms,
        "deviceMilliseconds": timing(device_times) if cuda else None,
        "peakMemoryBytes": torch.cuda.max_memory_allocated(device) if cuda else None,
        "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__,
                     "cudnn": torch.backends.cudnn.version() if cuda else None},
        "precision": a.precision,
        "cudnnBenchmark": not a.no_cudnn_benchmark,
    }
    if a.json:
        print(json.dumps(report, indent=2, sort_keys=True))
        return
    print(f"{a.model}, batch {a.batch}, {size}x{size}, {a.mode}, on {name} (PyTorch {torch.__version__}, "
          f"precision {a.precision})")
    print(f"images/s {report['imagesPerSecond']:.1f}; median {ms['median']:.1f} ms, p10 {ms['p10']:.1f}, p90 {ms['p90']:.1f}")
    if cuda:
        print(f"device median {report['deviceMilliseconds']['median']:.1f} ms; peak memory "
              f"{report['peakMemoryBytes'] >> 20} MiB")


if __name__ == "__main__":
    main()
