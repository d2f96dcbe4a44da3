"""checkpoint/sharing.py: identical files linked once, finished runs without resume state."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import neuralab
from neuralab.checkpoint.format import load_checkpoint, save_checkpoint, verify_manifest
from neuralab.checkpoint.sharing import (
    describe_bytes,
    drop_resume_state,
    folder_bytes,
    share_identical_files,
)


def saved(folder: Path, weight: float, with_state: bool = True) -> Path:
    model = torch.nn.Linear(64, 64)
    with torch.no_grad():
        model.weight.fill_(weight)
        model.bias.fill_(weight)
    state = {"step": 3, "moments": torch.ones(64, 64)} if with_state else None
    return save_checkpoint(folder, model, {"model": {"name": "mlp"}}, state)


def test_dropping_resume_state_keeps_a_verified_checkpoint(tmp_path: Path) -> None:
    folder = saved(tmp_path / "checkpoint", 1.0)
    weights_before = load_checkpoint(folder)[0]
    size = (folder / "training.safetensors").stat().st_size
    assert drop_resume_state(folder) >= size
    assert not (folder / "training.safetensors").exists()
    assert not (folder / "training.json").exists()
    verify_manifest(folder)  # every listed file present with its digest
    weights_after = load_checkpoint(folder)[0]
    assert torch.equal(weights_after["weight"], weights_before["weight"])
    assert drop_resume_state(folder) == 0  # nothing left to drop


def test_identical_files_become_one_and_different_ones_stay(tmp_path: Path) -> None:
    first = saved(tmp_path / "checkpoint", 1.0)
    same = saved(tmp_path / "best", 1.0, with_state=False)
    other = saved(tmp_path / "other", 2.0, with_state=False)
    weights = (first / "model.safetensors").stat().st_size
    before = folder_bytes(tmp_path)
    assert share_identical_files(first, same) >= weights  # meta.json is the same too
    assert os.path.samefile(first / "model.safetensors", same / "model.safetensors")
    assert share_identical_files(first, other) < weights  # only the same meta.json
    assert not os.path.samefile(first / "model.safetensors", other / "model.safetensors")
    assert folder_bytes(tmp_path) <= before - weights  # a linked file counts once
    verify_manifest(same)
    # The checkpoint moves on (a new folder is renamed into place): best keeps its bytes.
    saved(tmp_path / "checkpoint", 3.0)
    assert load_checkpoint(same)[0]["weight"].eq(1.0).all()


def test_a_finished_run_keeps_no_resume_state_and_best_shares_the_last_weights(
    tmp_path: Path,
) -> None:
    pytest.importorskip("sklearn")
    run = neuralab.train(data="digits", model="mlp", epochs=2, batch_size=64,
                         out=str(tmp_path / "run"), verbose=False,
                         overrides=["data.val_split=0.2", "train.threads=1",
                                    "train.seed=0"])  # fmt: skip
    checkpoint, best = run.run_dir / "checkpoint", run.run_dir / "best"
    assert not (checkpoint / "training.safetensors").exists()
    verify_manifest(checkpoint)
    neuralab.load(run.run_dir)  # every verb still loads it
    history = run.history
    if history[-1]["val_accuracy"] > max(h["val_accuracy"] for h in history[:-1]):
        assert os.path.samefile(checkpoint / "model.safetensors", best / "model.safetensors")
    else:
        assert not os.path.samefile(checkpoint / "model.safetensors", best / "model.safetensors")


def test_sizes_read_in_decimal_units() -> None:
    assert describe_bytes(999) == "999 B"
    assert describe_bytes(12_040_000) == "12.0 MB"
    assert describe_bytes(2_500_000_000) == "2.5 GB"
