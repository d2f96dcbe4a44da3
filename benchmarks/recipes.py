"""Train shipped recipes on the real datasets and record accuracy and wall time.

    NEURALAB_DATA=../shared/datasets python -m benchmarks.recipes mnist-lenet-classic mnist-best
    python -m benchmarks.recipes cifar10-resnet18-classic --set train.epochs=0.2

Each run appends one JSON record to benchmarks/results/recipes.jsonl and the table in
BENCHMARKS.md between the `recipes` markers is regenerated from all records.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import neuralab
from benchmarks.harness import engine_line
from benchmarks.machine import machine_info, machine_line
from benchmarks.report import replace_section

RESULTS = Path(__file__).parent / "results" / "recipes.jsonl"


def run_recipe(recipe: str, overrides: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        run = neuralab.train(recipe, out=str(Path(folder) / "run"), overrides=overrides)
        total = time.perf_counter() - start
    return {
        "recipe": recipe,
        "overrides": overrides,
        "accuracy": run.metrics["accuracy"],
        "train_seconds": run.metrics["train_seconds"],
        "total_seconds": round(total, 1),
        "epochs": run.metrics["epochs"],
        "engine": engine_line(run.metrics),
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine_info(),
    }


def table(records: list[dict]) -> str:
    lines = [
        "| date | recipe | overrides | test accuracy | training time | engine | machine |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in records:
        lines.append(
            f"| {r['date']} | `{r['recipe']}` | {' '.join(r['overrides']) or '—'} | "
            f"{r['accuracy']:.2%} | {r['train_seconds']:.0f} s | {r['engine']} | "
            f"{machine_line(r['machine'])} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="+")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    for recipe in args.recipes:
        record = run_recipe(recipe, args.overrides)
        with open(RESULTS, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
    records = [json.loads(line) for line in RESULTS.read_text().splitlines() if line.strip()]
    replace_section("recipes", table(records))


if __name__ == "__main__":
    main()
