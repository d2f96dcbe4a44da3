"""Image vs text, decided once: a modality object shared by training and inference.

A dataset's `kind` picks the training side (`inputs_for`), a checkpoint's `kind` the
inference codec (`modality_from_meta`); nothing else in neuralab asks which kind it has.
Both kinds offer the same methods (see `Modality`), so a new kind is one new module here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from neuralab.data.tokenizer import TokenizerSettings
from neuralab.modalities.episodes import EpisodeInputs
from neuralab.modalities.image import ImageInputs, ImageModality
from neuralab.modalities.text import TextInputs, TextModality, prepare_text

MODALITIES: dict[str, type] = {"image": ImageModality, "text": TextModality}
Inputs = ImageInputs | TextInputs | EpisodeInputs  # EpisodeInputs: few-shot runs on images


class Modality(Protocol):
    """The inference codec of a kind of input (see modalities/image.py and text.py)."""

    kind: str
    spec_type: type
    tta_allowed: bool
    dynamic_axes: dict[int, str]  # an exported graph's input axes that may vary

    def meta(self) -> dict: ...

    def files(self) -> dict[str, str]: ...

    def describe(self) -> dict: ...

    def prepare_all(self, items: Any) -> list: ...

    def batches(self, examples: list) -> list[tuple[list[int], torch.Tensor]]: ...

    def collate(self, chunk: Any) -> torch.Tensor: ...

    def model_inputs(self, batch: torch.Tensor) -> torch.Tensor: ...

    def eval_loader(self, split: Any, batch_size: int, device: torch.device) -> Any: ...

    def split_examples(self, split: Any, index: torch.Tensor, dataset: str) -> Any: ...

    def random_examples(self, count: int, spec: dict, generator: torch.Generator) -> Any: ...

    def worst_examples(self, split: Any, worst: list[dict], folder: Path, plots: Any) -> tuple: ...

    def export_contract(self, bare: bool, tta: str) -> dict: ...

    def export_graph(self, model: nn.Module, contract: dict) -> nn.Module: ...

    def bare_model(self, module: nn.Module) -> nn.Module: ...


def modality_from_meta(kind: str, fields: dict, folder: Path) -> Modality:
    """The codec a checkpoint describes: `kind` and its fields (preprocessing or tokenizer)."""
    return MODALITIES[kind].from_meta(fields, folder)


def inputs_for(
    dataset: Any,
    tokenizer: TokenizerSettings,
    token_cache: bool,
    trained: Any = None,
    unlabelled_words: bool = False,
) -> Inputs:
    """The training side for a loaded dataset: images as they are; texts get a tokenizer
    trained on their training split (`tokenizer` settings; `token_cache`: reuse one; with
    `unlabelled_words`, on the unlabelled texts too), or use the `trained` one given (a
    fine-tuned run's source's)."""
    if dataset.kind == "text":
        return prepare_text(dataset, tokenizer, token_cache, trained, unlabelled_words)
    return ImageInputs(dataset)


__all__ = [
    "MODALITIES",
    "EpisodeInputs",
    "ImageInputs",
    "ImageModality",
    "Inputs",
    "Modality",
    "TextInputs",
    "TextModality",
    "inputs_for",
    "modality_from_meta",
]
