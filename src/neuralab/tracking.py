"""The run directory: resolved config, per-epoch history (CSV + JSON), metrics, checkpoints.

<run>/config.yaml            the resolved configuration
<run>/history.csv|json       one row per epoch
<run>/metrics.json           final test metrics
<run>/checkpoint/            the latest checkpoint (see neuralab.checkpoint)
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from neuralab.callbacks import Callback
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
