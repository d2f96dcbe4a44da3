"""The run directory: resolved config, per-epoch history (CSV + JSON), metrics, checkpoints.

<run>/config.yaml            the resolved configuration
<run>/history.csv|json       one row per epoch
<run>/metrics.json           final test metrics
<run>/checkpoint/            the latest checkpoint (see neuralab.checkpoint)
<run>/best/                  the best epoch's weights by monitor.metric (runs with validation)
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from neuralab.callbacks import Callback, MetricWatch
from neuralab.checkpoint import save_checkpoint
from neuralab.distributed import is_main_process

HISTORY_FIELDS = [
    "epoch",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "lr",
    "seconds",
    "examples_per_second",
]


def write_text_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def history_csv(history: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=HISTORY_FIELDS, extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    for row in history:
        writer.writerow({k: row.get(k, "") for k in HISTORY_FIELDS})
    return buffer.getvalue()


class RunWriter(Callback):
    """Writes the history after every epoch and the checkpoint (weights + resume state).

    `meta` is what a checkpoint needs to rebuild the model without the config: model name and
    arguments, input spec, classes and preprocessing. `files` are extra checkpoint files by
    name (a text run's tokenizer.json).
    """

    def __init__(
        self, run_dir: str | Path, meta: dict, files: dict[str, str] | None = None
    ) -> None:
        self.run_dir, self.meta, self.files = Path(run_dir), meta, files

    def on_epoch_end(self, trainer, logs: dict) -> None:
        if not is_main_process():
            return
        write_text_atomic(self.run_dir / "history.json", json.dumps(trainer.history, indent=2))
        write_text_atomic(self.run_dir / "history.csv", history_csv(trainer.history))
        meta = {**self.meta, "epoch": trainer.epoch, "step": trainer.step}
        save_checkpoint(
            self.run_dir / "checkpoint",
            trainer.eval_model,
            meta,
            trainer.state_dict(),
            files=self.files,
        )

    def on_fit_end(self, trainer) -> None:
        """When a callback (early stopping) put an earlier epoch's weights back, they become
        the run's final checkpoint; otherwise the last epoch's is already on disk."""
        if trainer.restored_epoch is not None and is_main_process():
            meta = {**self.meta, "epoch": trainer.epoch, "step": trainer.step}
            meta["weights_from_epoch"] = trainer.restored_epoch
            save_checkpoint(
                self.run_dir / "checkpoint",
                trainer.eval_model,
                meta,
                trainer.state_dict(),
                files=self.files,
            )


class BestCheckpoint(Callback):
    """Keeps `<run>/best/`: the weights of the epoch with the best `metric` so far (written
    when it improves by more than `min_delta`, as early stopping judges it; weights, meta and
    extra files, no resume state)."""

    def __init__(
        self,
        run_dir: str | Path,
        metric: str,
        meta: dict,
        files: dict[str, str] | None = None,
        min_delta: float = 0.0,
    ) -> None:
        self.folder, self.meta, self.files = Path(run_dir) / "best", meta, files
        self.watch = MetricWatch(metric, min_delta)

    def on_epoch_end(self, trainer, logs: dict) -> None:
        if self.watch.update(logs) and is_main_process():
            meta = {**self.meta, "epoch": logs["epoch"], "step": trainer.step}
            meta["best"] = {"metric": self.watch.metric, "value": self.watch.best}
            save_checkpoint(self.folder, trainer.eval_model, meta, files=self.files)

    def state_dict(self) -> dict:
        return self.watch.state_dict()

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.watch.load_state_dict(state)
