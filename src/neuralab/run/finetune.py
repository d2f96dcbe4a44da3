"""Fine-tuning, the run builder's part: `train.init_from` (a trained run starts this one),
`train.freeze`, `train.fine_tune_epochs` and `train.lr_mult`, read from the config and turned
into plain calls of train/transfer.py. run/build.py calls these; they read a RunConfig as it does.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from neuralab.checkpoint.format import file_digest, read_json
from neuralab.checkpoint.meta import RunMeta, load_run_checkpoint, read_meta
from neuralab.config import RunConfig
from neuralab.errors import ConfigError
from neuralab.inference.predict import checkpoint_folder
from neuralab.modalities import Modality, modality_from_meta
from neuralab.train import distributed
from neuralab.train.callbacks import Callback
from neuralab.train.optim import regroup
from neuralab.train.transfer import (
    HeadFirst,
    TransferError,
    freeze,
    group_factors,
    head_names,
    layer_groups,
    load_compatible,
)

Log = Callable[[str], None]


@dataclass(frozen=True)
class Source:
    """The run a fine-tuned run starts from: its checkpoint folder, weights, metadata and codec."""

    folder: Path
    weights: dict[str, torch.Tensor]
    meta: RunMeta
    modality: Modality

    @property
    def name(self) -> str:
        """The source run's directory name (the checkpoint folder's parent)."""
        return self.folder.parent.name

    def describe(self) -> str:
        meta = self.meta
        return (f"{self.name} ({meta.model.name} on {meta.dataset}, "
                f"{len(meta.classes)} classes, epoch {meta.epoch})")  # fmt: skip

    def provenance(self) -> dict:
        """What the new run's meta.json records of its source."""
        config = json.dumps(self.meta.config, sort_keys=True).encode()
        return {
            "run": str(self.folder.parent if self.folder.name == "checkpoint" else self.folder),
            "run_id": self.name,
            "dataset": self.meta.dataset,
            "model": self.meta.model.name,
            "epoch": self.meta.epoch,
            "config_sha256": hashlib.sha256(config).hexdigest(),
            "weights_sha256": file_digest(self.folder / "model.safetensors"),
        }


def read_source(config: RunConfig, resume_from: Path | None = None) -> Source | None:
    """The run `train.init_from` names, checked against its manifest (a changed or damaged
    file is refused before anything is loaded); None without init_from. A resumed run's
    source is its own checkpoint (the tokenizer it took from its source lives there too)."""
    path = config.train.init_from
    if path is None:
        return None
    if resume_from is not None:  # its weights are the run's own, loaded when it resumes
        folder = resume_from / "checkpoint"
        weights, meta = {}, read_meta(read_json(folder / "meta.json"), folder / "meta.json")
    else:
        folder = checkpoint_folder(path)
        weights, meta = load_run_checkpoint(folder)
    return Source(folder, weights, meta, modality_from_meta(meta.kind, meta.inputs, folder))


def adopt_source(config: RunConfig, source: Source) -> tuple[RunConfig, list[str]]:
    """The config with what the source decides: its model and arguments unless the config
    names them (another model is refused), and, for text, its tokenizer (the embeddings'
    rows are its ids: tokenizer settings are refused). Returns the notes for the log."""
    notes, meta = [], source.meta
    config = config.model_copy(deep=True)
    if "name" in config.model.model_fields_set and config.model.name != meta.model.name:
        raise TransferError(
            f"train.init_from: {source.name} is a {meta.model.name} model, this "
            f"run asks for {config.model.name}. Weights carry over only to the same model: "
            f"drop --model (it defaults to the source's) or start from a {config.model.name} run"
        )
    if "args" not in config.model.model_fields_set:
        config.model = config.model.model_copy(update={"args": dict(meta.model.args)})
    config.model = config.model.model_copy(update={"name": meta.model.name})
    args = f" {config.model.args}" if config.model.args else ""
    notes.append(f"model {meta.model.name}{args} (the source's)")
    if meta.kind == "text":
        explicit = sorted(config.tokenizer.model_fields_set - {"cache"})
        if explicit:
            raise ConfigError(
                f"train.init_from: a text run fine-tuned from {source.name} uses "
                f"its tokenizer (the embedding rows are its ids), so "
                f"{', '.join('tokenizer.' + k for k in explicit)} cannot be set; remove them"
            )
        if "tokenizer" in meta.config:  # config.yaml then says what the run uses
            config.tokenizer = type(config.tokenizer).model_validate(meta.config["tokenizer"])
        notes.append("tokenizer: the source's (its vocabulary and truncation)")
    return config, notes


