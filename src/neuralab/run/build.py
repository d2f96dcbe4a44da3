"""The run builder: `build_run(config) -> RunParts`, the only code that reads a `RunConfig`.

Everything it builds (inputs, model, engine, loaders, optimizer, schedule, task, callbacks,
run directory, checkpoint metadata) takes plain arguments, so "where does this setting act?"
has one answer: the function below that reads it.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from neuralab.adversarial.training import AdversarialTraining
from neuralab.checkpoint.format import load_training_state, unwrap
from neuralab.checkpoint.meta import RunMeta, load_run_checkpoint
from neuralab.config import RunConfig, dump_config, resolve_config
from neuralab.data.dataset import PATH_KINDS, DataError
from neuralab.modalities import Inputs
from neuralab.run import distill, finetune
from neuralab.run.inputs import (  # the data half of the builder (run/inputs.py)
    build_inputs_and_model,
    build_loaders,
    describe_model,
    describe_subset,
)
from neuralab.run.records import build_callbacks, build_meta
from neuralab.run.rundir import new_run_dir
from neuralab.run.settings import (  # the settings half of the builder (run/settings.py)
    build_optimizer,
    build_schedule,
    build_task,
    check_settings,
)
from neuralab.tasks import Task
from neuralab.tasks.distillation import Distillation
from neuralab.train import distributed
from neuralab.train.allocator import current as allocator_state
from neuralab.train.allocator import reused_memory
from neuralab.train.callbacks import Callback
from neuralab.train.engine import (
    Engine,
    cpu_model,
    deterministic_mode,
    fixed_engine,
    pick_device,
    pick_engine,
    resumed_engine,
)
from neuralab.train.pruning import KeepPruned
from neuralab.train.trainer import Trainer, finite_check

Log = Callable[[str], None]


@dataclass
class RunParts:
    """Everything a run is made of, built and ready for the Trainer."""

    config: RunConfig
    inputs: Inputs
    model: nn.Module  # wrapped in DistributedDataParallel under torchrun
    engine: Engine
    loaders: dict
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    task: Task
    callbacks: list[Callback]
    run_dir: Path
    meta: RunMeta
    resume_weights: dict[str, torch.Tensor] | None = None

    @property
    def epochs(self) -> float:
        return self.config.train.epochs

    def trainer(self) -> Trainer:
        """The Trainer over these parts (resumed state loaded when resuming)."""
        settings = self.config.train
        trainer = Trainer(
            self.model,
            self.optimizer,
            self.task,
            scheduler=self.scheduler,
            callbacks=self.callbacks,
            autocast_dtype=self.engine.autocast_dtype,
            grad_clip=settings.grad_clip,
            ema_decay=settings.ema_decay,
            grad_accumulation=settings.grad_accumulation,
            finite_check=finite_check(settings.finite_check, self.engine.device),
        )
        if self.resume_weights is not None:
            state = load_training_state(self.run_dir / "checkpoint", verified=True)
            trainer.load_state_dict(state, self.resume_weights)
        return trainer


def build_run(
    config: RunConfig,
    device: torch.device,
    log: Log | None = None,
    resume_from: Path | None = None,
    extra_callbacks: Sequence[Callback] = (),
) -> RunParts:
    """Build every part of a run on `device` for this process; `log` takes the log lines
    (None: nothing is described, and nothing is computed only to be described).

    With `resume_from`, the parts continue that run directory (its engine, its state).
    """
    described = log is not None
    log = log or (lambda line: None)  # shows nothing
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    torch.manual_seed(config.train.seed)
    config, source = checked_config(config, resume_from, log)
    config, inputs, model = build_inputs_and_model(config, device, source, log)
    settings = config.train  # with the defaults chosen for the model and the data
    log(inputs.describe())
    if (
        config.data.classes is not None
        or config.data.labelled_per_class is not None
        or (config.data.pseudo_labels is not None)
    ):
        log(describe_subset(config, inputs))
    if described:  # a forward pass: only when it is shown
        log(describe_model(config, model, inputs, device))
    task = described_task(config, inputs, model, device, log)
    has_val = inputs.dataset.val is not None
    check_monitor(config, has_val)
    finetune.freeze_layers(config, model, log)  # before the run directory: a typo leaves none
    start = start_or_resume(config, model, inputs, device, resume_from, source, log)
    run_dir, engine, weights = start.run_dir, start.engine, start.weights
    log(f"engine {engine.describe()}; {torch.get_num_threads()} threads on {cpu_model()}; "
        f"{allocator_state()}")  # fmt: skip
    loaders = build_loaders(config, inputs, engine)
    model = distributed.distribute_model(
        model, engine.device, engine.channels_last, settings.sync_bn
    )
    classes, steps = len(inputs.dataset.classes), len(loaders["train"])
    optimizer = build_optimizer(config, unwrap(model))
    tuning = finetune.tuning(config, optimizer, unwrap(model), classes, steps, log)
    scheduler = build_schedule(config, optimizer, steps)  # after the groups' start epochs
    meta = build_meta(config, inputs, engine, start.source)
    callbacks = [
        *build_callbacks(config, run_dir, meta, inputs, engine, has_val, log),
        *tuning,
        *([KeepPruned()] if settings.keep_zeros else []),  # a pruned run's zeros stay zero
        *extra_callbacks,
    ]
    return RunParts(
        config, inputs, model, engine, loaders, optimizer, scheduler, task, callbacks,
        run_dir, meta, weights,
    )  # fmt: skip


def described_task(
    config: RunConfig, inputs: Inputs, model: nn.Module, device: torch.device, log: Log
) -> Task:
    """The run's task (its teacher, if any, on `device`) and its log lines: the batch or
    the episodes, and what replaces the loss (adversarial training, distillation)."""
    task, settings = build_task(config, inputs, device), config.train
    if getattr(task, "episodic", False):  # batches are episodes: the task line says how
        log(f"task   {task.describe(model)}")
    else:
        if getattr(task, "name", "") == "multitask":  # which heads, weighted how
            log(f"task   {task.describe()}")
        log(distributed.describe_batch(settings.batch_size, settings.grad_accumulation))
    if isinstance(task, (AdversarialTraining, Distillation)):
        log(f"{'adv' if isinstance(task, AdversarialTraining) else 'distil':<6} {task.describe()}")
    return task


def checked_config(
    config: RunConfig, resume_from: Path | None, log: Log
) -> tuple[RunConfig, finetune.Source | None]:
    """The config with absolute paths and what a fine-tuning source decides (its model, a
    text run's tokenizer), checked before any slow work; and the source run, if any."""
    config = absolute_paths(config)
    source = finetune.read_source(config, resume_from)
    if source is not None and resume_from is None:
        config, notes = finetune.adopt_source(config, source)
        for note in notes:
            log(f"init   {note}")
    config, notes = distill.adopt_teacher_tokenizer(config)
    for note in notes:
        log(note)
    check_settings(config)
    finetune.check_fine_tuning(config)
    return config, source


# -- the process's environment ---------------------------------------------------------------
def check_processes(config: RunConfig, processes: int) -> torch.device:
    """The checks every process makes before any work (all fail at once, with the numbers):
    the global batch splits over `processes`, sync_bn has GPUs. Returns the run's device."""
    settings = config.train
    device = pick_device(settings.device)
    distributed.split_batch(settings.batch_size, processes, settings.grad_accumulation)
    distributed.check_sync_bn(settings.sync_bn, device, processes)
    return device


@contextlib.contextmanager
def environment(config: RunConfig) -> Iterator[torch.device]:
    """This process's run environment: the process group under torchrun (yielding this
    process's device), deterministic kernels and the CPU allocator as configured; the thread
    count is restored afterwards (the run's choice does not outlive it)."""
    settings, threads = config.train, torch.get_num_threads()
    device = check_processes(config, distributed.world_size())
    try:
        with (
            distributed.process_group(device) as device,
            deterministic_mode(settings.deterministic),
            reused_memory(settings.cpu_memory, device),
        ):
            yield device
    finally:
        torch.set_num_threads(threads)


def absolute_paths(config: RunConfig) -> RunConfig:
    """Store folder and data paths absolute, so `evaluate` works from any working directory."""
    config = config.model_copy(deep=True)
    kind, _, path = config.data.name.partition(":")
    if kind in PATH_KINDS and path:
        config.data.name = f"{kind}:{Path(path).expanduser().resolve()}"
    if config.data.data_dir:
        config.data.data_dir = str(Path(config.data.data_dir).expanduser().resolve())
    if config.train.init_from:
        config.train.init_from = str(Path(config.train.init_from).expanduser().resolve())
    if config.train.distill.teacher:
        teacher = str(Path(config.train.distill.teacher).expanduser().resolve())
        config.train.distill.teacher = teacher
    return config


# -- engine ------------------------------------------------------------------------------------
@dataclass
class Start:
    """Where a run starts: its directory, engine, saved weights (resumed runs) and the
    provenance of the weights it started from (`train.init_from`)."""

    run_dir: Path
    engine: Engine
    weights: dict | None
    source: dict | None


def start_or_resume(
    config: RunConfig, model: nn.Module, inputs: Inputs, device, resume_from: Path | None,
    source: finetune.Source | None = None, log: Log = print,
) -> Start:  # fmt: skip
    """A new run: data-dependent initialisation, the source run's weights loaded (they must
    fit), its directory (rank 0 names it for every process, only once data and model are known
    to be good) and a timed engine. A resumed run: its directory, its engine as before and its
    saved weights."""
    if resume_from is not None:
        weights, meta = load_run_checkpoint(resume_from / "checkpoint")
        return Start(resume_from, resumed_engine(meta.engine_choice, device), weights, meta.source)
    inputs.initialise(model, device)
    provenance = None
    if source is not None:
        provenance = finetune.start_from(model, source, list(inputs.dataset.classes), log)
    run_dir = distributed.on_main_process(
        new_run_dir, config.out, config.data.name, config.model.name, dump_config(config)
    )
    return Start(run_dir, agreed_engine(model, inputs, config, device), None, provenance)


def agreed_engine(model: nn.Module, inputs: Inputs, config: RunConfig, device) -> Engine:
    """Rank 0's engine choice for every process: timings differ between processes, and DDP
    needs the same memory format (and precision, for identical numerics) everywhere."""
    settings = config.train
    if settings.deterministic:  # nothing timed: nothing depends on the machine's load
        return fixed_engine(device, settings.precision, settings.channels_last)
    engine = distributed.on_main_process(
        pick_engine, model, inputs, settings.batch_size, device,
        settings.precision, settings.channels_last, settings.threads,
    )  # fmt: skip
    return dataclasses.replace(engine, device=device)


# -- checks ----------------------------------------------------------------------------------
def check_monitor(config: RunConfig, has_val: bool) -> None:
    """Before anything is written: early stopping needs validation metrics."""
    if config.monitor.early_stopping and not has_val:
        raise DataError(
            f"monitor.early_stopping watches {config.monitor.metric}, but this run has no "
            "validation split. Fix: set data.val_split (e.g. --set data.val_split=0.1)"
        )


def read_run_config(run_dir: Path, start_over: bool = False) -> RunConfig:
    """The config a run directory was trained with (its config.yaml); `start_over`: to train
    it again from the start, writing into the same directory."""
    config = resolve_config(str(Path(run_dir) / "config.yaml"))
    return config.model_copy(update={"out": str(run_dir)}) if start_over else config
