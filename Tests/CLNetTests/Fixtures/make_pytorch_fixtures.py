#!/usr/bin/env python3
"""Makes the PyTorch fixtures that `PyTorchFixtureTests` checks `clnet run` against.

    pip install torch==2.13.0 torchvision==0.28.0 timm==1.0.31 safetensors numpy
    python3 Tests/CLNetTests/Fixtures/make_pytorch_fixtures.py Tests/CLNetTests/Fixtures [NAME ...]

Each model is one of torchvision's classes (ResNet, ResNeXt through ResNet's groups, DenseNet),
built small, the pre-activation ResNet of the paper's code (`PreActResNet` below), or one of
timm's squeeze-and-excitation and selective-kernel ResNets (timm's own `ResNet` class and
blocks, built small). `timm_models.txt` lists the `state_dict` of each full-size timm model CLNet
names, which `TimmTests` checks CLNet's layouts against. Their
weights are not stored: they come from a formula that the Swift test repeats bit for bit
(`fixture_values` below, `fixtureValues` there), because even the smallest torchvision ResNet has
4.9 M parameters and the fixtures must stay under 2 MB. PyTorch runs in float64, so the fixture is
the exact answer and CLNet's float32 is what is measured.

Each file holds `input` (the name its formula was seeded with is the metadata's `input`) and
`labels`; `eval.logits`; `train.logits`, `train.loss`, the running statistics after the step as
`state.<buffer>`; and every parameter's gradient as `grad.<name>`: whole for tensors up to 4096
values, else 512 values at the indices in `grad_index.<name>` plus the whole gradient's norm in
`grad_norm.<name>`.
"""
import copy, math, os, sys, types

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


class PreActBlock(torch.nn.Module):
    """fb.resnet.torch `models/preresnet.lua`'s basicblock and bottleneck, the code behind He et
    al.'s ImageNet ResNet-200. `preact` is its block type: "no_preact" (the first block, after a
    stem that ends in BN-ReLU), "both_preact" (one BN-ReLU feeding branch and shortcut) or
    "preact" (the branch's own BN-ReLU; the identity carries the raw input). Its shortcut type B:
    a bare 1x1 convolution where the channels change, else the identity."""

    def __init__(self, cin, planes, stride, bottleneck, preact):
        super().__init__()
        nn = torch.nn
        out = planes * (4 if bottleneck else 1)
        self.preact = preact
        if preact != "no_preact":
            self.bn1 = nn.BatchNorm2d(cin)
        if bottleneck:
            self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
            self.bn2, self.conv2 = nn.BatchNorm2d(planes), nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
            self.bn3, self.conv3 = nn.BatchNorm2d(planes), nn.Conv2d(planes, out, 1, bias=False)
            self.branch = ["conv1", "bn2", "conv2", "bn3", "conv3"]
        else:
            self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
            self.bn2, self.conv2 = nn.BatchNorm2d(planes), nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.branch = ["conv1", "bn2", "conv2"]
        if cin != out:
            self.downsample = nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False))

    def forward(self, x):
        relu = torch.nn.functional.relu
        if self.preact == "both_preact":
            x = relu(self.bn1(x))
        z = relu(self.bn1(x)) if self.preact == "preact" else x
        for name in self.branch:
            z = getattr(self, name)(z)
            z = relu(z) if name.startswith("bn") else z
        return z + (self.downsample(x) if hasattr(self, "downsample") else x)


