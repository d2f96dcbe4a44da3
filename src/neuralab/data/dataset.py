"""What every dataset factory returns (`ImageDataset`, `TextDataset`), the dataset registry,
the `load_dataset` entry point and the smaller datasets it carves from a loaded one (a subset
of the classes, a number of labelled examples per class)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from neuralab.data.heads import Head, primary
from neuralab.errors import UserError
from neuralab.registry import Registry

# Every factory takes (root, download) first, then `path` for PATH_KINDS; the rest are the
# dataset's own options (`data.options`), checked against its signature.
DATASETS = Registry("dataset", supplied=("root", "download", "path"))

# Names with a path argument are written `kind:<path>` (e.g. `folder:~/photos`).
PATH_KINDS = ("folder", "textfolder", "csv", "jsonl")


class DataError(UserError, ValueError):
    """Bad or missing data: the message names the file, what was expected and the fix."""


@dataclass
class Split:
    """One split held in memory.

    images: uint8 (N, C, H, W); labels: int64 (N,).
    """

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise DataError(
                f"images must be uint8 (N, C, H, W), got {self.images.dtype} "
                f"{tuple(self.images.shape)}"
            )
        if len(self.images) != len(self.labels):
            raise DataError(f"{len(self.images)} images but {len(self.labels)} labels")
        self.labels = self.labels.long()

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> Split:
        return Split(self.images[index], self.labels[index])


@dataclass
class ImageDataset:
    """A dataset's splits plus what a model and a predictor need to know about it.

    `mean`/`std` are per channel on the 0..1 scale, computed on the training split.
    """

    name: str
    train: Split
    test: Split
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    val: Split | None = None
    info: dict = field(default_factory=dict)
    # training examples set aside without their label (data.labelled_per_class keeps only N
    # per class; see data/subsets.py): for semi-supervised learning, never for supervised
    unlabelled: Split | None = None
    kind: ClassVar[str] = "image"  # TextDataset's is "text"

    @property
    def channels(self) -> int:
        return self.train.images.shape[1]

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.train.images.shape[2:])  # (H, W)


@dataclass
class TextSplit:
    """One split held in memory: texts (N strings) and labels int64 (N,), or float32
    (N, heads) for several label fields (see data/heads.py)."""

    texts: list[str]
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise DataError(f"{len(self.texts)} texts but {len(self.labels)} labels")
        self.labels = self.labels.float() if self.labels.ndim == 2 else self.labels.long()

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> TextSplit:
        return TextSplit([self.texts[i] for i in index.tolist()], self.labels[index])


@dataclass
class TextDataset:
    """A text dataset's splits and class names (label i is `classes[i]`).

    With several label fields (or a regression one) `heads` describes them, the labels are
    (N, heads) and `classes` names the model's output columns (data/heads.py)."""

    name: str
    train: TextSplit
    test: TextSplit
    classes: list[str]
    val: TextSplit | None = None
    info: dict = field(default_factory=dict)
    unlabelled: TextSplit | None = None  # as ImageDataset.unlabelled
    heads: list[Head] | None = None
    kind: ClassVar[str] = "text"

    def class_labels(self, split: TextSplit) -> tuple[torch.Tensor, list[str]]:
        """The labels and class names per-class subsets go by: the first classification
        head's with several heads."""
        if not self.heads:
            return split.labels, list(self.classes)
        index = primary(self.heads)
        if index is None:
            raise DataError(
                f"{self.name}: every label field is a regression, so there are no classes to "
                "draw data.labelled_per_class from. Fix: add a classification label field"
            )
        return split.labels[:, index].long(), list(self.heads[index].classes)


