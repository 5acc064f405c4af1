#!/usr/bin/env python3
"""PIL's decoding throughput on a folder of images, as torchvision's ImageFolder loads them
(`Image.open(f).convert("RGB")`), on a pool of 1, 2, ... processes as DataLoader's workers are.

    python3 Benchmarks/decode_pil.py --folder DIR [--workers 1,2] [--transform none|train|eval] [--passes 2] [--json]
"""
import argparse, json, multiprocessing, os, sys, time, types

from PIL import Image

TRANSFORM = None


def setup(kind):
    global TRANSFORM
    if kind == "none":
        return
    sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
    import torch
    from torchvision import transforms
    torch.set_num_threads(1)  # as DataLoader sets it in each worker
    normalize = [transforms.ToTensor(), transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])]
    if kind == "train":
        TRANSFORM = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip()] + normalize)
    else:
        TRANSFORM = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224)] + normalize)


def decode(path):
    with open(path, "rb") as f:
        image = Image.open(f).convert("RGB")
    if TRANSFORM is not None:
        TRANSFORM(image)
    return image.size[0] * image.size[1]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--folder", required=True)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--transform", default="none", choices=["none", "train", "eval"])
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    files = sorted(os.path.join(d, f) for d, _, names in os.walk(args.folder) for f in names
                   if f.lower().endswith((".jpg", ".jpeg", ".png")))
    rows = []
    for n in [int(w) for w in args.workers.split(",")]:
        best, pixels = float("inf"), 0
        with multiprocessing.Pool(n, initializer=setup, initargs=(args.transform,)) as pool:
            pool.map(decode, files[: 4 * n])  # start the workers and import what they need
            for _ in range(max(1, args.passes)):
                start = time.perf_counter()
                pixels = sum(pool.map(decode, files, chunksize=8))
                best = min(best, time.perf_counter() - start)
        rows.append({"workers": n, "images": len(files), "seconds": best, "images_per_second": len(files) / best,
                     "megapixels_per_second": pixels / best / 1e6})
    if args.json:
        print(json.dumps({"folder": args.folder, "transform": args.transform, "rows": rows}))
    else:
        for r in rows:
            print(f"{r['workers']} workers: {r['images_per_second']:.1f} images/s ({r['megapixels_per_second']:.1f} Mpixel/s)")


if __name__ == "__main__":
    main()
