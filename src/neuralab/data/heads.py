"""Several labels per example (multi-task learning): what each label field is, and how the
model's output columns are shared among them.

A dataset with several label fields (`data.options.label_field: [team, priority]`, or IMDB's
`[sentiment, stars]`) describes each one as a `Head`. Its labels are then float32 (N, heads):
column h holds head h's class index (classification) or its value (regression). The model
has one output column per class of each classification head and one per regression head,
in head order; `columns(heads)` names them, and they are what a checkpoint calls its
`classes`. One trunk, several heads: a head is a slice of the model's last layer.

Regression heads are learned on standardised targets ((value - mean) / std, with the
training split's mean and std); predictions are turned back into the field's own units.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

KINDS = ("classification", "regression")


@dataclass(frozen=True)
class Head:
    """One label field: its name, kind, class names (classification) or the training split's
    mean and std of its values (regression)."""

    name: str
    kind: str
    classes: tuple[str, ...] = ()
    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"head {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "classification" and len(self.classes) < 2:
            raise ValueError(f"head {self.name!r}: a classification head needs ≥ 2 classes")

    @property
    def width(self) -> int:
        """The model's output columns of this head."""
        return len(self.classes) if self.kind == "classification" else 1

    def columns(self) -> list[str]:
        """Output column names: `name=class` per class, or `name` for a regression head."""
        if self.kind == "regression":
            return [self.name]
        return [f"{self.name}={name}" for name in self.classes]

    def describe(self) -> str:
        if self.kind == "regression":
            return f"{self.name} (regression, mean {self.mean:.4g}, std {self.std:.4g})"
        return f"{self.name} ({len(self.classes)} classes)"

    def to_dict(self) -> dict:
        return {**asdict(self), "classes": list(self.classes)}

    @classmethod
    def from_dict(cls, raw: dict) -> Head:
        return cls(
            str(raw["name"]), str(raw["kind"]), tuple(raw.get("classes", ())),
            float(raw.get("mean", 0.0)), float(raw.get("std", 1.0)),
        )  # fmt: skip


def columns(heads: Sequence[Head]) -> list[str]:
    """Every head's output column names, in order."""
    return [name for head in heads for name in head.columns()]


def slices(heads: Sequence[Head]) -> list[slice]:
    """Each head's columns of the model's outputs."""
    parts, start = [], 0
    for head in heads:
        parts.append(slice(start, start + head.width))
        start += head.width
    return parts


def primary(heads: Sequence[Head]) -> int | None:
    """The index of the first classification head (what `accuracy` and per-class subsets
    refer to), or None when every head is a regression."""
    return next((i for i, head in enumerate(heads) if head.kind == "classification"), None)


def regression_head(name: str, values: torch.Tensor) -> Head:
    """A regression head with `values`' mean and std (std 1 when they are all equal)."""
    values = values.double()
    std = float(values.std()) if len(values) > 1 else 0.0
    return Head(name, "regression", (), round(float(values.mean()), 6), round(std or 1.0, 6))


def affine(heads: Sequence[Head]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per output column, the scale and shift that turn the model's outputs into the task's:
    a regression column's std and mean, 1 and 0 for class columns (logits)."""
    scale, shift = torch.ones(len(columns(heads))), torch.zeros(len(columns(heads)))
    for head, part in zip(heads, slices(heads), strict=True):
        if head.kind == "regression":
            scale[part], shift[part] = head.std, head.mean
    return scale, shift


def to_outputs(heads: Sequence[Head], outputs: torch.Tensor) -> torch.Tensor:
    """The model's outputs (B, columns) with regression columns back in their own units
    (class columns, logits, unchanged)."""
    if all(head.kind == "classification" for head in heads):
        return outputs
    scale, shift = affine(heads)
    return outputs * scale.to(outputs.device) + shift.to(outputs.device)


def to_probabilities(heads: Sequence[Head], outputs: torch.Tensor) -> torch.Tensor:
    """Outputs (B, columns) as `to_outputs` gives them → each classification head's columns
    softmaxed on their own; regression columns stay values."""
    result = outputs.clone()
    for head, part in zip(heads, slices(heads), strict=True):
        if head.kind == "classification":
            result[:, part] = outputs[:, part].softmax(dim=1)
    return result


def row_predictions(heads: Sequence[Head], row: torch.Tensor, top_k: int) -> dict:
    """One example's probabilities (columns,) → per head its top classes or its value:
    {"team": {"class": "billing", "probability": 0.9, "top": [...]}, "priority": {"value": 3.2}}.
    """
    result = {}
    for head, part in zip(heads, slices(heads), strict=True):
        if head.kind == "regression":
            result[head.name] = {"value": round(float(row[part.start]), 6)}
            continue
        values, indices = row[part].topk(min(top_k, head.width))
        top = [
            {"class": head.classes[i], "probability": round(v, 6)}
            for v, i in zip(values.tolist(), indices.tolist(), strict=True)
        ]
        result[head.name] = {**top[0], "top": top}
    return result


def heads_of(task_args: dict) -> list[Head] | None:
    """The heads a multitask checkpoint records (its task arguments), else None."""
    raw = task_args.get("heads")
    return [Head.from_dict(head) for head in raw] if raw else None