def default_data_dir() -> Path:
    """`NEURALAB_DATA` if set, else `~/.cache/neuralab`."""
    env = os.environ.get("NEURALAB_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "neuralab"


def parse_name(name: str) -> tuple[str, str | None]:
    """`folder:/x/y` → ('folder', '/x/y'); `mnist` → ('mnist', None)."""
    kind, sep, arg = name.partition(":")
    if sep and kind in PATH_KINDS:
        if not arg:
            raise DataError(f"dataset {name!r} needs a path after the colon, e.g. folder:~/photos")
        return kind, arg
    return name, None


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    download: bool = True,
    val_split: float = 0.0,
    seed: int = 0,
    classes: list[str | int] | None = None,
    labelled_per_class: int | None = None,
    **options,
) -> ImageDataset | TextDataset:
    """Load a registered dataset by name, carving a seeded validation split if asked.

    Args:
        name: a registered name (`neuralab datasets`) or `kind:<path>` for a kind in
            PATH_KINDS (`folder:~/photos`, `csv:reviews.csv`, ...).
        data_dir: where dataset folders live; defaults to `default_data_dir()`.
        download: allow network downloads of missing canonical archives.
        val_split: fraction of the training split held out for validation when the
            dataset has no validation split of its own.
        seed: seeds the validation split and the labelled subset.
        classes: keep only these classes (names or indices), relabelled 0.. in this order.
        labelled_per_class: keep this many training examples per class (seeded, stratified;
            after the validation split is carved); the rest become `dataset.unlabelled`.
        options: dataset-specific options (e.g. `image_size` for folders); one the dataset
            does not take raises UnknownArgumentError naming the valid ones.
    """
    kind, arg = parse_name(name)
    root = Path(data_dir).expanduser() if data_dir else default_data_dir()
    supplied = (root, download, arg) if arg else (root, download)
    dataset = DATASETS.build(kind, *supplied, **options)
    if classes is not None:
        dataset = keep_classes(dataset, classes)
    if val_split and dataset.val is None:
        dataset.train, dataset.val = split_off(dataset.train, val_split, seed)
    if labelled_per_class is not None:
        dataset = labelled_subset(dataset, labelled_per_class, seed)
    if isinstance(dataset, TextDataset) and dataset.unlabelled is not None:
        dataset = without_held_out_copies(dataset)
    return dataset


def without_held_out_copies(dataset: TextDataset) -> TextDataset:
    """The unlabelled texts minus those that are, verbatim, test or validation texts (IMDB's
    50,000 unlabelled reviews include 270 of its test reviews): a semi-supervised run must not
    learn from the texts it is scored on. `info["unlabelled_dropped"]` says how many."""
    held_out = set(dataset.test.texts) | set(dataset.val.texts if dataset.val else ())
    unlabelled = dataset.unlabelled
    keep = [i for i, text in enumerate(unlabelled.texts) if text not in held_out]
    dropped = len(unlabelled) - len(keep)
    if dropped:
        dataset.unlabelled = unlabelled.subset(torch.tensor(keep, dtype=torch.long))
    dataset.info = {**dataset.info, "unlabelled_dropped": dropped}
    return dataset


