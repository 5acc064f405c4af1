#!/usr/bin/env python3
"""Writes N ImageNet-sized JPEGs (500x375 and 375x500, quality 90, about 100 KB like ImageNet's
average) of photo-like content: smooth colour fields, hard-edged shapes and texture noise, which
is what decides a JPEG decoder's speed. For Benchmarks/compare-decode.sh.

    python3 Benchmarks/make_jpegs.py OUT_DIR [N=200]
"""
import os, sys

import numpy as np
from PIL import Image


def picture(width, height, rng):
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.empty((height, width, 3), np.float32)
    for c in range(3):
        fx, fy, phase = rng.uniform(0.5, 4, 3)
        img[..., c] = 128 + 80 * np.sin(2 * np.pi * (fx * x / width + fy * y / height) + phase)
    for _ in range(12):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.03, 0.2) * min(width, height)
        img[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = rng.uniform(0, 255, 3)
    img += rng.normal(0, 10, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def main():
    out, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 200
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        w, h = (500, 375) if i % 3 else (375, 500)
        Image.fromarray(picture(w, h, rng)).save(os.path.join(out, f"img{i:05d}.jpg"), quality=90)
    size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out)) / n
    print(f"{n} JPEGs in {out}, {size / 1024:.0f} KB on average")


if __name__ == "__main__":
    main()
