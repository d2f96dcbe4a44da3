"""Pruning (`neuralab prune`, `neuralab.prune`, train/pruning.py): the sparsity asked is
reached, the masks survive the fine-tune, the pruned run is a normal run, and bad settings
are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import neuralab
from neuralab.cli.main import main
from neuralab.config import ConfigError
from neuralab.train.callbacks import Callback
from neuralab.train.pruning import (
    KeepPruned,
    check_sparsity,
    magnitude_prune,
    prunable_layers,
    sparsity_report,
)

pytest.importorskip("sklearn", reason="the digits dataset needs scikit-learn")

SEEDED = ["train.threads=1", "train.precision=fp32", "train.channels_last=off",
          "optim.momentum=0.9", "train.batch_size=64", "optim.weight_decay=0.01"]  # fmt: skip


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> neuralab.Run:
    """A small MLP trained on digits: the run the tests prune."""
    return neuralab.train(data="digits", model="mlp", epochs=2, lr=0.1, verbose=False,
                          out=str(tmp_path_factory.mktemp("source") / "run"),
                          overrides=SEEDED)  # fmt: skip


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Embedding(7, 4), nn.Flatten(), nn.Linear(12, 5), nn.BatchNorm1d(5),
                         nn.Linear(5, 3))  # fmt: skip


def zero_fraction(model: nn.Module) -> float:
    weights = [layer.weight for layer in prunable_layers(model).values()]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.8, 0.95])
def test_the_sparsity_asked_is_reached_globally(sparsity: float) -> None:
    model = small_net()
    biases = {name: p.clone() for name, p in model.named_parameters() if "weight" not in name}
    norm = model[3].weight.clone()
    masks = magnitude_prune(model, sparsity)
    assert zero_fraction(model) >= sparsity
    assert zero_fraction(model) < sparsity + 1 / 80  # 80 prunable weights: at most one more
    assert set(masks) == {"0.weight", "2.weight", "4.weight"}  # not the batch norm
    assert all(torch.equal(p, biases[n]) for n, p in model.named_parameters() if n in biases)
    assert torch.equal(model[3].weight, norm)
    assert set(model.state_dict()) == set(small_net().state_dict())  # plain names again


def test_the_smallest_magnitudes_go_first() -> None:
    model = small_net()
    everything = torch.cat([layer.weight.detach().abs().flatten()
                            for layer in prunable_layers(model).values()])  # fmt: skip
    magnitude_prune(model, 0.5)
    kept = torch.cat([layer.weight.detach().abs().flatten()
                      for layer in prunable_layers(model).values()])  # fmt: skip
    assert kept[kept > 0].min() >= everything.sort().values[len(everything) // 2 - 1]


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, float("nan"), "0.5"])
def test_bad_sparsity_is_a_config_error(bad) -> None:
    with pytest.raises(ConfigError, match="sparsity"):
        check_sparsity(bad)


def test_keep_pruned_holds_zeros_through_training_steps() -> None:
    model = small_net()
    masks = magnitude_prune(model, 0.6)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=0.1)
    callback = KeepPruned(masks)
    trainer = type("T", (), {"model": model, "eval_model": model})()
    for _ in range(5):
        optimizer.zero_grad()
        model(torch.randint(0, 7, (8, 3))).sum().backward()
        optimizer.step()
        callback.on_step_end(trainer)
    assert zero_fraction(model) >= 0.6


def test_prune_and_fine_tune_a_run(source, tmp_path: Path) -> None:
    out = tmp_path / "pruned"
    report = neuralab.prune(source.run_dir, sparsity=0.7, finetune=1, out=out, verbose=False,
                            overrides=["optim.lr=0.02"])  # fmt: skip
    assert report["total"]["sparsity"] >= 0.7  # after the fine-tune: the masks held
    saved = json.loads((out / "pruning.json").read_text())
    assert saved["source"] == str(source.run_dir) and saved["fine_tune_epochs"] == 1
    accuracy = saved["accuracy"]
    assert set(accuracy) == {"before", "pruned", "fine_tuned"}
    assert accuracy["before"] == pytest.approx(source.metrics["accuracy"])
    assert accuracy["fine_tuned"] > 0.5
    assert "no speed-up" in saved["latency"]["note"]
    predictor = neuralab.load(out)  # plain weight names: every verb loads it
    assert zero_fraction(predictor.model) >= 0.7
    assert neuralab.evaluate(out, save=False)["accuracy"] == pytest.approx(accuracy["fine_tuned"])
    assert zero_fraction(neuralab.load(out / "pruned").model) >= 0.7  # before the fine-tune


def test_cli_prune_without_fine_tune_writes_a_run_beside_the_source(source, capsys) -> None:
    assert main(["prune", str(source.run_dir), "--sparsity", "0.5"]) == 0
    out = source.run_dir.parent / f"{source.run_dir.name}-pruned-50"
    text = capsys.readouterr().out
    assert "no speed-up on a CPU" in text and "total" in text
    report = json.loads((out / "pruning.json").read_text())
    assert report["accuracy"]["fine_tuned"] is None and report["total"]["sparsity"] >= 0.5
    assert sparsity_report(neuralab.load(out).model)["total"] == report["total"]
    assert neuralab.load(out).predict([torch.zeros(1, 8, 8, dtype=torch.uint8)])
    # the same again: the run exists, nothing is overwritten
    assert main(["prune", str(source.run_dir), "--sparsity", "0.5"]) == 2
    assert main(["prune", str(source.run_dir), "--sparsity", "1"]) == 2
    assert "sparsity 1.0" in capsys.readouterr().err


class StopAfterFirstEpoch(Callback):
    """An interruption once the first epoch is saved (user callbacks run after the writer)."""

    def on_epoch_end(self, trainer, logs: dict) -> None:
        if logs["epoch"] == 1:
            raise KeyboardInterrupt


def test_a_resumed_fine_tune_keeps_the_zeros(source, tmp_path: Path) -> None:
    neuralab.prune(source.run_dir, sparsity=0.6, out=tmp_path / "start", verbose=False)
    out = tmp_path / "tuned"
    with pytest.raises(KeyboardInterrupt):
        neuralab.train(data="digits", model="mlp", epochs=2, lr=0.1, verbose=False,
                       out=str(out), init_from=tmp_path / "start",
                       callbacks=[StopAfterFirstEpoch()],
                       overrides=[*SEEDED, "train.keep_zeros=true"])  # fmt: skip
    assert zero_fraction(neuralab.load(out).model) >= 0.6
    run = neuralab.resume(out, verbose=False)  # its config.yaml says keep_zeros
    assert run.metrics["epochs"] == 2
    assert zero_fraction(neuralab.load(out).model) >= 0.6
