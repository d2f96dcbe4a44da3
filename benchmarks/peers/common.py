"""What every peer script shares: reading the canonical MNIST files and reporting a result.
Plain numpy and the standard library: no neuralab import."""

from __future__ import annotations

import gzip
import json
import os
import time
from pathlib import Path

import numpy as np


def mnist_folder() -> Path:
    return Path(os.environ["NEURALAB_DATA"]) / "mnist"


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST's own format): big-endian dimensions after a 4-byte magic."""
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_mnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """uint8 images (N, 28, 28) and int64 labels of the train and test splits."""
    folder = mnist_folder()
    return (
        read_idx(folder / "train-images-idx3-ubyte.gz"),
        read_idx(folder / "train-labels-idx1-ubyte.gz").astype(np.int64),
        read_idx(folder / "t10k-images-idx3-ubyte.gz"),
        read_idx(folder / "t10k-labels-idx1-ubyte.gz").astype(np.int64),
    )


class Curve:
    """Cumulative training time (evaluation excluded) and test accuracy after each epoch."""

    def __init__(self, name: str, recipe: str) -> None:
        self.name, self.recipe = name, recipe
        self.epochs: list[dict] = []
        self.train_seconds = 0.0
        self.started = time.perf_counter()

    def add(self, epoch_seconds: float, accuracy: float) -> None:
        self.train_seconds += epoch_seconds
        self.epochs.append(
            {
                "epoch": len(self.epochs) + 1,
                "train_seconds": round(self.train_seconds, 2),
                "accuracy": round(float(accuracy), 5),
            }
        )
        print(
            f"{self.name} epoch {len(self.epochs)}: {accuracy:.2%} after "
            f"{self.train_seconds:.1f} s of training",
            flush=True,
        )

    def report(self, examples_per_epoch: int) -> None:
        result = {
            "name": self.name,
            "recipe": self.recipe,
            "epochs": self.epochs,
            "train_seconds": round(self.train_seconds, 2),
            "wall_seconds": round(time.perf_counter() - self.started, 2),
            "accuracy": self.epochs[-1]["accuracy"],
            "examples_per_second": round(
                examples_per_epoch * len(self.epochs) / max(self.train_seconds, 1e-9), 1
            ),
        }
        print("PEER_RESULT " + json.dumps(result), flush=True)
