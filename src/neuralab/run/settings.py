"""The run builder's settings half: what the optimizer, schedule and task sections of a
`RunConfig` say, checked before any slow work and turned into objects (run/build.py calls these;
together they are the only readers of a RunConfig)."""

from __future__ import annotations

import torch
from torch import nn

from neuralab.adversarial.attacks import AttackSettings
from neuralab.adversarial.training import AdversarialTraining, TrainingAttack
from neuralab.config import RunConfig, explicit_fields
from neuralab.data.dataset import DataError
from neuralab.data.heads import Head
from neuralab.errors import ConfigError
from neuralab.modalities import Inputs
from neuralab.modalities.episodes import EpisodeSettings
from neuralab.models import MODELS
from neuralab.run.distill import distillation
from neuralab.tasks import TASKS, Task
from neuralab.train import distributed
from neuralab.train.optim import OPTIMIZERS, SCHEDULES, make_optimizer, make_scheduler
from neuralab.train.trainer import planned_steps


def optimizer_settings(config: RunConfig) -> tuple[str, dict, dict]:
    """The optimizer's name, its train_until groups and the settings the config sets (only
    those: the factory refuses one it does not take)."""
    settings = explicit_fields(config.optim)
    name, train_until = settings.pop("name", config.optim.name), settings.pop("train_until", {})
    return name, train_until, settings


def schedule_settings(config: RunConfig) -> tuple[str, dict]:
    """The schedule's name and the settings the config sets."""
    settings = explicit_fields(config.schedule)
    return settings.pop("name", config.schedule.name), settings


def check_settings(config: RunConfig) -> None:
    """The model, optimizer, schedule and task names and arguments, checked against their
    factories before any slow work (data, engine timing, the run directory): a typo leaves
    nothing."""
    MODELS.check(config.model.name, **config.model.args)
    name, _, settings = optimizer_settings(config)
    OPTIMIZERS.check(name, **settings)
    name, settings = schedule_settings(config)
    SCHEDULES.check(name, **settings)
    name, arguments = task_arguments(config)
    if name != "multitask":  # its heads come from the data
        TASKS.check(name, **arguments)
    if is_episodic(config):
        check_episodic(config)
    check_semi(config)


def check_semi(config: RunConfig) -> None:
    """What self-training does not combine with, refused before any work."""
    semi, data = config.train.semi, config.data
    if semi.method == "off" and semi.vectors == "off":
        stage = data.pseudo_labels is not None or data.word_vectors is not None
        if data.options.get("unlabelled") and not stage:
            raise ConfigError(
                "data.options.unlabelled=true reads the unlabelled examples, and only a "
                "semi-supervised run uses them: set train.semi.method=pseudo-label or "
                "train.semi.vectors=cbow, or drop the option (a supervised run never reads them)"
            )
        return
    if semi.vectors != "off" and not config.model.args.get("embed_dim"):
        raise ConfigError(
            f"train.semi.vectors={semi.vectors} starts the model's word embeddings from word "
            "vectors of their size: set model.args.embed_dim (e.g. 100, with model ngram)"
        )
    fields = data.options.get("label_field")
    several = isinstance(fields, list) and len(fields) > 1
    if semi.method != "off" and (config.task.name != "classification" or several):
        raise ConfigError(
            "train.semi labels unlabelled examples with one class each; "
            + (f"task {config.task.name} does not" if config.task.name != "classification"
               else "data with several label fields does not")
            + " learn that way (set train.semi.method=off)"
        )  # fmt: skip
    if data.pseudo_labels is not None or data.word_vectors is not None:
        raise ConfigError(
            "data.pseudo_labels and data.word_vectors are set by train.semi for the stages it "
            "runs; unset them or train.semi"
        )
    if distributed.world_size() > 1:
        raise ConfigError("train.semi runs its stages in one process; run it without torchrun")


def is_episodic(config: RunConfig) -> bool:
    """Whether the run learns from few-shot episodes (task.name protonet, maml or fomaml)."""
    return bool(getattr(TASKS.get(config.task.name).factory, "episodic", False))


def check_episodic(config: RunConfig) -> None:
    """What few-shot runs do not combine with, refused before any work."""
    if config.train.tta != "off":
        raise DataError("train.tta averages mirrored views; few-shot tasks do not use it")
    if distributed.world_size() > 1:
        raise DataError(
            f"task {config.task.name} trains in one process: episodes are not sharded over "
            "torchrun's processes; run it without torchrun"
        )


