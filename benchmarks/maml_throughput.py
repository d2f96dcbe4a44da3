"""MAML meta-training throughput: the episodes of a meta-batch adapted together (one network with
T copies of the weights, tasks/batched.py) against the plain Python loop over episodes with
torch.autograd.grad, and torch.func.vmap over the episodes for reference, side by side in one
process on the same episodes.

    .venv/bin/python -m benchmarks.maml_throughput                 # Conv-4, 5-way 1-shot
    .venv/bin/python -m benchmarks.maml_throughput --queries 15 --steps 1 5

Each timing is one meta-training step (inner steps on the support sets, query loss, backward)
at fp32 on Omniglot-sized 28x28 inputs; the three ways alternate in rounds so a drifting machine
load hits all alike, and the best round counts. Results: benchmarks/results/maml_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from benchmarks.machine import machine_info, machine_line
from neuralab.data.episodes import Episodes
from neuralab.models import InputSpec, build_model
from neuralab.tasks.fewshot import MAML, transductive_batch_norm

RESULTS = Path(__file__).resolve().parent / "results" / "maml_throughput.json"


def vmap_step(model, batch: Episodes, steps: int, inner_lr: float) -> torch.Tensor:
    """Second-order MAML with torch.func.grad inside torch.func.vmap (timing reference only:
    its meta-gradients through batch norm are wrong in torch 2.13, see tasks/batched.py)."""
    params = dict(model.named_parameters())

    def support_loss(fast, images, labels):
        return F.cross_entropy(functional_call(model, fast, (images,)), labels)

    def one(support, labels, query, query_labels):
        fast = params
        for _ in range(steps):
            grads = grad(support_loss)(fast, support, labels)
            fast = {k: fast[k] - inner_lr * grads[k] for k in fast}
        return F.cross_entropy(functional_call(model, fast, (query,)), query_labels)

    with transductive_batch_norm(model):
        return vmap(one, randomness="different")(*batch).mean()


def episodes(tasks: int, ways: int, shots: int, queries: int) -> Episodes:
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(ways)
    return Episodes(
        torch.randn(tasks, ways * shots, 1, 28, 28, generator=generator),
        labels.repeat_interleave(shots).expand(tasks, -1),
        torch.randn(tasks, ways * queries, 1, 28, 28, generator=generator),
        labels.repeat_interleave(queries).expand(tasks, -1),
    )


def time_ways(args: argparse.Namespace, steps: int, queries: int) -> dict[str, float]:
    """Best-of-rounds seconds per meta-step for each way of running MAML."""
    torch.manual_seed(0)
    model = build_model("conv4", InputSpec(1, 28, 28, args.ways))
    batch = episodes(args.meta_batch, args.ways, args.shots, queries)
    ways = {
        "together (batched)": lambda: (
            MAML(args.ways, steps, 0.4, vectorize=True).step(model, batch).loss
        ),
        "loop (autograd.grad)": lambda: (
            MAML(args.ways, steps, 0.4, vectorize=False).step(model, batch).loss
        ),
        "vmap (torch.func)": lambda: vmap_step(model, batch, steps, 0.4),
    }
    best = dict.fromkeys(ways, float("inf"))
    for round_ in range(args.rounds + 1):  # round 0 warms up
        for name, loss in ways.items():
            model.zero_grad(set_to_none=True)
            start = time.perf_counter()
            loss().backward()
            seconds = time.perf_counter() - start
            if round_:
                best[name] = min(best[name], seconds)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--queries", type=int, nargs="+", default=[1, 15])
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--meta-batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    info = machine_info()
    print(machine_line(info))
    rows = []
    print("| queries/class | inner steps | way | s / meta-step | episodes/s | vs loop |")
    print("| ---: | ---: | --- | ---: | ---: | ---: |")
    for queries in args.queries:
        for steps in args.steps:
            best = time_ways(args, steps, queries)
            loop = best["loop (autograd.grad)"]
            for name, seconds in best.items():
                rate = args.meta_batch / seconds
                rows.append({"queries": queries, "inner_steps": steps, "way": name,
                             "seconds": seconds, "episodes_per_second": rate,
                             "speedup_vs_loop": loop / seconds})  # fmt: skip
                print(f"| {queries} | {steps} | {name} | {seconds:.3f} | {rate:.1f} | "
                      f"{loop / seconds:.2f}x |", flush=True)  # fmt: skip
    settings = {"ways": args.ways, "shots": args.shots, "meta_batch": args.meta_batch,
                "threads": torch.get_num_threads(), "precision": "fp32"}  # fmt: skip
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": info, "settings": settings, "rows": rows}, indent=2))
    print(f"saved {RESULTS}")


if __name__ == "__main__":
    main()
