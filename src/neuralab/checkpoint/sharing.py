"""Checkpoint folders that share their bytes: a run directory's size follows what it holds.

`best/`, `epochs/epoch-NNNN/` and `checkpoint/` often hold the same weights (the best epoch is
the last one; a snapshot is the checkpoint of its epoch). Files are never rewritten in place —
every save renames a new folder into place — so identical files can be hard links of one
another. And a finished run cannot be resumed, so its resume state (optimizer moments, RNG)
is dropped once the run is done.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from neuralab.checkpoint.format import (
    FORMAT_VERSION,
    MANIFEST,
    fsync_folder,
    read_json,
    replace_folder,
    share_like_umask,
    write_json,
)

RESUME_FILES = ("training.safetensors", "training.json")


def link_or_copy(source: Path, destination: Path) -> None:
    """A hard link of `source` at `destination`; a copy on file systems without links."""
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def linked_folder(source: Path, destination: Path, names: Iterable[str]) -> Path:
    """Write `destination` as a checkpoint folder whose files `names` are links of source's.

    The source's manifest entries hold for the same bytes, so nothing is hashed again; the
    folder is built beside its destination and renamed into place, as every save is.
    """
    manifest = read_json(source / MANIFEST)["files"]
    names = [name for name in names if (source / name).is_file()]
    staging = destination.with_name(f".{destination.name}.linking")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        for name in names:
            link_or_copy(source / name, staging / name)
        files = {name: manifest[name] for name in names}
        write_json(staging / MANIFEST, {"format": FORMAT_VERSION, "files": files})
        fsync_folder(staging)
        share_like_umask(staging)
        replace_folder(staging, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return destination


def drop_resume_state(folder: Path) -> int:
    """Remove a finished run's resume state from its checkpoint; returns the bytes freed."""
    present = [folder / name for name in RESUME_FILES if (folder / name).is_file()]
    if not present:
        return 0
    freed = sum(path.stat().st_size for path in present)
    kept = [path.name for path in folder.iterdir() if path.name not in (*RESUME_FILES, MANIFEST)]
    linked_folder(folder, folder, kept)
    return freed


def share_identical_files(source: Path, other: Path) -> int:
    """Make each file of `other` that has the same SHA-256 as source's a hard link of it;
    returns the bytes saved. Each file is swapped by an atomic rename to the same bytes."""
    if not (source / MANIFEST).is_file() or not (other / MANIFEST).is_file():
        return 0
    ours = read_json(source / MANIFEST)["files"]
    theirs = read_json(other / MANIFEST)["files"]
    saved = 0
    for name, entry in theirs.items():
        if ours.get(name, {}).get("sha256") != entry.get("sha256") or name == MANIFEST:
            continue
        if os.path.samefile(source / name, other / name):
            continue
        temporary = other / f".{name}.link"
        temporary.unlink(missing_ok=True)
        link_or_copy(source / name, temporary)
        os.replace(temporary, other / name)
        saved += int(entry["bytes"])
    return saved


def folder_bytes(folder: Path) -> int:
    """Bytes on disk under `folder`, each hard-linked file counted once."""
    seen, total = set(), 0
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            status = path.stat()
            if (status.st_dev, status.st_ino) not in seen:
                seen.add((status.st_dev, status.st_ino))
                total += status.st_size
    return total


def describe_bytes(count: int) -> str:
    """1234567 → '1.2 MB' (decimal units, as `du --si` and file browsers show)."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} B"
