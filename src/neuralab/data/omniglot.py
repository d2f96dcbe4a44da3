"""Omniglot (Lake, Salakhutdinov and Tenenbaum 2015): 1,623 handwritten characters of 50
alphabets, 20 drawers each. neuralab reads the Python release's two small background sets
(`images_background_small1.zip`, `images_background_small2.zip`: 8 distinct alphabets, 242
characters, 4,840 images; Greek and Latin are in both and are read once) and Lake et al.'s 20
one-shot runs (`all_runs.zip`), straight from the zips.

Characters are the classes, and the splits hold disjoint alphabets (few-shot learning is
tested on classes never seen in training). Rotations by 90, 180 and 270 degrees of a training
character are extra training classes, as in Vinyals et al. (2016) and the papers after it.
Images keep the files' polarity (black strokes on white), so a user's own drawing is
prepared exactly as the training images were.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import torch
from PIL import Image, UnidentifiedImageError

from neuralab.data.dataset import DATASETS, DataError, ImageDataset, Split, channel_stats
from neuralab.data.download import Resource, fetch
from neuralab.data.images import prepare_pil_image

URL = "https://github.com/brendenlake/omniglot/raw/master/python/"
# Published md5 and byte size of each canonical zip (the official repository's python/ folder).
ZIPS = {
    "images_background_small1.zip": ("e704a628b5459e08445c13499850abc4", 1_319_022),
    "images_background_small2.zip": ("b75a71a51d3b13f821f212756fe481fd", 1_580_917),
    "all_runs.zip": ("e8996daecdf12afeeb4a53a179f06b19", 352_787),
}
BACKGROUND = ("images_background_small1.zip", "images_background_small2.zip")
# The default split by alphabet: 6 alphabets (180 characters) train, 1 validates, 1 tests.
VAL_ALPHABETS = ("Early_Aramaic",)
TEST_ALPHABETS = ("Korean",)
ROTATIONS = (0, 90, 180, 270)  # degrees, counter-clockwise
LAKE_RUNS = 20


def resource(filename: str) -> Resource:
    md5, size = ZIPS[filename]
    return Resource(filename, (URL + filename,), md5, size)


def read_zip_images(
    path: Path, image_size: tuple[int, int], prefix_parts: int
) -> dict[PurePosixPath, torch.Tensor]:
    """Every PNG in the zip at `path`, prepared as uint8 (1, H, W) and keyed by its member
    path without its first `prefix_parts` folders."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise DataError(
            f"{path} is not a readable zip ({error}); delete it and fetch the canonical file "
            f"again ({URL}{path.name})"
        ) from None
    images = {}
    with archive:
        for member in sorted(archive.namelist()):
            if not member.endswith(".png"):
                continue
            key = PurePosixPath(*PurePosixPath(member).parts[prefix_parts:])
            try:
                with Image.open(io.BytesIO(archive.read(member))) as image:
                    images[key] = prepare_pil_image(image, 1, image_size)
            except (zipfile.BadZipFile, UnidentifiedImageError, OSError, ValueError) as error:
                raise DataError(
                    f"{path}: member {member} cannot be read ({error}); the zip is damaged. "
                    f"Fix: delete it and fetch the canonical file again ({URL}{path.name})"
                ) from None
    return images


def background_characters(
    folder: Path, download: bool, image_size: tuple[int, int]
) -> dict[str, list[torch.Tensor]]:
    """{"alphabet/characterNN": [its 20 images (1, H, W)]} of both small background sets."""
    characters: dict[str, dict[str, torch.Tensor]] = {}
    for filename in BACKGROUND:
        path = fetch(resource(filename), folder, download)
        for key, image in read_zip_images(path, image_size, prefix_parts=1).items():
            alphabet, character, name = key.parts
            # Greek and Latin are in both sets, byte for byte: keyed by file, read once.
            characters.setdefault(f"{alphabet}/{character}", {})[name] = image
    return {name: list(files.values()) for name, files in sorted(characters.items())}


