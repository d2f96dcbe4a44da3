"""Optimizer and schedule tests: multipliers at known steps, registry errors, weight-decay
groups, and reference tests against plain torch.optim updates."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from neuralab.config import OptimConfig, ScheduleConfig
from neuralab.registry import UnknownNameError
from neuralab.train.optim import (
    OPTIMIZERS,
    SCHEDULES,
    build_optimizer,
    build_scheduler,
    parameter_groups,
)


def multiplier(name: str, steps_per_epoch: int, total_steps: int, **settings):
    config = ScheduleConfig(name=name, **settings)
    return SCHEDULES.get(name).factory(config, steps_per_epoch, total_steps)


def test_constant_is_one_everywhere() -> None:
    schedule = multiplier("constant", 10, 100)
    assert [schedule(step) for step in (0, 1, 50, 99, 1000)] == [1.0] * 5


def test_step_decays_at_the_epoch_boundary() -> None:
    schedule = multiplier("step", 10, 100, step_size=2, gamma=0.1)  # decay every 20 steps
    assert schedule(0) == 1.0
    assert schedule(19) == 1.0  # last step of epoch 2
    assert schedule(20) == pytest.approx(0.1)  # first step of epoch 3
    assert schedule(39) == pytest.approx(0.1)
    assert schedule(40) == pytest.approx(0.01)


def test_cosine_starts_at_one_and_ends_at_the_floor() -> None:
    schedule = multiplier("cosine", 10, 100, final_lr_fraction=0.1)
    assert schedule(0) == pytest.approx(1.0)
    assert schedule(50) == pytest.approx(0.55)  # halfway: floor + (1 - floor) / 2
    assert schedule(100) == pytest.approx(0.1)
    assert schedule(500) == pytest.approx(0.1)  # stays at the floor past the end
    values = [schedule(step) for step in range(101)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_linear_falls_from_one_to_the_floor() -> None:
    schedule = multiplier("linear", 10, 100, final_lr_fraction=0.1)
    assert schedule(0) == 1.0
    assert schedule(50) == pytest.approx(0.55)
    assert schedule(100) == pytest.approx(0.1) and schedule(120) == pytest.approx(0.1)


def test_onecycle_peaks_at_pct_start() -> None:
    schedule = multiplier("onecycle", 10, 100, pct_start=0.25, final_lr_fraction=0.0)
    assert schedule(0) == pytest.approx(0.1)  # starts at 10% of the peak
    assert schedule(12) == pytest.approx(0.1 + 0.9 * 12 / 25)
    assert schedule(25) == pytest.approx(1.0)
    assert schedule(100) == pytest.approx(0.0)
    values = [schedule(step) for step in range(101)]
    assert max(values) == values[25]
    assert all(a < b for a, b in zip(values[:25], values[1:26], strict=True))
    assert all(a > b for a, b in zip(values[25:], values[26:], strict=False))


@pytest.mark.parametrize("name", ["constant", "step", "cosine"])
def test_warmup_ramps_linearly_to_the_schedule(name: str) -> None:
    schedule = multiplier(name, 10, 100, warmup_epochs=0.5)  # 5 warmup steps
    assert [schedule(step) for step in range(5)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert schedule(5) == pytest.approx(1.0)


def test_cosine_warmup_longer_than_half_the_run_still_ramps_to_the_peak() -> None:
    schedule = multiplier("cosine", 10, 30, warmup_epochs=2)  # 20 of 30 steps warm up
    ramp = [schedule(step) for step in range(20)]
    assert ramp == pytest.approx([(step + 1) / 20 for step in range(20)])
    assert schedule(20) == pytest.approx(1.0)
    assert schedule(25) == pytest.approx(0.5)


def test_scheduler_sets_lr_per_optimizer_step() -> None:
    model = nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.4)
    config = ScheduleConfig(name="cosine")
    scheduler = build_scheduler(optimizer, config, steps_per_epoch=5, total_steps=10)
    reference = multiplier("cosine", 5, 10)
    for step in range(10):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(0.4 * reference(step))
        optimizer.step()
        scheduler.step()


def test_unknown_optimizer_lists_the_close_match() -> None:
    with pytest.raises(UnknownNameError) as error:
        build_optimizer(nn.Linear(2, 2), OptimConfig(name="adma"))
    assert "'adam'" in str(error.value)
    assert "unknown optimizer 'adma'" in str(error.value)


def test_unknown_schedule_lists_the_close_match() -> None:
    optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    with pytest.raises(UnknownNameError, match="did you mean 'cosine'"):
        build_scheduler(optimizer, ScheduleConfig(name="cosin"), 1, 1)


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 2))


def test_parameter_groups_decay_only_matrices() -> None:
    model = small_net()
    decay, no_decay = parameter_groups(model, weight_decay=0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[3].weight)}
    assert {id(p) for p in no_decay["params"]} == {
        id(model[0].bias),
        id(model[1].weight),
        id(model[1].bias),
        id(model[3].bias),
    }


def test_frozen_parameters_are_left_out() -> None:
    model = small_net()
    model[0].weight.requires_grad_(False)
    decay, _ = parameter_groups(model, 0.1)
    assert all(p is not model[0].weight for p in decay["params"])


def test_weight_decay_moves_only_matrices_when_gradients_are_zero() -> None:
    model = small_net()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = build_optimizer(model, OptimConfig(name="sgd", lr=0.5, weight_decay=0.1))
    for parameter in model.parameters():
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()
    for name, parameter in model.named_parameters():
        factor = 1 - 0.5 * 0.1 if parameter.ndim > 1 else 1.0
        torch.testing.assert_close(parameter.detach(), before[name] * factor, msg=name)


def reference_optimizer(name: str, groups: list[dict], config: OptimConfig):
    """The plain torch.optim equivalent of each registered optimizer."""
    if name == "sgd":
        return torch.optim.SGD(
            groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov
        )
    if name == "adam":
        return torch.optim.Adam(groups, lr=config.lr, betas=config.betas)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas)
    if name == "adagrad":
        return torch.optim.Adagrad(groups, lr=config.lr)
    return torch.optim.Adadelta(groups, lr=config.lr, rho=config.rho)


def test_every_optimizer_has_a_reference() -> None:
    # muon has no torch.optim twin (torch's Muon takes 2-D matrices only): see test_muon.py.
    assert OPTIMIZERS.names() == ["adadelta", "adagrad", "adam", "adamw", "muon", "sgd"]


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "adadelta", "adagrad"])
def test_steps_match_plain_torch_optim(name: str) -> None:
    config = OptimConfig(
        name=name, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01, betas=(0.8, 0.99)
    )
    ours, theirs = small_net(), small_net()
    optimizer = build_optimizer(ours, config)
    groups = [
        {"params": [p for p in theirs.parameters() if p.ndim > 1], "weight_decay": 0.01},
        {"params": [p for p in theirs.parameters() if p.ndim <= 1], "weight_decay": 0.0},
    ]
    reference = reference_optimizer(name, groups, config)
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):
        inputs = torch.randn(8, 4, generator=generator)
        targets = torch.randint(0, 2, (8,), generator=generator)
        for model, opt in ((ours, optimizer), (theirs, reference)):
            opt.zero_grad()
            nn.functional.cross_entropy(model(inputs), targets).backward()
            opt.step()
    for mine, plain in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(mine, plain)
    assert not torch.equal(ours[0].weight, small_net()[0].weight)  # the steps did move it


class TwoLayers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(3, 4)
        self.second = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x).relu())


def test_train_until_decays_its_parameters_to_zero_then_holds_them() -> None:
    """first.bias trains for 1 epoch (4 steps) at a rate falling 1, 3/4, 1/2, 1/4, then stays
    put while the rest keeps training at the constant rate."""
    torch.manual_seed(0)
    model = TwoLayers()
    config = OptimConfig(name="sgd", lr=0.1, momentum=0.9, train_until={"first.bias": 1})
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, ScheduleConfig(name="constant"), 4, 12)
    rates = []
    for step in range(12):
        rates.append([group["lr"] for group in optimizer.param_groups])
        if step == 4:
            frozen_bias = model.first.bias.detach().clone()
            moving_weight = model.first.weight.detach().clone()
        model(torch.randn(8, 3)).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
    # Groups: decayed matrices, undecayed biases (second.bias), then first.bias on its own.
    assert [len(group["params"]) for group in optimizer.param_groups] == [2, 1, 1]
    assert optimizer.param_groups[2]["params"][0] is model.first.bias
    assert [r[2] for r in rates[:6]] == pytest.approx([0.1, 0.075, 0.05, 0.025, 0.0, 0.0])
    assert all(r[0] == r[1] == pytest.approx(0.1) for r in rates)
    assert torch.equal(model.first.bias, frozen_bias)  # momentum is left, but the rate is zero
    assert not torch.equal(model.first.weight, moving_weight)


def test_train_until_a_module_takes_all_its_parameters() -> None:
    model = TwoLayers()
    config = OptimConfig(name="adamw", weight_decay=0.1, train_until={"second": 2})
    optimizer = build_optimizer(model, config)
    split = [g for g in optimizer.param_groups if "train_until_epochs" in g]
    # Each keeps the settings of the group it came from: the matrix is decayed, the bias not.
    assert [(g["params"], g["weight_decay"]) for g in split] == [
        ([model.second.weight], 0.1),
        ([model.second.bias], 0.0),
    ]
    assert all(g["train_until_epochs"] == 2 for g in split)


def test_train_until_an_unknown_name_lists_the_parameters() -> None:
    with pytest.raises(ValueError, match=r"'firts'.*first\.weight, first\.bias"):
        build_optimizer(TwoLayers(), OptimConfig(train_until={"firts": 1}))


def test_train_until_refuses_a_non_positive_horizon() -> None:
    with pytest.raises(ValueError, match="epochs > 0"):
        OptimConfig(train_until={"first.bias": 0})


def test_train_until_takes_dotted_names_nested_by_set() -> None:
    """`--set optim.train_until.whiten.bias=3` nests the dotted name; it is read back whole."""
    config = OptimConfig(train_until={"whiten": {"bias": 3}, "head": 1})
    assert config.train_until == {"whiten.bias": 3, "head": 1}
