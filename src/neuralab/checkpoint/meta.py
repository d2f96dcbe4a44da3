"""A checkpoint's meta.json as one typed, versioned object, read in this one place.

Version 3 (this neuralab) says what kind of input the model takes (`kind`), what it learned
(`task`) and where its data came from (`data`), so that evaluating, predicting, exporting and
serving a run need nothing but the checkpoint. Older checkpoints are migrated on read:

- version 2 (no `kind`, `task` or `data`): a checkpoint with tokenizer settings is a text
  run, any other an image run; the task, data and evaluation batch size come from the
  resolved config that every version-2 checkpoint stores.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from neuralab.checkpoint.format import CheckpointError, load_checkpoint
from neuralab.data import load_dataset

META_VERSION = 3
READABLE_VERSIONS = (2, 3)
KINDS = ("image", "text")


@dataclass(frozen=True)
class ModelRef:
    """A registered model's name and constructor arguments."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DataRef:
    """The dataset a run trained on, as `neuralab.data.load_dataset` takes it."""

    name: str
    data_dir: str | None = None
    download: bool = True
    val_split: float = 0.0
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    classes: list[str | int] | None = None  # data.classes: a subset of the dataset's classes
    labelled_per_class: int | None = None

    def load(self, name: str | None = None, data_dir: str | None = None, download: bool = True):
        """The dataset (or `name` instead: another dataset with the same classes), from
        `data_dir` when given; `download=False` never touches the network."""
        return load_dataset(
            name or self.name, data_dir or self.data_dir, self.download and download,
            self.val_split, self.seed, self.classes, self.labelled_per_class, **self.options,
        )  # fmt: skip


@dataclass(frozen=True)
class TaskRef:
    """What the run learned (a `neuralab.tasks.TASKS` name) and how it is scored."""

    name: str = "classification"
    loss: str = "cross_entropy"
    tta: str = "off"
    eval_batch_size: int = 1000
    # The task factory's arguments for tasks other than classification (e.g. MAML's ways and
    # inner steps); classification's are `loss` and `tta` above.
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunMeta:
    """Everything needed to rebuild and use a trained model without its config or dataset.

    `inputs` holds the modality's own fields (`preprocessing` for images, `tokenizer` for
    text); `config` is the resolved run config, kept for resuming and provenance.
    """

    kind: str
    model: ModelRef
    spec: dict[str, Any]
    classes: list[str]
    dataset: str
    task: TaskRef
    data: DataRef
    inputs: dict[str, Any]
    config: dict[str, Any]
    engine: str = ""
    engine_choice: dict[str, Any] | None = None
    epoch: int | None = None
    step: int | None = None
    best: dict[str, Any] | None = None
    weights_from_epoch: int | None = None
    # A fine-tuned run's source (train.init_from): its run, digests and what was loaded
    source: dict[str, Any] | None = None

    def to_dict(self) -> dict:
        """The meta.json object (without the folder format number, which saving adds)."""
        out = {"meta_version": META_VERSION, **asdict(self)}
        inputs = out.pop("inputs")
        out.update(inputs)
        return {key: value for key, value in out.items() if value is not None}

    def with_progress(self, **fields: Any) -> RunMeta:
        """A copy with epoch, step, best or weights_from_epoch set."""
        return dataclasses.replace(self, **fields)


def read_meta(raw: dict, where: Path) -> RunMeta:
    """meta.json's object → RunMeta, migrating older versions; a CheckpointError names the
    file and the field when something is missing or of the wrong type."""
    if raw.get("kind") == "agent":
        raise CheckpointError(
            f"{where}: this is a reinforcement-learning agent's run, not a classifier's; use "
            "`neuralab rl evaluate|play RUN`, `neuralab rl train --resume RUN` or "
            "`neuralab serve RUN`"
        )
    version = raw.get("meta_version", 2)
    if version not in READABLE_VERSIONS:
        raise CheckpointError(
            f"{where}: meta_version {version!r}; this neuralab reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))} (upgrade neuralab to read newer runs)"
        )
    raw = migrate_v2(raw) if version == 2 else raw
    try:
        return parse(raw, where)
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(
            f"{where}: malformed metadata ({type(error).__name__}: {error})"
        ) from None


def parse(raw: dict, where: Path) -> RunMeta:
    kind = raw["kind"]
    if kind not in KINDS:
        raise CheckpointError(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}")
    classes = raw.get("classes")
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise CheckpointError(f"{where}: 'classes' must be a list of names")
    inputs = {key: raw[key] for key in ("preprocessing", "tokenizer") if key in raw}
    if not inputs:
        raise CheckpointError(f"{where}: neither 'preprocessing' nor 'tokenizer' is given")
    return RunMeta(
        kind=kind,
        model=ModelRef(str(raw["model"]["name"]), dict(raw["model"].get("args", {}))),
        spec=dict(raw["spec"]),
        classes=list(classes),
        dataset=str(raw.get("dataset", "")),
        task=TaskRef(**raw["task"]),
        data=DataRef(**raw["data"]),
        inputs=inputs,
        config=dict(raw.get("config", {})),
        engine=str(raw.get("engine", "")),
        engine_choice=raw.get("engine_choice"),
        epoch=raw.get("epoch"),
        step=raw.get("step"),
        best=raw.get("best"),
        weights_from_epoch=raw.get("weights_from_epoch"),
        source=raw.get("source"),
    )


def migrate_v2(raw: dict) -> dict:
    """A version-2 meta.json (before `kind`, `task` and `data`) in version 3's shape."""
    config = raw.get("config") or {}
    train, data = config.get("train", {}), config.get("data", {})
    tta = raw.get("tta", False)
    return {
        **raw,
        "kind": "text" if "tokenizer" in raw else "image",
        "task": {
            "name": "classification",
            "loss": train.get("loss", "cross_entropy"),
            "tta": {True: "flip", False: "off"}.get(tta, tta) if isinstance(tta, bool) else tta,
            "eval_batch_size": train.get("eval_batch_size", 1000),
        },
        "data": {
            "name": data.get("name", raw.get("dataset", "")),
            "data_dir": data.get("data_dir"),
            "download": data.get("download", True),
            "val_split": data.get("val_split", 0.0),
            "seed": train.get("seed", 0),
            "options": data.get("options", {}),
        },
    }


def load_run_checkpoint(folder: Path) -> tuple[dict, RunMeta]:
    """(weights, meta) of a checkpoint folder, checked against its manifest and migrated."""
    weights, raw = load_checkpoint(folder)
    return weights, read_meta(raw, Path(folder) / "meta.json")