def stack_split(
    characters: dict[str, list[torch.Tensor]], names: list[str], rotations: Sequence[int]
) -> tuple[Split, list[str]]:
    """The images of `names` (each rotation a class of its own) and the class names."""
    images, labels, classes = [], [], []
    for name in names:
        drawings = torch.stack(characters[name])  # (20, 1, H, W)
        for degrees in rotations:
            label = len(classes)
            classes.append(name if degrees == 0 else f"{name}/rot{degrees}")
            images.append(torch.rot90(drawings, degrees // 90, dims=(2, 3)))
            labels.append(torch.full((len(drawings),), label))
    return Split(torch.cat(images), torch.cat(labels)), classes


@DATASETS.register(
    "omniglot",
    summary="Omniglot small background sets: 242 characters of 8 alphabets, few-shot splits",
)
def omniglot(
    root: Path,
    download: bool,
    image_size: int = 28,
    rotations: bool = True,
    val_alphabets: Sequence[str] = VAL_ALPHABETS,
    test_alphabets: Sequence[str] = TEST_ALPHABETS,
) -> ImageDataset:
    """Characters as classes; train, val and test hold disjoint alphabets (`val_alphabets`,
    `test_alphabets`; the rest train). `rotations`: training characters also rotated by 90,
    180 and 270 degrees, each a new class. Labels index one class list over all splits."""
    size = (image_size, image_size)
    characters = background_characters(root / "omniglot", download, size)
    alphabets = sorted({name.split("/")[0] for name in characters})
    held_out = [*val_alphabets, *test_alphabets]
    unknown = [a for a in held_out if a not in alphabets]
    if unknown or set(val_alphabets) & set(test_alphabets):
        raise DataError(
            f"omniglot: val_alphabets {list(val_alphabets)} and test_alphabets "
            f"{list(test_alphabets)} must be distinct alphabets of {alphabets}"
        )
    train_names = [n for n in characters if n.split("/")[0] not in held_out]
    if not train_names:
        raise DataError("omniglot: every alphabet is held out; leave some for training")
    splits, classes = {}, []
    for split, names, turns in (
        ("train", train_names, ROTATIONS if rotations else (0,)),
        ("val", [n for n in characters if n.split("/")[0] in val_alphabets], (0,)),
        ("test", [n for n in characters if n.split("/")[0] in test_alphabets], (0,)),
    ):
        if not names:
            splits[split] = None
            continue
        images, names_of_split = stack_split(characters, names, turns)
        splits[split] = Split(images.images, images.labels + len(classes))
        classes += names_of_split
    mean, std = channel_stats(splits["train"].images)
    return ImageDataset(
        "omniglot", splits["train"], splits["test"], classes, mean, std, val=splits["val"],
        info={"class_disjoint": True, "alphabets": alphabets, "root": str(root)},
    )  # fmt: skip


@dataclass
class OneShotRun:
    """One of Lake et al.'s runs: 20 characters with one training image each (`support`,
    uint8 (20, 1, H, W), class i is row i), 20 test images (`query`) and, for each test
    image, the index of its character (`answers`, (20,))."""

    name: str
    support: torch.Tensor
    query: torch.Tensor
    answers: torch.Tensor


def one_shot_runs(root: Path, download: bool, image_size: int = 28) -> list[OneShotRun]:
    """Lake et al.'s 20 runs of 20-way one-shot classification (all_runs.zip), on characters
    of alphabets that are in neither background set."""
    path = fetch(resource("all_runs.zip"), root / "omniglot", download)
    images = read_zip_images(path, (image_size, image_size), prefix_parts=0)
    try:
        archive = zipfile.ZipFile(path)
        with archive:
            return [
                read_run(archive, images, f"run{index:02d}", path)
                for index in range(1, LAKE_RUNS + 1)
            ]
    except KeyError as error:
        raise DataError(f"{path}: {error} is missing; the zip is not all_runs.zip") from None


def read_run(
    archive: zipfile.ZipFile, images: dict[PurePosixPath, torch.Tensor], run: str, path: Path
) -> OneShotRun:
    """One run, from its class_labels.txt: one line per test image,
    `runNN/test/itemMM.png runNN/training/classKK.png`."""
    classes = [f"{run}/training/class{index:02d}.png" for index in range(1, 21)]
    queries, answers = [], []
    for line in archive.read(f"{run}/class_labels.txt").decode("ascii").split("\n"):
        if not line.strip():
            continue
        item, answer = line.split()
        if answer not in classes or PurePosixPath(item) not in images:
            raise DataError(f"{path}: {run}/class_labels.txt names {item!r} → {answer!r}")
        queries.append(images[PurePosixPath(item)])
        answers.append(classes.index(answer))
    support = torch.stack([images[PurePosixPath(name)] for name in classes])
    return OneShotRun(run, support, torch.stack(queries), torch.tensor(answers))
