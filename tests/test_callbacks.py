"""Early stopping and the best checkpoint: unit behaviour, and end to end on digits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import neuralab
from neuralab.train.callbacks import EarlyStopping, MetricWatch


class FakeTrainer:
    """The part of the Trainer that EarlyStopping uses: its model, epoch, stop and restore."""

    def __init__(self) -> None:
        self.eval_model = nn.Linear(2, 2)
        self.epoch, self.should_stop, self.stop_reason = 0, False, ""
        self.restored_epoch: int | None = None

    def stop(self, reason: str, failed: bool = False) -> None:
        self.should_stop, self.stop_reason = True, reason

    def restore(self, weights: dict, epoch: int) -> None:
        self.eval_model.load_state_dict(weights)
        self.restored_epoch = epoch


def fake_trainer() -> FakeTrainer:
    return FakeTrainer()


def test_early_stopping_waits_patience_epochs_and_restores_the_best() -> None:
    trainer = fake_trainer()
    stopper = EarlyStopping("val_loss", patience=2)
    best = None
    for epoch, loss in enumerate([1.0, 0.9, 0.95, 0.96, 0.5], start=1):
        with torch.no_grad():
            trainer.eval_model.weight.fill_(epoch)  # weights name their epoch
        trainer.epoch = epoch
        stopper.on_epoch_end(trainer, {"epoch": epoch, "val_loss": loss})
        if epoch == 2:
            best = trainer.eval_model.weight.clone()
        if trainer.should_stop:
            break
    assert trainer.epoch == 4 and "did not improve for 2 epochs" in trainer.stop_reason
    assert "best 0.9 at epoch 2" in trainer.stop_reason
    stopper.on_fit_end(trainer)
    assert trainer.restored_epoch == 2
    assert torch.equal(trainer.eval_model.weight, best)


def test_accuracy_must_rise_loss_must_fall_by_more_than_min_delta() -> None:
    accuracy = MetricWatch("val_accuracy", min_delta=0.01)
    assert accuracy.update({"epoch": 1, "val_accuracy": 0.5})
    assert not accuracy.update({"epoch": 2, "val_accuracy": 0.505})
    assert accuracy.update({"epoch": 3, "val_accuracy": 0.52}) and accuracy.best_epoch == 3
    loss = MetricWatch("val_loss")
    assert loss.update({"epoch": 1, "val_loss": 1.0})
    assert not loss.update({"epoch": 2, "val_loss": 1.0})
    with pytest.raises(ValueError, match="set data.val_split"):
        loss.update({"epoch": 3, "val_loss": None, "train_loss": 0.3})


def test_early_stopping_state_round_trips() -> None:
    trainer = fake_trainer()
    stopper = EarlyStopping("val_loss", patience=3)
    stopper.on_epoch_end(trainer, {"epoch": 1, "val_loss": 0.7})
    stopper.on_epoch_end(trainer, {"epoch": 2, "val_loss": 0.8})
    copy = EarlyStopping("val_loss", patience=3)
    copy.load_state_dict(stopper.state_dict())
    assert (copy.waited, copy.watch.best, copy.watch.best_epoch) == (1, 0.7, 1)
    assert torch.equal(copy.best_weights["weight"], stopper.best_weights["weight"])


DIGITS = {"data": "digits", "model": "mlp", "epochs": 6, "batch_size": 64, "verbose": False}


def test_early_stopping_run_ends_with_the_best_epochs_weights(tmp_path: Path) -> None:
    """min_delta so large that no later epoch counts as better: the run stops after
    1 + patience epochs and its final checkpoint, best/ and metrics are epoch 1's."""
    pytest.importorskip("sklearn")
    overrides = [
        "data.val_split=0.2",
        "monitor.early_stopping=true",
        "monitor.patience=2",
        "monitor.min_delta=100",
        "train.threads=1",
    ]
    run = neuralab.train(**DIGITS, out=str(tmp_path / "run"), overrides=overrides)
    assert [row["epoch"] for row in run.history] == [1, 2, 3]
    final = load_file(tmp_path / "run" / "checkpoint" / "model.safetensors")
    best = load_file(tmp_path / "run" / "best" / "model.safetensors")
    assert all(torch.equal(final[name], best[name]) for name in best)
    best_meta = json.loads((tmp_path / "run" / "best" / "meta.json").read_text())
    assert best_meta["epoch"] == 1 and best_meta["best"]["metric"] == "val_loss"
    final_meta = json.loads((tmp_path / "run" / "checkpoint" / "meta.json").read_text())
    assert final_meta["weights_from_epoch"] == 1 and final_meta["epoch"] == 3
    assert neuralab.evaluate(run.run_dir)["accuracy"] == run.metrics["accuracy"]


