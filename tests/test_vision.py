"""Vision datasets on tiny files built here, plus real-data checks under NEURALAB_DATA."""

from __future__ import annotations

import builtins
import codecs
import gzip
import hashlib
import os
import pickle
import struct
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from neuralab.data import vision
from neuralab.data.dataset import DataError

IDX_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes: magic (0, 0, 8, ndim), big-endian dims, data."""
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def tiny_idx(seed: int = 0) -> dict[str, bytes]:
    """Contents of the four MNIST-style files: 5 train and 3 test 28x28 images."""
    rng = np.random.default_rng(seed)
    arrays = [
        rng.integers(0, 256, (5, 28, 28)),
        rng.integers(0, 10, 5),
        rng.integers(0, 256, (3, 28, 28)),
        rng.integers(0, 10, 3),
    ]
    return {name: idx_bytes(array) for name, array in zip(IDX_NAMES, arrays, strict=True)}


def write_gz(folder: Path, contents: dict[str, bytes], monkeypatch, dataset: str) -> None:
    """Write .gz files and make them the 'canonical' ones by overriding the checksum table."""
    folder.mkdir(parents=True, exist_ok=True)
    table = {}
    for name, data in contents.items():
        packed = gzip.compress(data, mtime=0)
        (folder / f"{name}.gz").write_bytes(packed)
        table[f"{name}.gz"] = (hashlib.md5(packed).hexdigest(), len(packed))
    monkeypatch.setitem(vision.CHECKSUMS, dataset, table)


def test_mnist_from_gzip_idx(tmp_path: Path, monkeypatch) -> None:
    contents = tiny_idx()
    write_gz(tmp_path / "mnist", contents, monkeypatch, "mnist")
    dataset = vision.mnist(tmp_path, download=False)
    assert dataset.train.images.shape == (5, 1, 28, 28)
    assert dataset.test.images.shape == (3, 1, 28, 28)
    expected = np.frombuffer(contents["train-images-idx3-ubyte"][16:], np.uint8)
    assert dataset.train.images.flatten().numpy().tolist() == expected.tolist()
    assert dataset.test.labels.tolist() == list(contents["t10k-labels-idx1-ubyte"][8:])
    assert dataset.classes == [str(digit) for digit in range(10)] and len(dataset.mean) == 1


def test_fashion_mnist_from_uncompressed_idx(tmp_path: Path) -> None:
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    for name, data in tiny_idx().items():
        (folder / name).write_bytes(data)
    dataset = vision.fashion_mnist(tmp_path, download=False)
    assert len(dataset.train) == 5 and len(dataset.test) == 3
    assert dataset.classes[0] == "T-shirt/top" and dataset.classes[9] == "Ankle boot"


def test_mnist_downloads_from_mirror_when_primary_is_missing(tmp_path: Path, monkeypatch) -> None:
    served = tmp_path / "served"
    write_gz(served, tiny_idx(), monkeypatch, "mnist")
    monkeypatch.setattr(
        vision, "MNIST_URLS", ((tmp_path / "absent").as_uri() + "/", served.as_uri() + "/")
    )
    dataset = vision.mnist(tmp_path / "data", download=True)
    assert len(dataset.train) == 5
    assert sorted(p.name for p in (tmp_path / "data" / "mnist").iterdir()) == sorted(
        f"{name}.gz" for name in IDX_NAMES
    )


def test_truncated_raw_idx_names_file_and_sizes(tmp_path: Path) -> None:
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name, data in tiny_idx().items():
        (folder / name).write_bytes(data[:-10] if name == "train-images-idx3-ubyte" else data)
    with pytest.raises(DataError) as error:
        vision.mnist(tmp_path, download=False)
    message = str(error.value)
    expected = 16 + 5 * 28 * 28
    assert "train-images-idx3-ubyte" in message and "truncated" in message
    assert f"{expected:,}" in message and f"{expected - 10:,}" in message


def test_truncated_idx_inside_valid_gzip(tmp_path: Path, monkeypatch) -> None:
    contents = tiny_idx()
    contents["t10k-labels-idx1-ubyte"] = contents["t10k-labels-idx1-ubyte"][:-1]
    write_gz(tmp_path / "mnist", contents, monkeypatch, "mnist")
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz is truncated.*needs 11"):
        vision.mnist(tmp_path, download=False)


def test_wrong_magic_number(tmp_path: Path) -> None:
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name, data in tiny_idx().items():
        (folder / name).write_bytes(
            b"\x00\x00\x0d\x03" + data[4:] if "train-images" in name else data
        )
    with pytest.raises(DataError, match="magic number 00000d03 \\(expected 00000803\\)"):
        vision.mnist(tmp_path, download=False)


def test_noncanonical_gz_fails_checksum(tmp_path: Path) -> None:
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name, data in tiny_idx().items():
        (folder / f"{name}.gz").write_bytes(gzip.compress(data))
    with pytest.raises(DataError, match="f68b3c2dcbeaaa9fbdd348bbdeb94873"):
        vision.mnist(tmp_path, download=False)


def test_missing_mnist_without_download(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="NEURALAB_DATA.*mnist/train-images-idx3-ubyte.gz"):
        vision.mnist(tmp_path, download=False)


# ------------------------------------------------------------------------------ CIFAR-10

ROWS = 4  # rows per synthetic batch (the canonical 10,000 would make slow tests)
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar(folder: Path, rows: int = ROWS) -> dict[str, np.ndarray]:
    """A tiny cifar-10-batches-py/: batches with str keys, meta with bytes (as Python 2 wrote)."""
    folder.mkdir(parents=True)
    rng, batches = np.random.default_rng(0), {}
    for name in [f"data_batch_{index}" for index in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (rows, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, rows).tolist()
        with open(folder / name, "wb") as handle:
            pickle.dump(
                {
                    "batch_label": name,
                    "labels": labels,
                    "data": data,
                    "filenames": [f"{i}.png" for i in range(rows)],
                },
                handle,
            )
        batches[name] = data
    meta = {b"label_names": [name.encode() for name in CLASSES], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return batches


def test_cifar10_from_extracted_batches(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(vision, "CIFAR_ROWS_PER_BATCH", ROWS)
    batches = write_cifar(tmp_path / "cifar10" / "cifar-10-batches-py")
    dataset = vision.cifar10(tmp_path, download=False)
    assert dataset.train.images.shape == (5 * ROWS, 3, 32, 32) and len(dataset.test) == ROWS
    assert dataset.classes == CLASSES and len(dataset.mean) == 3
    # Row layout: 1024 R, 1024 G, 1024 B values, each 32x32 row-major.
    first = batches["data_batch_1"][1]
    assert dataset.train.images[1, 2, 3, 4].item() == first[2 * 1024 + 3 * 32 + 4]
    assert dataset.train.images[ROWS].flatten().tolist() == batches["data_batch_2"][0].tolist()


def test_cifar10_from_archive_is_extracted(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(vision, "CIFAR_ROWS_PER_BATCH", ROWS)
    write_cifar(tmp_path / "build" / "cifar-10-batches-py")
    archive = tmp_path / "data" / "cifar10" / "cifar-10-python.tar.gz"
    archive.parent.mkdir(parents=True)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "build" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    packed = archive.read_bytes()
    monkeypatch.setitem(
        vision.CHECKSUMS,
        "cifar10",
        {"cifar-10-python.tar.gz": (hashlib.md5(packed).hexdigest(), len(packed))},
    )
    dataset = vision.cifar10(tmp_path / "data", download=False)
    assert len(dataset.train) == 5 * ROWS
    assert (archive.parent / "cifar-10-batches-py" / "test_batch").is_file()


def test_cifar10_wrong_row_count_is_refused(tmp_path: Path) -> None:
    write_cifar(tmp_path / "cifar10" / "cifar-10-batches-py")  # 4 rows, canonical is 10,000
    with pytest.raises(
        DataError,
        match=r"data_batch_1: 'data' must be a uint8 array of shape "
        r"\(10000, 3072\), found uint8 \(4, 3072\)",
    ):
        vision.cifar10(tmp_path, download=False)


def test_missing_cifar10_without_download(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cifar-10-batches-py/ or cifar10/cifar-10-python.tar.gz"):
        vision.cifar10(tmp_path, download=False)


class Exploit:
    """Pickles as a call to `function(*args)`: what a malicious batch file would contain."""

    def __init__(self, function, *args) -> None:
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


@pytest.mark.parametrize(
    "make",
    [
        lambda sentinel: Exploit(os.system, f"touch {sentinel}"),
        lambda sentinel: Exploit(builtins.open, str(sentinel), "w"),
    ],
)
def test_malicious_pickle_is_refused(tmp_path: Path, monkeypatch, make) -> None:
    monkeypatch.setattr(vision, "CIFAR_ROWS_PER_BATCH", ROWS)
    write_cifar(tmp_path / "cifar10" / "cifar-10-batches-py")
    sentinel = tmp_path / "pwned"
    batch = tmp_path / "cifar10" / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(pickle.dumps({"data": make(sentinel), "labels": []}))
    with pytest.raises(
        DataError,
        match=r"data_batch_3: refusing to unpickle the global "
        r"(posix\.system|builtins\.open|io\.open)",
    ):
        vision.cifar10(tmp_path, download=False)
    assert not sentinel.exists()


def test_pickled_codec_other_than_latin1_is_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(vision, "CIFAR_ROWS_PER_BATCH", ROWS)
    write_cifar(tmp_path / "cifar10" / "cifar-10-batches-py")
    batch = tmp_path / "cifar10" / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(pickle.dumps({"data": Exploit(codecs.encode, "x", "rot13")}, protocol=2))
    with pytest.raises(DataError, match="data_batch_1.*only latin1"):
        vision.cifar10(tmp_path, download=False)


def test_garbage_pickle_is_a_data_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(vision, "CIFAR_ROWS_PER_BATCH", ROWS)
    write_cifar(tmp_path / "cifar10" / "cifar-10-batches-py")
    (tmp_path / "cifar10" / "cifar-10-batches-py" / "test_batch").write_bytes(b"\x80\x02garbage")
    with pytest.raises(DataError, match="cannot read .*test_batch"):
        vision.cifar10(tmp_path, download=False)


# -------------------------------------------------------------------------------- digits


def test_digits_split_is_fixed() -> None:
    pytest.importorskip("sklearn")
    first, second = vision.digits(Path("unused")), vision.digits(Path("unused"))
    assert first.train.images.shape == (1438, 1, 8, 8) and first.test.images.shape == (359, 1, 8, 8)
    assert first.train.images.max().item() == 255 and first.classes[3] == "3"
    assert first.test.labels.equal(second.test.labels)
    assert first.test.images.equal(second.test.images)


def test_digits_without_sklearn_says_how_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # makes the import fail
    with pytest.raises(DataError, match="pip install scikit-learn"):
        vision.digits(Path("unused"))


# ---------------------------------------------------------------- real data (NEURALAB_DATA)

REAL = Path(os.environ.get("NEURALAB_DATA", "/nonexistent")).expanduser()
needs_real = pytest.mark.skipif(
    not os.environ.get("NEURALAB_DATA") or not REAL.is_dir(),
    reason="set NEURALAB_DATA to the real datasets folder",
)


def sha256(array) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


@pytest.mark.realdata
@needs_real
def test_real_mnist() -> None:
    if not (REAL / "mnist").is_dir():
        pytest.skip(f"no mnist/ under {REAL}")
    dataset = vision.mnist(REAL, download=False)  # verifies the published md5s
    assert len(dataset.train) == 60_000 and len(dataset.test) == 10_000
    assert dataset.mean[0] == pytest.approx(0.1307, abs=1e-4)
    assert dataset.train.labels.bincount().min() > 5000


@pytest.mark.realdata
@needs_real
def test_real_cifar10_matches_published_content() -> None:
    if not (REAL / "cifar10").is_dir():
        pytest.skip(f"no cifar10/ under {REAL}")
    dataset = vision.cifar10(REAL, download=False)
    assert len(dataset.train) == 50_000 and len(dataset.test) == 10_000
    assert (
        sha256(dataset.train.images.numpy())
        == "9d5c2eddadb0deff02c14c350c0385aab7b1d5ff1edfeb4997c8dc8644960111"
    )
    assert (
        sha256(dataset.train.labels.to(torch.uint8).numpy())
        == "2b7cd2f24487317614016b72ffd53071c3062f592f0eb300c18a770d41ae1253"
    )
    assert (
        sha256(dataset.test.images.numpy())
        == "177777c33ba79825320efa646ad04a94bdc3c80e4ebe3bd21724f8cdfd4b9d56"
    )
    assert dataset.mean == pytest.approx((0.4914, 0.4822, 0.4465), abs=1e-4)