class PreActResNet(torch.nn.Module):
    """preresnet.lua's ImageNet network, with CLNet's (torchvision-style) parameter names:
    conv 7x7/2, BN-ReLU, max pool 3x3/2, four stages, BN-ReLU, average pooling, linear."""

    def __init__(self, bottleneck, layers, num_classes, width=64):
        super().__init__()
        nn = torch.nn
        self.conv1, self.bn1 = nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width)
        channels = width
        for stage, count in enumerate(layers):
            planes = width << stage
            blocks = []
            for i in range(count):
                preact = "preact" if i > 0 else "no_preact" if stage == 0 else "both_preact"
                blocks.append(PreActBlock(channels, planes, 2 if i == 0 and stage > 0 else 1, bottleneck, preact))
                channels = planes * (4 if bottleneck else 1)
            setattr(self, f"layer{stage + 1}", nn.Sequential(*blocks))
        self.bn_final, self.fc = nn.BatchNorm2d(channels), nn.Linear(channels, num_classes)

    def forward(self, x):
        relu = torch.nn.functional.relu
        x = torch.nn.functional.max_pool2d(relu(self.bn1(self.conv1(x))), 3, 2, 1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(relu(self.bn_final(x)).mean((2, 3)))


def timm_resnet(block, **kwargs):
    """timm's ResNet class with one block per stage and 10 classes; `block` is a name in
    timm.models.resnet or timm.models.sknet."""
    import timm.models.resnet as resnet
    import timm.models.sknet as sknet
    block = getattr(resnet, block, None) or getattr(sknet, block)
    return resnet.ResNet(block=block, layers=[1, 1, 1, 1], num_classes=10, **kwargs)


def sew_resnet(steps, cnf):
    """SpikingJelly's SEW ResNet-18 layout with one block per stage and 10 classes: IF neurons,
    the arctangent surrogate, the reset detached (the paper's ImageNet setting), in multi-step
    mode over `steps` time steps. The image is repeated at each step and the logits are the mean
    of the per-step outputs, as SpikingJelly's examples read them out."""
    from spikingjelly.activation_based import functional, neuron, surrogate
    from spikingjelly.activation_based.model.sew_resnet import BasicBlock as SEWBasicBlock, SEWResNet

    class SEW(SEWResNet):
        def forward(self, x):
            functional.reset_net(self)
            return super().forward(x.unsqueeze(0).repeat(steps, 1, 1, 1, 1)).mean(0)

    model = SEW(SEWBasicBlock, [1, 1, 1, 1], num_classes=10, cnf=cnf, spiking_neuron=neuron.IFNode,
                surrogate_function=surrogate.ATan(), detach_reset=True)
    functional.set_step_mode(model, "m")
    return model


# The full-size timm models that CLNet has under the same names.
TIMM_NAMES = ["seresnet18", "seresnet34", "seresnet50", "seresnext50_32x4d", "skresnet18", "skresnet34", "skresnet50",
              "skresnext50_32x4d"]

MODELS = {
    # constructor (torchvision's, timm's, or the reference above), image size, and batch (2
    # unless given: a selective kernel's attention norms pooled features, one value per sample,
    # and over 2 samples a batch norm's output does not depend on its input, so that the
    # gradients before it are zero but for eps and float32 cannot match them)
    "resnet": (lambda: ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10), 64),
    "resnext": (lambda: ResNet(Bottleneck, [1, 1, 1, 1], groups=4, width_per_group=4, num_classes=10), 64),
    "densenet": (lambda: DenseNet(growth_rate=8, block_config=(2, 3), num_init_features=16, bn_size=2, num_classes=10), 32),
    "preact_resnet18": (lambda: PreActResNet(False, [2, 2, 2, 2], num_classes=10), 64),
    # One bottleneck per stage: with [3, 4, 6, 3] blocks, even at width 16, float32 itself missed
    # 1e-3 on every one of 100 inputs once they differ by a few ulps (see float32_error).
    "preact_resnet50": (lambda: PreActResNet(True, [1, 1, 1, 1], num_classes=10, width=16), 64),
    # timm's seresnet18 and seresnext50_32x4d, one block per stage (and 4 groups of 4)
    "timm_seresnet": (lambda: timm_resnet("BasicBlock", block_args=dict(attn_layer="se")), 64),
    "timm_seresnext": (lambda: timm_resnet("Bottleneck", cardinality=4, base_width=4, block_args=dict(attn_layer="se")), 64),
    # timm's skresnet18, skresnet50 and skresnext50_32x4d, one block per stage (and 4 groups of 4)
    "timm_skresnet": (lambda: timm_resnet("SelectiveKernelBasic", zero_init_last=False, block_args=dict(
        sk_kwargs=dict(rd_ratio=1 / 8, rd_divisor=16, split_input=True))), 64, 4),
    "timm_skresnet50": (lambda: timm_resnet("SelectiveKernelBottleneck", zero_init_last=False, block_args=dict(
        sk_kwargs=dict(split_input=True))), 64, 4),
    "timm_skresnext": (lambda: timm_resnet("SelectiveKernelBottleneck", cardinality=4, base_width=4, zero_init_last=False,
                                           block_args=dict(sk_kwargs=dict(rd_ratio=1 / 16, rd_divisor=32, split_input=False))), 64, 4),
    # SpikingJelly 2.0's SEW ResNet (see sew_resnet), T = 4, ADD and IAND connections
    "sew_resnet": (lambda: sew_resnet(4, "ADD"), 64),
    "sew_resnet_iand": (lambda: sew_resnet(4, "IAND"), 64),
}


