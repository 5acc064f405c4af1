#!/usr/bin/env python3
"""Makes the fixtures that `ONNXTests.torchvisionLogits` checks CLNet's ONNX export against:
torchvision's resnet18 and resnet50 (1000 classes), weights from `make_pytorch_fixtures.
fixture_values` (which the Swift test repeats), in eval mode at 64x64 on the formula's `input`
batch of 7, in float64. The files hold `logits` (float32 [7, 1000]) and say the input's name
and size in their metadata.

    pip install torch==2.13.0 torchvision==0.28.0 safetensors numpy
    python3 Tests/CLNetTests/Fixtures/make_onnx_fixtures.py Tests/CLNetTests/Fixtures
"""
import os, sys, types

sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
import numpy as np
import torch
from safetensors.numpy import save_file
from torchvision.models import resnet18, resnet50

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_pytorch_fixtures import fixture_values, set_weights  # noqa: E402

SIZE = 64


def main(out):
    x = torch.from_numpy(fixture_values("input", (7, 3, SIZE, SIZE), "input")).double()
    for name, make in (("resnet18", resnet18), ("resnet50", resnet50)):
        model = make().double().eval()
        set_weights(model)
        model = model.double()
        with torch.no_grad():
            logits = model(x).numpy()
        save_file({"logits": np.ascontiguousarray(logits, dtype=np.float32)},
                  os.path.join(out, f"pytorch_onnx_{name}.safetensors"), metadata={"input": "input", "size": str(SIZE)})
        print(name, logits.shape, float(np.abs(logits).max()))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
