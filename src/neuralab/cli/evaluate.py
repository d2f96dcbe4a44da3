"""Verbs that look at a trained run or a model: `neuralab evaluate`, `predict`, `report`,
`summary`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from neuralab import api
from neuralab.adversarial.attacks import ATTACKS, NORMS
from neuralab.adversarial.robust import RESULTS_FILE, evaluate_robustness, parse_eps
from neuralab.cli.flags import add_config_flags, add_overrides, add_recipe, api_arguments
from neuralab.data import DataError
from neuralab.inference.evaluation import evaluate, format_confusion, report_path, write_report
from neuralab.inference.fewshot import (
    classify_by_example,
    is_few_shot,
    support_by_folder,
)
from neuralab.inference.multihead import format_heads
from neuralab.rl.runs import is_agent_run
from neuralab.tasks.metrics import format_report

LABEL_WIDTH = 60  # characters of an input's name shown before its predictions


def add_evaluate(commands) -> None:
    """Add `neuralab evaluate` to the CLI's subcommands."""
    parser = commands.add_parser(
        "evaluate", help="evaluate a saved run on its test split (--attack: under attack)"
    )
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("--data", help="evaluate on another dataset with the same classes")
    parser.add_argument("--data-dir")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    few_shot = parser.add_argument_group(
        "few-shot runs", "test episodes on classes never seen in training (default: 5-way "
        "1-shot, 5-way 5-shot and 20-way 1-shot, and Lake et al.'s 20 runs for Omniglot)",
    )  # fmt: skip
    few_shot.add_argument("--ways", type=int, help="classes per episode")
    few_shot.add_argument("--shots", type=int, help="support examples per class")
    few_shot.add_argument("--queries", type=int, help="query examples per class")
    few_shot.add_argument("--episodes", type=int, help="episodes per setting (default 1000)")
    add_attack_flags(parser)
    parser.set_defaults(handler=run_evaluate)


def add_attack_flags(parser: argparse.ArgumentParser) -> None:
    """`neuralab evaluate --attack ...`: accuracy under an adversarial attack (image runs)."""
    group = parser.add_argument_group(
        "adversarial attacks (image runs)", "accuracy under attack, in pixel units (0..1): "
        "e.g. --attack pgd --eps 0.3 --steps 40 --restarts 10 on MNIST, --eps 8/255 on CIFAR-10",
    )  # fmt: skip
    group.add_argument("--attack", choices=ATTACKS, help="fgsm, pgd or apgd-ce (AutoAttack's)")
    group.add_argument("--eps", default="0.3", help="radius, or a comma list for a curve")
    group.add_argument("--norm", choices=NORMS, default="linf")
    group.add_argument("--steps", type=int, default=10, help="PGD / APGD iterations")
    group.add_argument("--step-size", type=float, help="PGD step (default 2.5·eps/steps)")
    group.add_argument("--restarts", type=int, default=1, help="random restarts")
    group.add_argument("--count", type=int, default=1000, help="test examples attacked")
    group.add_argument("--seed", type=int, help="attack a seeded random subset")
    group.add_argument("--out", help="folder for curve.png, examples.png, robustness.json")


def run_evaluate(args: argparse.Namespace) -> int:
    """`neuralab evaluate RUN`: the test report, printed (or as JSON) and saved beside the run."""
    if args.attack:
        return run_attack(args)
    few_shot = {name: getattr(args, name) for name in ("ways", "shots", "queries", "episodes")}
    report = evaluate(args.run_dir, data=args.data, data_dir=args.data_dir, **few_shot)
    if args.json:
        print(json.dumps(report))
        return 0
    if "episodes" in report:  # a few-shot run's report
        return print_few_shot(report, args.run_dir)
    print(f"{report['dataset']} test: {report['count']} examples")
    if "heads" in report:  # several label fields
        print(format_heads(report))
        print(f"saved {report_path(args.run_dir, args.data)}")
        return 0
    classes = list(report["per_class"])
    print(format_report(report, classes))
    print(format_confusion(report, classes))
    print(f"saved {report_path(args.run_dir, args.data)}")
    return 0


def run_attack(args: argparse.Namespace) -> int:
    """`neuralab evaluate RUN --attack ...`: robust accuracy at each eps, printed or JSON."""
    report = evaluate_robustness(
        args.run_dir, args.attack, parse_eps(args.eps), norm=args.norm, steps=args.steps,
        step_size=args.step_size, restarts=args.restarts, count=args.count, seed=args.seed,
        out=args.out, data=args.data, data_dir=args.data_dir,
    )  # fmt: skip
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{report['dataset']} test, {report['count']} examples: clean accuracy "
          f"{report['clean_accuracy']:.2%}")  # fmt: skip
    for point in report["points"]:
        print(f"  {point['attack']:<44} accuracy {point['accuracy']:7.2%}  ({point['seconds']} s)")
    saved = f" and {args.out}/" if args.out else ""
    print(f"saved {Path(args.run_dir) / RESULTS_FILE}{saved}")
    return 0


def print_few_shot(report: dict, run_dir: str) -> int:
    """A few-shot run's report: accuracy ± 95% interval per setting, Lake's runs."""
    for setting, found in report["episodes"].items():
        print(
            f"{report['dataset']} test classes, {setting}: {found['accuracy']:.2%} ± "
            f"{found['ci95']:.2%} (95% interval, {found['episodes']} episodes)"
        )
    lake = report.get("lake_one_shot_runs")
    if lake:
        print(f"Lake et al.'s 20 one-shot runs (20-way 1-shot): {lake['error']:.2%} error")
    print(f"saved {Path(run_dir) / 'evaluation.json'}")
    return 0


