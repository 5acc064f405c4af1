#!/usr/bin/env python3
"""Writes Fashion-MNIST's test set (10,000 images) as a JPEG image folder in torchvision's
layout, for an end-to-end run of `clnet train --data imagefolder:OUT`: the first 8,000 images in
OUT/train/<class>/, the last 2,000 in OUT/val/<class>/, grayscale JPEGs at quality 95. The class
folders are numbered so that their sorted order is Fashion-MNIST's label order.

    python3 Benchmarks/fashion_mnist_imagefolder.py OUT [IDX_DIR=/usr/share/datasets/fashion-mnist]
"""
import gzip, os, sys

import numpy as np
from PIL import Image

CLASSES = ["0-tshirt", "1-trouser", "2-pullover", "3-dress", "4-coat", "5-sandal", "6-shirt", "7-sneaker", "8-bag",
           "9-ankle-boot"]


def idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    rank = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(rank)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * rank).reshape(shape)


def find(folder, name):
    for candidate in (name, name + ".gz"):
        if os.path.exists(os.path.join(folder, candidate)):
            return os.path.join(folder, candidate)
    sys.exit(f"no {name}[.gz] in {folder}: install dataset-fashion-mnist or give its folder")


def main():
    out = sys.argv[1]
    source = sys.argv[2] if len(sys.argv) > 2 else "/usr/share/datasets/fashion-mnist"
    images = idx(find(source, "t10k-images-idx3-ubyte"))
    labels = idx(find(source, "t10k-labels-idx1-ubyte"))
    for split in ("train", "val"):
        for name in CLASSES:
            os.makedirs(os.path.join(out, split, name), exist_ok=True)
    for i, (image, label) in enumerate(zip(images, labels)):
        split = "train" if i < 8000 else "val"
        Image.fromarray(image, "L").save(os.path.join(out, split, CLASSES[label], f"{i:05d}.jpg"), quality=95)
    print(f"wrote {len(images)} JPEGs to {out}/train and {out}/val")


if __name__ == "__main__":
    main()
