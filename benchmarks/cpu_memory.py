"""Freed-memory reuse on the CPU (`train.cpu_memory`): the same short neuralab run with `reuse`
(the default) and with `system` (malloc untouched), alternated in fresh processes, back to back.

    NEURALAB_DATA=../shared/datasets python -m benchmarks.cpu_memory [--recipe cifar10-best]
        [--epochs 0.3] [--rounds 2]

For each process: training images/s (the training loop only, from the run's history), the
process's minor page faults and system CPU seconds (the kernel's share: mapping and zeroing
pages), and its peak resident memory. The headline is the ratio of training images/s, reuse
over system, per round (the rounds are interleaved so a change in the machine's load hits both).
Appends to benchmarks/results/cpu_memory.jsonl.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.machine import machine_info, machine_line
from benchmarks.processes import run_measured

RESULTS = Path(__file__).parent / "results" / "cpu_memory.jsonl"
SETTINGS = ("system", "reuse")


def one_run(recipe: str, epochs: float, setting: str) -> dict:
    """A short `neuralab train` in its own process with `train.cpu_memory=setting`."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "run"
        command = [sys.executable, "-m", "neuralab.cli.main", "train", "--recipe", recipe]
        command += ["--epochs", f"{epochs:g}", "--out", str(out), "--progress", "none"]
        command += ["--set", f"train.cpu_memory={setting}", "--set", "train.tta=off"]
        _, wall, usage = run_measured(command)
        metrics = json.loads((out / "metrics.json").read_text())
        history = json.loads((out / "history.json").read_text())
    seen = sum(row["examples_per_second"] * row["seconds"] for row in history)
    return {
        "setting": setting,
        "train_images_per_second": round(seen / sum(row["seconds"] for row in history), 1),
        "minor_page_faults": usage.ru_minflt,
        "system_cpu_seconds": round(usage.ru_stime, 1),
        "user_cpu_seconds": round(usage.ru_utime, 1),
        "peak_mib": usage.ru_maxrss // 1024,
        "wall_seconds": round(wall, 1),
        "accuracy": metrics["accuracy"],
        "memory": metrics.get("memory"),
        "engine": metrics["engine"],
    }


def table(record: dict) -> str:
    head = (
        f"{record['date']}, {machine_line(record['machine'])}; `{record['recipe']}` for "
        f"{record['epochs']:g} epoch, each run a fresh process.\n\n"
        "| round | cpu_memory | training images/s | minor page faults | system CPU s "
        "| peak memory |\n| --- | --- | --- | --- | --- | --- |\n"
    )
    rows = [
        f"| {r['round']} | {r['setting']} | {r['train_images_per_second']:,.1f} | "
        f"{r['minor_page_faults']:,} | {r['system_cpu_seconds']} | {r['peak_mib']:,} MiB |"
        for r in record["results"]
    ]
    ratios = ", ".join(f"{ratio:.2f}×" for ratio in record["ratios"])
    return head + "\n".join(rows) + f"\n\nreuse ÷ system, training images/s, by round: {ratios}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="cifar10-best")
    parser.add_argument("--epochs", type=float, default=0.3)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    results = []
    for round_ in range(1, args.rounds + 1):
        for setting in SETTINGS:
            results.append({"round": round_, **one_run(args.recipe, args.epochs, setting)})
            print(json.dumps(results[-1]), flush=True)
    rate = {(r["round"], r["setting"]): r["train_images_per_second"] for r in results}
    record = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine_info(),
        "recipe": args.recipe,
        "epochs": args.epochs,
        "results": results,
        "ratios": [rate[n, "reuse"] / rate[n, "system"] for n in range(1, args.rounds + 1)],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
    print(table(record))


if __name__ == "__main__":
    main()
