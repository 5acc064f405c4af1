#!/usr/bin/env python3
"""Makes the fixture that `PredictTests` checks `clnet predict` against: a few image files, the
tensors torchvision's evaluation transform makes of them, and a torchvision ResNet-18's logits.

    pip install torch==2.13.0 torchvision==0.28.0 pillow==13.0.0 safetensors numpy
    python3 Tests/CLNetTests/Fixtures/make_image_fixtures.py Tests/CLNetTests/Fixtures

Writes `images/` (JPEG: RGB, grayscale, CMYK; PNG: RGB, palette with transparency, RGBA; one PNG
named .jpg) and `imagenet_eval.safetensors`, which holds, for the images in sorted order,
`pixels` (uint8 [N, 3, S, S]: what Resize(S * 256 / 224) and CenterCrop(S) give on
`Image.open(f).convert("RGB")`, before ToTensor; the eval tensor is (pixels / 255 - mean) / std
with ImageNet's statistics), and `logits` (float64 [N, 10]) of `resnet18(num_classes=10)` in eval
mode on that tensor, with the weights of `make_pytorch_fixtures.fixture_values`, which the Swift
test repeats. The images are made from smooth fields, edges and noise at about 4x the crop, so
that the antialiased downscale is exercised.
"""
import os, sys, types

sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
import numpy as np
import torch
from PIL import Image
from safetensors.numpy import save_file
from torchvision import transforms
from torchvision.models import resnet18

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_pytorch_fixtures import set_weights  # noqa: E402

SIZE = 112


def picture(width, height, seed):
    """A photo-like RGB array: smooth colour fields, a few hard-edged shapes, fine noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    img = np.zeros((height, width, 3))
    for c in range(3):
        fx, fy, phase = rng.uniform(0.5, 3, 3)
        img[..., c] = 128 + 90 * np.sin(2 * np.pi * (fx * x / width + fy * y / height) + phase)
    for _ in range(6):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.05, 0.25) * min(width, height)
        mask = (x - cx) ** 2 + (y - cy) ** 2 < r * r
        img[mask] = rng.uniform(0, 255, 3)
    stripes = (np.floor(x / 3) % 2 == 0) & (y < height / 5)
    img[stripes] = 240
    img += rng.normal(0, 2, img.shape)
    return np.clip(img, 0, 255).round().astype(np.uint8)


def make_images(folder):
    os.makedirs(folder, exist_ok=True)
    rgb = Image.fromarray(picture(512, 384, 1))
    rgb.save(os.path.join(folder, "a_photo.jpg"), quality=90)
    Image.fromarray(picture(300, 460, 2)).convert("L").save(os.path.join(folder, "b_gray.jpg"), quality=92)
    Image.fromarray(picture(360, 300, 3)).convert("CMYK").save(os.path.join(folder, "c_cmyk.jpg"), quality=85)
    Image.fromarray(picture(448, 448, 4)[::2, ::2].repeat(2, 0).repeat(2, 1)).save(os.path.join(folder, "d_plain.png"))
    pal = Image.fromarray(picture(400, 300, 5)).quantize(64)
    pal.info["transparency"] = 3
    pal.save(os.path.join(folder, "e_palette.png"), transparency=3)
    rgba = np.dstack([picture(233, 317, 6), np.linspace(0, 255, 233 * 317).reshape(317, 233).astype(np.uint8)])
    Image.fromarray(rgba, "RGBA").save(os.path.join(folder, "f_alpha.png"))
    # A PNG under a JPEG's name: the format must come from the content.
    Image.fromarray(picture(200, 300, 7)).save(os.path.join(folder, "g_misnamed.jpg"), format="PNG")


def main(out):
    folder = os.path.join(out, "images")
    make_images(folder)
    files = sorted(os.listdir(folder))
    crop = transforms.Compose([transforms.Resize(SIZE * 256 // 224), transforms.CenterCrop(SIZE)])
    normalize = transforms.Compose([transforms.ToTensor(),
                                    transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    pixels, tensors = [], []
    for f in files:
        with open(os.path.join(folder, f), "rb") as handle:
            image = Image.open(handle).convert("RGB")  # torchvision's pil_loader
        square = crop(image)
        pixels.append(np.asarray(square).transpose(2, 0, 1))
        tensors.append(normalize(square))
    model = resnet18(num_classes=10).double().eval()
    set_weights(model)
    model = model.double()
    with torch.no_grad():
        logits = model(torch.stack(tensors).double()).numpy()
    top2 = np.sort(logits, axis=1)[:, -2:]
    print("files:", files)
    print("top-1:", logits.argmax(1), "smallest top-1 margin (relative):",
          float(np.min((top2[:, 1] - top2[:, 0]) / np.abs(logits).max(1))))
    save_file({"pixels": np.ascontiguousarray(np.stack(pixels), dtype=np.uint8),
               "logits": np.ascontiguousarray(logits, dtype=np.float64)},
              os.path.join(out, "imagenet_eval.safetensors"),
              metadata={"files": ",".join(files), "size": str(SIZE)})


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
