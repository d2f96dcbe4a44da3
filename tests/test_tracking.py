"""Run-directory writing: history files, atomic text writes, and the per-epoch checkpoint."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from neuralab.checkpoint.format import load_checkpoint, load_training_state
from neuralab.checkpoint.meta import DataRef, ModelRef, RunMeta, TaskRef
from neuralab.run.tracking import HISTORY_FIELDS, RunWriter, history_csv, write_text_atomic
from neuralab.tasks.classification import Classification
from neuralab.train.trainer import Trainer

ROWS = [
    {"epoch": 1, "train_loss": 0.5, "train_accuracy": 0.8, "lr": 0.1, "extra": "ignored"},
    {"epoch": 2, "train_loss": 0.25, "val_loss": 0.3, "val_accuracy": 0.9, "lr": 0.05},
]


def test_history_csv_has_fixed_columns_and_blank_gaps() -> None:
    rows = list(csv.DictReader(io.StringIO(history_csv(ROWS))))
    assert list(rows[0]) == HISTORY_FIELDS
    assert rows[0]["val_loss"] == "" and rows[1]["val_loss"] == "0.3"
    assert [row["epoch"] for row in rows] == ["1", "2"]


def test_write_text_atomic_replaces_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "metrics.json"
    write_text_atomic(target, "one")
    write_text_atomic(target, "two")
    assert target.read_text(encoding="utf-8") == "two"
    assert [path.name for path in target.parent.iterdir()] == ["metrics.json"]


class TwoBatches:
    def set_epoch(self, epoch: int) -> None: ...

    def __len__(self) -> int:
        return 2

    def __iter__(self):
        generator = torch.Generator().manual_seed(0)
        for _ in range(2):
            yield torch.randn(4, 3, generator=generator), torch.tensor([0, 1, 0, 1])


def test_run_writer_saves_history_and_a_resumable_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    meta = RunMeta(
        kind="image", model=ModelRef("perceptron"), spec={}, classes=["a", "b"],
        dataset="tiny", task=TaskRef(), data=DataRef("tiny"), inputs={"preprocessing": {}},
        config={},
    )  # fmt: skip
    writer = RunWriter(tmp_path, meta)
    trainer = Trainer(model, optimizer, Classification(), callbacks=[writer])
    trainer.fit(TwoBatches(), epochs=2)
    history = json.loads((tmp_path / "history.json").read_text(encoding="utf-8"))
    assert [row["epoch"] for row in history] == [1, 2]
    assert (tmp_path / "history.csv").read_text(encoding="utf-8").count("\n") == 3
    weights, meta = load_checkpoint(tmp_path / "checkpoint")
    assert (meta["epoch"], meta["step"], meta["model"]["name"]) == (2, 4, "perceptron")
    assert torch.equal(weights["weight"], model.weight.detach())
    state = load_training_state(tmp_path / "checkpoint")
    assert state["step"] == 4
    momentum = state["optimizer"]["state"][0]["momentum_buffer"]
    assert torch.equal(momentum, optimizer.state[model.weight]["momentum_buffer"])


def test_tensorboard_logs_epochs_steps_examples_and_graph(tmp_path) -> None:
    pytest.importorskip("tensorboard")
    pytest.importorskip("sklearn")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import neuralab

    run = neuralab.train(
        data="digits",
        model="mlp",
        epochs=2,
        batch_size=16,
        out=str(tmp_path / "run"),
        overrides=["train.tensorboard=on", "data.val_split=0.2", "train.threads=1"],
        verbose=False,
    )
    events = EventAccumulator(str(run.run_dir / "tensorboard"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert {"epoch/train_loss", "epoch/val_accuracy", "step/lr"} <= set(scalars)
    assert [e.step for e in events.Scalars("epoch/train_loss")] == [1, 2]
    assert len(events.Scalars("step/lr")) == 2 * 72 // 50  # every 50 of 2 × 72 steps
    assert events.Tags()["images"] == ["examples"] and events.Tags()["graph"]