def task_arguments(config: RunConfig, heads: list[Head] | None = None) -> tuple[str, dict]:
    """The task's registered name and its factory's arguments. Data with several label fields
    (`heads`) makes a classification run multi-task; before the data is read (`heads`
    None) a multitask run's arguments are not known yet and are returned empty."""
    task, settings = config.task, config.train
    if heads or task.name == "multitask":
        return "multitask", multitask_arguments(config, heads) if heads else {}
    if task.name == "classification":
        arguments = {
            "loss": settings.loss, "label_smoothing": settings.label_smoothing, "tta": settings.tta,
        }  # fmt: skip
    elif task.name in ("maml", "fomaml"):
        arguments = {
            "ways": task.ways, "inner_steps": task.inner_steps, "inner_lr": task.inner_lr,
            "eval_inner_steps": task.eval_inner_steps, "vectorize": task.vectorize,
        }  # fmt: skip
    else:
        arguments = {}
    return task.name, arguments


def multitask_arguments(config: RunConfig, heads: list[Head]) -> dict:
    """A multi-task run's heads and weights, after refusing what applies to one label."""
    settings = config.train
    single = {
        "train.loss": settings.loss != "cross_entropy",
        "train.label_smoothing": settings.label_smoothing > 0,
        "train.tta": settings.tta != "off",
        "train.adversarial": settings.adversarial.method != "off",
        "train.distill.teacher": settings.distill.teacher is not None,
    }
    if config.task.name not in ("classification", "multitask"):
        raise ConfigError(
            f"task {config.task.name} learns from episodes of one label, and the data has "
            f"several label fields ({', '.join(h.name for h in heads)}); keep one label field"
        )
    refused = [key for key, is_set in single.items() if is_set]
    if refused:
        raise ConfigError(
            f"{', '.join(refused)} apply to one label, and the data has several label fields "
            f"({', '.join(h.name for h in heads)}): unset them or keep one label field"
        )
    return {"heads": [head.to_dict() for head in heads], "weights": config.task.head_weights}


def episode_settings(config: RunConfig) -> EpisodeSettings:
    """How a few-shot run draws its episodes, and the model's output size."""
    task = config.task
    outputs = task.ways if task.name in ("maml", "fomaml") else task.embedding
    return EpisodeSettings(
        task.ways, task.shots, task.queries, task.episodes, task.meta_batch,
        task.eval_ways or task.ways, task.eval_shots or task.shots, task.eval_episodes, outputs,
    )  # fmt: skip


def build_optimizer(config: RunConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The configured optimizer over `model`'s trainable parameters."""
    name, train_until, settings = optimizer_settings(config)
    return make_optimizer(model, name, train_until, **settings)


def build_schedule(config: RunConfig, optimizer, steps_per_epoch: int):
    """The configured per-step learning-rate schedule over the run's planned steps."""
    name, settings = schedule_settings(config)
    total = planned_steps(config.train.epochs, steps_per_epoch)
    return make_scheduler(optimizer, name, steps_per_epoch, total, **settings)


def build_task(config: RunConfig, inputs: Inputs, device: torch.device | None = None) -> Task:
    """What is learned: classification (scored with the run's loss and test-time
    augmentation), wrapped in adversarial training when train.adversarial is on or in
    distillation when train.distill.teacher is set (its teacher on `device`, None: the CPU),
    or a few-shot task."""
    name, arguments = task_arguments(config, getattr(inputs.dataset, "heads", None))
    if name == "multitask" and not arguments:
        raise DataError(
            f"task.name=multitask learns several label fields, and {inputs.dataset.name} has "
            "one. Fix: list them, e.g. data.options.label_field='[sentiment, stars]', or set "
            "task.name=classification"
        )
    task = TASKS.build(name, **arguments)
    if name == "multitask":
        return task
    attack = training_attack(config, inputs)
    if attack is not None and config.train.distill.teacher is not None:
        raise ConfigError(
            "train.adversarial and train.distill.teacher both replace the training loss; "
            "set one (train.adversarial.method=off or train.distill.teacher=null)"
        )
    if attack is None:
        return distillation(config, inputs, task, device or torch.device("cpu"))
    modality = inputs.modality
    return AdversarialTraining(task, attack, modality.mean, modality.std)


def training_attack(config: RunConfig, inputs: Inputs) -> TrainingAttack | None:
    """The attack of adversarial training (None: train.adversarial.method=off), checked
    against the run: image classification only."""
    settings = config.train.adversarial
    if settings.method == "off":
        return None
    if inputs.modality.kind != "image":
        raise ConfigError(
            f"train.adversarial works on image runs; {config.data.name} is "
            f"{inputs.modality.kind}: set train.adversarial.method=off"
        )
    if config.task.name != "classification":
        raise ConfigError(
            f"train.adversarial trains classifiers; task {config.task.name} learns from "
            "episodes: set train.adversarial.method=off or task.name=classification"
        )
    return TrainingAttack(settings.method, settings.eps, settings.step, settings.steps)


def check_attack(config: RunConfig) -> AttackSettings:
    """The per-epoch PGD check of adversarial training (step 2.5 · eps / steps), at
    `check_eps` (default: the training eps)."""
    settings = config.train.adversarial
    return AttackSettings(
        "pgd", settings.check_radius, "linf", settings.check_steps, None, settings.check_restarts
    )