def test_best_checkpoint_follows_the_metric_without_early_stopping(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    overrides = ["data.val_split=0.2", "monitor.metric=val_accuracy", "train.threads=1"]
    run = neuralab.train(**DIGITS, out=str(tmp_path / "run"), overrides=overrides)
    assert len(run.history) == 6  # no early stopping: every epoch ran
    best_epoch = max(run.history, key=lambda row: row["val_accuracy"])["epoch"]
    meta = json.loads((tmp_path / "run" / "best" / "meta.json").read_text())
    assert meta["epoch"] == best_epoch
    assert meta["best"]["value"] == max(row["val_accuracy"] for row in run.history)


def test_keep_epochs_holds_the_last_n_epochs_weights(tmp_path: Path) -> None:
    """keep_epochs=2 over 6 epochs: epochs 5 and 6 remain; epoch 6's snapshot equals the
    final checkpoint, epoch 5's differs from it, and a snapshot loads like a run."""
    pytest.importorskip("sklearn")
    overrides = ["monitor.keep_epochs=2", "train.threads=1"]
    run = neuralab.train(**DIGITS, out=str(tmp_path / "run"), overrides=overrides)
    assert len(run.history) == 6
    folders = sorted(p.name for p in (tmp_path / "run" / "epochs").iterdir())
    assert folders == ["epoch-0005", "epoch-0006"]
    final = load_file(tmp_path / "run" / "checkpoint" / "model.safetensors")
    last = load_file(tmp_path / "run" / "epochs" / "epoch-0006" / "model.safetensors")
    before = load_file(tmp_path / "run" / "epochs" / "epoch-0005" / "model.safetensors")
    assert all(torch.equal(final[name], last[name]) for name in final)
    assert not all(torch.equal(final[name], before[name]) for name in final)
    meta = json.loads((tmp_path / "run" / "epochs" / "epoch-0005" / "meta.json").read_text())
    assert meta["epoch"] == 5
    model = neuralab.load(tmp_path / "run" / "epochs" / "epoch-0005")
    assert len(model.classes) == 10


def test_early_stopping_without_validation_fails_before_writing(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    with pytest.raises(ValueError, match="no validation split"):
        neuralab.train(
            **DIGITS, out=str(tmp_path / "run"), overrides=["monitor.early_stopping=true"]
        )
    assert not (tmp_path / "run").exists()


def test_bar_progress_draws_steps_and_leaves_one_line_per_epoch(tmp_path: Path) -> None:
    """The rich bar on a (recorded) terminal: live status while training, then each epoch's
    summary line, the same text PlainProgress writes to log files."""
    pytest.importorskip("sklearn")
    from rich.console import Console

    from neuralab.train.callbacks import BarProgress

    console = Console(record=True, force_terminal=True, width=120)
    bar = BarProgress(console=console, refresh_per_second=1e6)  # refresh on every step
    neuralab.train(
        **{**DIGITS, "epochs": 2},
        out=str(tmp_path / "run"),
        overrides=["train.threads=1"],
        callbacks=[bar],
    )
    text = console.export_text()
    assert text.count("epoch   1/2 · train loss") == 1 and text.count("epoch   2/2 · train") == 1
    assert "examples/s" in text


def test_progress_modes(capsys: pytest.CaptureFixture) -> None:
    from neuralab.train.callbacks import BarProgress, PlainProgress, progress_callbacks

    assert progress_callbacks("none") == []
    assert isinstance(progress_callbacks("plain")[0], PlainProgress)
    assert isinstance(progress_callbacks("bar")[0], BarProgress)
    assert isinstance(progress_callbacks("auto")[0], PlainProgress)  # pytest's stdout: no TTY
    with pytest.raises(ValueError, match="valid: auto, bar, plain, none"):
        progress_callbacks("fancy")
