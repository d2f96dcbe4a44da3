"""Texts in tables: `csv:<path>` (a header row naming the columns; `.tsv`/`.tab` files are
tab-separated) and `jsonl:<path>` (one JSON object per line; blank lines are skipped).

The text and label columns are `text_field` and `label_field` (data.options). `label_field`
may be a list: several labels per text, learned together by one model with one head each
(multi-task; data/heads.py). A field named in `regression` holds numbers and is learned as a
regression; the others are classes. The test split is the file given as `test` (relative to
the training file's folder) or a seeded `test_split` of the training rows.

Texts are read strictly as UTF-8: an undecodable byte, an empty text, a missing column, a
regression value that is not a number or a test label never seen in training is an error
naming the file, line and field.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from neuralab.data.dataset import DATASETS, DataError, TextDataset, TextSplit, split_off
from neuralab.data.heads import Head, columns, regression_head
from neuralab.data.text import check_fraction, decode_utf8

TAB_SUFFIXES = (".tsv", ".tab")

Record = tuple[int, str, tuple[str, ...]]  # (line number, text, each label as written)
RecordReader = Callable[[Path, str, Sequence[str]], list[Record]]


def table_dataset(
    kind: str,
    path: str,
    reader: RecordReader,
    text_field: str = "text",
    label_field: str | list[str] = "label",
    regression: list[str] | None = None,
    test: str | None = None,
    test_split: float = 0.2,
    seed: int = 0,
) -> TextDataset:
    """Read a table of (text, label, ...) rows into a TextDataset.

    Args:
        text_field, label_field: column (or JSON key) names; `label_field` may be a list.
        regression: the label fields that hold numbers (learned as regressions).
        test: a second file of the same format used as the test split, relative to the
            training file's folder unless absolute.
        test_split: without `test`, the seeded fraction of rows held out for testing.
        seed: seeds that split.

    Classes are the distinct training labels, sorted (numerically when all are integers).
    One classification field gives ordinary labels; several fields, or a regression, give
    `heads` and (N, heads) labels.
    """
    fields = label_fields(label_field, regression or [])
    train_path = Path(path).expanduser()
    train_records = reader(train_path, text_field, fields)
    heads = table_heads(train_records, fields, regression or [], train_path)
    train = records_split(train_records, heads, train_path)
    if test:
        test_path = train_path.parent / Path(test).expanduser()
        test_split_data = records_split(reader(test_path, text_field, fields), heads, test_path)
    else:
        train, test_split_data = split_off(train, check_fraction(test_split), seed)
    info = {"source": str(train_path)}
    if len(heads) == 1 and heads[0].kind == "classification":
        classes = list(heads[0].classes)
        return TextDataset(f"{kind}:{path}", train, test_split_data, classes, info=info)
    return TextDataset(
        f"{kind}:{path}", train, test_split_data, columns(heads), info=info, heads=heads
    )


def label_fields(label_field: str | list[str], regression: list[str]) -> list[str]:
    """`label_field` as a checked list; every `regression` field must be one of them."""
    fields = [label_field] if isinstance(label_field, str) else list(label_field)
    if not fields or not all(isinstance(f, str) and f for f in fields):
        raise DataError(
            f"data.options.label_field must be a column name or a list of them, got {label_field!r}"
        )
    if len(set(fields)) != len(fields):
        raise DataError(f"data.options.label_field names a column twice: {fields}")
    stray = [name for name in regression if name not in fields]
    if stray:
        raise DataError(
            f"data.options.regression names {stray}, which are not label fields ({fields}). "
            "Fix: add them to data.options.label_field or remove them from regression"
        )
    return fields


def table_heads(
    records: list[Record], fields: list[str], regression: list[str], path: Path
) -> list[Head]:
    """One head per label field, from the training rows: its sorted classes, or its values'
    mean and std."""
    heads = []
    for position, name in enumerate(fields):
        if name in regression:
            values = [number(path, line, name, labels[position]) for line, _, labels in records]
            heads.append(regression_head(name, torch.tensor(values, dtype=torch.float64)))
        else:
            classes = sorted_labels({labels[position] for _, _, labels in records})
            if len(classes) < 2:
                raise DataError(
                    f"{path}: field {name!r} has one label ({classes[0]!r}) in every row; a "
                    "classification needs at least 2. Fix: check the column, or list it in "
                    "data.options.regression if it holds numbers"
                )
            heads.append(Head(name, "classification", tuple(classes)))
    return heads


def number(path: Path, line: int, field: str, value: str) -> float:
    """A regression label as a finite float; anything else names the file, line and field."""
    try:
        result = float(value)
    except ValueError:
        result = math.nan
    if not math.isfinite(result):
        raise DataError(
            f"{path}:{line}: field {field!r} is a regression label (data.options.regression) "
            f"and must be a finite number, found {value!r}. Fix: correct the value, or remove "
            f"{field!r} from data.options.regression to learn it as classes"
        )
    return result


def sorted_labels(labels: set[str]) -> list[str]:
    """Label names sorted, numerically when every one is an integer ("2" before "10")."""
    if all(label.lstrip("-").isdigit() for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def records_split(records: list[Record], heads: list[Head], path: Path) -> TextSplit:
    """Labels as class indices (one classification head: int64 (N,)) or (N, heads) float32;
    a label outside a head's classes is an error naming its line."""
    indices = [{name: i for i, name in enumerate(head.classes)} for head in heads]
    rows = []
    for line, _, labels in records:
        row = []
        for head, index, label in zip(heads, indices, labels, strict=True):
            if head.kind == "regression":
                row.append(number(path, line, head.name, label))
            elif label in index:
                row.append(index[label])
            else:
                raise DataError(
                    f"{path}:{line}: field {head.name!r} has label {label!r}, which the "
                    f"training file does not have (classes: {list(head.classes)[:20]}). Fix: "
                    "correct the label or add training examples of that class"
                )
        rows.append(row)
    texts = [text for _, text, _ in records]
    if len(heads) == 1 and heads[0].kind == "classification":
        return TextSplit(texts, torch.tensor([row[0] for row in rows], dtype=torch.long))
    return TextSplit(texts, torch.tensor(rows, dtype=torch.float32))


