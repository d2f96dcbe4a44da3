"""Text classification datasets: IMDB and `textfolder:` trees (`csv:`/`jsonl:` tables are in
data/tables.py).

Every factory returns a `TextDataset`: raw strings plus labels per split. Tokenisation happens
later (data/tokenizer.py), trained on the training split only, so that a run's tokenizer never
sees its test texts.

    imdb                    <data dir>/imdb/aclImdb/{train,test}/{pos,neg}/*.txt (train/unsup/ is
                            ignored and may be absent); downloaded and extracted when missing.
                            Labels: `sentiment` (neg/pos), `stars` (the rating in each file name,
                            1-4 and 7-10, a regression) or both: label_field [sentiment, stars]
    textfolder:<path>       path/<class>/*.txt, or path/train/<class>/*.txt with path/test/ (and
                            optionally path/val/) held out as they are

Texts are read strictly as UTF-8: an undecodable byte or an empty text is an error naming the
file.
"""

from __future__ import annotations

import tarfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import torch

from neuralab.data.dataset import DATASETS, DataError, TextDataset, TextSplit, split_off
from neuralab.data.download import MAX_EXTRACT_BYTES, Resource, extract_tar, fetch
from neuralab.data.heads import Head, columns, regression_head

IMDB_RESOURCE = Resource(
    "aclImdb_v1.tar.gz",
    (
        "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",
        "http://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",
    ),
    "7c2ac02c03563afcf9b574c7e56c153a",
    84_125_825,
)
# IMDB's 50,000 unlabelled reviews (train/unsup/<id>_0.txt) packed alone, under the canonical
# archive's paths: how a data folder can hold them without their 50,000 files
IMDB_UNSUP_RESOURCE = Resource(
    "aclImdb_v1-unsup.tar.gz", (), "576a1c53afb6844efdf5b2737968d4eb", 28_338_280
)
IMDB_UNSUP_MEMBERS = "aclImdb/train/unsup/"
IMDB_CLASSES = ["neg", "pos"]  # label 0 = negative (rating <= 4), 1 = positive (rating >= 7)
IMDB_FIELDS = ("sentiment", "stars")


# ------------------------------------------------------------------------------------- IMDB


@DATASETS.register(
    "imdb",
    summary="IMDB movie reviews (Maas et al. 2011): 25k/25k texts, neg/pos (label_field "
    "sentiment, stars or both)",
    input="text",
)
def imdb(
    root: Path,
    download: bool = True,
    label_field: str | list[str] = "sentiment",
    unlabelled: bool = False,
) -> TextDataset:
    """The Large Movie Review Dataset from `<root>/imdb/aclImdb/` (extracted from the canonical
    archive, downloaded and checked against its md5 when the tree is missing and allowed).

    Args:
        label_field: `sentiment` (neg/pos, one label: ordinary classification), `stars` (the
            1-10 rating in every file name, `<id>_<rating>.txt`, learned as a regression) or
            a list of both (multi-task: one model, two heads).
        unlabelled: also read the 50,000 unlabelled reviews into `dataset.unlabelled`
            (labels -1), for semi-supervised runs; see `imdb_unlabelled` for where from.
            Off, they are never opened.
    """
    fields = imdb_fields(label_field)
    folder = Path(root) / "imdb"
    tree = folder / "aclImdb"
    if not tree.is_dir():
        extract_tar(fetch(IMDB_RESOURCE, folder, download), folder)
    info = {"source": str(tree)}
    extra = imdb_unlabelled(folder, tree, download) if unlabelled else None
    if fields == ["sentiment"]:
        train, test = (read_class_folders(tree / part, IMDB_CLASSES) for part in ("train", "test"))
        return TextDataset("imdb", train, test, list(IMDB_CLASSES), info=info, unlabelled=extra)
    (train, train_stars), (test, test_stars) = map(read_imdb_stars, (tree / "train", tree / "test"))
    heads = [
        Head("sentiment", "classification", tuple(IMDB_CLASSES))
        if name == "sentiment"
        else regression_head("stars", train_stars)
        for name in fields
    ]

    def labelled(split: TextSplit, stars: torch.Tensor) -> TextSplit:
        values = {"sentiment": split.labels.float(), "stars": stars}
        return TextSplit(split.texts, torch.stack([values[name] for name in fields], 1))

    train, test = labelled(train, train_stars), labelled(test, test_stars)
    if extra is not None:
        extra = TextSplit(extra.texts, torch.full((len(extra), len(fields)), -1.0))
    return TextDataset(
        "imdb", train, test, columns(heads), info=info, heads=heads, unlabelled=extra
    )