def float32_error(model, x, labels, trials=8):
    """The worst relative error of any parameter's float32 gradient against float64, over a few
    float32 runs whose inputs differ by up to 16 ulps here and there (an ulp was too little: CLNet
    sums batch statistics in other orders than PyTorch, and an input that one-ulp changes left
    alone still flipped a unit in preact_resnet50 and timm_skresnet50). Smooth, float32 lands within 1e-4
    or so. Where a ReLU input sits within float32's reach of zero it can flip, and then one unit
    moves a whole tensor's gradient: in preact_resnet50 at full width, float32 lands 1e-2 from
    float64 on most inputs, CLNet's and PyTorch's alike, because its layer-3 activations carry
    errors of 1e-4 and there are hundreds of thousands of them."""
    base = copy.deepcopy(model).double().train()
    base.zero_grad()
    torch.nn.functional.cross_entropy(base(torch.from_numpy(x).double()), labels).backward()
    want = {n: p.grad for n, p in base.named_parameters()}
    single = copy.deepcopy(model).float().train()
    rng = np.random.default_rng(0)
    worst = 0.0
    for trial in range(trials):
        v = x if trial == 0 else (x * (1 + rng.integers(-16, 17, x.shape) * 2.0 ** -24)).astype(np.float32)
        single.zero_grad()
        torch.nn.functional.cross_entropy(single(torch.from_numpy(v)), labels).backward()
        worst = max([worst] + [((p.grad.double() - want[n]).norm() / want[n].norm()).item()
                               for n, p in single.named_parameters()])
    return worst


def make(name, out_dir):
    build, size, batch = (MODELS[name] + (2,))[:3]
    labels = np.array([3, 8, 1, 5][:batch], dtype=np.int64)
    model = build()
    set_weights(model)
    model = model.double()
    # The first input whose gradients float32 reproduces to a quarter of the test's 1e-3:
    # "input", else "input.1", ...
    for draw in range(100):
        input_name = "input" if draw == 0 else f"input.{draw}"
        x = fixture_values(input_name, (batch, 3, size, size), "input")
        error = float32_error(model, x, torch.from_numpy(labels))
        if error < 2.5e-4:
            break
        print(f"{name}: float32 gradients on {input_name} are {error:.1e} from float64 (a ReLU kink); drawing again")
    else:
        raise RuntimeError(f"{name}: no input of 100 is away from the ReLU kinks")
    tensors = {"input": x, "labels": labels}
    model = model.eval()
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
    save_file(tensors, path, metadata={"torch": torch.__version__, "model": name, "input": input_name})
    print(f"{path}: {os.path.getsize(path)} bytes, {sum(p.numel() for p in model.parameters())} parameters, loss {loss.item():.6f}")


def list_timm_models(out_dir):
    """Every tensor of each full-size timm model's state_dict: model, name, shape, and whether it
    is a trained parameter."""
    import timm
    lines = []
    for model_name in TIMM_NAMES:
        model = timm.create_model(model_name)
        params = {n for n, _ in model.named_parameters()}
        for n, v in model.state_dict().items():
            lines.append(f"{model_name} {n} {','.join(map(str, v.shape))} {'parameter' if n in params else 'buffer'}")
    path = os.path.join(out_dir, "timm_models.txt")
    with open(path, "w") as f:
        f.write(f"# timm {timm.__version__}: model, state_dict name, shape, parameter or buffer\n")
        f.write("\n".join(lines) + "\n")
    print(f"{path}: {len(lines)} tensors")


if __name__ == "__main__":
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "."
    for name in sys.argv[2:] or list(MODELS) + ["timm_models"]:
        if name == "timm_models":
            list_timm_models(out_dir)
        else:
            make(name, out_dir)
