"""Pruning a saved run, the run builder's part: load it, prune it (train/pruning.py), score
it before and after, write the pruned weights as a normal run directory and the config of
the fine-tune that recovers it. `neuralab.prune` (api.py) puts these together with training.

Layout: `<out>` (default `<run>-pruned-<percent>` beside the run) is the result. Without a
fine-tune it is the pruned run itself; with one, `<out>/pruned/` keeps the pruned weights
before the fine-tune, which starts from them (`train.init_from`) and writes `<out>`.
`<out>/pruning.json` is the report: per-layer and total sparsity, the source, test accuracy
before and after pruning and after the fine-tune, and one batch's latency dense vs pruned.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import torch
import yaml

from neuralab.checkpoint.format import save_checkpoint, write_text_atomic
from neuralab.config import RunConfig, dump_config
from neuralab.config.files import apply_override, build_config, parse_override
from neuralab.errors import ConfigError
from neuralab.inference.evaluation import evaluate_with_data
from neuralab.inference.fewshot import is_few_shot
from neuralab.inference.predict import Predictor, checkpoint_folder
from neuralab.run.rundir import new_run_dir
from neuralab.train.pruning import (
    batch_latency,
    check_sparsity,
    magnitude_prune,
    sparsity_report,
)

LATENCY_BATCH = 256  # test examples in the batch whose forward pass is timed
REPORT = "pruning.json"
METHOD = "global magnitude (L1) over the weights of Linear, Conv and Embedding layers"
NO_SPEEDUP = (
    "dense tensors with zeros: the same arithmetic as the original, so no speed-up on a CPU; "
    "the zeros pay off only in a sparse or structured runtime, or in a compressed file"
)


@dataclasses.dataclass
class PrunedRun:
    """A run pruned in memory and written: where, and the report so far."""

    run_dir: Path
    report: dict


def default_out(run_dir: Path, sparsity: float) -> Path:
    """`<run>-pruned-<percent>` beside the run, e.g. runs/mnist-best-pruned-80."""
    return run_dir.parent / f"{run_dir.name}-pruned-{round(sparsity * 100):d}"


def source_run(path: str | Path) -> Path:
    """The run directory of `path` (a run or its checkpoint folder)."""
    folder = checkpoint_folder(path)
    return folder.parent if folder.name == "checkpoint" else folder


def prune_run(run: str | Path, sparsity: float, out: Path) -> PrunedRun:
    """Load `run`, score it, prune `sparsity` of its prunable weights, score it again, time
    one batch dense vs pruned and write the pruned weights as a run in `out`."""
    check_sparsity(sparsity)
    run_dir = source_run(run)
    predictor = Predictor.load(run_dir)
    if is_few_shot(predictor):
        raise ConfigError(
            f"{run_dir.name} is a few-shot run; prune works on classifiers (test accuracy "
            "before and after pruning is scored on the test split)"
        )
    before, dataset, _ = evaluate_with_data(run_dir, predictor=predictor)
    dense = copy.deepcopy(predictor.model)
    magnitude_prune(predictor.model, sparsity)
    after, _, _ = evaluate_with_data(run_dir, predictor=predictor)
    loader = predictor.modality.eval_loader(dataset.test, LATENCY_BATCH, predictor.device)
    batch = next(iter(loader))  # (inputs, labels)
    latency = {"batch": len(batch[1]), "threads": torch.get_num_threads(), "note": NO_SPEEDUP,
               "dense_ms": 1000 * batch_latency(dense, batch[0]),
               "pruned_ms": 1000 * batch_latency(predictor.model, batch[0])}  # fmt: skip
    report = {
        "source": str(run_dir), "run": str(out), "method": METHOD,
        "sparsity_requested": sparsity, **sparsity_report(predictor.model),
        "accuracy": {"before": before["accuracy"], "pruned": after["accuracy"]},
        "latency": latency,
    }  # fmt: skip
    return PrunedRun(write_pruned(predictor, run_dir, out, after, sparsity), report)


def write_pruned(
    predictor: Predictor, run_dir: Path, out: Path, scores: dict, sparsity: float
) -> Path:
    """The pruned model as a run directory: config.yaml, checkpoint (the source's metadata,
    its `source` naming the pruned run) and metrics.json (test loss and accuracy)."""
    config = RunConfig.model_validate(predictor.meta.config).model_copy(update={"out": str(out)})
    folder = new_run_dir(str(out), predictor.meta.dataset, predictor.meta.model.name,
                         dump_config(config))  # fmt: skip
    source = {"run": str(run_dir), "run_id": run_dir.name, "pruned": sparsity, "method": METHOD}
    meta = dataclasses.replace(predictor.meta, source=source)
    files = predictor.modality.files() or None
    save_checkpoint(folder / "checkpoint", predictor.model, meta.to_dict(), None, files)
    metrics = {key: scores[key] for key in ("loss", "accuracy", "count")}
    write_text_atomic(folder / "metrics.json", json.dumps({**metrics, "pruned_from": str(run_dir)}))
    return folder


def finetune_config(
    run_dir: Path, start: Path, epochs: float, out: Path, overrides: list[str]
) -> RunConfig:
    """The source run's config, trained `epochs` more from `start`'s (pruned) weights into
    `out` with its zeros kept (train.keep_zeros, so a resumed fine-tune keeps them too); its
    tokenizer section left out (a fine-tuned text run takes its source's), head first off,
    then `overrides` (`section.field=value`)."""
    raw = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    raw.pop("tokenizer", None)
    fields = {"out": str(out), "train.epochs": epochs, "train.init_from": str(start),
              "train.fine_tune_epochs": 0, "train.keep_zeros": True}  # fmt: skip
    for key, value in fields.items():
        apply_override(raw, key.split("."), value)
    for text in overrides:
        apply_override(raw, *parse_override(text))
    return build_config(raw, f"{run_dir / 'config.yaml'} with the fine-tune's settings")


def finish_report(report: dict, model_dir: Path, fine_tuned: dict | None) -> dict:
    """The report with the final run's sparsity (after the fine-tune: the masks held) and
    its test accuracy; written to `<run>/pruning.json`."""
    predictor = Predictor.load(model_dir)
    report = {**report, **sparsity_report(predictor.model)}
    report["accuracy"]["fine_tuned"] = None if fine_tuned is None else fine_tuned["accuracy"]
    write_text_atomic(model_dir / REPORT, json.dumps(report, indent=2))
    return report


def describe(report: dict) -> list[str]:
    """The printed summary: sparsity per layer and in total, accuracies and latency."""
    lines = [f"prune  {report['source']} → {report['run']}: {report['method']}"]
    for name, row in report["layers"].items():
        lines.append(f"  {name:<40} {row['zeros']:>10,} / {row['weights']:>10,} zero "
                     f"({row['sparsity']:.1%})")  # fmt: skip
    total, accuracy = report["total"], report["accuracy"]
    asked = report["sparsity_requested"]
    lines.append(f"  {'total':<40} {total['zeros']:>10,} / {total['weights']:>10,} zero "
                 f"({total['sparsity']:.2%}; asked {asked:.0%})")  # fmt: skip
    tuned = accuracy.get("fine_tuned")
    tuned = f" → {tuned:.2%} fine-tuned" if tuned is not None else ""
    lines.append(f"test accuracy {accuracy['before']:.2%} dense → {accuracy['pruned']:.2%} "
                 f"pruned{tuned}")  # fmt: skip
    latency = report["latency"]
    lines.append(f"latency one batch of {latency['batch']}: dense {latency['dense_ms']:.1f} ms, "
                 f"pruned {latency['pruned_ms']:.1f} ms ({latency['threads']} threads): "
                 f"{latency['note']}")  # fmt: skip
    return lines
