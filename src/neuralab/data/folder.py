"""`folder:<path>` datasets: your own images, one sub-folder per class.

Layouts (classes are the sub-folder names sorted; labels are their indices):

    path/<class>/**/*.jpg|jpeg|png|bmp|webp  a seeded `test_split` of each class is held out
    path/train/<class>/...  with path/val/<class>/... and/or path/test/<class>/... held out as
                            they are (with both, val/ becomes `val` and test/ becomes `test`)

Every image is decoded once with Pillow (EXIF rotation applied, transparency composited onto
white, converted to RGB or L, resized to `image_size`) and the uint8 tensors are cached as
safetensors under `<data_dir>/folder-cache/`; a changed folder gets a new cache key.
`load_image_file` reads one file exactly the same way, for prediction.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from neuralab.data.dataset import DATASETS, DataError, ImageDataset, Split, channel_stats
from neuralab.data.foldercache import cache_path, read_cache, warn, write_cache
from neuralab.data.images import (  # noqa: F401  (re-exported: the public image readers)
    GRAYSCALE_MODES,
    IMAGE_SUFFIXES,
    BadImageFile,
    _image_size,
    image_mode,
    load_image_file,
    prepare_pil_image,
)

HELD_OUT_FOLDERS = ("val", "test")
LAYOUT_HINT = (
    "Expected folder:<path> with one sub-folder of images per class (path/cat/1.jpg, "
    "path/dog/2.png), or path/train/<class>/... with path/val/<class>/... or path/test/<class>/..."
)

ClassFiles = dict[str, list[Path]]  # class name -> its image files, sorted
Labelled = list[tuple[Path, int]]  # (image file, class index)


@DATASETS.register(
    "folder",
    summary="your own images: folder:<path> with one sub-folder per class, "
    "or train/ and val/ (or test/) sub-trees",
)
def folder(
    root: Path,
    download: bool = True,
    path: str = "",
    image_size: int | Sequence[int] = 64,
    channels: int | None = None,
    test_split: float = 0.2,
    seed: int = 0,
    cache: bool = True,
    skip_bad_files: bool = False,
) -> ImageDataset:
    """Load a folder of images as an in-memory dataset (see the module docstring for layouts).

    Args:
        root: data directory; decoded images are cached in `root/folder-cache/`.
        download: ignored (a local folder has nothing to download).
        path: the folder (`~` expanded; relative to the working directory).
        image_size: every image is resized once, ignoring aspect ratio, to this size:
            an int for square images or (height, width).
        channels: 1 (grayscale) or 3 (RGB); None: 1 if every image is grayscale, else 3.
        test_split: fraction of each class held out as the test split (seeded) when there
            is no val/ or test/ folder; 0 gives an empty test split.
        seed: seeds that split.
        cache: read and write the decoded-image cache.
        skip_bad_files: skip unreadable images (listed, with reasons, in
            `info["skipped"]`, one warning line each) instead of raising DataError.

    Example:
        >>> data = load_dataset("folder:~/photos", image_size=96)  # doctest: +SKIP
    """
    del download
    size = _image_size(image_size)
    _check_options(path, channels, test_split)
    source = Path(path).expanduser().resolve()
    splits, classes = find_image_files(source, test_split, seed)
    cache_file = cache_path(Path(root), source, size, channels, test_split, seed, splits)
    loaded = read_cache(cache_file, classes, size) if cache and cache_file.exists() else None
    if loaded is None:
        loaded = _read_images(splits, channels, size, skip_bad_files)
        if cache:
            write_cache(cache_file, *loaded, classes)
    images, skipped = loaded
    _report_skipped(skipped, skip_bad_files)
    _check_every_class_trains(images["train"], classes)
    info = {"root": str(source), "image_size": size, "files": sum(map(len, images.values())),
            "skipped": skipped, "cache": str(cache_file) if cache else None}  # fmt: skip
    mean, std = channel_stats(images["train"].images)
    return ImageDataset(f"folder:{path}", images["train"], images["test"], classes, mean, std,
                        val=images.get("val"), info=info)  # fmt: skip


def _check_options(path: str, channels: int | None, test_split: float) -> None:
    if not path:
        raise DataError("the folder dataset needs a path: use folder:<path>, e.g. folder:~/photos")
    if channels not in (None, 1, 3):
        raise DataError(
            f"channels must be 1 (grayscale), 3 (RGB) or None (decide from the "
            f"images), got {channels!r}"
        )
    if not 0.0 <= test_split < 1.0:
        raise DataError(f"test_split must be in [0, 1), got {test_split!r}; e.g. test_split=0.2")


def find_image_files(
    source: Path, test_split: float, seed: int
) -> tuple[dict[str, Labelled], list[str]]:
    """The labelled image files of each split ("train", "test" and maybe "val"), and the classes."""
    if not source.is_dir():
        raise DataError(f"folder {source} does not exist or is not a directory. {LAYOUT_HINT}")
    train_tree = source / "train"
    if train_tree.is_dir() and _sub_folders(train_tree):
        train = _class_files(train_tree)
        held = {
            name: _class_files(source / name)
            for name in HELD_OUT_FOLDERS
            if (source / name).is_dir()
        }
    else:
        train, held = _class_files(source), {}
    for name, tree in held.items():
        extra = sorted(set(tree) - set(train))
        if extra:
            raise DataError(
                f"{source / name} has class folder(s) {extra} that {train_tree} lacks; "
                f"add training images in {train_tree / extra[0]} or remove the folder"
            )
    if len(held) == 1:
        held = {"test": next(iter(held.values()))}
    elif not held:
        train, held["test"] = _seeded_split(train, test_split, seed, source)
    classes = sorted(train)
    index = {name: label for label, name in enumerate(classes)}
    labelled = {"train": train, **held}
    return {
        split: [(file, index[name]) for name, files in sorted(tree.items()) for file in files]
        for split, tree in labelled.items()
    }, classes


def _sub_folders(tree: Path) -> list[Path]:
    return sorted(
        p
        for p in tree.iterdir()
        if p.is_dir() and not p.name.startswith(".") and p.name != "__MACOSX"
    )


def _image_files(folder: Path, recursive: bool = True) -> list[Path]:
    """Image files (by extension, any case) under folder; hidden files and folders skipped."""
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        p
        for p in candidates
        if p.suffix.lower() in IMAGE_SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _class_files(tree: Path) -> ClassFiles:
    """{class folder name: its image files}; an empty class folder is an error."""
    folders, loose = _sub_folders(tree), _image_files(tree, recursive=False)
    if not folders:
        found = f"{len(loose)} image files and no sub-folders" if loose else "no sub-folders"
        raise DataError(
            f"{tree}: expected one sub-folder of images per class, found {found}. {LAYOUT_HINT}"
        )
    if loose:
        warn(f"ignoring {len(loose)} image files directly in {tree} (not in a class folder)")
    files = {f.name: _image_files(f) for f in folders}
    for name, found in files.items():
        if not found:
            raise DataError(
                f"class folder {tree / name} has no images (.jpg, .jpeg, .png, .bmp "
                f"or .webp); add some or remove the folder. {LAYOUT_HINT}"
            )
    return files


def _seeded_split(
    train: ClassFiles, fraction: float, seed: int, source: Path
) -> tuple[ClassFiles, ClassFiles]:
    """Hold out round(fraction * n) of each class's n files, at least 1 and at most n - 1."""
    generator = torch.Generator().manual_seed(seed)
    kept, held = {}, {}
    for name, files in sorted(train.items()):
        order = torch.randperm(len(files), generator=generator).tolist()
        count = min(len(files) - 1, max(1, round(fraction * len(files)))) if fraction > 0 else 0
        held[name] = sorted(files[i] for i in order[:count])
        kept[name] = sorted(files[i] for i in order[count:])
    if fraction > 0 and not any(held.values()):
        raise DataError(
            f"test_split={fraction} holds out no image of {source}: every class has a "
            "single image; add images or add a val/ folder"
        )
    return kept, {name: files for name, files in held.items() if files}


