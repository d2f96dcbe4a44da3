"""Built-in image datasets: MNIST, Fashion-MNIST, CIFAR-10 and scikit-learn's 8x8 digits.

Each factory reads `<root>/<dataset>/` and returns uint8 images in memory. Canonical archives are
checked against their published md5 (`CHECKSUMS`) and downloaded through `download.fetch` when
missing and allowed. Files are parsed strictly: a truncated or foreign file is an error naming
it, never a silently short dataset.
"""

from __future__ import annotations

import gzip
import math
import pickle
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neuralab.data.dataset import DATASETS, DataError, ImageDataset, Split, channel_stats
from neuralab.data.download import Resource, extract_tar, fetch

MNIST_URLS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
FASHION_MNIST_URLS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
)
CIFAR10_URLS = (
    "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "http://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
)

# Published (md5, bytes) per canonical file; None where only the md5 is published.
# A module-level table so tests can serve tiny files of their own under the canonical names.
CHECKSUMS: dict[str, dict[str, tuple[str, int | None]]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": ("f68b3c2dcbeaaa9fbdd348bbdeb94873", 9_912_422),
        "train-labels-idx1-ubyte.gz": ("d53e105ee54ea40749a09fcbcd1e9432", 28_881),
        "t10k-images-idx3-ubyte.gz": ("9fb629c4189551a2d022fa330f9573f3", 1_648_877),
        "t10k-labels-idx1-ubyte.gz": ("ec29112dd5afa0611ce80d1b7f02629c", 4_542),
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", None),
        "train-labels-idx1-ubyte.gz": ("25c81989df183df01b3e8a0aad5dffbe", None),
        "t10k-images-idx3-ubyte.gz": ("bef4ecab320f06d8554ea6380940ec79", None),
        "t10k-labels-idx1-ubyte.gz": ("bb300cfdad3c16e7a12a480ee83cd310", None),
    },
    "cifar10": {
        "cifar-10-python.tar.gz": ("c58f30108f718f92721af3b95e74349a", 170_498_071),
    },
}

FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
DIGIT_CLASSES = [str(digit) for digit in range(10)]
IDX_UBYTE = 0x08  # IDX type code for unsigned bytes, the only one MNIST-style files use
CIFAR_DIR = "cifar-10-batches-py"
CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR_ROWS_PER_BATCH = 10_000  # canonical batch size; tests shrink it
CIFAR_PIXELS = 3 * 32 * 32  # one row: 1024 R, then 1024 G, then 1024 B values, row-major 32x32


def resource(dataset: str, filename: str, base_urls: tuple[str, ...]) -> Resource:
    """The Resource for one canonical file of `dataset`, from `CHECKSUMS`."""
    md5, size = CHECKSUMS[dataset][filename]
    return Resource(filename, tuple(base + filename for base in base_urls), md5, size)


# ---------------------------------------------------------------- MNIST and Fashion-MNIST (IDX)


@DATASETS.register("mnist", summary="MNIST handwritten digits: 60k/10k grey 28x28, 10 classes")
def mnist(root: Path, download: bool = True) -> ImageDataset:
    """MNIST from `<root>/mnist/` (the four canonical IDX files, .gz or uncompressed)."""
    return idx_dataset("mnist", Path(root), download, MNIST_URLS, DIGIT_CLASSES)


@DATASETS.register(
    "fashion-mnist", summary="Zalando Fashion-MNIST: 60k/10k grey 28x28 clothing, 10 classes"
)
def fashion_mnist(root: Path, download: bool = True) -> ImageDataset:
    """Fashion-MNIST from `<root>/fashion-mnist/` (same file names and format as MNIST)."""
    return idx_dataset(
        "fashion-mnist", Path(root), download, FASHION_MNIST_URLS, FASHION_MNIST_CLASSES
    )


def idx_dataset(
    name: str, root: Path, download: bool, base_urls: tuple[str, ...], classes: list[str]
) -> ImageDataset:
    """Read the train (`train-*`) and test (`t10k-*`) IDX pairs of an MNIST-style dataset."""
    folder = root / name
    splits = [idx_split(folder, prefix, name, download, base_urls) for prefix in ("train", "t10k")]
    mean, std = channel_stats(splits[0].images)
    return ImageDataset(
        name, splits[0], splits[1], list(classes), mean, std, info={"source": str(folder)}
    )


def idx_split(
    folder: Path, prefix: str, name: str, download: bool, base_urls: tuple[str, ...]
) -> Split:
    """One split from `<prefix>-images-idx3-ubyte[.gz]` and `<prefix>-labels-idx1-ubyte[.gz]`."""
    images_path = idx_file(folder, f"{prefix}-images-idx3-ubyte.gz", name, download, base_urls)
    labels_path = idx_file(folder, f"{prefix}-labels-idx1-ubyte.gz", name, download, base_urls)
    images = read_idx(images_path, ndim=3)  # (N, 28, 28)
    labels = read_idx(labels_path, ndim=1)  # (N,)
    if images.shape[1:] != (28, 28):
        raise DataError(
            f"{images_path}: expected 28x28 images, found "
            f"{images.shape[1]}x{images.shape[2]}. Fix: use the canonical file."
        )
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} holds {len(images)} images but {labels_path} holds "
            f"{len(labels)} labels. Fix: use the canonical pair of files."
        )
    check_labels(labels, labels_path)
    return Split(torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels).long())


