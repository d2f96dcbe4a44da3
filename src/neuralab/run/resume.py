"""Resuming an interrupted run (`neuralab train --resume RUN|auto`, `neuralab.resume`): find
the run, check it can be resumed, and train on from its last checkpoint with its own config.
The restoring itself is `Trainer.load_state_dict` and `engine.resumed_engine`."""

from __future__ import annotations

from pathlib import Path

from neuralab.api import Run, train_config
from neuralab.checkpoint.format import recover_interrupted_save
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
    for name in ("checkpoint", "best"):
        for note in recover_interrupted_save(folder / name):
            if verbose:
                print(f"resume {note}")
    config = resolve_config(str(folder / "config.yaml"))
    if not (folder / "checkpoint" / "training.json").exists():
        # Killed before its first checkpoint: nothing to continue from, so the run starts
        # over in the same folder with the same config (and seed): the result is the same.
        if verbose:
            print(f"resume {folder} has no checkpoint yet: starting the run over")
        return train_config(
            config.model_copy(update={"out": str(folder)}), verbose=verbose, progress=progress
        )
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
    """The most recently written run under `parent` that has no metrics.json yet."""
    candidates = [
        folder
        for folder in (parent.iterdir() if parent.is_dir() else [])
        if (folder / "config.yaml").is_file() and not (folder / "metrics.json").exists()
    ]
    if not candidates:
        raise FileNotFoundError(
            f"--resume auto: no unfinished run (config.yaml without metrics.json) under "
            f"{parent.resolve()}; pass the run directory instead"
        )
    return max(candidates, key=last_written)


def last_written(folder: Path) -> float:
    """When the run last saved: its checkpoint, else its config (written at the start)."""
    checkpoint = folder / "checkpoint"
    return (checkpoint if checkpoint.exists() else folder / "config.yaml").stat().st_mtime


def check_resumable(folder: Path) -> None:
    if (folder / "metrics.json").exists():
        raise FileExistsError(
            f"{folder} is a finished run (it has metrics.json): there is nothing to resume. "
            "Train again with a new --out to train more"
        )
    if not (folder / "config.yaml").exists():
        raise FileNotFoundError(
            f"cannot resume {folder}: {folder / 'config.yaml'} is missing, so it is not a "
            "neuralab run directory (pass the folder `neuralab train` printed)"
        )