def read_table_text(path: Path) -> str:
    if not path.is_file():
        raise DataError(f"{path} does not exist or is not a file. Fix: check the path")
    return decode_utf8(path.read_bytes(), path)


def check_record(
    path: Path, line: int, text: object, labels: Sequence[object], fields: tuple
) -> Record:
    """One validated row: the text non-empty, each label a non-empty string/number/bool."""
    text_field, label_fields_ = fields
    if not isinstance(text, str):
        raise DataError(f"{path}:{line}: field {text_field!r} must be a string, found {text!r}")
    if not text.strip():
        raise DataError(
            f"{path}:{line}: field {text_field!r} is empty. Fix: fill in or remove the row"
        )
    checked = []
    for name, label in zip(label_fields_, labels, strict=True):
        if isinstance(label, bool | int | float):
            label = str(label).lower() if isinstance(label, bool) else str(label)
        if not isinstance(label, str) or not label.strip():
            raise DataError(
                f"{path}:{line}: field {name!r} must be a non-empty string or number, "
                f"found {label!r}. Fix: give every row a label"
            )
        checked.append(label.strip())
    return line, text.strip(), tuple(checked)


def read_csv_records(path: Path, text_field: str, label_fields_: Sequence[str]) -> list[Record]:
    """Rows of a CSV/TSV file with a header; line numbers are the file's physical lines."""
    delimiter = "\t" if path.suffix.lower() in TAB_SUFFIXES else ","
    reader = csv.reader(io.StringIO(read_table_text(path), newline=""), delimiter=delimiter)
    fields = (text_field, tuple(label_fields_))
    try:
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path}: the file is empty. Expected a header row, then rows")
        names = [name.strip() for name in header]
        positions = [column_position(path, names, name) for name in (text_field, *label_fields_)]
        records, start = [], reader.line_num + 1
        for row in reader:
            if any(cell.strip() for cell in row):  # blank lines are skipped
                cells = [row[p] if p < len(row) else None for p in positions]
                records.append(check_record(path, start, cells[0], cells[1:], fields))
            start = reader.line_num + 1
    except csv.Error as error:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV ({error})") from None
    return non_empty(records, path)


def column_position(path: Path, names: list[str], name: str) -> int:
    if name not in names:
        raise DataError(
            f"{path}:1: no column {name!r} in the header (columns: {names}). Fix: rename the "
            f"column or set data.options.text_field / label_field"
        )
    return names.index(name)


def read_jsonl_records(path: Path, text_field: str, label_fields_: Sequence[str]) -> list[Record]:
    """One JSON object per line; blank lines are skipped."""
    records = []
    fields = (text_field, tuple(label_fields_))
    for line, raw in enumerate(read_table_text(path).splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}:{line}: not valid JSON ({error.msg})") from None
        if not isinstance(item, dict):
            raise DataError(f"{path}:{line}: expected a JSON object, found {type(item).__name__}")
        for name in (text_field, *label_fields_):
            if name not in item:
                raise DataError(
                    f"{path}:{line}: no field {name!r} (fields: {sorted(item)}). Fix: add it or "
                    "set data.options.text_field / label_field"
                )
        labels = [item[name] for name in label_fields_]
        records.append(check_record(path, line, item[text_field], labels, fields))
    return non_empty(records, path)


def non_empty(records: list[Record], path: Path) -> list[Record]:
    if not records:
        raise DataError(f"{path} holds no rows. Fix: add (text, label) rows")
    return records


def register_table(kind: str, reader: RecordReader, what: str) -> None:
    """Register the `kind:` dataset (csv, jsonl) whose rows `reader` reads."""

    def factory(
        root: Path,
        download: bool = True,
        path: str = "",
        text_field: str = "text",
        label_field: str | list[str] = "label",
        regression: list[str] | None = None,
        test: str | None = None,
        test_split: float = 0.2,
        seed: int = 0,
    ) -> TextDataset:
        del root, download
        options = (text_field, label_field, regression, test, test_split, seed)
        return table_dataset(kind, path, reader, *options)

    factory.__doc__ = f"{what}; see `table_dataset`."
    summary = (f"{kind}:<path>, {what} (options text_field, label_field (a list: several "
               "heads), regression, test)")  # fmt: skip
    DATASETS.register(kind, summary=summary, input="text")(factory)


register_table("csv", read_csv_records, "a CSV file with a header row (.tsv/.tab: tab-separated)")
register_table("jsonl", read_jsonl_records, "one JSON object per line")
