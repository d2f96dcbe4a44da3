"""Write a small ImageNet-style folder (one sub-folder per class) of real CIFAR-10 test images,
resized to random sizes and saved as a mix of JPEG and PNG, to try `folder:PATH` datasets.

    python examples/make_image_folder.py OUT_DIR [--per-class 60]

Needs CIFAR-10 under $NEURALAB_DATA (or ~/.cache/neuralab).
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from PIL import Image

from neuralab.data import load_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-class", type=int, default=60)
    args = parser.parse_args()
    dataset = load_dataset("cifar10", download=False)
    rng = random.Random(0)
    counts = dict.fromkeys(range(len(dataset.classes)), 0)
    for image, label in zip(dataset.test.images, dataset.test.labels.tolist(), strict=True):
        if counts[label] >= args.per_class:
            continue
        side = rng.randint(24, 96)  # pixels: smaller and larger than the 32 px originals
        picture = Image.fromarray(image.permute(1, 2, 0).numpy()).resize((side, side))
        folder = args.out / dataset.classes[label]
        folder.mkdir(parents=True, exist_ok=True)
        suffix = ".jpg" if counts[label] % 2 else ".png"
        picture.save(folder / f"{counts[label]:04d}{suffix}")
        counts[label] += 1
    print(f"wrote {sum(counts.values())} images in {len(counts)} classes to {args.out}")


if __name__ == "__main__":
    main()