def imdb_unlabelled(folder: Path, tree: Path, download: bool) -> TextSplit:
    """The 50,000 unlabelled reviews, sorted by file name, labels -1: from `train/unsup/` when
    the tree has it, else from `aclImdb_v1-unsup.tar.gz` beside the tree (md5-checked), else
    from the canonical archive (downloaded when allowed). Archives are read in memory: the
    data folder is never written to (it may be read-only)."""
    unsup = tree / "train" / "unsup"
    if unsup.is_dir():
        texts = [read_text_file(path) for path in sorted(unsup.glob("*.txt"))]
    elif (folder / IMDB_UNSUP_RESOURCE.filename).exists() or not download:
        if not (folder / IMDB_UNSUP_RESOURCE.filename).exists():
            raise DataError(
                f"imdb: the unlabelled reviews are neither in {unsup} nor in "
                f"{folder / IMDB_UNSUP_RESOURCE.filename}, and downloads are off. Fix: extract "
                f"the canonical {IMDB_RESOURCE.filename} (it holds train/unsup/) into {folder}, "
                "or allow downloads"
            )
        texts = read_tar_texts(fetch(IMDB_UNSUP_RESOURCE, folder, False), IMDB_UNSUP_MEMBERS)
    else:
        texts = read_tar_texts(fetch(IMDB_RESOURCE, folder, True), IMDB_UNSUP_MEMBERS)
    if not texts:
        raise DataError(f"imdb: no unlabelled review found under {unsup} or in its archives")
    return TextSplit(texts, torch.full((len(texts),), -1, dtype=torch.long))


def read_tar_texts(archive: Path, prefix: str) -> list[str]:
    """The `.txt` members under `prefix` of a tar archive, read in memory (nothing is
    extracted) and sorted by name; strict UTF-8, empty texts refused, as for files."""
    found: list[tuple[str, str]] = []
    total = 0
    with tarfile.open(archive) as tar:
        for member in tar:
            if not (member.isfile() and member.name.startswith(prefix)):
                continue
            if not member.name.endswith(".txt"):
                continue
            total += member.size
            if total > MAX_EXTRACT_BYTES:
                raise DataError(f"{archive}: more than {MAX_EXTRACT_BYTES:,} bytes of text")
            where = Path(f"{archive}:{member.name}")
            text = decode_utf8(tar.extractfile(member).read(), where).strip()
            if not text:
                raise DataError(f"{where}: the review is empty. Fix: restore the archive")
            found.append((PurePosixPath(member.name).name, text))
    return [text for _, text in sorted(found)]


def imdb_fields(label_field: str | list[str]) -> list[str]:
    fields = [label_field] if isinstance(label_field, str) else list(label_field)
    if not fields or len(set(fields)) != len(fields) or any(f not in IMDB_FIELDS for f in fields):
        raise DataError(
            f"imdb: data.options.label_field must be one or both of {list(IMDB_FIELDS)}, "
            f"each once, got {label_field!r}"
        )
    return fields


def read_imdb_stars(folder: Path) -> tuple[TextSplit, torch.Tensor]:
    """The split's texts with their sentiment labels, and each review's rating (float32)
    from its file name `<id>_<rating>.txt`."""
    files, labels = class_files(folder, IMDB_CLASSES)
    stars = []
    for path in files:
        rating = path.stem.rpartition("_")[2]
        if not rating.isdigit() or not 1 <= int(rating) <= 10:
            raise DataError(
                f"{path}: expected a file name <id>_<rating>.txt with a rating 1-10 (the IMDB "
                "archive's layout). Fix: restore the file's name from the archive"
            )
        stars.append(float(rating))
    texts = [read_text_file(path) for path in files]
    split = TextSplit(texts, torch.tensor(labels, dtype=torch.long))
    return split, torch.tensor(stars, dtype=torch.float32)


