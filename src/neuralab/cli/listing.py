"""Verbs that list things: `neuralab models`, `datasets`, `recipes` (registered names, filtered by
a pattern), `runs` (a folder's runs) and `compare` (several runs' curves in one figure)."""

from __future__ import annotations

import argparse
import fnmatch
import json
from pathlib import Path

from neuralab.config import read_recipe, recipe_names
from neuralab.data import DATASETS
from neuralab.models import MODELS
from neuralab.registry import GLOB_CHARACTERS
from neuralab.tasks import TASKS

LISTINGS = {  # verb → (what it lists, an example pattern)
    "models": ("registered models", "resnet*"),
    "datasets": ("registered datasets", "*mnist"),
    "recipes": ("shipped recipes", "cifar10-*"),
    "tasks": ("registered tasks (what is learned: task.name)", "*maml"),
}


def add_listings(commands) -> None:
    """Add `neuralab models|datasets|recipes [PATTERN]` to the CLI's subcommands."""
    for verb, (what, example) in LISTINGS.items():
        parser = commands.add_parser(verb, help=f"list {what}")
        parser.add_argument(
            "pattern",
            nargs="?",
            metavar="PATTERN",
            help=f"only names that match this glob (e.g. '{example}') or, without * ? [, "
            "contain this text; case is ignored",
        )
        parser.add_argument("--json", action="store_true")
        parser.set_defaults(handler=run_listing)


def recipes_matching(pattern: str | None) -> list[str]:
    """Recipe names that match `pattern` the way `Registry.entries` matches entry names."""
    names = recipe_names()
    if not pattern:
        return names
    wanted = pattern.lower()
    if any(character in wanted for character in GLOB_CHARACTERS):
        return [name for name in names if fnmatch.fnmatchcase(name.lower(), wanted)]
    return [name for name in names if wanted in name.lower()]


def listing_rows(verb: str, pattern: str | None) -> list[tuple[str, str]]:
    """(name, one-line summary) of everything `neuralab VERB PATTERN` lists."""
    if verb == "recipes":
        return [
            (name, read_recipe(name)[0].get("description", ""))
            for name in recipes_matching(pattern)
        ]
    registry = {"models": MODELS, "datasets": DATASETS, "tasks": TASKS}[verb]
    return [(entry.name, entry.summary) for entry in registry.entries(pattern)]


def run_listing(args: argparse.Namespace) -> int:
    """`neuralab models|datasets|recipes [PATTERN]`: one name and summary per line (or JSON)."""
    rows = listing_rows(args.command, args.pattern)
    if args.json:
        print(json.dumps([{"name": name, "summary": summary} for name, summary in rows]))
    elif not rows:
        print(f"no {args.command} match {args.pattern!r}; `neuralab {args.command}` lists them all")
    else:
        width = max(len(name) for name, _ in rows)
        for name, summary in rows:
            print(f"{name:<{width}}  {summary}")
    return 0


def add_runs(commands) -> None:
    """Add `neuralab runs [FOLDER]` to the CLI's subcommands."""
    parser = commands.add_parser("runs", help="a table of the runs in a folder")
    parser.add_argument("folder", nargs="?", default="runs", help="default: ./runs")
    parser.set_defaults(handler=run_runs)


def run_runs(args: argparse.Namespace) -> int:
    """`neuralab runs`: one row per run (data, model, epochs, accuracy, ...)."""
    from neuralab.run.listing import format_runs, list_runs

    rows = list_runs(args.folder)
    print(format_runs(rows) if rows else f"no runs in {args.folder}")
    return 0


def add_compare(commands) -> None:
    """Add `neuralab compare RUN_DIR...` to the CLI's subcommands."""
    parser = commands.add_parser("compare", help="overlay the curves of several runs in a PNG")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    parser.add_argument("--out", default="compare.png", help="PNG path (default compare.png)")
    parser.set_defaults(handler=run_compare)


def run_compare(args: argparse.Namespace) -> int:
    """`neuralab compare`: the runs' curves overlaid in one PNG (needs matplotlib)."""
    from neuralab.inference.plots import PLOTS_EXTRA, have_matplotlib
    from neuralab.run.listing import compare_figure

    if not have_matplotlib():
        raise ImportError(f"neuralab compare draws with matplotlib: {PLOTS_EXTRA}")
    print(f"wrote {compare_figure(args.run_dirs, Path(args.out))}")
    return 0