def check_kind(source: Source, kind: str, dataset: str) -> None:
    """Image weights start image runs, text weights text runs."""
    if source.meta.kind != kind:
        raise TransferError(
            f"train.init_from: {source.name} learned from {source.meta.kind} "
            f"data, but {dataset} is {kind} data; start from a {kind} run"
        )


def start_from(model: nn.Module, source: Source, classes: list[str], log: Log) -> dict:
    """Load the source's compatible weights into `model` (the head new when the classes
    differ) and log the table; returns the provenance the new run's metadata records."""
    same = list(classes) == list(source.meta.classes)
    head = [] if same else head_names(model, len(classes))
    if not same and not head:
        raise TransferError(
            f"train.init_from: the classes differ from {source.name}'s, so the "
            f"classifier head must be replaced, but {source.meta.model.name} "
            f"{source.meta.model.args} has no last layer with {len(classes)} outputs to "
            "replace; give the model a classifier head (see `neuralab models`)"
        )
    why = f"head: {len(classes)} classes here, the source had {len(source.meta.classes)} others"
    table = load_compatible(model, source.weights, head, why if not same else "")
    log(f"init   from {source.describe()}: {table.summary()}")
    for line in table.lines():
        log(line)
    counts = {status: table.count(status) for status in ("loaded", "new", "skipped")}
    return {**source.provenance(), **counts, "head": "replaced" if head else "loaded"}


def check_fine_tuning(config: RunConfig) -> None:
    """What fine-tuning settings do not combine with, refused before any work."""
    if config.train.fine_tune_epochs and distributed.world_size() > 1:
        raise ConfigError(
            "train.fine_tune_epochs switches the body's gradients on mid-run, which DDP "
            "(torchrun) does not allow; run it in one process or use train.freeze"
        )


def freeze_layers(config: RunConfig, model: nn.Module, log: Log) -> None:
    """`train.freeze`: those parameters never train (before the optimizer is built)."""
    patterns = config.train.freeze
    if patterns:
        frozen = freeze(model, patterns)
        total = sum(p.numel() for p in model.parameters())
        count = sum(p.numel() for p in model.parameters() if not p.requires_grad)
        log(f"freeze {len(frozen)} tensors ({count:,} of {total:,} parameters): {patterns}")


def tuning(
    config: RunConfig,
    optimizer: torch.optim.Optimizer,
    model: nn.Module,
    num_classes: int,
    steps_per_epoch: int,
    log: Log,
) -> list[Callback]:
    """`train.lr_mult` and `train.fine_tune_epochs`: the optimizer's groups split by rate and
    start epoch, and the callback that trains the head alone first (none without them)."""
    settings = config.train
    factors = group_factors(layer_groups(model), settings.lr_mult) if settings.lr_mult > 1 else {}
    epochs, starts, callbacks = settings.fine_tune_epochs, {}, []
    if epochs:
        head = set(head_names(model, num_classes))
        if not head:
            raise ConfigError(
                f"train.fine_tune_epochs trains the head first, but {type(model).__name__} has "
                f"no last layer with {num_classes} outputs"
            )
        body = {name: p for name, p in model.named_parameters() if name not in head}
        starts = dict.fromkeys(body, epochs)
        steps = max(1, round(epochs * steps_per_epoch))
        slower = f"; lr / {settings.lr_mult:g} at the first layers" if factors else ""
        log(f"tune   the head alone for {epochs:g} epochs ({steps} steps), then every "
            f"layer{slower}")  # fmt: skip
        callbacks.append(HeadFirst(list(body.values()), steps))
    if factors or starts:
        regroup(optimizer, model, factors, starts)
    return callbacks
