"""What every peer script shares: reading the canonical MNIST and CIFAR-10 files and reporting a
result. Plain numpy and the standard library: no neuralab import."""

from __future__ import annotations

import gzip
import json
import os
import pickle
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

    def add(self, epoch_seconds: float, accuracy: float | None) -> None:
        """accuracy: None for an epoch whose test pass was skipped (e.g. airbench94 --test-from)."""
        self.train_seconds += epoch_seconds
        self.epochs.append(
            {
                "epoch": len(self.epochs) + 1,
                "train_seconds": round(self.train_seconds, 2),
                "accuracy": None if accuracy is None else round(float(accuracy), 5),
            }
        )
        tested = "not tested" if accuracy is None else f"{accuracy:.2%}"
        print(
            f"{self.name} epoch {len(self.epochs)}: {tested} after "
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


def cifar10_folder() -> Path:
    """The extracted canonical archive: $NEURALAB_DATA/cifar10/cifar-10-batches-py."""
    if "NEURALAB_DATA" not in os.environ:
        raise SystemExit(
            "NEURALAB_DATA is not set: point it at the folder holding "
            "cifar10/cifar-10-batches-py (e.g. NEURALAB_DATA=../shared/datasets)"
        )
    return Path(os.environ["NEURALAB_DATA"]) / "cifar10" / "cifar-10-batches-py"


class ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickles containers and numpy arrays only: a pickle may name any callable, and the CIFAR
    batches need nothing but numpy's array reconstruction (under its numpy 1 or 2 module name)."""

    RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]  # numpy's _reconstruct, public route
    ALLOWED = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("numpy.core.multiarray", "_reconstruct"): RECONSTRUCT,
        ("numpy._core.multiarray", "_reconstruct"): RECONSTRUCT,
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing the global {module}.{name}: a CIFAR-10 batch holds numpy arrays only"
            )
        return self.ALLOWED[(module, name)]


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file: uint8 images (N, 3, 32, 32) (rows of 3072 bytes, one 32x32 plane per
    channel, R then G then B) and int64 labels (N,)."""
    with open(path, "rb") as handle:
        batch = ArraysOnlyUnpickler(handle, encoding="bytes").load()
    images = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return images, np.asarray(batch[b"labels"], dtype=np.int64)


def load_cifar10(
    channels_last: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """uint8 images and int64 labels of the train (50,000) and test (10,000) splits.

    Args:
        channels_last: images as (N, 32, 32, 3) (torchvision's `CIFAR10.data` layout) instead
            of (N, 3, 32, 32).
    Returns:
        (train images, train labels, test images, test labels).
    """
    folder = cifar10_folder()
    train = [read_cifar_batch(folder / f"data_batch_{index}") for index in range(1, 6)]
    x_train = np.concatenate([images for images, _ in train])
    y_train = np.concatenate([labels for _, labels in train])
    x_test, y_test = read_cifar_batch(folder / "test_batch")
    if channels_last:
        x_train = np.ascontiguousarray(x_train.transpose(0, 2, 3, 1))
        x_test = np.ascontiguousarray(x_test.transpose(0, 2, 3, 1))
    return x_train, y_train, x_test, y_test


def report_notes(**fields) -> None:
    """Facts about a run beyond the curve (e.g. that it was cut short), as a `PEER_NOTES {json}`
    line that the side-by-side harness merges into the peer's record."""
    print("PEER_NOTES " + json.dumps(fields), flush=True)
