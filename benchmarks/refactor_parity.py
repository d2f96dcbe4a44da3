"""Same recipe, same seed, two versions of neuralab, back to back: the accuracy must match and
the training time may not grow. For checking that a restructuring changed nothing a user sees.

    git worktree add /tmp/before <old commit>
    NEURALAB_DATA=../shared/datasets .venv/bin/python -m benchmarks.refactor_parity \\
        --before /tmp/before/src --recipes mnist-best imdb-best cifar10-fast

Each run is `python -m neuralab train --recipe R` in its own process with PYTHONPATH set to
the version's src/ folder; the order alternates (before, after, then after, before for the
next recipe) so a drifting machine load does not favour one side. Results go to
benchmarks/results/refactor_parity.json and a markdown table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.machine import machine_info, machine_line

HERE = Path(__file__).resolve().parent
AFTER = HERE.parent / "src"


def train(source: Path, recipe: str, seed: int, extra: list[str]) -> dict:
    """One training run of `recipe` with the neuralab found in `source`; its metrics."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "run"
        command = [sys.executable, "-m", "neuralab", "train", "--recipe", recipe]
        command += ["--seed", str(seed), "--out", str(out), "--progress", "plain", *extra]
        environment = {**os.environ, "PYTHONPATH": str(source)}
        completed = subprocess.run(command, env=environment, capture_output=True, text=True)
        if completed.returncode:
            raise RuntimeError(f"{recipe} with {source} failed:\n{completed.stderr[-3000:]}")
        metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    return {key: metrics[key] for key in ("accuracy", "loss", "train_seconds", "engine")}


def compare(before: Path, recipes: list[str], seed: int, extra: list[str]) -> list[dict]:
    rows = []
    for index, recipe in enumerate(recipes):
        sides = [("before", before), ("after", AFTER)]
        results = {}
        for name, source in sides if index % 2 == 0 else reversed(sides):
            results[name] = train(source, recipe, seed, extra)
            print(f"{recipe} {name}: {results[name]}", flush=True)
        rows.append({"recipe": recipe, **results})
    return rows


# The Trainer's own cost per step, on a model so small that the loop is most of the step: the
# old API took a loss function, the new one takes a Task.
LOOP = """
import sys, time, torch
from torch import nn
torch.set_num_threads(1)
from neuralab.data.dataset import Split
from neuralab.data.loader import BatchLoader
try:
    from neuralab.train.trainer import Trainer
    from neuralab.tasks.classification import Classification
    task = Classification()
except ImportError:  # before the Task contract
    from neuralab.trainer import Trainer
    task = nn.CrossEntropyLoss()
generator = torch.Generator().manual_seed(0)
images = torch.randint(0, 256, (4096, 1, 8, 8), dtype=torch.uint8, generator=generator)
split = Split(images, torch.randint(0, 10, (4096,), generator=generator))
loader = BatchLoader(split, 16, (0.5,), (0.5,), shuffle=True)  # 256 steps per epoch
torch.manual_seed(0)
model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.01), task)
start = time.perf_counter()
trainer.fit(loader, 4)
print((time.perf_counter() - start) / (4 * 256) * 1e6)
"""


def loop_overhead(before: Path, rounds: int) -> dict[str, list[float]]:
    """Microseconds per step of the bare loop, each version in `rounds` fresh processes,
    alternated."""
    times: dict[str, list[float]] = {"before": [], "after": []}
    for _ in range(rounds):
        for name, source in (("before", before), ("after", AFTER)):
            environment = {**os.environ, "PYTHONPATH": str(source)}
            command = [sys.executable, "-c", LOOP]
            completed = subprocess.run(command, env=environment, capture_output=True, text=True)
            if completed.returncode:
                raise RuntimeError(f"the loop benchmark failed with {source}:\n{completed.stderr}")
            times[name].append(round(float(completed.stdout), 1))
    return times


def table(rows: list[dict]) -> str:
    lines = [
        "| recipe | accuracy before | accuracy after | training s before | after | after/before |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        before, after = row["before"], row["after"]
        ratio = after["train_seconds"] / before["train_seconds"]
        lines.append(
            f"| {row['recipe']} | {before['accuracy']:.2%} | {after['accuracy']:.2%} | "
            f"{before['train_seconds']:.1f} | {after['train_seconds']:.1f} | {ratio:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="the old version's src/")
    parser.add_argument("--recipes", nargs="+", default=["mnist-best", "imdb-best", "cifar10-fast"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--loop-rounds", type=int, default=6, help="bare-loop timings per side")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    extra = [item for pair in args.extra for item in ("--set", pair)]
    info = machine_info()
    rows = compare(args.before, args.recipes, args.seed, extra)
    loop = loop_overhead(args.before, args.loop_rounds)
    record = {"machine": info, "seed": args.seed, "overrides": args.extra, "rows": rows,
              "loop_us_per_step": loop}  # fmt: skip
    out = HERE / "results" / "refactor_parity.json"
    out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(machine_line(info))
    print(table(rows))
    medians = {name: sorted(values)[len(values) // 2] for name, values in loop.items()}
    print(f"bare loop, µs per step (median of {args.loop_rounds}): {medians}")
    for row in rows:
        before, after = row["before"]["engine"], row["after"]["engine"]
        print(f"{row['recipe']} engines: before {before} | after {after}")


if __name__ == "__main__":
    main()
