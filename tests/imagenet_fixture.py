"""A small ImageNet in the ImageFolder layout, for the tests and for the CPU twin (suites/imagenet_cpu.toml).

    python tests/imagenet_fixture.py data/imagenet-fixture      # writes data/imagenet-fixture/imagenet/

1000 class folders (what the reader requires of ImageNet), named like wnids, and a few images each, in
varied sizes and aspect ratios. Like the real set it holds a grayscale JPEG, a CMYK JPEG and a PNG among the
JPEGs, and files that are not images. Each class has its own colour and stripe frequency, so a network can
learn something from it. The files are the same on every run (seeded).

The command line writes PNGs (grayscale and palette images among them) into a temporary folder renamed
when complete: PNG decodes to the same pixels in every Pillow version, so the CI gate's numbers do not move
with the JPEG library, and an interrupted write is never taken for a fixture.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

NUM_CLASSES = 1000


@dataclass(frozen=True)
class FakeImageFolder:
    folder: Path  # <root>/imagenet
    wnids: list[str]  # sorted: the label order
    train: list[tuple[Path, int]]  # (file, label) in the reader's order
    val: list[tuple[Path, int]]


def wnid(k: int) -> str:
    return f"n{(k * 7919 + 1440764) % 100000000:08d}"


def _image(rng: np.random.Generator, label: int, classes: int) -> np.ndarray:
    h, w = (int(v) for v in rng.integers(40, 73, size=2))
    colour = np.array([(label * 97) % 256, (label * 57 + 80) % 256, (label * 31 + 160) % 256], dtype=np.float64)
    stripes = np.sin(np.arange(w) * (1 + label % 7) * np.pi / w)[None, :, None] * 60
    noise = rng.normal(0, 20, size=(h, w, 3))
    return np.clip(colour[None, None] + stripes + noise, 0, 255).astype(np.uint8)


def write_imagenet_fixture(root: Path, train_per_class: int = 2, val_per_class: int = 1, seed: int = 0,
                           classes: int = NUM_CLASSES, val_classes: int | None = None, png: bool = False,
                           folder_name: str = "imagenet") -> FakeImageFolder:
    """Writes ``root/imagenet/{train,val}/<wnid>/``; val folders for the first ``val_classes`` classes (all by
    default; ImageNet has all, a smaller set may not). ``png``: every image a PNG."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder = Path(root) / folder_name
    ids = [wnid(k) for k in range(classes)]
    order = sorted(ids)
    train, val = [], []
    for k, name in enumerate(ids):
        label = order.index(name)
        for split, count, out in (("train", train_per_class, train), ("val", val_per_class, val)):
            if split == "val" and val_classes is not None and k >= val_classes:
                continue
            target = folder / split / name
            target.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = _image(rng, label, classes)
                image = Image.fromarray(pixels)
                suffix, fmt = (".png", "PNG") if png else (".JPEG", "JPEG")
                if split == "train" and i == 0 and k == 0:
                    image = image.convert("L")  # ImageNet holds grayscale JPEGs
                elif split == "train" and i == 0 and k == 1:
                    image = image.convert("P") if png else image.convert("CMYK")  # and CMYK ones
                elif split == "train" and i == 0 and k == 2:
                    suffix, fmt = ".png", "PNG"
                path = target / f"{name}_{i}{suffix}"
                image.save(path, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
                out.append((path, label))
        if k == 3:
            (folder / "train" / name / "notes.txt").write_text("not an image\n")
    train.sort(key=lambda item: (item[1], item[0].name))
    val.sort(key=lambda item: (item[1], item[0].name))
    return FakeImageFolder(folder, order, train, val)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/imagenet_fixture.py DATA_ROOT   (writes DATA_ROOT/imagenet/)")
    root = Path(sys.argv[1])
    if (root / "imagenet").exists():
        print(f"{root / 'imagenet'} exists; not written again")
    else:
        partial = f"imagenet.partial-{os.getpid()}"
        fake = write_imagenet_fixture(root, png=True, folder_name=partial)
        os.rename(root / partial, root / "imagenet")
        print(f"wrote {len(fake.train)} training and {len(fake.val)} validation images under {root / 'imagenet'}")