# ------------------------------------------------------------------------------- text folders


@DATASETS.register(
    "textfolder",
    summary="your own texts: textfolder:<path> with one sub-folder of .txt files per class, "
    "or train/ and test/ sub-trees",
    input="text",
)
def textfolder(
    root: Path, download: bool = True, path: str = "", test_split: float = 0.2, seed: int = 0
) -> TextDataset:
    """Read `.txt` files (UTF-8), one sub-folder per class; classes are the sorted folder names.

    Args:
        path: the folder; with a `train/` sub-folder, `test/` (or else `val/`) is the test split.
        test_split: without `train/`, the seeded fraction of files held out for testing.
        seed: seeds that split.
    """
    del root, download
    base = Path(path).expanduser()
    if (base / "train").is_dir():
        classes = class_folders(base / "train")
        train = read_class_folders(base / "train", classes)
        test = read_class_folders(held_out_folder(base, classes), classes, required=False)
    else:
        classes = class_folders(base)
        train, test = split_off(read_class_folders(base, classes), check_fraction(test_split), seed)
    return TextDataset(f"textfolder:{path}", train, test, classes, info={"source": str(base)})


def held_out_folder(base: Path, classes: list[str]) -> Path:
    """`base/test` (else `base/val`), whose class folders must all exist under `base/train`."""
    held_out = next((base / n for n in ("test", "val") if (base / n).is_dir()), None)
    if held_out is None:
        raise DataError(f"{base / 'train'} exists but {base / 'test'} does not. Fix: add test/")
    unknown = sorted(set(class_folders(held_out)) - set(classes))
    if unknown:
        raise DataError(
            f"{held_out}: class folder(s) {unknown} have no counterpart in {base / 'train'} "
            f"(classes {classes}). Fix: rename or remove them"
        )
    return held_out


def class_folders(folder: Path) -> list[str]:
    """Sorted names of the visible sub-folders of `folder` (the class names)."""
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder. Fix: pass textfolder:<path to a folder>")
    names = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise DataError(
            f"{folder} has no class sub-folders. Expected {folder}/<class>/<text>.txt, e.g. "
            f"{folder}/pos/1.txt and {folder}/neg/2.txt"
        )
    return names


def read_class_folders(folder: Path, classes: Sequence[str], required: bool = True) -> TextSplit:
    """Every `<folder>/<class>/**/*.txt` (sorted), labelled by the class's index."""
    files, labels = class_files(folder, classes, required)
    texts = [read_text_file(path) for path in files]  # a thread pool was 4x slower (locks)
    return TextSplit(texts, torch.tensor(labels, dtype=torch.long))


def class_files(
    folder: Path, classes: Sequence[str], required: bool = True
) -> tuple[list[Path], list[int]]:
    """The `.txt` files of each `<folder>/<class>/` (sorted within a class) and their class
    indices; a missing or empty class folder is an error when `required`."""
    files: list[Path] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        class_dir = folder / name
        if not class_dir.is_dir():
            if required:
                raise DataError(f"{class_dir} is missing. Expected one folder per class {classes}")
            continue
        found = sorted(class_dir.rglob("*.txt"))
        if required and not found:
            raise DataError(f"{class_dir} holds no .txt files. Fix: add texts or remove it")
        files += found
        labels += [index] * len(found)
    return files, labels


def read_text_file(path: Path) -> str:
    """The whole file as one text, stripped; empty files and non-UTF-8 bytes are errors."""
    text = decode_utf8(path.read_bytes(), path).strip()
    if not text:
        raise DataError(f"{path}: the file is empty. Fix: delete it or write its text")
    return text


def decode_utf8(data: bytes, path: Path) -> str:
    """Strict UTF-8 (a leading byte-order mark is dropped); errors name the file and line."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise DataError(
            f"{path}:{line}: byte {data[error.start]:#04x} at offset {error.start} is not "
            "valid UTF-8. Fix: re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None


def check_fraction(test_split: float) -> float:
    if not 0.0 < test_split < 1.0:
        raise DataError(
            f"data.options.test_split must be between 0 and 1 (exclusive), got {test_split}; "
            "or give a separate test file/folder"
        )
    return test_split
