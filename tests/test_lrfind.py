"""The learning-rate range test: it leaves the model untouched, stops on divergence and
suggests a rate on the falling part of the curve."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from neuralab.cli.main import main
from neuralab.run.lrfind import lr_range_test, steepest_descent


def toy_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(256, 8, generator=generator)
    labels = (inputs[:, 0] > 0).long()
    return list(zip(inputs.split(32), labels.split(32), strict=True))


def test_range_test_leaves_the_model_unchanged_and_suggests_a_sane_rate() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = lr_range_test(
        model,
        lambda m: torch.optim.SGD(m.parameters(), lr=1.0, momentum=0.9),
        nn.CrossEntropyLoss(),
        toy_batches(),
        start=1e-5,
        end=100.0,
        steps=80,
    )
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training  # and its mode is its own
    assert result.lrs == sorted(result.lrs) and result.lrs[0] == pytest.approx(1e-5)
    assert len(result.lrs) < 80  # SGD at lr 100 diverges: the test stopped early
    assert 1e-3 <= result.suggestion <= 10  # neither the flat start nor the blow-up
    assert result.to_csv().splitlines()[0] == "step,lr,loss,smoothed_loss"


def test_steepest_descent_picks_the_fastest_fall_before_the_minimum() -> None:
    lrs = [10.0**e for e in range(-6, 2)]
    smoothed = [2.0, 2.0, 1.9, 1.2, 0.9, 0.8, 3.0, 9.0]  # fastest fall around 1e-3
    assert steepest_descent(lrs, smoothed) == pytest.approx(1e-3)


def test_bad_arguments_and_immediate_divergence_are_explained() -> None:
    model = nn.Linear(8, 2)
    make = lambda m: torch.optim.SGD(m.parameters(), lr=1.0)  # noqa: E731
    with pytest.raises(ValueError, match="0 < start < end"):
        lr_range_test(model, make, nn.CrossEntropyLoss(), toy_batches(), start=1.0, end=0.1)
    with pytest.raises(ValueError, match="lower --start"):
        lr_range_test(model, make, nn.CrossEntropyLoss(), toy_batches(), start=1e12, end=1e20)


def test_cli_lr_find_writes_curve_table_and_suggestion(tmp_path: Path, capsys) -> None:
    pytest.importorskip("sklearn")
    out = tmp_path / "find"
    args = ["lr-find", "--data", "digits", "--model", "mlp", "--steps", "40", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    saved = json.loads((out / "lr-find.json").read_text())
    assert f"suggested learning rate {saved['suggestion']:.3g}" in printed
    assert math.isfinite(saved["suggestion"]) and saved["optimizer"] == "sgd"
    assert len((out / "lr-find.csv").read_text().splitlines()) == saved["steps"] + 1
    pytest.importorskip("matplotlib")
    assert (out / "lr-find.png").read_bytes().startswith(b"\x89PNG")
