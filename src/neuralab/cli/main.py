"""`neuralab` command line: a thin layer over the Python API with the same names."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from neuralab import api
from neuralab.checkpoint.format import CheckpointError
from neuralab.cli.parser import build_parser
from neuralab.config import (
    ConfigError,
    RunConfig,
    TrainConfig,
    read_recipe,
    recipe_names,
    resolve_config,
)
from neuralab.data import DATASETS, DataError
from neuralab.inference.evaluation import evaluate, format_confusion, report_path, write_report
from neuralab.models import MODELS
from neuralab.registry import UnknownNameError
from neuralab.run import resume as resuming
from neuralab.tasks.metrics import format_report
from neuralab.train import distributed
from neuralab.train.engine import pick_device

# Errors the user can fix: printed as one clear message, no traceback.
USER_ERRORS = (
    ConfigError,
    DataError,
    UnknownNameError,
    CheckpointError,
    OSError,  # files missing or in the way, a full disk: the message names the path
    ImportError,
    api.TrainingStopped,
    TypeError,
    ValueError,
)


CONFIG_FLAGS = (
    "recipe",
    "data",
    "model",
    "epochs",
    "batch_size",
    "lr",
    "seed",
    "deterministic",
    "data_dir",
    "out",
)


def resolve_train_config(args: argparse.Namespace) -> RunConfig:
    """The config of `neuralab train ARGS`: recipe ← flags ← --set."""
    return resolve_config(
        args.recipe,
        args.overrides,
        **{
            "data.name": args.data,
            "model.name": args.model,
            "train.epochs": args.epochs,
            "train.batch_size": args.batch_size,
            "optim.lr": args.lr,
            "train.seed": args.seed,
            "train.deterministic": args.deterministic,
            "data.data_dir": args.data_dir,
            "out": args.out,
        },
    )


def run_train(args: argparse.Namespace) -> int:
    if args.resume:
        given = [f"--{f.replace('_', '-')}" for f in CONFIG_FLAGS if getattr(args, f) is not None]
        given += ["--set"] * bool(args.overrides) + ["--dry-run"] * args.dry_run
        if given:
            raise ValueError(
                f"--resume continues a run exactly as it was configured; {', '.join(given)} "
                "would change it. Drop them, or start a new run without --resume"
            )
        if args.nproc is not None and args.nproc > 1:
            return launch_torchrun(
                args.nproc, args.argv, resuming.read_run_config(args.resume).train
            )
        resuming.resume(args.resume, progress=args.progress)
        return 0
    config = resolve_train_config(args)
    if args.dry_run:
        from neuralab.config import dump_config

        print(dump_config(config), end="")
        return 0
    if args.nproc is not None and args.nproc > 1:
        return launch_torchrun(args.nproc, args.argv, config.train)
    api.train_config(config, progress=args.progress)
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


def launch_torchrun(processes: int, argv: Sequence[str], settings: TrainConfig) -> int:
    """Run training under torchrun with `processes` processes; returns torchrun's status."""
    if "LOCAL_RANK" in os.environ:
        raise ValueError(
            "--nproc starts torchrun itself, but this process already runs under torchrun "
            f"(LOCAL_RANK={os.environ['LOCAL_RANK']}); leave out --nproc"
        )
    # The same checks every process makes, before starting any of them.
    distributed.split_batch(settings.batch_size, processes, settings.grad_accumulation)
    distributed.check_sync_bn(settings.sync_bn, pick_device(settings.device), processes)
    command = torchrun_command(processes, argv)
    print(f"launching {shlex.join(command)}", flush=True)
    return subprocess.run(command, check=False).returncode


def run_evaluate(args: argparse.Namespace) -> int:
    report = evaluate(args.run_dir, data=args.data, data_dir=args.data_dir)
    if args.json:
        print(json.dumps(report))
        return 0
    classes = list(report["per_class"])
    print(f"{report['dataset']} test: {report['count']} examples")
    print(format_report(report, classes))
    print(format_confusion(report, classes))
    print(f"saved {report_path(args.run_dir, args.data)}")
    return 0