def add_predict(commands) -> None:
    """Add `neuralab predict` to the CLI's subcommands."""
    parser = commands.add_parser("predict", help="predict the class of image files or texts")
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("inputs", nargs="*", metavar="INPUT", help="image files")
    parser.add_argument(
        "--text", action="append", default=[], help="a text to classify (text runs); repeatable"
    )
    parser.add_argument("--file", help="a UTF-8 file with one text per line (text runs)")
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--support", nargs="+", metavar="IMAGE",
        help="few-shot runs: example images of the classes to choose from, one folder per "
        "class (a/1.png b/1.png ...); classifies the --query images",
    )  # fmt: skip
    parser.add_argument("--query", nargs="+", metavar="IMAGE", help="images to classify")
    parser.set_defaults(handler=run_predict)


def predict_inputs(args: argparse.Namespace, text_model: bool) -> list:
    """Image paths for image runs; --text values and --file lines for text runs."""
    texts = list(args.text)
    if args.file:
        from neuralab.data.text import decode_utf8

        path = Path(args.file)
        if not path.is_file():
            raise DataError(f"--file {path} does not exist")
        texts += [
            line for line in decode_utf8(path.read_bytes(), path).splitlines() if line.strip()
        ]
    if text_model and args.inputs:
        raise DataError("this run classifies texts: pass them with --text TEXT or --file FILE")
    if not text_model and texts:
        raise DataError("this run classifies images: pass image files, not --text / --file")
    inputs = texts if text_model else args.inputs
    if not inputs:
        raise DataError("nothing to predict: pass image files, or --text / --file for text runs")
    return inputs


def run_predict(args: argparse.Namespace) -> int:
    """`neuralab predict RUN INPUT...`: the top-k classes of each input."""
    predictor = api.load(args.run_dir)
    if args.support or args.query or is_few_shot(predictor):
        inputs, results = predict_by_example(args, predictor)
    else:
        inputs = predict_inputs(args, text_model=predictor.modality.kind == "text")
        results = predictor.predict(inputs, top_k=args.top_k)
    if predictor.heads:  # several label fields: one dict of heads per input
        return print_head_predictions(args, inputs, results)
    if args.json:
        print(
            json.dumps(
                [
                    {"input": str(item), "top": [{"class": c, "probability": p} for c, p in top]}
                    for item, top in zip(inputs, results, strict=True)
                ]
            )
        )
        return 0
    for item, top in zip(inputs, results, strict=True):
        label = str(item)
        if len(label) > LABEL_WIDTH:
            label = label[: LABEL_WIDTH - 3] + "..."
        print(f"{label}: " + ", ".join(f"{c} {p:.1%}" for c, p in top))
    return 0


def short_label(item: object) -> str:
    label = str(item)
    return label if len(label) <= LABEL_WIDTH else label[: LABEL_WIDTH - 3] + "..."


def print_head_predictions(args: argparse.Namespace, inputs: list, results: list[dict]) -> int:
    """Each input's heads: top classes (classification) or value (regression)."""
    if args.json:
        rows = [{"input": str(i), "heads": r} for i, r in zip(inputs, results, strict=True)]
        print(json.dumps(rows))
        return 0
    for item, heads in zip(inputs, results, strict=True):
        parts = []
        for name, found in heads.items():
            if "value" in found:
                parts.append(f"{name} {found['value']:.4g}")
            else:
                top = ", ".join(f"{t['class']} {t['probability']:.1%}" for t in found["top"])
                parts.append(f"{name} {top}")
        print(f"{short_label(item)}: " + " · ".join(parts))
    return 0


def predict_by_example(args: argparse.Namespace, predictor) -> tuple[list, list]:
    """`predict RUN --support a/*.png b/*.png --query q.png`: few-shot classification."""
    if not args.support or not args.query:
        raise DataError(
            "a few-shot run classifies against classes given by example: pass --support "
            "a/1.png b/1.png ... (one folder per class) and --query IMAGE ..."
        )
    if args.inputs or args.text or args.file:
        raise DataError("with --support, give the images to classify with --query")
    support = support_by_folder(args.support)
    return args.query, classify_by_example(predictor, support, args.query, args.top_k)


def add_report(commands) -> None:
    """Add `neuralab report` to the CLI's subcommands."""
    parser = commands.add_parser(
        "report",
        help="evaluate a run and write its figures and a self-contained report.html",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("--data-dir")
    parser.set_defaults(handler=run_report)


def run_report(args: argparse.Namespace) -> int:
    """`neuralab report RUN`: writes report.html and its figures into the run directory."""
    if is_agent_run(args.run_dir):  # an agent: curves, evaluations and config
        from neuralab.rl.report import write_agent_report

        page = write_agent_report(Path(args.run_dir))
    else:
        page = write_report(args.run_dir, data_dir=args.data_dir)
    print(f"wrote {page} (and its figures beside it)")
    return 0


def add_summary(commands) -> None:
    """Add `neuralab summary` to the CLI's subcommands."""
    parser = commands.add_parser(
        "summary",
        help="layers, output shapes, parameters and FLOPs of a model on a dataset's input",
    )
    add_config_flags(
        parser,
        {
            "model": "model name (or take it from --recipe)",
            "data": "dataset whose input shape (or vocabulary) to use",
        },
        positional="model",
    )
    add_recipe(parser, "recipe name or YAML path")
    add_config_flags(parser, {"data_dir": None})
    add_overrides(parser)
    parser.set_defaults(handler=run_summary)


def run_summary(args: argparse.Namespace) -> int:
    """`neuralab summary [MODEL]`: the model's layer table."""
    found = api.summary(args.recipe, overrides=args.overrides, **api_arguments(args))
    print(found.format())
    return 0
