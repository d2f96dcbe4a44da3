"""The `neuralab` command line's argument parser: every verb, its flags and its help text.
`cli.py` turns the parsed arguments into calls of the Python API."""

from __future__ import annotations

import argparse

from neuralab.inference.export import (
    add_command as add_export_command,  # neuralab.inference.export: the function
)
from neuralab.serve import app as serve


def add_train(commands) -> None:
    parser = commands.add_parser(
        "train",
        help="train a model (recipe and/or flags)",
        description="Train a model. Flags override the recipe; "
        "--set overrides anything (e.g. --set optim.momentum=0.9).",
    )
    parser.add_argument(
        "--recipe", help="shipped recipe name (see `neuralab recipes`) or YAML path"
    )
    parser.add_argument("--data", help="dataset name, e.g. mnist, cifar10, folder:PATH")
    parser.add_argument("--model", help="model name (see `neuralab models`)")
    parser.add_argument("--epochs", type=float, help="epochs (fractions allowed)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float, help="peak learning rate")
    parser.add_argument("--seed", type=int)
    parser.add_argument(
        "--deterministic",
        action="store_const",
        const=True,
        help="the same results on every run: deterministic kernels only, no timed engine "
        "choice (train.deterministic=true)",
    )
    parser.add_argument(
        "--data-dir",
        help="folder with one sub-folder per dataset "
        "(default: $NEURALAB_DATA, else ~/.cache/neuralab)",
    )
    parser.add_argument("--out", help="run directory (default: runs/<data>-<model>-<time>)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config field; repeatable",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the resolved config and exit without training"
    )
    parser.add_argument(
        "--progress",
        choices=["auto", "bar", "plain", "none"],
        default="auto",
        help="auto: a live bar per epoch in a terminal, one line per epoch otherwise (default)",
    )
    parser.add_argument(
        "--resume",
        metavar="RUN",
        help="continue an interrupted run from its last checkpoint, with its own config "
        "(`auto`: the newest unfinished run under ./runs); takes no other config flags",
    )
    parser.add_argument(
        "--nproc",
        type=int,
        metavar="N",
        help="data-parallel training with N processes on this machine (one per GPU, or CPU "
        "processes): runs `torchrun --standalone --nproc-per-node N -m neuralab train ...` with "
        "the other arguments; --batch-size stays the global batch",
    )


def add_commands(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_train(commands)
    evaluate = commands.add_parser("evaluate", help="evaluate a saved run on its test split")
    evaluate.add_argument("run_dir", metavar="RUN_DIR")
    evaluate.add_argument("--data", help="evaluate on another dataset with the same classes")
    evaluate.add_argument("--data-dir")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    predict = commands.add_parser("predict", help="predict the class of image files or texts")
    predict.add_argument("run_dir", metavar="RUN_DIR")
    predict.add_argument("inputs", nargs="*", metavar="INPUT", help="image files")
    predict.add_argument(
        "--text", action="append", default=[], help="a text to classify (text runs); repeatable"
    )
    predict.add_argument("--file", help="a UTF-8 file with one text per line (text runs)")
    predict.add_argument("--top-k", type=int, default=3)
    predict.add_argument("--json", action="store_true")
    report = commands.add_parser(
        "report",
        help="evaluate a run and write its figures and a self-contained report.html",
    )
    report.add_argument("run_dir", metavar="RUN_DIR")
    report.add_argument("--data-dir")
    runs = commands.add_parser("runs", help="a table of the runs in a folder")
    runs.add_argument("folder", nargs="?", default="runs", help="default: ./runs")
    compare = commands.add_parser("compare", help="overlay the curves of several runs in a PNG")
    compare.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    compare.add_argument("--out", default="compare.png", help="PNG path (default compare.png)")
    finder = commands.add_parser(
        "lr-find",
        help="learning-rate range test on a copy of the model; suggests a learning rate",
    )
    finder.add_argument("--recipe", help="recipe name or YAML path")
    finder.add_argument("--data")
    finder.add_argument("--model")
    finder.add_argument("--data-dir")
    finder.add_argument("--start", type=float, default=1e-7, help="first learning rate")
    finder.add_argument("--end", type=float, default=10.0, help="last learning rate")
    finder.add_argument("--steps", type=int, default=100, help="training steps (batches)")
    finder.add_argument("--out", help="folder for lr-find.csv/json/png")
    finder.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    summary = commands.add_parser(
        "summary",
        help="layers, output shapes, parameters and FLOPs of a model on a dataset's input",
    )
    summary.add_argument("model", nargs="?", help="model name (or take it from --recipe)")
    summary.add_argument("--data", help="dataset whose input shape (or vocabulary) to use")
    summary.add_argument("--recipe", help="recipe name or YAML path")
    summary.add_argument("--data-dir")
    summary.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE"
    )
    for name, what in (
        ("models", "registered models"),
        ("datasets", "registered datasets"),
        ("recipes", "shipped recipes"),
    ):
        listing = commands.add_parser(name, help=f"list {what}")
        listing.add_argument("--json", action="store_true")
    serve.add_command(commands)
    add_export_command(commands)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neuralab",
        description="Train, evaluate and predict "
        "the classic neural networks. `neuralab COMMAND --help` "
        "for details.",
    )
    add_commands(parser)
    return parser