def run_runs(args: argparse.Namespace) -> int:
    from neuralab.run.listing import format_runs, list_runs

    rows = list_runs(args.folder)
    print(format_runs(rows) if rows else f"no runs in {args.folder}")
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from neuralab.inference.plots import PLOTS_EXTRA, have_matplotlib
    from neuralab.run.listing import compare_figure

    if not have_matplotlib():
        raise ImportError(f"neuralab compare draws with matplotlib: {PLOTS_EXTRA}")
    print(f"wrote {compare_figure(args.run_dirs, Path(args.out))}")
    return 0


def run_lr_find(args: argparse.Namespace) -> int:
    from neuralab.run.lrfind import lr_find

    out = args.out or f"runs/lr-find-{time.strftime('%Y%m%d-%H%M%S')}"
    result = lr_find(
        args.recipe,
        data=args.data,
        model=args.model,
        data_dir=args.data_dir,
        overrides=args.overrides,
        start=args.start,
        end=args.end,
        steps=args.steps,
        out=out,
    )
    print(
        f"suggested learning rate {result.suggestion:.3g} (steepest descent of the smoothed "
        f"loss over {len(result.lrs)} steps); curve and table in {out}/lr-find.png|csv. Train "
        f"with --lr {result.suggestion:.2g}, or a little lower for a one-cycle peak."
    )
    return 0


def run_report(args: argparse.Namespace) -> int:
    page = write_report(args.run_dir, data_dir=args.data_dir)
    print(f"wrote {page} (and its figures beside it)")
    return 0


def run_summary(args: argparse.Namespace) -> int:
    found = api.summary(
        args.recipe,
        data=args.data,
        model=args.model,
        data_dir=args.data_dir,
        overrides=args.overrides,
    )
    print(found.format())
    return 0


def predict_inputs(args: argparse.Namespace, text_model: bool) -> list:
    """Image paths for image runs; --text values and --file lines for text runs."""
    texts = list(args.text)
    if args.file:
        from pathlib import Path

        from neuralab.data.text import decode_utf8

        path = Path(args.file)
        if not path.is_file():
            raise DataError(f"--file {path} does not exist")
        texts += [
            line for line in decode_utf8(path.read_bytes(), path).splitlines() if line.strip()
        ]
    if text_model and args.inputs:
        raise ValueError("this run classifies texts: pass them with --text TEXT or --file FILE")
    if not text_model and texts:
        raise ValueError("this run classifies images: pass image files, not --text / --file")
    inputs = texts if text_model else args.inputs
    if not inputs:
        raise ValueError("nothing to predict: pass image files, or --text / --file for text runs")
    return inputs


def run_predict(args: argparse.Namespace) -> int:
    predictor = api.load(args.run_dir)
    inputs = predict_inputs(args, predictor.tokenizer is not None)
    results = predictor.predict(inputs, top_k=args.top_k)
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
        label = str(item) if len(str(item)) <= 60 else str(item)[:57] + "..."
        print(f"{label}: " + ", ".join(f"{c} {p:.1%}" for c, p in top))
    return 0


def run_listing(args: argparse.Namespace) -> int:
    if args.command == "recipes":
        rows = [(name, read_recipe(name)[0].get("description", "")) for name in recipe_names()]
    else:
        registry = MODELS if args.command == "models" else DATASETS
        rows = [(entry.name, entry.summary) for entry in registry]
    if args.json:
        print(json.dumps([{"name": n, "summary": s} for n, s in rows]))
    else:
        width = max(len(n) for n, _ in rows)
        for name, summary in rows:
            print(f"{name:<{width}}  {summary}")
    return 0


HANDLERS = {
    "train": run_train,
    "evaluate": run_evaluate,
    "predict": run_predict,
    "summary": run_summary,
    "report": run_report,
    "lr-find": run_lr_find,
    "runs": run_runs,
    "compare": run_compare,
    "models": run_listing,
    "datasets": run_listing,
    "recipes": run_listing,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `neuralab` console script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # `train --nproc` hands the same arguments to torchrun
    try:
        # Commands defined in their own modules (export, serve) set `handler` on the parser.
        handler = getattr(args, "handler", None) or HANDLERS[args.command]
        return handler(args)
    except USER_ERRORS as error:
        where = f" (rank {distributed.rank()})" if distributed.world_size() > 1 else ""
        print(f"neuralab {args.command}{where}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"neuralab {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
