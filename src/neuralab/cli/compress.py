"""`neuralab distill` (a student run taught by a trained run) and `neuralab prune` (global
magnitude pruning of a run, then an optional fine-tune): smaller models from trained ones."""

from __future__ import annotations

import argparse
import json

from neuralab import api
from neuralab.cli.flags import add_config_flags, add_overrides, add_recipe, api_arguments
from neuralab.cli.train import FLAG_HELP
from neuralab.config import dump_config

DISTILL_FLAGS = ("data", "model", "epochs", "batch_size", "lr", "seed", "deterministic",
                 "data_dir", "out", "init_from")  # fmt: skip


def add_distill(commands) -> None:
    """Add `neuralab distill` to the CLI's subcommands."""
    parser = commands.add_parser(
        "distill",
        help="train a student run taught by a trained run (knowledge distillation)",
        description="Train a run as `neuralab train` does, with a teacher run's soft targets: "
        "loss = (1 - weight)·loss on the labels + weight·T²·KL(teacher ‖ student) at "
        "temperature T (Hinton et al. 2015). The teacher must know the same classes; a text "
        "student uses the teacher's tokenizer. Sets train.distill.*.",
    )
    parser.add_argument("teacher", metavar="TEACHER_RUN", help="the trained run that teaches")
    add_recipe(parser, "the student's recipe (see `neuralab recipes`) or YAML path")
    add_config_flags(parser, {dest: FLAG_HELP[dest] for dest in DISTILL_FLAGS})
    parser.add_argument("--temperature", type=float, help="T (train.distill.temperature; 4)")
    parser.add_argument(
        "--weight", type=float, help="of the teacher's term, 0..1 (train.distill.weight; 0.5)"
    )
    add_overrides(parser, "override any config field; repeatable")
    parser.add_argument("--dry-run", action="store_true", help="print the config and exit")
    parser.add_argument("--progress", choices=["auto", "bar", "plain", "none"], default="auto")
    parser.set_defaults(handler=run_distill)


def run_distill(args: argparse.Namespace) -> int:
    """`neuralab distill TEACHER ...`."""
    config = api.distill_config(
        args.teacher, args.recipe, args.overrides, args.temperature, args.weight,
        **api_arguments(args),
    )  # fmt: skip
    if args.dry_run:
        print(dump_config(config), end="")
        return 0
    api.train_config(config, progress=args.progress)
    return 0


def add_prune(commands) -> None:
    """Add `neuralab prune` to the CLI's subcommands."""
    parser = commands.add_parser(
        "prune",
        help="prune a run's smallest weights, then fine-tune it (a new run)",
        description="Global magnitude pruning: the smallest SPARSITY fraction of the weights "
        "of Linear, Conv and Embedding layers (ranked together) is set to zero, then "
        "--finetune EPOCHS of training with the run's config keep them at zero. The result "
        "is a normal run with <out>/pruning.json. The weights stay dense tensors with zeros: "
        "no speed-up on a CPU (the report times one batch to show it).",
    )
    parser.add_argument("run", metavar="RUN", help="the trained run to prune")
    parser.add_argument(
        "--sparsity", type=float, required=True, help="fraction of weights set to zero, 0 ≤ s < 1"
    )
    parser.add_argument(
        "--finetune", type=float, default=0, metavar="EPOCHS", help="epochs of fine-tune (0)"
    )
    parser.add_argument("--out", help="the new run (default <run>-pruned-<percent> beside it)")
    add_overrides(parser, "override a field of the fine-tune's config (e.g. optim.lr=0.01)")
    parser.add_argument("--progress", choices=["auto", "bar", "plain", "none"], default="auto")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(handler=run_prune)


def run_prune(args: argparse.Namespace) -> int:
    """`neuralab prune RUN --sparsity S ...`: the report is printed (as JSON with --json)."""
    report = api.prune(
        args.run, args.sparsity, finetune=args.finetune, out=args.out,
        overrides=args.overrides, verbose=not args.json, progress=args.progress,
    )  # fmt: skip
    if args.json:
        print(json.dumps(report, indent=2))
    return 0
