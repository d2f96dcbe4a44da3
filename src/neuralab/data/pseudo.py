"""Pseudo-labels: a teacher's labels for some of a dataset's unlabelled examples, stored in a
file that names the unlabelled set they belong to, and the dataset with those examples moved
into its training split (what `train.semi` learns from; run/semi.py writes the file).

The file (safetensors) holds `index` int64 (K,) into the unlabelled split, `labels` int64 (K,)
and `confidence` float32 (K,), with metadata `unlabelled_count` and `unlabelled_sha256`: the
digest of the unlabelled examples, so labels made for one unlabelled set are never applied to
another (a different seed, labelled_per_class or dataset version).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from neuralab.data.dataset import (
    DataError,
    ImageDataset,
    Split,
    TextDataset,
    TextSplit,
    joined,
    texts_digest,
)
from neuralab.data.tensorfile import load_tensors, save_tensors


def fingerprint(split: Split | TextSplit) -> str:
    """The sha256 of a split's examples (texts or image bytes), in order."""
    if isinstance(split, TextSplit):
        return texts_digest(split.texts)
    return hashlib.sha256(split.images.contiguous().numpy().tobytes()).hexdigest()


def write_pseudo_labels(
    path: Path,
    unlabelled: Split | TextSplit,
    index: torch.Tensor,
    labels: torch.Tensor,
    confidence: torch.Tensor,
) -> Path:
    """Store pseudo-labels for `unlabelled[index]` (atomically: a temp file, then a rename)."""
    tensors = {"index": index.long(), "labels": labels.long(), "confidence": confidence.float()}
    metadata = {
        "unlabelled_count": str(len(unlabelled)),
        "unlabelled_sha256": fingerprint(unlabelled),
    }
    return save_tensors(path, tensors, metadata)


def add_pseudo_labels(
    dataset: ImageDataset | TextDataset, path: str | Path
) -> ImageDataset | TextDataset:
    """`dataset` with the pseudo-labelled unlabelled examples appended to its training split;
    the others stay in `dataset.unlabelled`.

    Raises DataError when the file is missing or unreadable, or was made for another
    unlabelled set."""
    path = Path(path)
    unlabelled = dataset.unlabelled
    if unlabelled is None:
        raise DataError(
            f"data.pseudo_labels={path} labels unlabelled examples, and {dataset.name} has none "
            "with these settings. Fix: use the data settings the pseudo-labels were made with"
        )
    metadata, tensors = load_tensors(path, ("index", "labels"), "pseudo-labels")
    if metadata.get("unlabelled_sha256") != fingerprint(unlabelled):
        raise DataError(
            f"{path} was made for another unlabelled set ({metadata.get('unlabelled_count')} "
            f"examples; this one has {len(unlabelled)}, or other ones). Fix: make the "
            "pseudo-labels again with these data settings (train.semi does)"
        )
    index, labels = tensors["index"], tensors["labels"]
    chosen = torch.zeros(len(unlabelled), dtype=torch.bool)
    chosen[index] = True
    pseudo = unlabelled.subset(index)
    pseudo.labels = labels.to(dataset.train.labels.dtype)
    dataset.train = joined(dataset.train, pseudo)
    rest = torch.nonzero(~chosen).flatten()
    dataset.unlabelled = unlabelled.subset(rest) if len(rest) else None
    dataset.info = {**dataset.info, "pseudo_labelled": len(index)}
    return dataset
