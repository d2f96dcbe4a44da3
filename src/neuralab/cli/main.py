"""`neuralab` command line: a thin layer over the Python API with the same names.

Each verb lives in its own module with its parser beside its handler (`add_VERB(commands)` adds
the parser and sets `handler`); this module builds the parser from them and runs the handler.
Errors the user can fix (`neuralab.errors.UserError` and the OS refusing a file) print one line
and exit with status 2; anything else is a bug in neuralab: its traceback is shown, with a
request to report it, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from neuralab import __version__
from neuralab.cli.compress import add_distill, add_prune
from neuralab.cli.evaluate import add_evaluate, add_predict, add_report, add_summary
from neuralab.cli.explain import add_explain
from neuralab.cli.export import add_export
from neuralab.cli.listing import add_compare, add_listings, add_runs
from neuralab.cli.lrfind import add_lr_find
from neuralab.cli.rl import add_rl
from neuralab.cli.serve import add_serve
from neuralab.cli.train import add_train, resolve_train_config, torchrun_command
from neuralab.errors import UserError
from neuralab.train import distributed

__all__ = ["build_parser", "main", "resolve_train_config", "torchrun_command"]

# The verbs in the order `neuralab --help` lists them.
VERBS = (
    add_train,
    add_evaluate,
    add_predict,
    add_explain,
    add_report,
    add_runs,
    add_compare,
    add_lr_find,
    add_summary,
    add_listings,  # models, datasets, recipes
    add_serve,
    add_export,
    add_distill,
    add_prune,
    add_rl,
)

# Errors the user can fix: one clear line, no traceback (see neuralab/errors.py).
USER_ERRORS = (UserError,)


def build_parser() -> argparse.ArgumentParser:
    """The `neuralab` parser: every verb, its flags and its help text."""
    parser = argparse.ArgumentParser(
        prog="neuralab",
        description="Train, evaluate, predict, explain and attack the classic neural networks, "
        "and train reinforcement-learning agents (`neuralab rl`). `neuralab COMMAND --help` "
        "for details.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_verb in VERBS:
        add_verb(commands)
    return parser


def is_user_error(error: Exception) -> bool:
    """Whether `error` is the user's to fix (one line) rather than a bug in neuralab (traceback).

    Besides `USER_ERRORS`: an OSError is the operating system refusing (a file missing or in the
    way, a full disk, a port in use) and its message names the path; an ImportError is a missing
    optional package (its message names the extra to install), unless a neuralab module itself
    fails to import, which is a bug.
    """
    if isinstance(error, ImportError):
        return (error.name or "").split(".")[0] != "neuralab"
    return isinstance(error, (*USER_ERRORS, OSError))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `neuralab` console script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # `train --nproc` hands the same arguments to torchrun
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print(f"neuralab {args.command}: interrupted", file=sys.stderr)
        return 130  # 128 + SIGINT, as shells report an interrupted command
    except Exception as error:
        where = f" (rank {distributed.rank()})" if distributed.world_size() > 1 else ""
        if is_user_error(error):
            print(f"neuralab {args.command}{where}: error: {error}", file=sys.stderr)
            return 2
        traceback.print_exc()
        print(
            f"neuralab {args.command}{where}: internal error: this is a bug in neuralab "
            f"{__version__}; please report it with the command and the traceback above",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
