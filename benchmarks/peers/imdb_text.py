"""What the IMDB peers share: reading the extracted aclImdb tree (Maas et al. 2011) the same way
for every system. Plain numpy and the standard library: no neuralab import."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

CLASSES = ("neg", "pos")  # label 0 and 1, as neuralab's `imdb` dataset orders them


def imdb_tree() -> Path:
    """`$NEURALAB_DATA/imdb/aclImdb`, the folder holding `train/` and `test/`."""
    if "NEURALAB_DATA" not in os.environ:
        raise SystemExit("NEURALAB_DATA is not set. Fix: point it at the folder with imdb/aclImdb")
    return Path(os.environ["NEURALAB_DATA"]) / "imdb" / "aclImdb"


def read_reviews(split: str, limit: int | None = None) -> tuple[list[str], np.ndarray]:
    """Reviews of one split with "<br />" line breaks replaced by spaces, and 0/1 labels.

    Args:
        split: "train" or "test".
        limit: at most this many reviews per class (the first by sorted file name), for smoke
            runs; None reads all 12,500 per class.

    Returns:
        (texts, labels): all negative reviews first, then all positive ones; labels int64.
    """
    root = imdb_tree() / split
    texts: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(CLASSES):
        paths = sorted((root / name).glob("*.txt"))[:limit]
        if not paths:
            raise SystemExit(f"{root / name} holds no .txt files. Fix: extract aclImdb_v1.tar.gz")
        texts += [path.read_text(encoding="utf-8").replace("<br />", " ") for path in paths]
        labels += [label] * len(paths)
    return texts, np.array(labels, dtype=np.int64)


def add_limit_option(parser: argparse.ArgumentParser) -> None:
    """The `--limit N` option every IMDB peer takes (N reviews per class per split)."""
    parser.add_argument(
        "--limit", type=int, default=None, help="reviews per class per split (smoke runs)"
    )
