"""The data half of the run builder (run/build.py): the dataset a config names, its inputs
(a text run's tokenizer trained), the model, the log lines that describe them, and the loaders.
Like build.py, it reads a `RunConfig` and hands plain arguments to what it builds.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from neuralab.config import RunConfig
from neuralab.data import load_dataset
from neuralab.data.augment import Augment
from neuralab.data.dataset import DataError
from neuralab.data.pseudo import add_pseudo_labels
from neuralab.data.tokenizer import TokenizerSettings
from neuralab.inference.summary import summarize
from neuralab.modalities import Inputs, inputs_for
from neuralab.modalities.episodes import EpisodeInputs
from neuralab.modalities.text import start_from_vectors
from neuralab.models import build_model
from neuralab.run import distill, finetune
from neuralab.run.defaults import fill_defaults
from neuralab.run.settings import check_settings, episode_settings, is_episodic
from neuralab.train import distributed
from neuralab.train.engine import Engine

Log = Callable[[str], None]


def load_data(config: RunConfig):
    """The dataset a config names, with its options (and the pseudo-labelled examples a
    train.semi stage learns from)."""
    data = config.data
    dataset = load_dataset(
        data.name, data.data_dir, data.download, data.val_split, config.train.seed,
        data.classes, data.labelled_per_class, **data.options,
    )  # fmt: skip
    if data.pseudo_labels is not None:  # a train.semi stage: the teacher's labels join
        dataset = add_pseudo_labels(dataset, data.pseudo_labels)
    return dataset


def build_inputs_and_model(
    config: RunConfig,
    device: torch.device,
    source: finetune.Source | None = None,
    log: Log = lambda line: None,
) -> tuple[RunConfig, Inputs, nn.Module]:
    """The config with its unset fields chosen for the model and the data (no recipe:
    run/defaults.py; each choice goes to `log`), the dataset's inputs (a text run's tokenizer
    trained, or the `source` run's) and the model, on `device`. Rank 0 downloads first; the
    other processes then read the files."""
    with distributed.main_process_first():
        dataset = load_data(config)
        config, notes = fill_defaults(config, dataset)
        for note in notes:
            log(note)
        if notes:  # checked again: the defaults may have chosen an optimizer and a schedule
            check_settings(config)
        tokenizer = TokenizerSettings.from_dict(config.tokenizer.model_dump())
        trained = None
        if source is not None:
            finetune.check_kind(source, dataset.kind, dataset.name)
            trained = getattr(source.modality, "tokenizer", None)
        trained = distill.teacher_tokenizer(config, trained)
        vectors = config.data.word_vectors
        inputs = inputs_for(
            dataset, tokenizer, config.tokenizer.cache, trained, unlabelled_words=bool(vectors)
        )
    if is_episodic(config):
        if dataset.kind != "image":
            raise DataError(
                f"task {config.task.name} learns from episodes of images; {dataset.name} is "
                f"{dataset.kind} data"
            )
        inputs = EpisodeInputs.create(dataset, episode_settings(config), config.train.seed)
        inputs.check()
    if config.train.tta != "off" and not inputs.modality.tta_allowed:
        raise DataError(
            f"train.tta mirrors images; it cannot be used with {inputs.modality.kind} data "
            "(set train.tta=off)"
        )
    model = build_model(config.model.name, inputs.spec, **config.model.args)
    if vectors is not None:
        log(start_from_vectors(model, inputs, vectors, config.model.name))
    return config, inputs, model.to(device)


def describe_subset(config: RunConfig, inputs: Inputs) -> str:
    """The log line of `data.classes` / `data.labelled_per_class`."""
    data, parts = config.data, []
    if data.classes is not None:
        parts.append(f"classes {', '.join(inputs.dataset.classes)} (data.classes)")
    if data.labelled_per_class is not None:
        unlabelled = inputs.dataset.unlabelled
        parts.append(f"{data.labelled_per_class} labelled training examples per class "
                     f"(data.labelled_per_class, seed {config.train.seed}); "
                     f"{len(unlabelled) if unlabelled else 0:,} others unlabelled")  # fmt: skip
    pseudo = inputs.dataset.info.get("pseudo_labelled")
    if pseudo:
        parts.append(f"{pseudo:,} pseudo-labelled examples joined them (data.pseudo_labels)")
    return "subset " + "; ".join(parts)


def describe_model(config: RunConfig, model: nn.Module, inputs: Inputs, device) -> str:
    """The `model` log line: name, arguments, parameters and FLOPs."""
    args = f" {config.model.args}" if config.model.args else ""
    return f"model  {config.model.name}{args}: {summarize(model, inputs.example(device)).totals()}"


def build_loaders(config: RunConfig, inputs: Inputs, engine: Engine) -> dict:
    """Train, test (and val) loaders for this process's shard of every batch."""
    settings, processes = config.train, distributed.world_size()
    return inputs.loaders(
        distributed.split_batch(settings.batch_size, processes),
        settings.eval_batch_size,
        settings.seed,
        Augment(**config.augment.model_dump()),
        engine.device,
        engine.channels_last,
        rank=distributed.rank(),
        world_size=processes,
    )
