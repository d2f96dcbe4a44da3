"""The Python API: `train`, `resume`, `summary`, `load`, `evaluate`. The CLI is a thin layer
over these functions with the same names; the run builder (run/build.py) turns the config
into objects."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from neuralab.adversarial.robust import evaluate_robustness
from neuralab.checkpoint.format import recover_interrupted_save
from neuralab.config import RunConfig, config_from
from neuralab.errors import UserError
from neuralab.inference import evaluation
from neuralab.inference.predict import Predictor
from neuralab.inference.summary import ModelSummary, summarize
from neuralab.run import build
from neuralab.run.build import RunParts, build_run
from neuralab.run.probe import model_for
from neuralab.run.resume import resumable_run
from neuralab.run.rundir import last_good
from neuralab.run.tracking import draw_curves, write_text_atomic
from neuralab.train import allocator, distributed
from neuralab.train.callbacks import Callback, progress_callbacks
from neuralab.train.trainer import Trainer, score_loader


class TrainingStopped(UserError, RuntimeError):
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
    task: str | None = None,
    ways: int | None = None,
    shots: int | None = None,
    init_from: str | Path | None = None,
    overrides: list[str] | None = None,
    verbose: bool = True,
    callbacks: Sequence[Callback] = (),
    progress: str = "auto",
) -> Run:
    """Train a model and write its run directory.

    Args:
        recipe: a shipped recipe name (`neuralab recipes`) or a YAML path.
        data, model, epochs, batch_size, lr, seed, data_dir, out, task, ways, shots,
            init_from: shortcuts for config fields (config.SHORTCUTS names each one's field);
            init_from fine-tunes from a run's weights (train.init_from).
        overrides: `section.field=value` strings applied last.
        callbacks: your own `neuralab.train.callbacks.Callback`s, called after the built-in ones.
        progress: auto (a live bar in a terminal, else a line per epoch), bar, plain or none;
            `verbose=False` prints nothing at all.

    Example:
        >>> run = neuralab.train("mnist-lenet-classic", epochs=1)
        >>> run.metrics["accuracy"]
    """
    config = config_from(
        recipe, overrides, data=data, model=model, epochs=epochs, batch_size=batch_size, lr=lr,
        seed=seed, data_dir=data_dir, out=out, task=task, ways=ways, shots=shots,
        init_from=None if init_from is None else str(init_from),
    )  # fmt: skip
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
    with build.environment(config) as device:
        verbose = verbose and distributed.is_main_process()
        shown = progress_callbacks(progress) if verbose else []
        return train_on_device(config, device, verbose, resume_from, [*shown, *callbacks])


def train_on_device(
    config: RunConfig,
    device: torch.device,
    verbose: bool,
    resume_from: Path | None = None,
    extra_callbacks: Sequence[Callback] = (),
) -> Run:
    """The body of `train_config` for this process, once it knows its device: build the
    parts, train, write the result."""
    log = (lambda line: print(line, flush=True)) if verbose else None
    parts = build_run(config, device, log, resume_from, extra_callbacks)
    trainer = parts.trainer()
    if resume_from is not None:
        say(verbose, f"resume {parts.run_dir} after epoch {trainer.epoch} (step {trainer.step})")
    start = time.perf_counter()
    history = trainer.fit(parts.loaders["train"], parts.epochs, parts.loaders.get("val"))
    train_seconds = time.perf_counter() - start
    report_stop(trainer, parts.run_dir, verbose)
    metrics = final_metrics(parts, trainer, train_seconds)
    if distributed.is_main_process():
        write_text_atomic(parts.run_dir / "metrics.json", json.dumps(metrics, indent=2))
        say(verbose, draw_curves(parts.run_dir, trainer.history))
    say(
        verbose,
        f"test   accuracy {metrics['accuracy']:.2%} · loss {metrics['loss']:.4f} · "
        f"trained in {train_seconds:.1f}s · run saved to {parts.run_dir}",
    )
    return Run(parts.run_dir, history, metrics)


def report_stop(trainer: Trainer, run_dir: Path, verbose: bool) -> None:
    """A failed run raises TrainingStopped (saying where the last good weights are); an early
    stop and restored weights are logged."""
    if trainer.failed:
        raise TrainingStopped(f"training stopped: {trainer.stop_reason}. {last_good(run_dir)}")
    if trainer.stop_reason:
        say(verbose, f"stop   {trainer.stop_reason}")
    if trainer.restored_epoch is not None:
        say(verbose, f"best   weights of epoch {trainer.restored_epoch} restored")


def final_metrics(parts: RunParts, trainer: Trainer, train_seconds: float) -> dict:
    """Test metrics in fp32, exactly as `neuralab evaluate` and `predict` compute them, and
    how the run was trained."""
    metrics = score_loader(trainer.eval_model, parts.loaders["test"], parts.task)
    metrics.update(
        train_seconds=round(train_seconds, 2),
        epochs=trainer.epoch,
        engine=parts.engine.describe(),
        memory=allocator.current(),
        processes=distributed.world_size(),
    )
    return metrics


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
    _, inputs, built = model_for(
        config_from(recipe, overrides, data=data, model=model, data_dir=data_dir)
    )
    return summarize(built, inputs.example(torch.device("cpu")))


def resume(run_dir: str | Path = "auto", verbose: bool = True, progress: str = "auto") -> Run:
    """Continue an interrupted run from its last checkpoint (the end of its last complete
    epoch) with its own config: weights, optimizer, schedule, EMA, callbacks, epoch, step,
    history, random state and engine (precision, layout, threads) are restored, so on CPU the
    finished run equals one that was never interrupted, bit for bit (one process; under
    torchrun, processes other than rank 0 restart their random streams from rank 0's).

    `run_dir="auto"` picks the newest unfinished run under ./runs.

    Example:
        >>> neuralab.resume("runs/mnist-lenet-20261125-101500")  # doctest: +SKIP
    """
    folder = resumable_run(run_dir)
    for name in ("checkpoint", "best"):
        for note in recover_interrupted_save(folder / name):
            if verbose:
                print(f"resume {note}")
    if not (folder / "checkpoint" / "training.json").exists():
        # Killed before its first checkpoint: nothing to continue from, so the run starts
        # over in the same folder with the same config (and seed): the result is the same.
        if verbose:
            print(f"resume {folder} has no checkpoint yet: starting the run over")
        config = build.read_run_config(folder, start_over=True)
        return train_config(config, verbose=verbose, progress=progress)
    config = build.read_run_config(folder)
    return train_config(config, verbose=verbose, resume_from=folder, progress=progress)


def load(run_dir: str | Path) -> Predictor:
    """Load a run (or a checkpoint folder) for prediction: `neuralab.load(run).predict(files)`."""
    return Predictor.load(run_dir)


def evaluate(
    run_dir: str | Path,
    data: str | None = None,
    data_dir: str | None = None,
    save: bool = True,
    *,
    attack: str | None = None,
    eps: float | Sequence[float] = 0.3,
    norm: str = "linf",
    steps: int = 10,
    step_size: float | None = None,
    restarts: int = 1,
    count: int = 1000,
    seed: int | None = None,
    out: str | Path | None = None,
    **few_shot: int | None,
) -> dict:
    """Evaluate a saved run on its test split; with `attack`, its accuracy under attack.

    Without `attack`: the test report (see `inference.evaluation.evaluate`; few-shot runs
    take `ways`, `shots`, `queries`, `episodes`). With `attack` (`fgsm`, `pgd`, `apgd-ce`):
    accuracy under that L∞ or L2 attack at `eps` (pixel units, or a list for a curve) on
    `count` test images (see `adversarial.robust.evaluate_robustness` for the settings).

    Example:
        >>> neuralab.evaluate("runs/mnist-robust", attack="pgd", eps=0.3, steps=40, restarts=10)
    """
    if attack is None:
        return evaluation.evaluate(run_dir, data, data_dir, save, **few_shot)
    if any(value is not None for value in few_shot.values()):
        raise UserError("ways, shots, queries and episodes are for few-shot runs, not attacks")
    return evaluate_robustness(
        run_dir, attack, eps, norm=norm, steps=steps, step_size=step_size, restarts=restarts,
        count=count, seed=seed, out=out, data=data, data_dir=data_dir, save=save,
    )  # fmt: skip
