"""The Python API: `train`, `evaluate`, `load`. Config becomes objects here (and only here);
the CLI is a thin layer over these functions with the same names."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from neuralab.checkpoint.format import (
    CheckpointError,
    load_checkpoint,
    load_training_state,
    read_json,
)
from neuralab.config import RunConfig, dump_config, resolve_config
from neuralab.data.dataset import PATH_KINDS
from neuralab.inference.evaluation import load_data
from neuralab.inference.predict import Predictor
from neuralab.inference.summary import ModelSummary, summarize
from neuralab.modalities.image import ImageInputs
from neuralab.modalities.text import TextInputs, prepare_text
from neuralab.models import build_model
from neuralab.run.tracking import (
    RunWriter,
    check_monitor,
    draw_curves,
    monitor_callbacks,
    tensorboard_callbacks,
    write_text_atomic,
)
from neuralab.train import allocator, distributed
from neuralab.train.callbacks import Callback, StopOnNonFinite, progress_callbacks
from neuralab.train.engine import (
    Engine,
    choose_engine,
    choose_threads,
    cpu_model,
    deterministic_mode,
    engine_choice,
    fixed_engine,
    pick_device,
    resumed_engine,
)
from neuralab.train.lookahead import lookahead_callbacks
from neuralab.train.optim import build_optimizer, build_scheduler
from neuralab.train.trainer import Trainer, make_loss, planned_steps
from neuralab.train.trainer import evaluate as evaluate_loader

Inputs = ImageInputs | TextInputs


def step_finite_check(setting: str, device: torch.device) -> bool:
    """train.finite_check → whether the trainer checks every step (see TrainConfig)."""
    return setting == "step" or (setting == "auto" and device.type == "cpu")


def last_good(run_dir: Path) -> str:
    """Where the last good weights are after a failed run (nothing bad is ever saved)."""
    try:  # meta.json alone: no need to hash and read the weights for one number
        epoch = read_json(run_dir / "checkpoint" / "meta.json")["epoch"]
    except CheckpointError:
        return f"No epoch completed, so {run_dir} holds no checkpoint."
    return f"The last good checkpoint is {run_dir / 'checkpoint'} (epoch {epoch})."


class TrainingStopped(RuntimeError):
    """Training was stopped early (e.g. the loss became NaN); the message says where and why."""


@dataclass
class Run:
    """What `train` returns: where the run lives, its history and its final test metrics."""

    run_dir: Path
    history: list[dict]
    metrics: dict

    def load(self) -> Predictor:
        return Predictor.load(self.run_dir)


def train(
    recipe: str | None = None,
    *,
    data: str | None = None,
    model: str | None = None,
    epochs: float | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    seed: int | None = None,
    data_dir: str | None = None,
    out: str | None = None,
    overrides: list[str] | None = None,
    verbose: bool = True,
    callbacks: Sequence[Callback] = (),
    progress: str = "auto",
) -> Run:
    """Train a model and write its run directory.

    Args:
        recipe: a shipped recipe name (`neuralab recipes`) or a YAML path.
        data, model, epochs, batch_size, lr, seed, data_dir, out: shortcuts for config fields.
        overrides: `section.field=value` strings applied last.
        callbacks: your own `neuralab.train.callbacks.Callback`s, called after the built-in ones.
        progress: auto (a live bar in a terminal, else a line per epoch), bar, plain or none;
            `verbose=False` prints nothing at all.

    Example:
        >>> run = neuralab.train("mnist-lenet-classic", epochs=1)
        >>> run.metrics["accuracy"]
    """
    config = resolve_config(
        recipe,
        overrides,
        **{
            "data.name": data,
            "model.name": model,
            "train.epochs": epochs,
            "train.batch_size": batch_size,
            "optim.lr": lr,
            "train.seed": seed,
            "data.data_dir": data_dir,
            "out": out,
        },
    )
    return train_config(config, verbose=verbose, callbacks=callbacks, progress=progress)


def say(verbose: bool, text: str) -> None:
    if verbose:
        print(text, flush=True)


def train_config(
    config: RunConfig,
    verbose: bool = True,
    resume_from: Path | None = None,
    callbacks: Sequence[Callback] = (),
    progress: str = "auto",
) -> Run:
    """Train from a validated RunConfig (what `train` and `neuralab train` call); with
    `resume_from`, continue that run directory's interrupted training (see `resume`).

    Under torchrun (WORLD_SIZE > 1) every process calls this: it joins the process group,
    trains its shard of each global batch with DistributedDataParallel and leaves the group;
    only rank 0 prints and writes the run directory.
    """
    # Check the batch split before any work: all processes fail at once, with the numbers.
    settings, processes = config.train, distributed.world_size()
    device = pick_device(settings.device)
    distributed.split_batch(settings.batch_size, processes, settings.grad_accumulation)
    distributed.check_sync_bn(settings.sync_bn, device, processes)
    threads = torch.get_num_threads()
    try:
        with (
            distributed.process_group(device) as device,
            deterministic_mode(settings.deterministic),
            allocator.reused_memory(settings.cpu_memory, device),
        ):
            verbose = verbose and distributed.is_main_process()
            shown = progress_callbacks(progress) if verbose else []
            return train_on_device(config, device, verbose, resume_from, [*shown, *callbacks])
    finally:
        torch.set_num_threads(threads)  # the run's thread choice does not outlive it


def train_on_device(
    config: RunConfig,
    device: torch.device,
    verbose: bool,
    resume_from: Path | None = None,
    extra_callbacks: Sequence[Callback] = (),
) -> Run:
    """The body of `train_config` for this process, once it knows its device."""
    settings = config.train
    if settings.threads:
        torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    config = absolute_paths(config)
    with distributed.main_process_first():  # rank 0 downloads; the others then read the files
        dataset = load_data(config)
        inputs = prepare_text(dataset, config) if dataset.kind == "text" else ImageInputs(dataset)
    model = build_model(config.model.name, inputs.spec, **config.model.args).to(device)
    say(verbose, inputs.describe())
    if verbose:
        args = f" {config.model.args}" if config.model.args else ""
        totals = summarize(model, inputs.example(device)).totals()
        say(verbose, f"model  {config.model.name}{args}: {totals}")
    say(verbose, describe_batch(settings.batch_size, settings.grad_accumulation))
    check_monitor(config, dataset.val is not None)
    if resume_from is not None:
        run_dir = resume_from
        weights, meta = load_checkpoint(run_dir / "checkpoint")
        engine = resumed_engine(meta, device)
    else:
        # Only once data and model are known to be good; rank 0 names it for every process.
        run_dir = distributed.on_main_process(prepare_run_dir, config)
        inputs.initialise(model, device)
        engine = agreed_engine(model, inputs, config, device)
    threads = f"{torch.get_num_threads()} threads on {cpu_model()}"
    say(verbose, f"engine {engine.describe()}; {threads}; {allocator.current()}")
    loaders = inputs.loaders(config, engine)
    model = distribute_model(model, engine, settings.sync_bn)
    optimizer = build_optimizer(distributed.unwrap(model), config.optim)
    steps_per_epoch = len(loaders["train"])
    scheduler = build_scheduler(
        optimizer, config.schedule, steps_per_epoch, planned_steps(settings.epochs, steps_per_epoch)
    )
    meta = {**inputs.meta(config, engine), "engine_choice": engine_choice(engine)}
    files = inputs.files()  # the tokenizer's JSON for text runs: serialised once
    board, note = tensorboard_callbacks(config, run_dir, inputs, engine.device)
    if note:
        say(verbose, f"track  {note}")
    callbacks = [
        StopOnNonFinite(),
        *lookahead_callbacks(settings),
        *monitor_callbacks(config, "val" in loaders, run_dir, meta, files),
        RunWriter(run_dir, meta, files, config.monitor.keep_epochs),
        *board,
        *extra_callbacks,  # progress displays first among them: they print the epoch's line
    ]
    trainer = Trainer(
        model,
        optimizer,
        make_loss(settings.loss, settings.label_smoothing),
        scheduler=scheduler,
        callbacks=callbacks,
        autocast_dtype=engine.autocast_dtype,
        grad_clip=settings.grad_clip,
        ema_decay=settings.ema_decay,
        grad_accumulation=settings.grad_accumulation,
        check_finite=step_finite_check(settings.finite_check, engine.device),
    )
    if resume_from is not None:
        state = load_training_state(run_dir / "checkpoint", verified=True)  # checked above
        trainer.load_state_dict(state, weights)
        say(verbose, f"resume {run_dir} after epoch {trainer.epoch} (step {trainer.step})")
    start = time.perf_counter()
    history = trainer.fit(loaders["train"], settings.epochs, loaders.get("val"))
    train_seconds = time.perf_counter() - start
    if trainer.failed:
        raise TrainingStopped(f"training stopped: {trainer.stop_reason}. {last_good(run_dir)}")
    if trainer.stop_reason:
        say(verbose, f"stop   {trainer.stop_reason}")
    if trainer.restored_epoch is not None:
        say(verbose, f"best   weights of epoch {trainer.restored_epoch} restored")
    # Final metrics in fp32, exactly as `neuralab evaluate` and `predict` compute them.
    metrics = evaluate_loader(
        trainer.eval_model, loaders["test"], make_loss(settings.loss), tta=settings.tta
    )
    metrics.update(
        train_seconds=round(train_seconds, 2),
        epochs=trainer.epoch,
        engine=engine.describe(),
        memory=allocator.current(),
        processes=distributed.world_size(),
    )
    if distributed.is_main_process():
        write_text_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=2))
        say(verbose, draw_curves(run_dir, trainer.history))
    say(
        verbose,
        f"test   accuracy {metrics['accuracy']:.2%} · loss {metrics['loss']:.4f} · "
        f"trained in {train_seconds:.1f}s · run saved to {run_dir}",
    )
    return Run(run_dir, history, metrics)


def describe_batch(global_batch: int, grad_accumulation: int) -> str:
    """The log line that makes the effective batch explicit, e.g. `batch  global 128 = 2
    processes × 64 per device`."""
    processes = distributed.world_size()
    per_device = distributed.split_batch(global_batch, processes, grad_accumulation)
    line = f"batch  global {global_batch} = {processes} process{'es' * (processes > 1)} × "
    line += f"{per_device} per device"
    if grad_accumulation > 1:
        micro = per_device // grad_accumulation
        line += f" = {grad_accumulation} accumulated micro-batches of {micro}"
    return line


def agreed_engine(
    model: torch.nn.Module, inputs: Inputs, config: RunConfig, device: torch.device
) -> Engine:
    """Rank 0's engine choice for every process: timings differ between processes, and DDP
    needs the same memory format (and precision, for identical numerics) everywhere."""
    engine = distributed.on_main_process(pick_engine, model, inputs, config, device)
    return dataclasses.replace(engine, device=device)


def distribute_model(model: torch.nn.Module, engine: Engine, sync_bn: bool) -> torch.nn.Module:
    """Under torchrun, the model wrapped in DistributedDataParallel (see distributed.wrap_model);
    the memory format is set first, because DDP lays out its gradient buckets when it wraps."""
    if engine.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return distributed.wrap_model(model, engine.device, sync_bn)


def absolute_paths(config: RunConfig) -> RunConfig:
    """Store folder and data paths absolute, so `evaluate` works from any working directory."""
    config = config.model_copy(deep=True)
    kind, _, path = config.data.name.partition(":")
    if kind in PATH_KINDS and path:
        config.data.name = f"{kind}:{Path(path).expanduser().resolve()}"
    if config.data.data_dir:
        config.data.data_dir = str(Path(config.data.data_dir).expanduser().resolve())
    return config


def prepare_run_dir(config: RunConfig) -> Path:
    """Create the run directory and write config.yaml; refuse to overwrite an earlier run."""
    if config.out:
        run_dir = Path(config.out).expanduser()
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        safe_data = config.data.name.split(":")[0]
        run_dir = Path("runs") / f"{safe_data}-{config.model.name}-{stamp}"
    if (run_dir / "checkpoint").exists() or (run_dir / "metrics.json").exists():
        raise FileExistsError(
            f"run directory {run_dir} already holds a run; choose another "
            "--out or delete it first (nothing was overwritten)"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "config.yaml", dump_config(config))
    return run_dir


def pick_engine(
    model: torch.nn.Module, inputs: Inputs, config: RunConfig, device: torch.device
) -> Engine:
    """Time the thread count (unless train.threads is set), then precision and layout."""
    settings = config.train
    if settings.deterministic:
        return fixed_engine(device, settings.precision, settings.channels_last)
    batch, labels = inputs.sample_batch(settings.batch_size, device)
    note = ""
    if settings.threads is None and distributed.world_size() == 1 and device.type == "cpu":
        # Threads first: a stalled thread pool would distort every other timing.
        _, note = choose_threads(model, batch, labels, Engine(device, None, False, ""))
    engine = choose_engine(model, batch, labels, device, settings.precision, settings.channels_last)
    return dataclasses.replace(engine, reason=f"{engine.reason}; {note}") if note else engine


def summary(
    recipe: str | None = None,
    *,
    data: str | None = None,
    model: str | None = None,
    data_dir: str | None = None,
    overrides: list[str] | None = None,
) -> ModelSummary:
    """Layers, output shapes, parameters and FLOPs of the model a config would train, on its
    dataset's input (`neuralab summary`). `.format()` gives the table.

    Example:
        >>> print(neuralab.summary(model="lenet", data="mnist").format())  # doctest: +SKIP
    """
    _, inputs, built = model_for(recipe, data, model, data_dir, overrides)
    return summarize(built, inputs.example(torch.device("cpu")))


def model_for(
    recipe: str | None,
    data: str | None,
    model: str | None,
    data_dir: str | None,
    overrides: list[str] | None,
) -> tuple[RunConfig, Inputs, torch.nn.Module]:
    """The config, inputs and freshly built (CPU) model that these train arguments name, for
    tools that inspect a model without training it (summary, lr-find)."""
    fields = {"data.name": data, "model.name": model, "data.data_dir": data_dir}
    config = resolve_config(recipe, overrides, **fields)
    torch.manual_seed(config.train.seed)
    dataset = load_data(config)
    inputs = prepare_text(dataset, config) if dataset.kind == "text" else ImageInputs(dataset)
    return config, inputs, build_model(config.model.name, inputs.spec, **config.model.args)


def load(run_dir: str | Path) -> Predictor:
    """Load a run (or a checkpoint folder) for prediction: `neuralab.load(run).predict(files)`."""
    return Predictor.load(run_dir)
