"""Optimizer and schedule tests: multipliers at known steps, registry errors (unknown names and
settings a factory does not take), weight-decay groups, reference tests against plain
torch.optim updates, and every shipped recipe's optimizer and schedule built."""

from __future__ import annotations

import pytest
import torch
import yaml
from torch import nn

from neuralab.config import (
    OptimConfig,
    RunConfig,
    ScheduleConfig,
    dump_config,
    explicit_fields,
    recipe_names,
    resolve_config,
)
from neuralab.models import model_input
from neuralab.registry import REQUIRED, UnknownArgumentError, UnknownNameError
from neuralab.run import build
from neuralab.train.optim import (
    OPTIMIZERS,
    SCHEDULES,
    make_optimizer,
    make_scheduler,
    parameter_groups,
)


def multiplier(name: str, steps_per_epoch: int, total_steps: int, **settings):
    return SCHEDULES.build(name, steps_per_epoch, total_steps, **settings)


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
    scheduler = make_scheduler(optimizer, "cosine", steps_per_epoch=5, total_steps=10)
    reference = multiplier("cosine", 5, 10)
    for step in range(10):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(0.4 * reference(step))
        optimizer.step()
        scheduler.step()


def test_unknown_optimizer_lists_the_close_match() -> None:
    with pytest.raises(UnknownNameError) as error:
        make_optimizer(nn.Linear(2, 2), "adma")
    assert "'adam'" in str(error.value)
    assert "unknown optimizer 'adma'" in str(error.value)


def test_unknown_schedule_lists_the_close_match() -> None:
    optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    with pytest.raises(UnknownNameError, match="did you mean 'cosine'"):
        make_scheduler(optimizer, "cosin", 1, 1)


@pytest.mark.parametrize(
    ("name", "setting", "valid"),
    [
        ("adam", {"momentum": 0.9}, "lr=0.01, betas=(0.9, 0.999), weight_decay=0.0"),
        ("sgd", {"rho": 0.5}, "lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0"),
        ("adagrad", {"nesterov": True}, "lr=0.01, weight_decay=0.0"),
        ("sgd", {"other_lr": 0.5}, "lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0"),
    ],
)
def test_a_setting_the_optimizer_does_not_take_is_an_error(
    name: str, setting: dict, valid: str
) -> None:
    with pytest.raises(UnknownArgumentError) as error:
        make_optimizer(nn.Linear(2, 2), name, **setting)
    (argument,) = setting
    assert str(error.value).startswith(f"optimizer {name!r} takes no argument {argument!r}")
    assert str(error.value).endswith(f"Valid arguments: {valid}")
    assert (error.value.kind, error.value.entry, error.value.argument) == (
        "optimizer",
        name,
        argument,
    )


def test_a_mistyped_setting_suggests_the_close_one() -> None:
    with pytest.raises(UnknownArgumentError, match="'momentun'; did you mean 'momentum'"):
        make_optimizer(nn.Linear(2, 2), "sgd", momentun=0.9)


def test_a_setting_the_schedule_does_not_take_is_an_error() -> None:
    optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    with pytest.raises(UnknownArgumentError, match="schedule 'onecycle' takes no argument"):
        make_scheduler(optimizer, "onecycle", 10, 100, warmup_epochs=1.0)
    with pytest.raises(UnknownArgumentError, match="schedule 'constant' takes no argument 'gamma'"):
        make_scheduler(optimizer, "constant", 10, 100, gamma=0.5)


def test_the_run_builder_passes_only_the_fields_a_config_sets() -> None:
    """run/build.py hands the optimizer and schedule the fields set explicitly:
    `optim.momentum=0.9` with adam is an error, not ignored."""
    model = nn.Linear(2, 2)
    with pytest.raises(UnknownArgumentError, match="optimizer 'adam' takes no argument 'momentum'"):
        build.build_optimizer(RunConfig(optim=OptimConfig(name="adam", momentum=0.9)), model)
    optimizer = build.build_optimizer(RunConfig(optim=OptimConfig(name="adam", lr=0.003)), model)
    assert optimizer.defaults["lr"] == 0.003 and optimizer.defaults["betas"] == (0.9, 0.999)
    onecycle = RunConfig(schedule=ScheduleConfig(name="onecycle", warmup_epochs=1))
    with pytest.raises(UnknownArgumentError, match="schedule 'onecycle' takes no argument"):
        build.build_schedule(onecycle, optimizer, 10)


@pytest.mark.parametrize(
    ("registry", "section"), [(OPTIMIZERS, OptimConfig), (SCHEDULES, ScheduleConfig)]
)
def test_factory_defaults_are_the_config_defaults(registry, section) -> None:
    """Every setting a factory takes is a config field with the same default, so a recipe that
    leaves a field unset trains exactly as when every factory read the whole config."""
    fields = section.model_fields
    for entry in registry:
        for argument in entry.arguments():
            where = f"{registry.kind} {entry.name!r}: {argument.name}"
            assert argument.name in fields, where
            assert argument.default is not REQUIRED, where
            assert argument.default == fields[argument.name].get_default(), where


def test_explicit_fields_are_the_ones_set_to_a_non_default_value() -> None:
    config = OptimConfig(name="adam", lr=0.003, momentum=0.0)
    assert explicit_fields(config) == {"name": "adam", "lr": 0.003}
    config.momentum = 0.9  # assignment counts as setting
    assert explicit_fields(config) == {"name": "adam", "lr": 0.003, "momentum": 0.9}
    assert explicit_fields(OptimConfig()) == {}


