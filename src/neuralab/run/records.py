"""What a run records about itself, as the run builder sets it up: the checkpoint metadata
(`build_meta`, a typed `RunMeta` built from the resolved config) and the callbacks that write
the run directory, keep the best epoch, stop early and log to TensorBoard."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from neuralab.adversarial.training import PgdCheck
from neuralab.checkpoint.meta import DataRef, ModelRef, RunMeta, TaskRef
from neuralab.config import RunConfig
from neuralab.data.heads import Head
from neuralab.modalities import Inputs
from neuralab.run.settings import check_attack, task_arguments
from neuralab.run.tracking import BestCheckpoint, RunWriter, tensorboard_callbacks
from neuralab.train.callbacks import Callback, EarlyStopping
from neuralab.train.engine import Engine, engine_choice
from neuralab.train.lookahead import Lookahead

Log = Callable[[str], None]


def build_meta(
    config: RunConfig, inputs: Inputs, engine: Engine, source: dict | None = None
) -> RunMeta:
    """Everything a checkpoint needs to rebuild and use the model without config or dataset."""
    data, settings, modality = config.data, config.train, inputs.modality
    return RunMeta(
        kind=modality.kind,
        model=ModelRef(config.model.name, dict(config.model.args)),
        spec=inputs.spec.to_dict(),
        classes=list(inputs.dataset.classes),
        dataset=inputs.dataset.name,
        task=task_ref(config, getattr(inputs.dataset, "heads", None)),
        data=DataRef(
            data.name,
            data.data_dir,
            data.download,
            data.val_split,
            settings.seed,
            dict(data.options),
            data.classes,
            data.labelled_per_class,
        ),  # fmt: skip
        inputs=modality.meta(),
        config=config.model_dump(mode="json"),
        engine=engine.describe(),
        engine_choice=engine_choice(engine),
        source=source,
    )


def task_ref(config: RunConfig, heads: list[Head] | None = None) -> TaskRef:
    """The task as a checkpoint records it: name, scoring and the factory's arguments
    (classification's loss and TTA are fields of their own, as in earlier versions; a
    multitask run's heads come from the data)."""
    settings = config.train
    name, arguments = task_arguments(config, heads)
    arguments = {} if name == "classification" else arguments
    return TaskRef(name, settings.loss, settings.tta, settings.eval_batch_size, arguments)


def build_callbacks(
    config: RunConfig, run_dir: Path, meta: RunMeta, inputs: Inputs, engine: Engine,
    has_val: bool, log: Log,
) -> list[Callback]:  # fmt: skip
    """The run's own callbacks; each class's `order` says when it runs (train/callbacks.py)."""
    settings, monitor = config.train, config.monitor
    files = inputs.modality.files() or None  # serialised once (a text run's tokenizer)
    callbacks: list[Callback] = [RunWriter(run_dir, meta, files, monitor.keep_epochs)]
    if settings.lookahead_every:
        callbacks.append(Lookahead(settings.lookahead_every, settings.lookahead_decay))
    if monitor.early_stopping:
        callbacks.append(
            EarlyStopping(monitor.metric, monitor.patience, monitor.min_delta, monitor.restore_best)
        )
    if monitor.keep_best and has_val:
        callbacks.append(BestCheckpoint(run_dir, monitor.metric, meta, files, monitor.min_delta))
    if settings.adversarial.method != "off":
        callbacks.append(pgd_check(config, inputs, log))
    callbacks += tensorboard_callbacks(settings.tensorboard, run_dir, inputs, engine.device, log)
    return callbacks


def pgd_check(config: RunConfig, inputs: Inputs, log: Log) -> PgdCheck:
    """Adversarial training's per-epoch PGD check on the first `check_count` validation
    examples, or training examples when the run has no validation split."""
    settings, dataset = config.train.adversarial, inputs.dataset
    has_val = dataset.val is not None
    split, name = (dataset.val, "validation") if has_val else (dataset.train, "training")
    count = min(settings.check_count, len(split.labels))
    attack = check_attack(config)
    log(f"check  {attack.describe()} after each epoch on the first {count} {name} examples"
        f"{'' if name == 'validation' else ' (no validation split)'}; early stop on a "
        f"collapse: {'on' if settings.early_stop else 'off'}")  # fmt: skip
    modality = inputs.modality
    return PgdCheck(
        split.images[:count], split.labels[:count], attack, settings.early_stop,
        modality.mean, modality.std, config.train.eval_batch_size,
    )  # fmt: skip
