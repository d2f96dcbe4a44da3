"""`neuralab explain`: which pixels or words made a saved run answer as it did, and how
faithful each method is on the run's own test examples."""

from __future__ import annotations

import argparse
import json

from neuralab.attribution.explain import explain, faithfulness
from neuralab.attribution.faithfulness import METRICS
from neuralab.attribution.images import IMAGE_METHODS, AttributionError
from neuralab.attribution.texts import TEXT_METHODS

WORDS_SHOWN = 12  # strongest words printed per text (all of them are in --json and --out)


def add_explain(commands) -> None:
    """Add `neuralab explain` to the CLI's subcommands."""
    methods = sorted(set(IMAGE_METHODS) | set(TEXT_METHODS))
    parser = commands.add_parser(
        "explain",
        help="attributions (heat maps, word weights) and their faithfulness",
        description="Explain a saved run's predictions. Image runs: "
        f"{', '.join(IMAGE_METHODS)}; text runs: {', '.join(TEXT_METHODS)}. "
        "With --test N, score a method on N test examples instead (--metric).",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("inputs", nargs="*", metavar="IMAGE", help="image files to explain")
    parser.add_argument("--text", action="append", default=[], help="a text (repeatable)")
    parser.add_argument("--method", choices=methods, metavar="METHOD",
                        help="default: grad-cam for conv nets, integrated-gradients for "
                        "embedding text models, else saliency / occlusion")  # fmt: skip
    parser.add_argument("--target", help="explain this class instead of the prediction")
    parser.add_argument("--layer", help="Grad-CAM's layer (default: the last conv ≥ 7×7)")
    parser.add_argument("--out", help="folder for overlay PNGs, explanations.html/.json")
    parser.add_argument("--test", type=int, metavar="N", help="score on N test examples")
    parser.add_argument(
        "--metric", choices=METRICS, default="deletion",
        help="with --test: deletion / insertion AUC against a random order, or sanity",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=run_explain)


def run_explain(args: argparse.Namespace) -> int:
    if args.test is not None:
        if args.inputs or args.text:
            raise AttributionError("--test scores test examples: give no inputs with it")
        found = faithfulness(args.run_dir, method=args.method, metric=args.metric,
                             count=args.test, layer=args.layer, seed=args.seed,
                             data_dir=args.data_dir)  # fmt: skip
        print(json.dumps(found) if args.json else describe_score(found))
        return 0
    result = explain(args.run_dir, args.inputs or None, texts=args.text or None,
                     method=args.method, target=args.target, layer=args.layer, seed=args.seed,
                     out=args.out)  # fmt: skip
    if args.json:
        print(json.dumps(result.to_dict()))
        return 0
    print(f"{result.method} · {result.view} · {result.seconds:.2f} s")
    for item in result.items:
        print(describe_item(item))
    if result.files:
        print(f"saved {args.out}/explanations.html and {len(result.files) - 1} more files")
    return 0


def describe_item(item) -> str:
    """One input's answer and, for texts, its strongest words."""
    line = f"{item.name}: predicted {item.predicted} ({item.probability:.1%})"
    if item.target != item.predicted:
        line += f", explaining {item.target} ({item.target_probability:.1%})"
    if item.heatmap is not None:
        return line
    ranked = sorted(zip(item.weights, item.words, strict=True), key=lambda p: -abs(p[0]))
    words = ", ".join(f"{word} {weight:+.3f}" for weight, word in ranked[:WORDS_SHOWN])
    return f"{line}\n  strongest words: {words}"


def describe_score(found: dict) -> str:
    """A faithfulness result as one or two lines."""
    head = f"{found['method']} on {found['count']} {found['dataset']} test examples"
    if found["metric"] == "sanity":
        verdict = "passes" if found["passes"] else "fails"
        return (
            f"{head}: rank correlation with a randomised model {found['rank_correlation']:.3f} "
            f"(|attributions|; signed {found['rank_correlation_signed']:.3f}; "
            f"{found['constant_maps']} constant maps left out) — {verdict} (< 0.2) "
            f"in {found['seconds']} s"
        )
    return (
        f"{head}: {found['metric']} AUC {found['auc']:.4f} against {found['random_auc']:.4f} "
        f"for a random order ({found['ratio']:.2f}×; {found['better']} is better) "
        f"in {found['seconds']} s"
    )
