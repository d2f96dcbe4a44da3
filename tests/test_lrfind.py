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
from neuralab.run.lrfind import SMOOTHING, lr_range_test, steepest_descent
from neuralab.tasks.classification import Classification


def toy_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(256, 8, generator=generator)
    labels = (inputs[:, 0] > 0).long()
    return list(zip(inputs.split(32), labels.split(32), strict=True))


def test_range_test_leaves_the_model_unchanged_and_suggests_a_falling_rate() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = lr_range_test(
        model,
        lambda m: torch.optim.SGD(m.parameters(), lr=1.0, momentum=0.9),
        Classification(),
        toy_batches(),
        start=1e-5,
        end=100.0,
        steps=80,
    )
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training  # and its mode is its own
    assert result.lrs == sorted(result.lrs) and result.lrs[0] == pytest.approx(1e-5)
    assert len(result.lrs) < 80  # SGD at lr 100 diverges: the test stopped early
    # The suggestion is one of the rates tried, before the smoothed minimum, where the
    # smoothed loss falls (what steepest descent guarantees on any curve).
    at = result.lrs.index(result.suggestion)
    assert 0 < at < min(range(len(result.smoothed)), key=result.smoothed.__getitem__)
    assert result.smoothed[at + 1] < result.smoothed[at - 1]
    assert result.to_csv().splitlines()[0] == "step,lr,loss,smoothed_loss"


STEEPEST_LR = 1e-2  # where the designed loss curve below falls fastest
FALL_WIDTH = 0.25  # decades of learning rate over which it falls (tanh's scale)
STEPS_PER_DECADE = 100
# The smoothing (an exponential moving average, weight SMOOTHING per step) delays the curve
# by (1 - SMOOTHING) / SMOOTHING steps on average: 19 steps. Smoothing a symmetric bump in
# the slope with that exponential kernel moves its peak later by less than the mean delay.
MAX_LAG_DECADES = (1 - SMOOTHING) / SMOOTHING / STEPS_PER_DECADE


def test_suggestion_is_where_a_known_loss_curve_falls_fastest() -> None:
    """A loss that is a known function of the learning rate: 2 - tanh(decades past 1e-2 /
    0.25) (it falls fastest at 1e-2), rising steeply past lr 1 (divergence). The suggestion
    is 1e-2, delayed at most by the smoothing's lag, and the test stops after the blow-up."""
    optimizers = []

    def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
        optimizers.append(torch.optim.SGD(model.parameters(), lr=1.0))
        return optimizers[-1]

    def designed_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        lr = optimizers[-1].param_groups[0]["lr"]  # the rate this step trains with
        decades = math.log10(lr / STEEPEST_LR)
        value = 2 - math.tanh(decades / FALL_WIDTH) + 10 * max(0.0, lr - 1)
        return logits.sum() * 0 + value  # a graph to call backward() on; the value is known

    batch = (torch.zeros(1, 1), torch.zeros(1, dtype=torch.long))
    start, decades = 1e-6, 8
    result = lr_range_test(
        nn.Linear(1, 1), make_optimizer, Classification(designed_loss), [batch],
        start=start, end=start * 10**decades, steps=decades * STEPS_PER_DECADE + 1,
    )  # fmt: skip
    assert 1 < result.lrs[-1] < start * 10**decades  # stopped once the loss blew up
    lag = math.log10(result.suggestion / STEEPEST_LR)  # decades
    assert -1 / STEPS_PER_DECADE <= lag <= MAX_LAG_DECADES + 1 / STEPS_PER_DECADE, lag


def test_steepest_descent_picks_the_fastest_fall_before_the_minimum() -> None:
    lrs = [10.0**e for e in range(-6, 2)]
    smoothed = [2.0, 2.0, 1.9, 1.2, 0.9, 0.8, 3.0, 9.0]  # fastest fall around 1e-3
    assert steepest_descent(lrs, smoothed) == pytest.approx(1e-3)


def test_bad_arguments_and_immediate_divergence_are_explained() -> None:
    model = nn.Linear(8, 2)
    make = lambda m: torch.optim.SGD(m.parameters(), lr=1.0)  # noqa: E731
    with pytest.raises(ValueError, match="0 < start < end"):
        lr_range_test(model, make, Classification(), toy_batches(), start=1.0, end=0.1)
    with pytest.raises(ValueError, match="lower --start"):
        lr_range_test(model, make, Classification(), toy_batches(), start=1e12, end=1e20)


def test_cli_lr_find_writes_curve_table_and_suggestion(tmp_path: Path, capsys) -> None:
    pytest.importorskip("sklearn", reason="digits needs scikit-learn: pip install -e '.[test]'")
    out = tmp_path / "find"
    args = ["lr-find", "--data", "digits", "--model", "mlp", "--steps", "40", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    saved = json.loads((out / "lr-find.json").read_text())
    assert f"suggested learning rate {saved['suggestion']:.3g}" in printed
    assert math.isfinite(saved["suggestion"]) and saved["optimizer"] == "sgd"
    assert len((out / "lr-find.csv").read_text().splitlines()) == saved["steps"] + 1
    pytest.importorskip(
        "matplotlib", reason="the figure needs matplotlib: pip install -e '.[test]'"
    )
    assert (out / "lr-find.png").read_bytes().startswith(b"\x89PNG")