def idx_file(
    folder: Path, filename: str, name: str, download: bool, base_urls: tuple[str, ...]
) -> Path:
    """The verified .gz file, or an already-uncompressed copy when only that is present."""
    uncompressed = folder / filename.removesuffix(".gz")
    if not (folder / filename).exists() and uncompressed.exists():
        return uncompressed  # no published checksum; read_idx checks its structure instead
    return fetch(resource(name, filename, base_urls), folder, download)


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse an IDX file of unsigned bytes with `ndim` dimensions into a numpy array.

    Raises:
        DataError: wrong magic number or dimension count, or a byte count that does not match
            the header (a truncated file), naming the file and both counts.
    """
    data = read_bytes(path)
    header = 4 + 4 * ndim  # magic (0, 0, type, ndim) then one big-endian uint32 per dimension
    expected_magic = bytes([0, 0, IDX_UBYTE, ndim])
    if data[:4] != expected_magic:
        raise DataError(
            f"{path} is not an IDX file of {ndim}-D unsigned bytes: magic number "
            f"{data[:4].hex()} (expected {expected_magic.hex()}). "
            "Fix: replace it with the canonical file."
        )
    if len(data) < header:
        raise DataError(f"{path} is truncated: {len(data)} bytes, shorter than its header.")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + math.prod(shape)
    if len(data) != expected:
        state = "truncated" if len(data) < expected else "longer than its header says"
        raise DataError(
            f"{path} is {state}: its header {shape} needs {expected:,} bytes, found "
            f"{len(data):,}. Fix: delete it so it is downloaded again, or replace "
            "it with the canonical file."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()


def read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when its name ends in .gz."""
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as handle:
            return handle.read()
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(
            f"cannot decompress {path}: {error}. Fix: delete it so it is downloaded "
            "again, or replace it with the canonical file."
        ) from error


def check_labels(labels: np.ndarray, path: Path, count: int = 10) -> None:
    """Labels must be class indices 0..count-1."""
    if labels.size and (labels.min() < 0 or labels.max() >= count):
        raise DataError(
            f"{path}: labels must be in 0..{count - 1}, found "
            f"{labels.min()}..{labels.max()}. Fix: use the canonical file."
        )


# ------------------------------------------------------------------------------- CIFAR-10


@DATASETS.register("cifar10", summary="CIFAR-10: 50k/10k colour 32x32 images, 10 classes")
def cifar10(root: Path, download: bool = True) -> ImageDataset:
    """CIFAR-10 from `<root>/cifar10/cifar-10-batches-py/`, or from the canonical archive
    `<root>/cifar10/cifar-10-python.tar.gz` (extracted on first use; downloaded if allowed)."""
    folder = cifar_folder(Path(root) / "cifar10", download)
    train_batches = [read_cifar_batch(folder / f"data_batch_{index}") for index in range(1, 6)]
    train = Split(
        torch.cat([images for images, _ in train_batches]),
        torch.cat([labels for _, labels in train_batches]),
    )
    test = Split(*read_cifar_batch(folder / "test_batch"))
    mean, std = channel_stats(train.images)
    return ImageDataset(
        "cifar10",
        train,
        test,
        read_cifar_classes(folder / "batches.meta"),
        mean,
        std,
        info={"source": str(folder)},
    )


def cifar_folder(folder: Path, download: bool) -> Path:
    """The extracted batches folder, extracting (and first downloading) the archive if needed."""
    batches = folder / CIFAR_DIR
    if batches.is_dir():
        return batches
    if not download and not (folder / CIFAR_ARCHIVE).exists():
        raise DataError(
            f"cifar10: neither {batches}/ nor {folder / CIFAR_ARCHIVE} exists and "
            "downloads are off. Fix: set NEURALAB_DATA (or --data-dir) to a folder "
            f"that contains cifar10/{CIFAR_DIR}/ or cifar10/{CIFAR_ARCHIVE}, or "
            "allow downloads (download=True)."
        )
    md5, size = CHECKSUMS["cifar10"][CIFAR_ARCHIVE]
    archive = fetch(Resource(CIFAR_ARCHIVE, CIFAR10_URLS, md5, size), folder, download)
    extract_tar(archive, folder)
    if not batches.is_dir():
        raise DataError(f"{archive} did not contain {CIFAR_DIR}/. Fix: use the canonical archive.")
    return batches


def latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """What protocol-2 pickles written by Python 3 call to rebuild `bytes`; latin-1 only."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"bytes in encoding {encoding!r} requested; only latin1")
    return text.encode("latin1")


# Everything a CIFAR batch pickle may reference: numpy's array reconstruction, and the latin-1
# bytes constructor that protocol-2 pickles written by Python 3 use; nothing else.
# The functions are taken from numpy itself, so both numpy 1 (`numpy.core`) and numpy 2
# (`numpy._core`) module names in a pickle resolve without importing deprecated modules.
_RECONSTRUCT = np.zeros(1).__reduce__()[0]  # protocols 0-4
_FROMBUFFER = np.zeros(1).__reduce_ex__(5)[0]  # protocol 5 (in-band buffer)
SAFE_PICKLE_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy._core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): latin1_bytes,
}


class SafeUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only; any other global is refused."""

    def __init__(self, file: Any, path: Path) -> None:
        # 'bytes' keeps Python 2 str (the original batches) as bytes instead of guessing a codec.
        super().__init__(file, encoding="bytes")
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return SAFE_PICKLE_GLOBALS[(module, name)]
        except KeyError:
            raise DataError(
                f"{self.path}: refusing to unpickle the global {module}.{name}; a "
                "CIFAR-10 batch only holds numpy arrays, lists and strings. Fix: "
                "use the canonical CIFAR-10 files."
            ) from None


def load_pickle(path: Path) -> dict[str, Any]:
    """Load a CIFAR pickle safely; a dict with str keys (Python 2 byte keys are decoded)."""
    if not path.is_file():
        raise DataError(
            f"{path} is missing: the CIFAR-10 folder {path.parent} is incomplete. "
            "Fix: delete the folder and extract cifar-10-python.tar.gz again."
        )
    try:
        with open(path, "rb") as handle:
            loaded = SafeUnpickler(handle, path).load()
    except DataError:
        raise
    except Exception as error:  # any parse failure of an untrusted file is a data error
        raise DataError(
            f"cannot read {path}: {type(error).__name__}: {error}. "
            "Fix: replace it with the canonical file."
        ) from error
    if not isinstance(loaded, dict):
        raise DataError(f"{path}: expected a pickled dict, found {type(loaded).__name__}.")
    return {decode(key): value for key, value in loaded.items()}


def decode(value: Any) -> Any:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def read_cifar_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 (N, 3, 32, 32), labels int64 (N,)) from one batch, checked by content."""
    batch = load_pickle(path)
    data, labels = batch.get("data"), np.asarray(batch.get("labels", []))
    rows = CIFAR_ROWS_PER_BATCH
    expected_shape = (rows, CIFAR_PIXELS)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.shape != expected_shape:
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data)
        raise DataError(
            f"{path}: 'data' must be a uint8 array of shape {expected_shape}, "
            f"found {found}. Fix: use the canonical file."
        )
    if labels.shape != (rows,) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{path}: 'labels' must be {rows} integers, found {labels.dtype} "
            f"{labels.shape}. Fix: use the canonical file."
        )
    check_labels(labels, path)
    images = torch.from_numpy(np.ascontiguousarray(data).reshape(rows, 3, 32, 32))
    return images, torch.from_numpy(labels.astype(np.int64))


def read_cifar_classes(path: Path) -> list[str]:
    """The 10 class names from `batches.meta`."""
    names = [decode(name) for name in load_pickle(path).get("label_names", [])]
    if len(names) != 10 or not all(isinstance(name, str) for name in names):
        raise DataError(
            f"{path}: expected 10 label_names, found {names!r}. "
            "Fix: use the canonical batches.meta."
        )
    return names


# --------------------------------------------------------------------- scikit-learn digits

DIGITS_MAX = 16  # sklearn's 8x8 digits count pen pixels per 4x4 block: values 0..16
DIGITS_TEST_FRACTION = 0.2


@DATASETS.register("digits", summary="scikit-learn 8x8 digits: 1438/359 grey, 10 classes, offline")
def digits(root: Path, download: bool = True) -> ImageDataset:
    """scikit-learn's bundled 8x8 digits (no files, no network), fixed 80/20 split (seed 0).

    `root` and `download` are accepted for a uniform factory signature and unused.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise DataError(
            "the 'digits' dataset needs scikit-learn, which is not installed. "
            "Fix: pip install scikit-learn (or pip install 'neuralab[quickstart]')."
        ) from error
    bunch = load_digits()
    scaled = np.rint(bunch.images * (255.0 / DIGITS_MAX)).astype(np.uint8)  # (N, 8, 8) 0..255
    images = torch.from_numpy(scaled).unsqueeze(1)  # (N, 1, 8, 8)
    labels = torch.from_numpy(bunch.target).long()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    test_count = round(DIGITS_TEST_FRACTION * len(labels))
    train = Split(images[order[test_count:]], labels[order[test_count:]])
    test = Split(images[order[:test_count]], labels[order[:test_count]])
    mean, std = channel_stats(train.images)
    return ImageDataset(
        "digits",
        train,
        test,
        list(DIGIT_CLASSES),
        mean,
        std,
        info={"source": "sklearn.datasets.load_digits"},
    )
