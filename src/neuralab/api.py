"""The Python API: `train`, `resume`, `summary`, `load`, `evaluate`, `distill`, `prune`. The
CLI is a thin layer over these functions with the same names; the run builder (run/build.py)
turns the config into objects."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from neuralab.adversarial.robust import evaluate_robustness
from neuralab.checkpoint.format import recover_interrupted_save
from neuralab.checkpoint.sharing import describe_bytes, drop_resume_state, folder_bytes
from neuralab.config import SHORTCUTS, RunConfig, config_from, resolve_config
from neuralab.errors import ConfigError, UserError
from neuralab.inference import evaluation
from neuralab.inference.predict import Predictor
from neuralab.inference.summary import ModelSummary, summarize
from neuralab.run import build, semi
from neuralab.run import prune as pruning
from neuralab.run.build import RunParts, build_run
from neuralab.run.probe import model_for
from neuralab.run.resume import resumable_run
from neuralab.run.rundir import last_good
from neuralab.run.tracking import draw_curves, write_text_atomic
from neuralab.train import allocator, distributed
from neuralab.train.callbacks import Callback, format_test_metrics, progress_callbacks
from neuralab.train.pruning import check_sparsity
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
    if semi.is_semi(config) and resume_from is None:  # stages, each an ordinary run

        def train_stage(stage: RunConfig, last: bool) -> Run:
            shown = callbacks if last else ()
            return train_config(stage, verbose, callbacks=shown, progress=progress)

        say_line = (lambda line: print(line, flush=True)) if verbose else (lambda line: None)
        return semi.self_train(config, train_stage, say_line)
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
        say(verbose, finish_run_directory(parts.run_dir))
    tested = format_test_metrics(metrics, parts.task)
    say(
        verbose, f"test   {tested} · trained in {train_seconds:.1f}s · run saved to {parts.run_dir}"
    )
    return Run(parts.run_dir, history, metrics)


def finish_run_directory(run_dir: Path) -> str:
    """A finished run cannot be resumed: its checkpoint drops the resume state (optimizer
    moments, RNG). Returns the line that says so, with the run directory's size."""
    freed = drop_resume_state(run_dir / "checkpoint")
    note = f" (resume state dropped: {describe_bytes(freed)})" if freed else ""
    return f"size   {describe_bytes(folder_bytes(run_dir))}{note}"


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


def distill_config(
    teacher: str | Path,
    recipe: str | None = None,
    overrides: list[str] | None = None,
    temperature: float | None = None,
    weight: float | None = None,
    **shortcuts: object,
) -> RunConfig:
    """The config of a student run taught by `teacher`: recipe ← shortcuts (config.SHORTCUTS
    keywords) ← train.distill.* ← `overrides`."""
    unknown = sorted(set(shortcuts) - set(SHORTCUTS))
    if unknown:
        raise TypeError(f"distill() got unknown keywords {unknown}; valid: {sorted(SHORTCUTS)}")
    fields = {SHORTCUTS[name]: value for name, value in shortcuts.items()}
    fields.update({"train.distill.teacher": str(teacher), "train.distill.temperature": temperature,
                   "train.distill.weight": weight})  # fmt: skip
    return resolve_config(recipe, overrides, **fields)


def distill(
    teacher: str | Path,
    recipe: str | None = None,
    *,
    temperature: float | None = None,
    weight: float | None = None,
    overrides: list[str] | None = None,
    verbose: bool = True,
    callbacks: Sequence[Callback] = (),
    progress: str = "auto",
    **shortcuts: object,
) -> Run:
    """Train a student run taught by the `teacher` run (`train` with train.distill.teacher):
    loss = (1 - weight) · the run's loss on the labels + weight · T² · KL(teacher ‖ student)
    at temperature T (Hinton et al. 2015; defaults T 4, weight 0.5). The teacher must know
    the student's classes; see run/distill.py for what else they share.

    Args:
        teacher: a trained run directory.
        recipe, overrides, verbose, callbacks, progress: as `train`'s.
        temperature, weight: train.distill.temperature and .weight (None: the recipe's).
        shortcuts: `train`'s config keywords (data, model, epochs, batch_size, lr, seed,
            data_dir, out, init_from, ...).

    Example:
        >>> student = neuralab.distill("runs/mnist-best", "mnist-fast", out="runs/small")
    """
    config = distill_config(teacher, recipe, overrides, temperature, weight, **shortcuts)
    return train_config(config, verbose=verbose, callbacks=callbacks, progress=progress)


def prune(
    run: str | Path,
    sparsity: float,
    *,
    finetune: float = 0,
    out: str | Path | None = None,
    overrides: list[str] | None = None,
    verbose: bool = True,
    progress: str = "auto",
) -> dict:
    """Global magnitude pruning of a saved run, then an optional fine-tune that keeps the
    pruned weights at zero; the result is a normal run (plain weights with zeros: predict,
    evaluate, export and serve load it) with its report in `<out>/pruning.json`.

    Args:
        run: a trained run directory.
        sparsity: the fraction of Linear/Conv/Embedding weights set to zero, in [0, 1).
        finetune: epochs of training afterwards with the run's own config (0: none).
        out: the new run (default `<run>-pruned-<percent>` beside it).
        overrides: `section.field=value` changes to the fine-tune's config (e.g. optim.lr).

    Returns:
        The report: per-layer and total sparsity, test accuracy before and after pruning
        and after the fine-tune, one batch's latency dense vs pruned (no speed-up: dense
        tensors with zeros cost the same on a CPU).

    Example:
        >>> neuralab.prune("runs/mnist-best", 0.8, finetune=1)["accuracy"]
    """
    sparsity = check_sparsity(sparsity)
    if not finetune >= 0:
        raise ConfigError(f"finetune is a number of epochs ≥ 0 (0: none), got {finetune!r}")
    source = pruning.source_run(run)
    out = Path(out) if out else pruning.default_out(source, sparsity)
    if (out / "checkpoint").exists() or (out / "metrics.json").exists():
        raise FileExistsError(f"{out} already holds a run; choose another --out or delete it")
    config = None  # the fine-tune's, checked before any work
    if finetune:
        config = pruning.finetune_config(source, out / "pruned", finetune, out, overrides or [])
    pruned = pruning.prune_run(source, sparsity, out / "pruned" if finetune else out)
    metrics = None
    if config is not None:  # train.keep_zeros: KeepPruned keeps the pruned weights at zero
        metrics = train_config(config, verbose, progress=progress).metrics
    report = {**pruned.report, "run": str(out), "fine_tune_epochs": finetune}
    report = pruning.finish_report(report, out, metrics)
    for line in pruning.describe(report):
        say(verbose, line)
    return report
