"""`neuralab train`: train from a recipe and flags, resume a run, or launch torchrun (--nproc)."""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from collections.abc import Sequence

from neuralab import api
from neuralab.cli.flags import (
    add_config_flags,
    add_overrides,
    add_recipe,
    config_fields,
    given_flags,
)
from neuralab.config import RunConfig, dump_config, resolve_config
from neuralab.errors import ConfigError
from neuralab.run import build
from neuralab.run import resume as resuming

FLAG_HELP = {
    "data": "dataset name, e.g. mnist, cifar10, folder:PATH",
    "model": "model name (see `neuralab models`)",
    "epochs": "epochs (fractions allowed)",
    "batch_size": None,
    "lr": "peak learning rate",
    "seed": None,
    "deterministic": "the same results on every run: deterministic kernels only, no timed engine "
    "choice (train.deterministic=true)",
    "data_dir": "folder with one sub-folder per dataset "
    "(default: $NEURALAB_DATA, else ~/.cache/neuralab)",
    "out": "run directory (default: runs/<data>-<model>-<time>)",
    "task": "what is learned: classification (default), or few-shot episodes: protonet, "
    "maml, fomaml (see `neuralab tasks`)",
    "ways": "few-shot tasks: classes per episode (task.ways)",
    "shots": "few-shot tasks: support examples per class (task.shots)",
    "init_from": "fine-tune: start from this run's weights (RUN directory); the head is new "
    "when the classes differ, the model defaults to the source's (train.init_from)",
}


def add_train(commands) -> None:
    """Add `neuralab train` to the CLI's subcommands."""
    parser = commands.add_parser(
        "train",
        help="train a model (recipe and/or flags)",
        description="Train a model. Flags override the recipe; "
        "--set overrides anything (e.g. --set optim.momentum=0.9).",
    )
    add_recipe(parser, "shipped recipe name (see `neuralab recipes`) or YAML path")
    add_config_flags(parser, FLAG_HELP)
    add_overrides(parser, "override any config field; repeatable")
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
    parser.set_defaults(handler=run_train)


def resolve_train_config(args: argparse.Namespace) -> RunConfig:
    """The config of `neuralab train ARGS`: recipe ← flags ← --set."""
    return resolve_config(args.recipe, args.overrides, **config_fields(args))


def run_train(args: argparse.Namespace) -> int:
    """`neuralab train ...`: returns the exit status (torchrun's, with --nproc)."""
    if args.resume:
        return resume_train(args)
    config = resolve_train_config(args)
    if args.dry_run:
        if config.recipe is None:
            print(
                "# no recipe: the fields that no flag sets are chosen when training starts, for "
                "the model family and the data;\n# the run's config.yaml holds the values used"
            )
        print(dump_config(config), end="")
        return 0
    if args.nproc is not None and args.nproc > 1:
        return launch_torchrun(args.nproc, args.argv, config)
    api.train_config(config, progress=args.progress)
    return 0


def resume_train(args: argparse.Namespace) -> int:
    """`neuralab train --resume RUN`: the run's own config, so no flag may change it."""
    given = given_flags(args) + ["--dry-run"] * args.dry_run
    if given:
        raise ConfigError(
            f"--resume continues a run exactly as it was configured; {', '.join(given)} "
            "would change it. Drop them, or start a new run without --resume"
        )
    if args.nproc is not None and args.nproc > 1:
        config = build.read_run_config(resuming.resumable_run(args.resume))
        return launch_torchrun(args.nproc, args.argv, config)
    api.resume(args.resume, progress=args.progress)
    return 0


def torchrun_command(processes: int, argv: Sequence[str]) -> list[str]:
    """The torchrun command that `neuralab train --nproc N ...` runs: `--standalone` (one
    machine, a free rendezvous port) and the same arguments without `--nproc`."""
    rest: list[str] = []
    tokens = iter(argv)
    for token in tokens:
        if token == "--nproc":
            next(tokens, None)  # and its value
        elif not token.startswith("--nproc="):
            rest.append(token)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    return [*launcher, "--nproc-per-node", str(processes), "-m", "neuralab", *rest]


def launch_torchrun(processes: int, argv: Sequence[str], config: RunConfig) -> int:
    """Run training under torchrun with `processes` processes; returns torchrun's status."""
    if "LOCAL_RANK" in os.environ:
        raise ConfigError(
            "--nproc starts torchrun itself, but this process already runs under torchrun "
            f"(LOCAL_RANK={os.environ['LOCAL_RANK']}); leave out --nproc"
        )
    # The same checks every process makes, before starting any of them.
    build.check_processes(config, processes)
    command = torchrun_command(processes, argv)
    print(f"launching {shlex.join(command)}", flush=True)
    return subprocess.run(command, check=False).returncode
