"""Finding and checking a run to resume (`neuralab train --resume RUN|auto`, `neuralab.resume`
in api.py). The restoring itself is `Trainer.load_state_dict` and `engine.resumed_engine`."""

from __future__ import annotations

from pathlib import Path

import yaml

from neuralab.errors import ConfigError


def resumable_run(run_dir: str | Path) -> Path:
    """The run directory to resume (`auto`: the newest unfinished one under ./runs), checked."""
    folder = find_unfinished_run(Path("runs")) if str(run_dir) == "auto" else Path(run_dir)
    check_resumable(folder)
    return folder


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
    config = folder / "config.yaml"
    if config.is_file() and "env" in (yaml.safe_load(config.read_text(encoding="utf-8")) or {}):
        raise ConfigError(
            f"{folder} is a reinforcement-learning agent's run; continue it with "
            f"`neuralab rl train --resume {folder}` (--steps N for a longer budget)"
        )
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
