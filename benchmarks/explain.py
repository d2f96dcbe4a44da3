"""Attributions and attacks on real runs: issue 21's tables, measured in one process.

    python -m benchmarks.explain faithfulness --run mnist=RUN --run cifar10=RUN [--count 500]
    python -m benchmarks.explain speed --run cifar10=RUN
    python -m benchmarks.explain robust --run mnist-best=RUN --run mnist-robust=RUN \
        --eps 0.3 --steps 40 --restarts 10 --count 1000 --apgd-count 1000

`faithfulness`: every image method × deletion AUC / insertion AUC (each against a random
order) / the model-randomisation sanity check, on the first `count` test images.
`speed`: integrated gradients (50 steps) for 100 images, Grad-CAM for 1,000, and one image's
Grad-CAM and saliency (the page's heat map), wall time.
`robust`: clean, FGSM, PGD (steps × restarts) and APGD-CE (100 steps) accuracy per run
(`--attacks` picks some of them).
Each row is appended to benchmarks/results/explain.jsonl with the machine line; nothing else
should run on the machine meanwhile (the times are wall clock).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from benchmarks.machine import append_record, machine_info, machine_line
from neuralab.adversarial.robust import evaluate_robustness
from neuralab.attribution.explain import faithfulness
from neuralab.attribution.images import IMAGE_METHODS, attribute_images
from neuralab.inference.predict import Predictor, test_subset

RESULTS = Path(__file__).parent / "results" / "explain.jsonl"


def record(row: dict) -> dict:
    return append_record(RESULTS, row)


def run_faithfulness(runs: dict[str, str], count: int, methods: list[str]) -> None:
    print("| run | method | deletion AUC (random) | ratio | insertion AUC (random) | ratio | "
          "sanity rank corr. (signed) | seconds |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for name, run in runs.items():
        for method in methods:
            result = faithfulness(run, method=method, count=count,
                                  metric=["deletion", "insertion", "sanity"])  # fmt: skip
            found, seconds = result["metrics"], result["seconds"]
            record({"kind": "faithfulness", "run": name, "path": run, "method": method,
                    "count": count, **{k: strip(v) for k, v in found.items()}})  # fmt: skip
            d, i, s = found["deletion"], found["insertion"], found["sanity"]
            print(f"| {name} | {method} | {d['auc']:.3f} ({d['random_auc']:.3f}) | "
                  f"{d['ratio']:.2f} | {i['auc']:.3f} ({i['random_auc']:.3f}) | {i['ratio']:.2f} | "
                  f"{s['rank_correlation']:.3f} ({s['rank_correlation_signed']:.3f}) | "
                  f"{seconds:.1f} |", flush=True)  # fmt: skip


def strip(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in ("curve", "random_curve")}


def timed_maps(predictor: Predictor, pixels, method: str) -> float:
    modality = predictor.modality
    targets = torch.zeros(len(pixels), dtype=torch.long)
    started = time.perf_counter()
    attribute_images(predictor.model, pixels, targets, method, mean=modality.mean,
                     std=modality.std, tta=predictor.task.tta)  # fmt: skip
    return time.perf_counter() - started


def run_speed(runs: dict[str, str]) -> None:
    for name, run in runs.items():
        predictor = Predictor.load(run)
        split, index, dataset = test_subset(predictor, 1000, None, None, None)
        pixels = predictor.modality.split_examples(split, index, dataset).float() / 255
        timed_maps(predictor, pixels[:2], "saliency")  # warm-up
        figures = {
            "integrated-gradients x100": timed_maps(
                predictor, pixels[:100], "integrated-gradients"
            ),
            "grad-cam x1000": timed_maps(predictor, pixels, "grad-cam"),
            "grad-cam x1": min(timed_maps(predictor, pixels[:1], "grad-cam") for _ in range(5)),
            "saliency x1": min(timed_maps(predictor, pixels[:1], "saliency") for _ in range(5)),
        }
        record({"kind": "speed", "run": name, "path": run, "tta": predictor.task.tta,
                "seconds": figures})  # fmt: skip
        print(name, f"(tta {predictor.task.tta})",
              ", ".join(f"{k}: {v:.3f} s" for k, v in figures.items()), flush=True)  # fmt: skip


def run_robust(runs: dict[str, str], args: argparse.Namespace) -> None:
    print("| run | attack | clean | under attack | images | seconds |")
    print("|---|---|---|---|---|---|")
    for name, run in runs.items():
        for attack in args.attacks:
            if attack == "fgsm":
                found = evaluate_robustness(run, "fgsm", args.eps, count=args.count)
            elif attack == "pgd":
                found = evaluate_robustness(run, "pgd", args.eps, steps=args.steps,
                                            restarts=args.restarts, count=args.count)  # fmt: skip
            else:
                found = evaluate_robustness(run, "apgd-ce", args.eps, steps=100,
                                            count=args.apgd_count)  # fmt: skip
            record({"kind": "robust", "run": name, "path": run, **found})
            point = found["points"][0]
            print(f"| {name} | {point['attack']} | {found['clean_accuracy']:.2%} | "
                  f"{point['accuracy']:.2%} | {found['count']} | {point['seconds']} |",
                  flush=True)  # fmt: skip


def parse_runs(values: list[str]) -> dict[str, str]:
    runs = {}
    for value in values:
        name, _, path = value.partition("=")
        runs[name] = path
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("faithfulness", "speed", "robust"))
    parser.add_argument("--run", action="append", default=[], help="NAME=RUN_DIR (repeatable)")
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--methods", nargs="*", default=list(IMAGE_METHODS))
    parser.add_argument("--eps", type=float, default=0.3)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--restarts", type=int, default=10)
    parser.add_argument("--apgd-count", type=int, default=1000)
    parser.add_argument("--attacks", nargs="*", default=["fgsm", "pgd", "apgd-ce"])
    args = parser.parse_args()
    runs = parse_runs(args.run)
    print(machine_line(machine_info()), flush=True)
    if args.what == "faithfulness":
        run_faithfulness(runs, args.count, args.methods)
    elif args.what == "speed":
        run_speed(runs)
    else:
        run_robust(runs, args)


if __name__ == "__main__":
    main()
