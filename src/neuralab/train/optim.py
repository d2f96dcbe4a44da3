"""Optimizer and learning-rate schedule registries.

Schedules are per-step multipliers of the peak learning rate, wrapped in a LambdaLR, so that
every schedule steps once per optimizer step and resumes from its step count alone.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from neuralab.registry import InvalidArgumentError, Registry
from neuralab.train.muon import Muon

OPTIMIZERS = Registry("optimizer", supplied=("model",))
SCHEDULES = Registry("schedule", supplied=("steps_per_epoch", "total_steps"))


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay weights of conv/linear layers only; biases and norm parameters are not decayed."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def fused_kwargs(model: nn.Module) -> dict:
    """`foreach` batches the per-parameter update into a few kernels (faster on CPU and GPU)."""
    return {"foreach": True}


# Each factory declares exactly the settings it takes, with the defaults of config.py's
# OptimConfig (tests/test_optim.py checks they agree), so a setting an optimizer does not take
# is an error (Registry.check) instead of being silently ignored.


@OPTIMIZERS.register("sgd", summary="SGD with optional momentum / Nesterov")
def sgd(
    model: nn.Module,
    *,
    lr: float = 0.01,
    momentum: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        parameter_groups(model, weight_decay),
        lr=lr,
        momentum=momentum,
        nesterov=nesterov,
        **fused_kwargs(model),
    )


@OPTIMIZERS.register("adam", summary="Adam (L2 weight decay added to the gradient)")
def adam(
    model: nn.Module,
    *,
    lr: float = 0.01,
    betas: tuple[float, float] = (0.9, 0.999),
    weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    return torch.optim.Adam(
        parameter_groups(model, weight_decay), lr=lr, betas=betas, **fused_kwargs(model)
    )


@OPTIMIZERS.register("adamw", summary="AdamW (decoupled weight decay)")
def adamw(
    model: nn.Module,
    *,
    lr: float = 0.01,
    betas: tuple[float, float] = (0.9, 0.999),
    weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        parameter_groups(model, weight_decay), lr=lr, betas=betas, **fused_kwargs(model)
    )


@OPTIMIZERS.register(
    "adagrad", summary="Adagrad (per-weight step sizes; takes sparse embedding gradients)"
)
def adagrad(
    model: nn.Module, *, lr: float = 0.01, weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    """Adagrad, the classic optimizer for sparse text features: with an embedding's sparse
    gradients (e.g. `ngram` with sparse=True) it updates only the rows a batch used."""
    # torch warns once that it skips sparse-tensor checks; they are for hand-built tensors.
    warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")
    return torch.optim.Adagrad(parameter_groups(model, weight_decay), lr=lr, **fused_kwargs(model))


@OPTIMIZERS.register("adadelta", summary="Adadelta (the official PyTorch MNIST example's choice)")
def adadelta(
    model: nn.Module, *, lr: float = 0.01, rho: float = 0.9, weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    return torch.optim.Adadelta(
        parameter_groups(model, weight_decay), lr=lr, rho=rho, **fused_kwargs(model)
    )


@OPTIMIZERS.register(
    "muon", summary="Muon for conv filters (orthogonalised momentum), Nesterov SGD for the rest"
)
def muon(
    model: nn.Module,
    *,
    lr: float = 0.01,
    momentum: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    other_lr: float | None = None,
    other_momentum: float | None = None,
) -> torch.optim.Optimizer:
    """Convolution filters (4-D weights) take Muon steps of `lr` with `momentum`; everything
    else (biases, norms, the classifier head) takes SGD steps of `other_lr` with
    `other_momentum` and `weight_decay`, as in airbench94_muon."""
    trained = [p for p in model.parameters() if p.requires_grad]
    filters = [p for p in trained if p.ndim == 4]
    if not filters:
        raise InvalidArgumentError(
            f"optim.name=muon orthogonalises convolution filters, and {type(model).__name__} "
            "has none: use sgd or adamw for this model"
        )
    others = [p for p in trained if p.ndim != 4]
    groups = [{"params": filters, "orthogonalize": True, "weight_decay": 0.0}]
    if others:
        # Unset other_* fall back to Muon's defaults, i.e. lr / momentum.
        own = {"lr": other_lr, "momentum": other_momentum}
        settings = {key: value for key, value in own.items() if value is not None}
        groups.append({"params": others, "weight_decay": weight_decay, **settings})
    return Muon(groups, lr=lr, momentum=momentum, nesterov=nesterov)


def make_optimizer(
    model: nn.Module, name: str, train_until: dict[str, float] | None = None, **settings: Any
) -> torch.optim.Optimizer:
    """The registered optimizer `name` over `model`'s trainable parameters.

    Args:
        model: the model whose parameters it trains (biases and norms are not decayed).
        name: a registered optimizer (`OPTIMIZERS.names()`).
        train_until: {parameter name or module prefix: epochs}; those parameters get groups of
            their own that `make_scheduler` decays linearly to zero over that many epochs.
        settings: the optimizer's own settings (lr, momentum, ...); one it does not take
            raises UnknownArgumentError naming the valid ones.

    Example:
        >>> make_optimizer(nn.Linear(2, 2), "sgd", lr=0.1, momentum=0.9).defaults["momentum"]
        0.9
    """
    optimizer = OPTIMIZERS.build(name, model, **settings)
    for prefix, epochs in (train_until or {}).items():
        split_off_group(optimizer, model, prefix, epochs)
    return optimizer


def split_off_group(
    optimizer: torch.optim.Optimizer, model: nn.Module, prefix: str, epochs: float
) -> None:
    """Move the parameters named `prefix` (or inside the module `prefix`) into groups of their
    own, with the settings of the groups they came from plus `train_until_epochs`, which
    `make_scheduler` reads. Call before the first step (no optimizer state yet)."""
    named = dict(model.named_parameters())
    chosen = {id(p) for name, p in named.items() if name == prefix or name.startswith(prefix + ".")}
    if not chosen:
        close = ", ".join(list(named)[:8])
        raise InvalidArgumentError(
            f"optim.train_until: no parameter of {type(model).__name__} is named {prefix!r} or "
            f"lies inside it (its parameters: {close}{', …' if len(named) > 8 else ''})"
        )
    kept, moved = [], []
    for group in optimizer.param_groups:
        mine = [p for p in group["params"] if id(p) in chosen]
        rest = [p for p in group["params"] if id(p) not in chosen]
        if mine:
            settings = {k: v for k, v in group.items() if k != "params"}
            moved.append({**settings, "params": mine, "train_until_epochs": epochs})
        if rest:
            kept.append({**group, "params": rest})
    if not moved:
        raise InvalidArgumentError(
            f"optim.train_until: {prefix!r} names parameters that {type(optimizer).__name__} "
            "does not train (frozen ones?)"
        )
    optimizer.param_groups[:] = kept
    for group in moved:
        optimizer.add_param_group(group)


def regroup(
    optimizer: torch.optim.Optimizer,
    model: nn.Module,
    factors: dict[str, float],
    starts: dict[str, float],
) -> None:
    """Split every group by (learning-rate factor, start epoch) per parameter name: the
    parameters named in `factors` get their group's lr × factor, those in `starts` a
    `start_epoch` before which `make_scheduler` keeps their rate at zero. Groups starting at
    once with the largest factor come first (the trainer logs the first group's rate).
    Call before the first step (no optimizer state yet)."""
    names = {id(p): n for n, p in model.named_parameters()}
    split: dict[tuple[float, float, int], dict] = {}
    for position, group in enumerate(optimizer.param_groups):
        for param in group["params"]:
            name = names.get(id(param), "")
            factor, start = factors.get(name, 1.0), starts.get(name, 0.0)
            key = (start, -factor, position)
            if key not in split:
                settings = {k: v for k, v in group.items() if k != "params"}
                split[key] = {**settings, "params": [], "lr": group["lr"] * factor}
                if start:
                    split[key]["start_epoch"] = start
            split[key]["params"].append(param)
    optimizer.param_groups[:] = []
    for key in sorted(split):
        optimizer.add_param_group(split[key])


Multiplier = Callable[[int], float]

# Schedule factories map (steps_per_epoch, total_steps, settings) to a per-step multiplier of
# the peak learning rate; their settings' defaults are config.py ScheduleConfig's.


@SCHEDULES.register("constant", summary="constant learning rate (after optional warmup)")
def constant(steps_per_epoch: int, total_steps: int, *, warmup_epochs: float = 0.0) -> Multiplier:
    return with_warmup(lambda step: 1.0, warmup_epochs, steps_per_epoch)


@SCHEDULES.register("step", summary="multiply by gamma every step_size epochs")
def step_decay(
    steps_per_epoch: int,
    total_steps: int,
    *,
    warmup_epochs: float = 0.0,
    step_size: int = 1,
    gamma: float = 0.1,
) -> Multiplier:
    def multiplier(step: int) -> float:
        return gamma ** (step // (step_size * steps_per_epoch))

    return with_warmup(multiplier, warmup_epochs, steps_per_epoch)


@SCHEDULES.register("cosine", summary="linear warmup, then cosine decay to final_lr_fraction")
def cosine(
    steps_per_epoch: int,
    total_steps: int,
    *,
    warmup_epochs: float = 0.0,
    final_lr_fraction: float = 0.0,
) -> Multiplier:
    warmup = round(warmup_epochs * steps_per_epoch)
    floor = final_lr_fraction

    def multiplier(step: int) -> float:
        # 0 during warmup (which with_warmup scales), 1 at the last step and after.
        progress = min(1.0, max(0.0, (step - warmup) / max(1, total_steps - warmup)))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return with_warmup(multiplier, warmup_epochs, steps_per_epoch)


@SCHEDULES.register("linear", summary="linear decay to final_lr_fraction (after optional warmup)")
def linear(
    steps_per_epoch: int,
    total_steps: int,
    *,
    warmup_epochs: float = 0.0,
    final_lr_fraction: float = 0.0,
) -> Multiplier:
    floor = final_lr_fraction

    def multiplier(step: int) -> float:
        return floor + (1.0 - floor) * max(0.0, 1.0 - step / max(1, total_steps))

    return with_warmup(multiplier, warmup_epochs, steps_per_epoch)


@SCHEDULES.register("onecycle", summary="linear rise for pct_start of training, linear fall")
def onecycle(
    steps_per_epoch: int,
    total_steps: int,
    *,
    pct_start: float = 0.25,
    final_lr_fraction: float = 0.0,
) -> Multiplier:
    peak = max(1, round(pct_start * total_steps))
    start, floor = 0.1, final_lr_fraction  # start at 10% of peak (a common choice)

    def multiplier(step: int) -> float:
        if step < peak:
            return start + (1.0 - start) * step / peak
        return max(floor, 1.0 - (1.0 - floor) * (step - peak) / max(1, total_steps - peak))

    return multiplier


def with_warmup(schedule: Multiplier, warmup_epochs: float, steps_per_epoch: int) -> Multiplier:
    """Scale the first warmup_epochs of steps linearly from ~0 up to the schedule."""
    warmup = round(warmup_epochs * steps_per_epoch)
    if warmup == 0:
        return schedule
    return lambda step: schedule(step) * min(1.0, (step + 1) / warmup)


def make_scheduler(
    optimizer: torch.optim.Optimizer,
    name: str,
    steps_per_epoch: int,
    total_steps: int,
    **settings: Any,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step LambdaLR for the registered schedule `name`; groups split off by
    `make_optimizer(train_until=...)` instead decay linearly to zero over their own epochs,
    and then stay at zero; groups with a `start_epoch` (`regroup`) stay at zero until then
    and follow the schedule over the steps left.

    Args:
        optimizer: its groups' learning rates are the peaks the schedule multiplies.
        name: a registered schedule (`SCHEDULES.names()`).
        steps_per_epoch, total_steps: optimizer steps per epoch and in the whole run.
        settings: the schedule's own settings (warmup_epochs, gamma, ...); one it does not
            take raises UnknownArgumentError naming the valid ones.
    """
    multiplier = SCHEDULES.build(name, steps_per_epoch, total_steps, **settings)
    multipliers = []
    for group in optimizer.param_groups:
        epochs, start = group.get("train_until_epochs"), group.get("start_epoch")
        if epochs is not None:
            multipliers.append(linear_to_zero(max(1, round(epochs * steps_per_epoch))))
        elif start:
            first = min(total_steps - 1, round(start * steps_per_epoch))
            later = SCHEDULES.build(name, steps_per_epoch, total_steps - first, **settings)
            multipliers.append(starting_at(first, later))
        else:
            multipliers.append(multiplier)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, multipliers)


def starting_at(first: int, schedule: Multiplier) -> Multiplier:
    """Zero for the steps before `first`, then `schedule` counted from there (a group that
    starts training later, e.g. the body after `train.fine_tune_epochs`)."""
    return lambda step: 0.0 if step < first else schedule(step - first)


def linear_to_zero(steps: int) -> Multiplier:
    return lambda step: max(0.0, 1.0 - step / steps)