def test_a_run_directory_config_builds_again() -> None:
    """config.yaml holds every field (adam's unused momentum: 0.0 included): resuming from it
    builds the same optimizer instead of tripping over the fields adam does not take."""
    written = resolve_config("imdb-gru")
    read_back = RunConfig.model_validate(yaml.safe_load(dump_config(written)))
    assert "momentum" in read_back.optim.model_fields_set  # every field is set in the file
    assert explicit_fields(read_back.optim) == explicit_fields(written.optim)
    optimizer = build.build_optimizer(read_back, nn.Linear(2, 2))
    assert type(optimizer) is torch.optim.Adam and optimizer.defaults["lr"] == 0.003


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
    optimizer = make_optimizer(model, "sgd", lr=0.5, weight_decay=0.1)
    for parameter in model.parameters():
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()
    for name, parameter in model.named_parameters():
        factor = 1 - 0.5 * 0.1 if parameter.ndim > 1 else 1.0
        torch.testing.assert_close(parameter.detach(), before[name] * factor, msg=name)


# Settings other than the defaults for each optimizer (weight decay is set for all of them).
SETTINGS = {
    "sgd": {"lr": 0.05, "momentum": 0.9, "nesterov": True},
    "adam": {"lr": 0.05, "betas": (0.8, 0.99)},
    "adamw": {"lr": 0.05, "betas": (0.8, 0.99)},
    "adagrad": {"lr": 0.05},
    "adadelta": {"lr": 0.05, "rho": 0.8},
}
REFERENCES = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "adagrad": torch.optim.Adagrad,
    "adadelta": torch.optim.Adadelta,
}


def test_every_optimizer_has_a_reference() -> None:
    # muon has no torch.optim twin (torch's Muon takes 2-D matrices only): see test_muon.py.
    assert OPTIMIZERS.names() == ["adadelta", "adagrad", "adam", "adamw", "muon", "sgd"]


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_steps_match_plain_torch_optim(name: str) -> None:
    ours, theirs = small_net(), small_net()
    optimizer = make_optimizer(ours, name, weight_decay=0.01, **SETTINGS[name])
    groups = [
        {"params": [p for p in theirs.parameters() if p.ndim > 1], "weight_decay": 0.01},
        {"params": [p for p in theirs.parameters() if p.ndim <= 1], "weight_decay": 0.0},
    ]
    reference = REFERENCES[name](groups, **SETTINGS[name])
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
    optimizer = make_optimizer(model, "sgd", {"first.bias": 1}, lr=0.1, momentum=0.9)
    scheduler = make_scheduler(optimizer, "constant", 4, 12)
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
    optimizer = make_optimizer(model, "adamw", {"second": 2}, weight_decay=0.1)
    split = [g for g in optimizer.param_groups if "train_until_epochs" in g]
    # Each keeps the settings of the group it came from: the matrix is decayed, the bias not.
    assert [(g["params"], g["weight_decay"]) for g in split] == [
        ([model.second.weight], 0.1),
        ([model.second.bias], 0.0),
    ]
    assert all(g["train_until_epochs"] == 2 for g in split)


def test_train_until_an_unknown_name_lists_the_parameters() -> None:
    with pytest.raises(ValueError, match=r"'firts'.*first\.weight, first\.bias"):
        make_optimizer(TwoLayers(), "sgd", train_until={"firts": 1})


def test_train_until_refuses_a_non_positive_horizon() -> None:
    with pytest.raises(ValueError, match="epochs > 0"):
        OptimConfig(train_until={"first.bias": 0})


def test_train_until_takes_dotted_names_nested_by_set() -> None:
    """`--set optim.train_until.whiten.bias=3` nests the dotted name; it is read back whole."""
    config = OptimConfig(train_until={"whiten": {"bias": 3}, "head": 1})
    assert config.train_until == {"whiten.bias": 3, "head": 1}


def tiny_model(kind: str, train_until: dict[str, float]) -> nn.Module:
    """A few parameters of the recipe's kind: a convolution (4-D filters, which muon needs) for
    images, an embedding for text, a linear head, and a layer at each `train_until` name."""
    model = nn.Module()
    model.features = nn.Conv2d(3, 4, 3) if kind == "image" else nn.Embedding(10, 4)
    model.head = nn.Linear(4, 2)
    for name in train_until:
        *parents, last = name.split(".")
        if last not in ("weight", "bias"):  # a module prefix: the layer itself
            parents.append(last)
        owner = model
        for part in parents[:-1]:
            if not hasattr(owner, part):
                owner.add_module(part, nn.Module())
            owner = getattr(owner, part)
        owner.add_module(parents[-1], nn.Conv2d(4, 4, 1))
    return model


@pytest.mark.parametrize("recipe", recipe_names())
def test_every_recipe_builds_its_optimizer_and_schedule(recipe: str) -> None:
    """Each shipped recipe's settings are all taken by its optimizer and schedule, arrive in
    the optimizer (lr, momentum), and give finite positive learning rates."""
    config = resolve_config(recipe)
    kind = model_input(config.model.name)
    settings = {
        key: value
        for key, value in explicit_fields(config.optim).items()
        if key not in ("name", "train_until")
    }
    model = tiny_model(kind, config.optim.train_until)
    optimizer = make_optimizer(model, config.optim.name, config.optim.train_until, **settings)
    first = optimizer.param_groups[0]
    assert first["lr"] == config.optim.lr
    if "momentum" in settings:
        assert first["momentum"] == config.optim.momentum
    schedule = {k: v for k, v in explicit_fields(config.schedule).items() if k != "name"}
    scheduler = make_scheduler(optimizer, config.schedule.name, 10, 100, **schedule)
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    rates = [group["lr"] for group in optimizer.param_groups]
    assert all(0.0 < rate < float("inf") for rate in rates), rates