def _read_images(
    splits: dict[str, Labelled], channels: int | None, size: tuple[int, int], skip: bool
) -> tuple[dict[str, Split], list[tuple[str, str]]]:
    """Decode every split; bad files raise, or with skip are returned as (path, reason)."""
    skipped: list[tuple[str, str]] = []
    files = [file for items in splits.values() for file, _ in items]
    if channels is None:
        channels = _infer_channels(files, skip, skipped)
    warn(f"decoding {len(files)} images to {size[0]}x{size[1]}", "note")
    bad = {path for path, _ in skipped}
    images = {
        name: _read_split(
            [item for item in items if str(item[0]) not in bad], channels, size, skip, skipped
        )
        for name, items in splits.items()
    }
    return images, skipped


def _infer_channels(files: list[Path], skip: bool, skipped: list[tuple[str, str]]) -> int:
    """1 if every readable file is grayscale, else 3 (reads headers only)."""
    readable = 0
    for file in files:
        try:
            mode = image_mode(file)
        except BadImageFile as error:
            _skip_or_raise(error, skip, skipped)
            continue
        if mode not in GRAYSCALE_MODES:
            return 3
        readable += 1
    return 1 if readable else 3


def _read_split(
    items: Labelled,
    channels: int,
    size: tuple[int, int],
    skip: bool,
    skipped: list[tuple[str, str]],
) -> Split:
    images = torch.empty((len(items), channels, *size), dtype=torch.uint8)  # (N, C, H, W)
    keep = []
    for row, (file, _) in enumerate(items):
        try:
            images[row] = load_image_file(file, channels, size)
            keep.append(row)
        except BadImageFile as error:
            _skip_or_raise(error, skip, skipped)
    labels = torch.tensor([label for _, label in items], dtype=torch.int64)
    if len(keep) < len(items):
        index = torch.tensor(keep, dtype=torch.int64)
        images, labels = images[index], labels[index]
    return Split(images, labels)


def _skip_or_raise(error: BadImageFile, skip: bool, skipped: list[tuple[str, str]]) -> None:
    if not skip:
        raise DataError(f"{error}, or pass skip_bad_files=True to skip unreadable files") from error
    skipped.append((str(error.path), error.reason))


def _report_skipped(skipped: list[tuple[str, str]], skip: bool) -> None:
    """One warning per skipped file; a cache made with skipping still refuses them when strict."""
    if skipped and not skip:
        _skip_or_raise(BadImageFile(Path(skipped[0][0]), skipped[0][1]), False, [])
    for path, reason in skipped:
        warn(f"skipped {path}: {reason}")


def _check_every_class_trains(train: Split, classes: list[str]) -> None:
    counts = torch.bincount(train.labels, minlength=len(classes))
    for name, count in zip(classes, counts.tolist(), strict=True):
        if count == 0:
            raise DataError(
                f"class {name!r} has no readable training images left after "
                "skipping bad files; add readable images to its folder"
            )
