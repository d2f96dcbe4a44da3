"""`neuralab runs` (a table of the runs in a folder) and `neuralab compare` (their curves in one
figure), read from the run directories' own files: config.yaml, history.json, metrics.json."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from neuralab.checkpoint.sharing import describe_bytes, folder_bytes


@dataclass(frozen=True)
class RunRow:
    path: Path
    dataset: str
    model: str
    epochs: str  # done / planned
    test_accuracy: float | None  # None: unfinished (or interrupted) run
    best_val_accuracy: float | None
    train_seconds: float | None
    final_return: float | None = None  # agents (neuralab rl): mean greedy return at the end
    size_bytes: int = 0  # on disk, hard-linked files (best/, epochs/) counted once


def read_run(folder: Path) -> RunRow | None:
    """The row of one run directory, or None when `folder` is not one (no config.yaml)."""
    config_file = folder / "config.yaml"
    if not config_file.is_file():
        return None
    config = yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}
    history = read_json(folder / "history.json") or []
    metrics = read_json(folder / "metrics.json") or {}
    if "env" in config:  # an agent's run: environment, algorithm, steps, return
        return agent_row(folder, config, history, metrics)
    validation = [row["val_accuracy"] for row in history if row.get("val_accuracy") is not None]
    planned = config.get("train", {}).get("epochs", "?")
    return RunRow(
        folder,
        config.get("data", {}).get("name", "?"),
        config.get("model", {}).get("name", "?"),
        f"{len(history)}/{planned:g}" if isinstance(planned, int | float) else str(len(history)),
        metrics.get("accuracy"),
        max(validation) if validation else None,
        metrics.get("train_seconds"),
        size_bytes=folder_bytes(folder),
    )


def agent_row(folder: Path, config: dict, history: list, metrics: dict) -> RunRow:
    planned = config.get("train", {}).get("steps", "?")
    done = history[-1]["step"] if history else 0
    final = metrics.get("final", {}).get("return_mean")
    return RunRow(
        folder,
        config.get("env", {}).get("id", "?"),
        config.get("agent", {}).get("algo", "?"),
        f"{done:,}/{planned:,} steps" if isinstance(planned, int) else f"{done:,} steps",
        None,
        None,
        metrics.get("train_seconds"),
        final,
        folder_bytes(folder),
    )


def read_json(path: Path) -> dict | list | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def list_runs(parent: str | Path = "runs") -> list[RunRow]:
    """Every run directory directly under `parent`, newest first."""
    parent = Path(parent)
    if not parent.is_dir():
        raise FileNotFoundError(f"{parent} is not a folder of runs (train with --out {parent}/…)")
    rows = [row for folder in parent.iterdir() if (row := read_run(folder)) is not None]
    return sorted(rows, key=lambda row: (row.path / "config.yaml").stat().st_mtime, reverse=True)


def format_runs(rows: list[RunRow]) -> str:
    def percent(value: float | None) -> str:
        return "—" if value is None else f"{value:.2%}"

    # result: test accuracy, or an agent's mean greedy return; data: an agent's environment.
    header = ("run", "data", "model", "epochs", "result", "best val acc", "train time", "size")
    table = [header] + [
        (
            row.path.name,
            row.dataset,
            row.model,
            row.epochs,
            result_text(row),
            percent(row.best_val_accuracy),
            "—" if row.train_seconds is None else f"{row.train_seconds:.1f} s",
            describe_bytes(row.size_bytes),
        )
        for row in rows
    ]
    widths = [max(len(str(line[i])) for line in table) for i in range(len(header))]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True))
        for line in table
    )


def result_text(row: RunRow) -> str:
    if row.final_return is not None:
        return f"return {row.final_return:.1f}"
    if row.test_accuracy is not None:
        return f"{row.test_accuracy:.2%}"
    return "unfinished"


def compare_figure(run_dirs: list[str | Path], path: Path) -> Path:
    """Loss and accuracy per epoch of several runs in one figure (validation when a run has
    it, dashed training curves always)."""
    from neuralab.inference.plots import new_figure

    figure = new_figure(11, 4)
    loss_axis, accuracy_axis = figure.subplots(1, 2)
    for run_dir in run_dirs:
        history = read_json(Path(run_dir) / "history.json")
        if not history:
            raise FileNotFoundError(f"{run_dir}: no history.json (not a run, or no epoch done)")
        epochs = [row["epoch"] for row in history]
        name = Path(run_dir).name
        for axis, metric in ((loss_axis, "loss"), (accuracy_axis, "accuracy")):
            line = axis.plot(epochs, [r[f"train_{metric}"] for r in history], "--", alpha=0.6)
            validation = [r.get(f"val_{metric}") for r in history]
            if any(v is not None for v in validation):
                axis.plot(epochs, validation, "o-", color=line[0].get_color(), label=f"{name} val")
            line[0].set_label(f"{name} train")
    for axis, title in ((loss_axis, "loss"), (accuracy_axis, "accuracy")):
        axis.set(title=title, xlabel="epoch")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.savefig(path)
    return path
