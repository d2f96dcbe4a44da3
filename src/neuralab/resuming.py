"""Resuming an interrupted run (`neuralab train --resume RUN|auto`, `neuralab.resume`): find
the run, check it can be resumed, and train on from its last checkpoint with its own config.
The restoring itself is `Trainer.load_state_dict` and `engine.resumed_engine`."""

from __future__ import annotations

from pathlib import Path

from neuralab.api import Run, train_config
from neuralab.config import RunConfig, resolve_config


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
    config = resolve_config(str(folder / "config.yaml"))
    return train_config(config, verbose=verbose, resume_from=folder, progress=progress)


def resumable_run(run_dir: str | Path) -> Path:
    """The run directory to resume (`auto`: the newest unfinished one under ./runs), checked."""
    folder = find_unfinished_run(Path("runs")) if str(run_dir) == "auto" else Path(run_dir)
    check_resumable(folder)
    return folder


def read_run_config(run_dir: str | Path) -> RunConfig:
    """The resolved config a run directory was trained with (its config.yaml)."""
    return resolve_config(str(resumable_run(run_dir) / "config.yaml"))


def find_unfinished_run(parent: Path) -> Path:
    """The most recently written run under `parent` that has a checkpoint but no metrics."""
    candidates = [
        folder
        for folder in (parent.iterdir() if parent.is_dir() else [])
        if (folder / "checkpoint").is_dir() and not (folder / "metrics.json").exists()
    ]
    if not candidates:
        raise FileNotFoundError(
            f"--resume auto: no unfinished run (checkpoint/ without metrics.json) under "
            f"{parent.resolve()}; pass the run directory instead"
        )
    return max(candidates, key=lambda folder: (folder / "checkpoint").stat().st_mtime)


def check_resumable(folder: Path) -> None:
    if (folder / "metrics.json").exists():
        raise FileExistsError(
            f"{folder} is a finished run (it has metrics.json): there is nothing to resume. "
            "Train again with a new --out to train more"
        )
    for needed in ("config.yaml", "checkpoint/training.json"):
        if not (folder / needed).exists():
            raise FileNotFoundError(
                f"cannot resume {folder}: {folder / needed} is missing (a run can be resumed "
                "once it has finished its first epoch)"
            )
