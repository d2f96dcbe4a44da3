"""Text classification datasets: IMDB, `csv:`/`jsonl:` files (and .tsv) and `textfolder:` trees.

Every factory returns a `TextDataset`: raw strings plus int64 labels per split. Tokenisation
happens later (data/tokenizer.py), trained on the training split only, so that a run's tokenizer
never sees its test texts.

    imdb                    <data dir>/imdb/aclImdb/{train,test}/{pos,neg}/*.txt (train/unsup/ is
                            ignored and may be absent); downloaded and extracted when missing
    csv:<path>              a header row naming the columns; a `.tsv`/`.tab` file is tab-separated
    jsonl:<path>            one JSON object per line; blank lines are skipped
    textfolder:<path>       path/<class>/*.txt, or path/train/<class>/*.txt with path/test/ (and
                            optionally path/val/) held out as they are

For csv/jsonl the text and label columns are `text_field` and `label_field` (data.options); the
test split is the file given as `test` (relative to the training file's folder) or a seeded
`test_split` of the training rows. Texts are read strictly as UTF-8: an undecodable byte, an
empty text, a missing column or a test label never seen in training is an error naming the file,
line and field.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from neuralab.data.dataset import DATASETS, DataError, TextDataset, TextSplit, split_off
from neuralab.data.download import Resource, extract_tar, fetch

IMDB_RESOURCE = Resource(
    "aclImdb_v1.tar.gz",
    (
        "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",
        "http://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",
    ),
    "7c2ac02c03563afcf9b574c7e56c153a",
    84_125_825,
)
IMDB_CLASSES = ["neg", "pos"]  # label 0 = negative (rating <= 4), 1 = positive (rating >= 7)
TAB_SUFFIXES = (".tsv", ".tab")

Record = tuple[int, str, str]  # (line number, text, label as written)


# ------------------------------------------------------------------------------------- IMDB


@DATASETS.register(
    "imdb", summary="IMDB movie reviews (Maas et al. 2011): 25k/25k texts, neg/pos", input="text"
)
def imdb(root: Path, download: bool = True) -> TextDataset:
    """The Large Movie Review Dataset from `<root>/imdb/aclImdb/` (extracted from the canonical
    archive, downloaded and checked against its md5 when the tree is missing and allowed)."""
    folder = Path(root) / "imdb"
    tree = folder / "aclImdb"
    if not tree.is_dir():
        extract_tar(fetch(IMDB_RESOURCE, folder, download), folder)
    train, test = (read_class_folders(tree / part, IMDB_CLASSES) for part in ("train", "test"))
    return TextDataset("imdb", train, test, list(IMDB_CLASSES), info={"source": str(tree)})


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
    texts = [read_text_file(path) for path in files]  # a thread pool was 4x slower (locks)
    return TextSplit(texts, torch.tensor(labels, dtype=torch.long))


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


# --------------------------------------------------------------------------- CSV, TSV, JSONL


@DATASETS.register(
    "csv",
    summary="csv:<path> (.csv or .tsv) with text and label columns (options text_field, "
    "label_field, test)",
    input="text",
)
def csv_dataset(
    root: Path,
    download: bool = True,
    path: str = "",
    text_field: str = "text",
    label_field: str = "label",
    test: str | None = None,
    test_split: float = 0.2,
    seed: int = 0,
) -> TextDataset:
    """A CSV file with a header row (`.tsv`/`.tab`: tab-separated); see `table_dataset`."""
    del root, download
    options = (text_field, label_field, test, test_split, seed)
    return table_dataset("csv", path, read_csv_records, *options)


@DATASETS.register(
    "jsonl",
    summary="jsonl:<path>, one JSON object per line (options text_field, label_field, test)",
    input="text",
)
def jsonl_dataset(
    root: Path,
    download: bool = True,
    path: str = "",
    text_field: str = "text",
    label_field: str = "label",
    test: str | None = None,
    test_split: float = 0.2,
    seed: int = 0,
) -> TextDataset:
    """A JSON Lines file: one object per line with a text and a label field."""
    del root, download
    options = (text_field, label_field, test, test_split, seed)
    return table_dataset("jsonl", path, read_jsonl_records, *options)


RecordReader = Callable[[Path, str, str], list[Record]]


def table_dataset(
    kind: str,
    path: str,
    reader: RecordReader,
    text_field: str = "text",
    label_field: str = "label",
    test: str | None = None,
    test_split: float = 0.2,
    seed: int = 0,
) -> TextDataset:
    """Read a table of (text, label) rows into a TextDataset.

    Args:
        text_field, label_field: column (or JSON key) names.
        test: a second file of the same format used as the test split, relative to the
            training file's folder unless absolute.
        test_split: without `test`, the seeded fraction of rows held out for testing.
        seed: seeds that split.

    Classes are the distinct training labels, sorted (numerically when all are integers).
    """
    train_path = Path(path).expanduser()
    train_records = reader(train_path, text_field, label_field)
    classes = sorted_labels({label for _, _, label in train_records})
    train = records_split(train_records, classes, train_path, label_field)
    if test:
        test_path = train_path.parent / Path(test).expanduser()
        test_records = reader(test_path, text_field, label_field)
        test_split_data = records_split(test_records, classes, test_path, label_field)
    else:
        train, test_split_data = split_off(train, check_fraction(test_split), seed)
    return TextDataset(
        f"{kind}:{path}", train, test_split_data, classes, info={"source": str(train_path)}
    )


def check_fraction(test_split: float) -> float:
    if not 0.0 < test_split < 1.0:
        raise DataError(
            f"data.options.test_split must be between 0 and 1 (exclusive), got {test_split}; "
            "or give a separate test file/folder"
        )
    return test_split


def sorted_labels(labels: set[str]) -> list[str]:
    """Label names sorted, numerically when every one is an integer ("2" before "10")."""
    if all(label.lstrip("-").isdigit() for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def records_split(
    records: list[Record], classes: list[str], path: Path, label_field: str
) -> TextSplit:
    """Map labels to class indices; a label outside `classes` is an error naming its line."""
    index = {name: i for i, name in enumerate(classes)}
    labels = []
    for line, _, label in records:
        if label not in index:
            raise DataError(
                f"{path}:{line}: field {label_field!r} has label {label!r}, which the training "
                f"file does not have (classes: {classes[:20]}). Fix: correct the label or add "
                "training examples of that class"
            )
        labels.append(index[label])
    return TextSplit([text for _, text, _ in records], torch.tensor(labels, dtype=torch.long))


def read_table_text(path: Path) -> str:
    if not path.is_file():
        raise DataError(f"{path} does not exist or is not a file. Fix: check the path")
    return decode_utf8(path.read_bytes(), path)


def check_record(path: Path, line: int, text: object, label: object, fields: tuple) -> Record:
    """One validated row: the text non-empty, the label a string/number/bool."""
    text_field, label_field = fields
    if not isinstance(text, str):
        raise DataError(f"{path}:{line}: field {text_field!r} must be a string, found {text!r}")
    if not text.strip():
        raise DataError(
            f"{path}:{line}: field {text_field!r} is empty. Fix: fill in or remove the row"
        )
    if isinstance(label, bool | int | float):
        label = str(label).lower() if isinstance(label, bool) else str(label)
    if not isinstance(label, str) or not label.strip():
        raise DataError(
            f"{path}:{line}: field {label_field!r} must be a non-empty string or number, "
            f"found {label!r}. Fix: give every row a label"
        )
    return line, text.strip(), label.strip()


def read_csv_records(path: Path, text_field: str, label_field: str) -> list[Record]:
    """Rows of a CSV/TSV file with a header; line numbers are the file's physical lines."""
    delimiter = "\t" if path.suffix.lower() in TAB_SUFFIXES else ","
    reader = csv.reader(io.StringIO(read_table_text(path), newline=""), delimiter=delimiter)
    try:
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path}: the file is empty. Expected a header row, then rows")
        columns = [name.strip() for name in header]
        positions = [column_position(path, columns, name) for name in (text_field, label_field)]
        records, start = [], reader.line_num + 1
        for row in reader:
            if any(cell.strip() for cell in row):  # blank lines are skipped
                cells = [row[p] if p < len(row) else None for p in positions]
                records.append(check_record(path, start, *cells, (text_field, label_field)))
            start = reader.line_num + 1
    except csv.Error as error:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV ({error})") from None
    return non_empty(records, path)


def column_position(path: Path, columns: list[str], name: str) -> int:
    if name not in columns:
        raise DataError(
            f"{path}:1: no column {name!r} in the header (columns: {columns}). Fix: rename the "
            f"column or set data.options.text_field / label_field"
        )
    return columns.index(name)


def read_jsonl_records(path: Path, text_field: str, label_field: str) -> list[Record]:
    """One JSON object per line; blank lines are skipped."""
    records = []
    for line, raw in enumerate(read_table_text(path).splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}:{line}: not valid JSON ({error.msg})") from None
        if not isinstance(item, dict):
            raise DataError(f"{path}:{line}: expected a JSON object, found {type(item).__name__}")
        for name in (text_field, label_field):
            if name not in item:
                raise DataError(
                    f"{path}:{line}: no field {name!r} (fields: {sorted(item)}). Fix: add it or "
                    "set data.options.text_field / label_field"
                )
        fields = (text_field, label_field)
        records.append(check_record(path, line, item[text_field], item[label_field], fields))
    return non_empty(records, path)


def non_empty(records: list[Record], path: Path) -> list[Record]:
    if not records:
        raise DataError(f"{path} holds no rows. Fix: add (text, label) rows")
    return records
