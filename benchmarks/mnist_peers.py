"""MNIST side by side: neuralab's recipes and the peer recipes users would run instead, back to
back on this machine in one invocation, each in its own process.

    NEURALAB_DATA=../shared/datasets python -m benchmarks.mnist_peers
    python -m benchmarks.mnist_peers --only mnist-fast pytorch-mnist-example   # a subset

For each: training wall time (evaluation excluded), time to 99.2% test accuracy (peers: the
first epoch that reaches it; neuralab: its whole training time, an upper bound, since its
recipes do not evaluate the test split between epochs), final test accuracy, peak resident
memory of the process, and training throughput. Ratios against neuralab's fastest recipe to
99.2% are the headline (this machine is shared and noisy). Appends to
benchmarks/results/mnist_peers.jsonl and regenerates the `mnist-peers` table in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.machine import machine_info, machine_line
from benchmarks.report import replace_section

RESULTS = Path(__file__).parent / "results" / "mnist_peers.jsonl"
TARGET = 0.992  # the time-to-accuracy target for the 10x comparison
OURS = ("mnist-fast", "mnist-best")
PEERS = {
    "pytorch-mnist-example": "benchmarks.peers.pytorch_mnist_example",
    "lenet-blog": "benchmarks.peers.lenet_blog",
    "keras-mnist-convnet": "benchmarks.peers.keras_mnist_convnet",
}
MNIST_TRAIN = 60_000


def run_process(command: list[str]) -> tuple[str, float, int]:
    """Run `command`; returns (stdout, wall seconds, peak resident memory in MiB)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise RuntimeError(f"{' '.join(command)} failed with exit status {process.returncode}")
    return output, time.perf_counter() - start, usage.ru_maxrss // 1024  # KiB on Linux


def run_ours(recipe: str) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "run"
        command = [
            sys.executable,
            "-m",
            "neuralab.cli",
            "train",
            "--recipe",
            recipe,
            "--out",
            str(out),
            "--progress",
            "plain",
        ]
        output, wall, memory = run_process(command)
        metrics = json.loads((out / "metrics.json").read_text())
        history = json.loads((out / "history.json").read_text())
    seconds = metrics["train_seconds"]
    return {
        "name": f"neuralab {recipe}",
        "ours": True,
        "train_seconds": seconds,
        "to_target_seconds": seconds if metrics["accuracy"] >= TARGET else None,
        "accuracy": metrics["accuracy"],
        "epochs": len(history),
        "examples_per_second": round(MNIST_TRAIN * len(history) / seconds, 1),
        "peak_mib": memory,
        "wall_seconds": round(wall, 1),
        "engine": metrics["engine"],
    }


def run_peer(name: str, module: str) -> dict:
    env_output, wall, memory = run_process([sys.executable, "-m", module])
    line = next(line for line in env_output.splitlines() if line.startswith("PEER_RESULT "))
    result = json.loads(line.removeprefix("PEER_RESULT "))
    reached = [e["train_seconds"] for e in result["epochs"] if e["accuracy"] >= TARGET]
    return {
        "name": name,
        "ours": False,
        "recipe": result["recipe"],
        "train_seconds": result["train_seconds"],
        "to_target_seconds": reached[0] if reached else None,
        "accuracy": result["accuracy"],
        "epochs": len(result["epochs"]),
        "examples_per_second": result["examples_per_second"],
        "peak_mib": memory,
        "wall_seconds": round(wall, 1),
        "curve": result["epochs"],
    }


def seconds(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.1f} s"


def table(record: dict) -> str:
    rows = record["results"]
    ours = [r for r in rows if r["ours"] and r["to_target_seconds"] is not None]
    best = min(ours, key=lambda r: r["to_target_seconds"]) if ours else None
    lines = [
        f"One run, {record['date']}, {machine_line(record['machine'])}. Ratio = peer's time to "
        f"{TARGET:.1%} ÷ {best['name'] if best else 'ours'}'s.",
        "",
        "| run | test accuracy | epochs | training time | time to 99.2% | ratio (to 99.2%) | "
        "training images/s | peak memory |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        ratio = "—"
        if best and r["to_target_seconds"] and r is not best:
            ratio = f"{r['to_target_seconds'] / best['to_target_seconds']:.1f}×"
        lines.append(
            f"| {r['name']} | {r['accuracy']:.2%} | {r['epochs']} | {r['train_seconds']:.1f} s | "
            f"{seconds(r['to_target_seconds'])} | {ratio} | {r['examples_per_second']:,.0f} | "
            f"{r['peak_mib']:,} MiB |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", help="names to run (default: all)")
    args = parser.parse_args()
    chosen = set(args.only or [*OURS, *PEERS])
    results = [run_ours(recipe) for recipe in OURS if recipe in chosen]
    results += [run_peer(name, module) for name, module in PEERS.items() if name in chosen]
    record = {"date": time.strftime("%Y-%m-%d"), "machine": machine_info(), "results": results}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
    print(table(record))
    if not args.only:
        replace_section("mnist-peers", table(record))


if __name__ == "__main__":
    main()
