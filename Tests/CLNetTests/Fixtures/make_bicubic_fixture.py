#!/usr/bin/env python3
"""Makes `bicubic.safetensors`, which `TaskTests` checks CLNet's bicubic resampling against:
Pillow's BICUBIC filter on float ('F') images, which like MATLAB's imresize uses Keys' cubic with
a = -0.5, pixel centres aligned and a kernel widened by the factor when shrinking. The two
differ at the edges only (Pillow drops the taps outside, MATLAB mirrors them), so the test
compares the pixels three or more from every edge.

    /opt/torchenv/bin/python Tests/CLNetTests/Fixtures/make_bicubic_fixture.py Tests/CLNetTests/Fixtures

Holds `x` [12, 16] (values in 0...1), `down` (x at 6x8), `up` (x at 36x48) and `odd` (x at 7x9).
"""
import os, sys

import numpy as np
from PIL import Image
from safetensors.numpy import save_file


def resize(a, h, w):
    return np.asarray(Image.fromarray(a, mode="F").resize((w, h), Image.BICUBIC), dtype=np.float32)


def main(out_dir):
    rng = np.random.default_rng(0)
    x = rng.random((12, 16), dtype=np.float32)
    save_file({"x": x, "down": resize(x, 6, 8), "up": resize(x, 36, 48), "odd": resize(x, 7, 9)},
              os.path.join(out_dir, "bicubic.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
