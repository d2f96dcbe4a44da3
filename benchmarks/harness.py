"""What the side-by-side benchmarks share: each contender runs in its own process (neuralab's CLI
or a peer script from benchmarks/peers/), its result is read back, times to target accuracies
are derived, and one markdown table compares them.

A result is a dict: name, ours (bool), train_seconds, accuracy, epochs, examples_per_second,
peak_mib, wall_seconds, plus engine (ours), recipe and curve (peers: cumulative training
seconds and test accuracy after each epoch) and whatever a peer adds with `report_notes`.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import yaml

from benchmarks.machine import machine_line
from benchmarks.processes import run_process


def run_ours(recipe: str, extra_args: Sequence[str] = ()) -> dict:
    """`neuralab train --recipe RECIPE [extra_args]` in its own process, read from its run files.

    Args:
        recipe: a shipped recipe name or YAML path.
        extra_args: more CLI arguments, e.g. ("--epochs", "0.02") for a smoke run.
    """
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "run"
        command = [sys.executable, "-m", "neuralab.cli.main", "train", "--recipe", recipe]
        command += ["--out", str(out), "--progress", "plain", *extra_args]
        _, wall, memory = run_process(command)
        metrics = json.loads((out / "metrics.json").read_text())
        history = json.loads((out / "history.json").read_text())
        planned = yaml.safe_load((out / "config.yaml").read_text())["train"]["epochs"]
    seconds = metrics["train_seconds"]
    # Examples trained on, from each epoch's rate × duration (exact for a fractional last epoch).
    examples = round(sum(row["examples_per_second"] * row["seconds"] for row in history))
    result = {
        "name": f"neuralab {recipe}",
        "ours": True,
        "train_seconds": seconds,
        "accuracy": metrics["accuracy"],
        "epochs": planned,  # as configured: 8.5 trains 8 epochs and half of a ninth
        "examples_per_second": round(examples / seconds, 1),
        "peak_mib": memory,
        "wall_seconds": round(wall, 1),
        "engine": engine_line(metrics),
    }
    return result


def engine_line(metrics: dict) -> str:
    """A run's engine and, from 2026-12-02 on, what its CPU allocator did."""
    memory = metrics.get("memory")
    return f"{metrics['engine']}; {memory}" if memory else metrics["engine"]


def run_peer(name: str, module: str, extra_args: Sequence[str] = ()) -> dict:
    """`python -m MODULE [extra_args]`; reads its `PEER_RESULT` line and any `PEER_NOTES`."""
    output, wall, memory = run_process([sys.executable, "-m", module, *extra_args])
    lines = output.splitlines()
    line = next(line for line in lines if line.startswith("PEER_RESULT "))
    peer = json.loads(line.removeprefix("PEER_RESULT "))
    result = {
        "name": name,
        "ours": False,
        "recipe": peer["recipe"],
        "train_seconds": peer["train_seconds"],
        "accuracy": peer["accuracy"],
        "epochs": len(peer["epochs"]),
        "examples_per_second": peer["examples_per_second"],
        "peak_mib": memory,
        "wall_seconds": round(wall, 1),
        "curve": peer["epochs"],
    }
    for line in lines:
        if line.startswith("PEER_NOTES "):
            result.update(json.loads(line.removeprefix("PEER_NOTES ")))
    return result


def time_to(result: dict, target: float) -> float | None:
    """Training seconds until the test accuracy first reached `target`: exact for a run with a
    per-epoch curve (the first epoch that reached it; an upper bound when earlier epochs went
    untested, accuracy None), else (neuralab's runs, which evaluate the
    test split only at the end) the whole training time when the final accuracy reached it, an
    upper bound; None when it never did."""
    if result.get("curve"):
        reached = [
            e["train_seconds"]
            for e in result["curve"]
            if e["accuracy"] is not None and e["accuracy"] >= target
        ]
        return reached[0] if reached else None
    return result["train_seconds"] if result["accuracy"] >= target else None


def percent(target: float) -> str:
    """0.992 → '99.2%', 0.9 → '90%'."""
    return f"{target:.1%}".replace(".0%", "%")


def seconds(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.1f} s"


def fastest_ours(rows: list[dict], target: float) -> dict | None:
    """The neuralab run that reached `target` soonest, the denominator of the ratios."""
    ours = [r for r in rows if r["ours"] and time_to(r, target) is not None]
    return min(ours, key=lambda r: time_to(r, target)) if ours else None


def ratios(rows: list[dict], target: float) -> list[float | None]:
    """Each run's time to `target` ÷ the fastest neuralab run's (None: no ratio to give)."""
    best = fastest_ours(rows, target)
    return [
        time_to(r, target) / time_to(best, target)
        if best and time_to(r, target) and r is not best
        else None
        for r in rows
    ]


def epochs_cell(result: dict) -> str:
    if not result.get("cut"):
        epochs = result["epochs"]
        return f"{epochs:g}" if isinstance(epochs, (int, float)) else str(epochs)
    return (
        f"{result['epochs']} of {result['planned_epochs']} (cut at {result['max_minutes']:g} min)"
    )


def table(record: dict, targets: Sequence[float]) -> str:
    """The markdown comparison of one invocation's results (`record["results"]`), with a time
    and a ratio column per target accuracy."""
    rows = record["results"]
    names = [fastest_ours(rows, t) for t in targets]
    legend = "; ".join(
        f"peer's time to {percent(t)} ÷ {best['name']}'s"
        if best
        else f"no neuralab run reached {percent(t)}"
        for t, best in zip(targets, names, strict=True)
    )
    header = " | ".join(f"time to {percent(t)} | ratio (to {percent(t)})" for t in targets)
    lines = [
        f"One run, {record['date']}, {machine_line(record['machine'])}. Ratio = {legend}.",
        "",
        f"| run | test accuracy | epochs | training time | {header} | training images/s | "
        "peak memory |",
        "| --- " * (6 + 2 * len(targets)) + "|",
    ]
    columns = [ratios(rows, t) for t in targets]
    for index, r in enumerate(rows):
        cells = []
        for target, column in zip(targets, columns, strict=True):
            ratio = column[index]
            cells.append(
                f"{seconds(time_to(r, target))} | {'—' if ratio is None else f'{ratio:.1f}×'}"
            )
        lines.append(
            f"| {r['name']} | {r['accuracy']:.2%} | {epochs_cell(r)} | "
            f"{r['train_seconds']:.1f} s | {' | '.join(cells)} | "
            f"{r['examples_per_second']:,.0f} | {r['peak_mib']:,} MiB |"
        )
    return "\n".join(lines)
