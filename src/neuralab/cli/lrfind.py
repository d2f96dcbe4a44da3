"""`neuralab lr-find`: the learning-rate range test of the model a config would train."""

from __future__ import annotations

import argparse
import time

from neuralab.cli.flags import add_config_flags, add_overrides, add_recipe, api_arguments


def add_lr_find(commands) -> None:
    """Add `neuralab lr-find` to the CLI's subcommands."""
    parser = commands.add_parser(
        "lr-find",
        help="learning-rate range test on a copy of the model; suggests a learning rate",
    )
    add_recipe(parser, "recipe name or YAML path")
    add_config_flags(parser, {"data": None, "model": None, "data_dir": None})
    parser.add_argument("--start", type=float, default=1e-7, help="first learning rate")
    parser.add_argument("--end", type=float, default=10.0, help="last learning rate")
    parser.add_argument("--steps", type=int, default=100, help="training steps (batches)")
    # Not the config's `out` (a run directory): where the range test's files go.
    parser.add_argument("--out", help="folder for lr-find.csv/json/png")
    add_overrides(parser)
    parser.set_defaults(handler=run_lr_find)


def run_lr_find(args: argparse.Namespace) -> int:
    """`neuralab lr-find ...`: runs the test, prints the suggestion and where the curve is."""
    from neuralab.run.lrfind import lr_find

    out = args.out or f"runs/lr-find-{time.strftime('%Y%m%d-%H%M%S')}"
    result = lr_find(
        args.recipe,
        overrides=args.overrides,
        start=args.start,
        end=args.end,
        steps=args.steps,
        out=out,
        **api_arguments(args),
    )
    print(
        f"suggested learning rate {result.suggestion:.3g} (steepest descent of the smoothed "
        f"loss over {len(result.lrs)} steps); curve and table in {out}/lr-find.png|csv. Train "
        f"with --lr {result.suggestion:.2g}, or a little lower for a one-cycle peak."
    )
    return 0
