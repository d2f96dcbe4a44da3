"""The decoded-image cache of `folder:` datasets: uint8 tensors in one safetensors file per
folder and settings, under `<data_dir>/folder-cache/`, keyed so that any added, removed or
modified image (or a new Pillow) gives a new file. A cache is disposable: any problem reading
or writing it only means decoding the images again."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import PIL
from safetensors import safe_open
from safetensors.torch import save_file

from neuralab.data.dataset import Split

CACHE_FOLDER = "folder-cache"
# Part of every cache key: bump it when decoding or the cache layout changes.
CACHE_FORMAT = "neuralab-folder-1"
Labelled = list[tuple[Path, int]]  # (image file, class index)


def cache_path(
    root: Path,
    source: Path,
    size: tuple[int, int],
    channels: int | None,
    test_split: float,
    seed: int,
    splits: dict[str, Labelled],
) -> Path:
    """`root/folder-cache/<settings>-<key>.safetensors`.

    key: sha256 over the settings (format, Pillow version, folder, size, channels, test_split,
    seed) and each image file's relative path, size and mtime_ns, so any added, removed or
    modified file gives a new key. <settings> (16 hex digits of the settings alone) lets a new
    cache file replace stale ones made with the same settings.
    """
    settings = json.dumps(
        [CACHE_FORMAT, PIL.__version__, str(source), list(size), channels, test_split, seed]
    ).encode()
    key = hashlib.sha256(settings)
    for file in sorted(file for items in splits.values() for file, _ in items):
        stat = file.stat()
        key.update(
            json.dumps(
                [file.relative_to(source).as_posix(), stat.st_size, stat.st_mtime_ns]
            ).encode()
            + b"\n"
        )
    prefix = hashlib.sha256(settings).hexdigest()[:16]
    return root / CACHE_FOLDER / f"{prefix}-{key.hexdigest()}.safetensors"


def read_cache(
    file: Path, classes: list[str], size: tuple[int, int]
) -> tuple[dict[str, Split], list[tuple[str, str]]] | None:
    """The cached splits and skipped files, or None (with a note) if the file is unusable."""
    try:
        with safe_open(str(file), framework="pt") as handle:
            meta = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        if meta.get("format") != CACHE_FORMAT or json.loads(meta["classes"]) != classes:
            raise ValueError("written for another format or other classes")
        images = {
            name: Split(tensors[f"{name}.images"], tensors[f"{name}.labels"])
            for name in json.loads(meta["splits"])
        }
        if any(split.images.shape[2:] != size for split in images.values()):
            raise ValueError(f"images are not {size[0]}x{size[1]}")
        return images, [(path, reason) for path, reason in json.loads(meta["skipped"])]
    except Exception as error:  # a cache is disposable: any problem means decode again
        warn(
            f"ignoring unreadable cache file {file} ({type(error).__name__}: {error}); "
            "decoding the images again and rewriting it",
            "note",
        )
        return None


def write_cache(
    file: Path, images: dict[str, Split], skipped: list[tuple[str, str]], classes: list[str]
) -> None:
    """Write atomically (temp file in the same folder, then os.replace); failures only warn."""
    tensors = {
        f"{name}.{part}": getattr(split, part).contiguous()
        for name, split in images.items()
        for part in ("images", "labels")
    }
    metadata = {
        "format": CACHE_FORMAT,
        "classes": json.dumps(classes),
        "splits": json.dumps(list(images)),
        "skipped": json.dumps(skipped),
    }
    temp = None
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temp = tempfile.mkstemp(dir=file.parent, prefix=".tmp-", suffix=file.suffix)
        os.close(descriptor)
        os.chmod(temp, 0o644)  # mkstemp makes it owner-only; a cache may be shared
        save_file(tensors, temp, metadata=metadata)
        os.replace(temp, file)
    except Exception as error:  # the dataset is loaded; only the speed-up is lost
        warn(
            f"not caching the decoded images in {file.parent} ({type(error).__name__}: "
            f"{error}); the folder will be decoded again next time"
        )
        return
    finally:
        if temp is not None:
            Path(temp).unlink(missing_ok=True)
    prefix = file.name.split("-", 1)[0]
    for stale in file.parent.glob(f"{prefix}-*{file.suffix}"):
        if stale != file:
            stale.unlink(missing_ok=True)


def warn(message: str, level: str = "warning") -> None:
    print(f"{level}: {message}", file=sys.stderr)
