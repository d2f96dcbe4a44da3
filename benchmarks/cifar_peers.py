"""CIFAR-10 side by side: neuralab's recipes and the peer recipes users would run instead, back to
back on this machine in one invocation, each in its own process.

    NEURALAB_DATA=../shared/datasets python -m benchmarks.cifar_peers
    python -m benchmarks.cifar_peers --only cifar10-best airbench94        # a subset
    python -m benchmarks.cifar_peers --ours cifar10-resnet18-classic       # more of our recipes
    python -m benchmarks.cifar_peers --out /tmp/smoke.jsonl --ours-args="--epochs 0.02" \\
        --peer-args="--limit 2048 --epochs 1 --test-limit 1000"               # a smoke run

Contenders: `neuralab train --recipe cifar10-best` (and any `--ours` recipes), then the peers in
benchmarks/peers/ (plain scripts, no neuralab import): airbench94 ported to the CPU (fp32 or
bf16 autocast, whichever trains one timed batch faster there, as neuralab's engine chooses),
and the common ResNet-18 blog recipe, stopped at the first epoch end after `--max-minutes`
(default 30) of training since its 20 epochs would take many hours on a small CPU.

For each: final test accuracy, training time (evaluation excluded), time to 90% and to 94%
test accuracy (peers: exact, the first epoch that reaches it, as they evaluate the test split
after every epoch outside their clock; neuralab: its whole training time, an upper bound, as
it tests only at the end), peak resident memory of the process, training images/s, and ratios
against neuralab's fastest run to each target. Appends to benchmarks/results/cifar_peers.jsonl
and, for a full default invocation, regenerates the `cifar-peers` table in BENCHMARKS.md.

On a quiet 2-core AVX2 CPU expect about 3 hours in all: cifar10-best ~1 h, airbench94 ~75 min
of training plus ~3 min per tested epoch of 6-view test evaluation (`--test-from 7` keeps 4 of
the 10 passes), ResNet-18 stopped after `--max-minutes`.
On the native-bf16 EPYC, `--max-minutes 15` took 70 min in all (session 10).
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from pathlib import Path

from benchmarks.harness import percent, ratios, run_ours, run_peer, table, time_to
from benchmarks.machine import machine_info
from benchmarks.report import replace_section

RESULTS = Path(__file__).parent / "results" / "cifar_peers.jsonl"
TARGETS = (0.90, 0.94)  # 94%: airbench94's target; 90%: one every contender can reach
OURS = ("cifar10-best",)
PEERS = {
    "airbench94": "benchmarks.peers.airbench94",
    "resnet18-cifar": "benchmarks.peers.resnet18_cifar",
}
TIME_CAPPED = {"resnet18-cifar"}  # peers that get --max-minutes
TEST_FROM = {"airbench94"}  # peers that get --test-from


def with_targets(results: list[dict]) -> list[dict]:
    """Each result with its time to every target and its ratio to neuralab's fastest."""
    columns = {percent(t): ratios(results, t) for t in TARGETS}
    for index, result in enumerate(results):
        result["to_target_seconds"] = {percent(t): time_to(result, t) for t in TARGETS}
        result["ratio_to_ours"] = {label: column[index] for label, column in columns.items()}
    return results


def announce(result: dict) -> dict:
    """Print a contender's result as soon as it is in: a full invocation takes hours."""
    print("RESULT " + json.dumps(result), flush=True)
    return result


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", help="names to run (default: all)")
    parser.add_argument("--ours", nargs="+", default=[], help="more neuralab recipes to run")
    parser.add_argument("--max-minutes", type=float, default=30, help="ResNet-18 peer's cap")
    parser.add_argument(
        "--test-from",
        type=int,
        default=1,
        help="airbench94 runs its 6-view test pass (~3 min each) from this epoch on only",
    )
    parser.add_argument("--ours-args", default="", help="extra `neuralab train` arguments")
    parser.add_argument("--peer-args", default="", help="extra arguments for every peer script")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON-lines file to append to")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    ours = [*OURS, *args.ours]
    chosen = set(args.only or [*ours, *PEERS])
    unknown = chosen - {*ours, *PEERS}
    if unknown:
        raise SystemExit(f"--only: unknown {sorted(unknown)}; choose from {[*ours, *PEERS]}")
    ours_args, peer_args = shlex.split(args.ours_args), shlex.split(args.peer_args)
    results = [announce(run_ours(recipe, ours_args)) for recipe in ours if recipe in chosen]
    for name, module in PEERS.items():
        extra = ["--max-minutes", f"{args.max_minutes:g}"] if name in TIME_CAPPED else []
        extra += ["--test-from", str(args.test_from)] if name in TEST_FROM else []
        if name in chosen:
            results.append(announce(run_peer(name, module, [*peer_args, *extra])))
    record = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine_info(),
        "arguments": {
            "ours": args.ours_args,
            "peers": args.peer_args,
            "airbench94_test_from": args.test_from,
        },
        "results": with_targets(results),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
    print(table(record, TARGETS))
    full = not (args.only or args.ours_args or args.peer_args) and args.out == RESULTS
    if full:
        replace_section("cifar-peers", table(record, TARGETS))


if __name__ == "__main__":
    main()