def split_off(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """Seeded random split into (rest, held_out) with round(fraction * N) held out."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"val_split must be between 0 and 1 (exclusive), got {fraction}")
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))
    held = max(1, round(fraction * len(split)))
    return split.subset(order[held:]), split.subset(order[:held])


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std on the 0..1 scale of uint8 (N, C, H, W) images."""
    mean = torch.zeros(images.shape[1], dtype=torch.float64)
    square = torch.zeros_like(mean)
    for chunk in images.split(4096):  # bounded memory on large sets
        x = chunk.double() / 255.0
        mean += x.sum(dim=(0, 2, 3))
        square += (x * x).sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean /= count
    std = (square / count - mean * mean).clamp_min(1e-12).sqrt()
    return tuple(round(v, 4) for v in mean.tolist()), tuple(round(v, 4) for v in std.tolist())


# -- smaller datasets carved from a loaded one (data.classes, data.labelled_per_class) ----------
def keep_classes(
    dataset: ImageDataset | TextDataset, classes: Sequence[str | int]
) -> ImageDataset | TextDataset:
    """The dataset restricted to `classes` (names, or indices into `dataset.classes`), in the
    order given: label i of the result is `classes[i]`. Every split is filtered alike.

    Image datasets get the kept training images' channel statistics.

    Example: `keep_classes(cifar10, ["cat", "dog"])` is a 2-class set, 0 = cat, 1 = dog.
    """
    if getattr(dataset, "heads", None):
        raise DataError(
            f"data.classes keeps classes of a single-label dataset, and {dataset.name} has "
            "several label fields (data.options.label_field). Fix: drop data.classes or keep "
            "one label field"
        )
    chosen = [class_index(dataset, item) for item in classes]
    if len(set(chosen)) != len(chosen):
        raise DataError(f"data.classes names a class twice: {list(classes)}")
    if len(chosen) < 2:
        raise DataError(f"data.classes must keep at least 2 classes, got {list(classes)}")
    relabel = torch.full((len(dataset.classes),), -1, dtype=torch.long)
    relabel[torch.tensor(chosen)] = torch.arange(len(chosen))
    for name in ("train", "val", "test"):
        split = getattr(dataset, name)
        if split is not None:
            kept = split.subset(torch.nonzero(relabel[split.labels] >= 0).flatten())
            kept.labels = relabel[kept.labels]
            setattr(dataset, name, kept)
    dataset.classes = [dataset.classes[i] for i in chosen]
    if isinstance(dataset, ImageDataset):  # normalised by the kept classes' images alone
        dataset.mean, dataset.std = channel_stats(dataset.train.images)
    return dataset


def class_index(dataset: ImageDataset | TextDataset, item: str | int) -> int:
    """A class named by its name or its index, checked."""
    names = list(dataset.classes)
    if isinstance(item, bool) or not isinstance(item, (str, int)):
        raise DataError(f"data.classes holds class names or indices, got {item!r}")
    if isinstance(item, int):
        if not 0 <= item < len(names):
            raise DataError(
                f"data.classes: index {item} is out of range; {dataset.name} has classes "
                f"0..{len(names) - 1} ({', '.join(names[:12])}{', …' if len(names) > 12 else ''})"
            )
        return item
    if item not in names:
        raise DataError(
            f"data.classes: {dataset.name} has no class {item!r}; its classes are "
            f"{', '.join(names[:20])}{', …' if len(names) > 20 else ''}"
        )
    return names.index(item)


def labelled_subset(
    dataset: ImageDataset | TextDataset, per_class: int, seed: int
) -> ImageDataset | TextDataset:
    """Keep `per_class` training examples of every class (seeded, drawn without replacement);
    the rest of the training split becomes `dataset.unlabelled` (its labels are kept in the
    split for measuring, and must not be trained on), ahead of any unlabelled examples the
    dataset already had (IMDB's 50,000 reviews). Validation and test are untouched.

    Raises DataError naming the smallest class when one has fewer than `per_class` examples.
    """
    labels, names = (
        dataset.class_labels(dataset.train)
        if isinstance(dataset, TextDataset)
        else (dataset.train.labels, dataset.classes)
    )
    counts = torch.bincount(labels, minlength=len(names))
    short = [(names[i], int(n)) for i, n in enumerate(counts.tolist()) if n < per_class]
    if short:
        listed = ", ".join(f"{name!r} has {n}" for name, n in short[:5])
        raise DataError(
            f"data.labelled_per_class={per_class} is more than a class of {dataset.name}'s "
            f"training split holds ({listed}); set it to at most {int(counts.min())}"
        )
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=generator)
    # a stable sort by label keeps the random order within each class
    by_class = order[torch.sort(labels[order], stable=True).indices]
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(labels)) - starts[labels[by_class]]
    keep = by_class[rank < per_class]
    rest = by_class[rank >= per_class]
    remainder = dataset.train.subset(rest.sort().values) if len(rest) else None
    dataset.unlabelled = joined(remainder, dataset.unlabelled)
    dataset.train = dataset.train.subset(keep.sort().values)
    return dataset


def texts_digest(texts: Sequence[str]) -> str:
    """The sha256 of `texts` in order (each UTF-8, NUL-terminated): which texts a file was made
    from (pseudo-labels, word vectors)."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()


def joined(first: Split | TextSplit | None, second: Split | TextSplit | None):
    """Two splits of the same kind one after the other (either may be None)."""
    if first is None or second is None:
        return first if second is None else second
    labels = torch.cat([first.labels.to(second.labels.dtype), second.labels])
    if isinstance(first, TextSplit):
        return TextSplit(first.texts + second.texts, labels)
    return Split(torch.cat([first.images, second.images]), labels)
