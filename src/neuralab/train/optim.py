"""Optimizer and learning-rate schedule registries.

Schedules are per-step multipliers of the peak learning rate, wrapped in a LambdaLR, so that
every schedule steps once per optimizer step and resumes from its step count alone.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
from torch import nn

from neuralab.config import OptimConfig, ScheduleConfig
from neuralab.registry import Registry
from neuralab.train.muon import Muon

OPTIMIZERS = Registry("optimizer")
SCHEDULES = Registry("schedule")


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


@OPTIMIZERS.register("sgd", summary="SGD with optional momentum / Nesterov")
def sgd(model: nn.Module, config: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        parameter_groups(model, config.weight_decay),
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov,
        **fused_kwargs(model),
    )


@OPTIMIZERS.register("adam", summary="Adam (L2 weight decay added to the gradient)")
def adam(model: nn.Module, config: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(
        parameter_groups(model, config.weight_decay),
        lr=config.lr,
        betas=config.betas,
        **fused_kwargs(model),
    )


@OPTIMIZERS.register("adamw", summary="AdamW (decoupled weight decay)")
def adamw(model: nn.Module, config: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        parameter_groups(model, config.weight_decay),
        lr=config.lr,
        betas=config.betas,
        **fused_kwargs(model),
    )


@OPTIMIZERS.register(
    "adagrad", summary="Adagrad (per-weight step sizes; takes sparse embedding gradients)"
)
def adagrad(model: nn.Module, config: OptimConfig) -> torch.optim.Optimizer:
    """Adagrad, the classic optimizer for sparse text features: with an embedding's sparse
    gradients (e.g. `ngram` with sparse=True) it updates only the rows a batch used."""
    # torch warns once that it skips sparse-tensor checks; they are for hand-built tensors.
    warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")
    return torch.optim.Adagrad(
        parameter_groups(model, config.weight_decay), lr=config.lr, **fused_kwargs(model)
    )


@OPTIMIZERS.register("adadelta", summary="Adadelta (the official PyTorch MNIST example's choice)")
def adadelta(model: nn.Module, config: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.Adadelta(
        parameter_groups(model, config.weight_decay),
        lr=config.lr,
        rho=config.rho,
        **fused_kwargs(model),
    )


@OPTIMIZERS.register(
    "muon", summary="Muon for conv filters (orthogonalised momentum), Nesterov SGD for the rest"
)
def muon(model: nn.Module, config: OptimConfig) -> torch.optim.Optimizer:
    """Convolution filters (4-D weights) take Muon steps of `lr` with `momentum`; everything
    else (biases, norms, the classifier head) takes SGD steps of `other_lr` with
    `other_momentum` and `weight_decay`, as in airbench94_muon."""
    trained = [p for p in model.parameters() if p.requires_grad]
    filters = [p for p in trained if p.ndim == 4]
    if not filters:
        raise ValueError(
            f"optim.name=muon orthogonalises convolution filters, and {type(model).__name__} "
            "has none: use sgd or adamw for this model"
        )
    others = [p for p in trained if p.ndim != 4]
    groups = [{"params": filters, "orthogonalize": True, "weight_decay": 0.0}]
    if others:
        # Unset other_* fall back to Muon's defaults, i.e. lr / momentum.
        own = {"lr": config.other_lr, "momentum": config.other_momentum}
        settings = {key: value for key, value in own.items() if value is not None}
        groups.append({"params": others, "weight_decay": config.weight_decay, **settings})
    return Muon(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov)


def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.Optimizer:
    optimizer = OPTIMIZERS.get(config.name).factory(model, config)
    for prefix, epochs in config.train_until.items():
        split_off_group(optimizer, model, prefix, epochs)
    return optimizer


def split_off_group(
    optimizer: torch.optim.Optimizer, model: nn.Module, prefix: str, epochs: float
) -> None:
    """Move the parameters named `prefix` (or inside the module `prefix`) into groups of their
    own, with the settings of the groups they came from plus `train_until_epochs`, which
    `build_scheduler` reads. Call before the first step (no optimizer state yet)."""
    named = dict(model.named_parameters())
    chosen = {id(p) for name, p in named.items() if name == prefix or name.startswith(prefix + ".")}
    if not chosen:
        close = ", ".join(list(named)[:8])
        raise ValueError(
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
        raise ValueError(
            f"optim.train_until: {prefix!r} names parameters that {type(optimizer).__name__} "
            "does not train (frozen ones?)"
        )
    optimizer.param_groups[:] = kept
    for group in moved:
        optimizer.add_param_group(group)


Multiplier = Callable[[int], float]


@SCHEDULES.register("constant", summary="constant learning rate (after optional warmup)")
def constant(config: ScheduleConfig, steps_per_epoch: int, total_steps: int) -> Multiplier:
    return with_warmup(lambda step: 1.0, config, steps_per_epoch)


@SCHEDULES.register("step", summary="multiply by gamma every step_size epochs")
def step_decay(config: ScheduleConfig, steps_per_epoch: int, total_steps: int) -> Multiplier:
    def multiplier(step: int) -> float:
        return config.gamma ** (step // (config.step_size * steps_per_epoch))

    return with_warmup(multiplier, config, steps_per_epoch)


@SCHEDULES.register("cosine", summary="linear warmup, then cosine decay to final_lr_fraction")
def cosine(config: ScheduleConfig, steps_per_epoch: int, total_steps: int) -> Multiplier:
    warmup = round(config.warmup_epochs * steps_per_epoch)
    floor = config.final_lr_fraction

    def multiplier(step: int) -> float:
        # 0 during warmup (which with_warmup scales), 1 at the last step and after.
        progress = min(1.0, max(0.0, (step - warmup) / max(1, total_steps - warmup)))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return with_warmup(multiplier, config, steps_per_epoch)


@SCHEDULES.register("linear", summary="linear decay to final_lr_fraction (after optional warmup)")
def linear(config: ScheduleConfig, steps_per_epoch: int, total_steps: int) -> Multiplier:
    floor = config.final_lr_fraction

    def multiplier(step: int) -> float:
        return floor + (1.0 - floor) * max(0.0, 1.0 - step / max(1, total_steps))

    return with_warmup(multiplier, config, steps_per_epoch)


@SCHEDULES.register("onecycle", summary="linear rise for pct_start of training, linear fall")
def onecycle(config: ScheduleConfig, steps_per_epoch: int, total_steps: int) -> Multiplier:
    peak = max(1, round(config.pct_start * total_steps))
    start, floor = 0.1, config.final_lr_fraction  # start at 10% of peak (a common choice)

    def multiplier(step: int) -> float:
        if step < peak:
            return start + (1.0 - start) * step / peak
        return max(floor, 1.0 - (1.0 - floor) * (step - peak) / max(1, total_steps - peak))

    return multiplier


def with_warmup(schedule: Multiplier, config: ScheduleConfig, steps_per_epoch: int) -> Multiplier:
    """Scale the first warmup_epochs of steps linearly from ~0 up to the schedule."""
    warmup = round(config.warmup_epochs * steps_per_epoch)
    if warmup == 0:
        return schedule
    return lambda step: schedule(step) * min(1.0, (step + 1) / warmup)


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: ScheduleConfig, steps_per_epoch: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step LambdaLR for the named schedule; groups split off by `optim.train_until`
    instead decay linearly to zero over their own epochs, and then stay at zero."""
    multiplier = SCHEDULES.get(config.name).factory(config, steps_per_epoch, total_steps)
    multipliers = []
    for group in optimizer.param_groups:
        epochs = group.get("train_until_epochs")
        if epochs is None:
            multipliers.append(multiplier)
        else:
            multipliers.append(linear_to_zero(max(1, round(epochs * steps_per_epoch))))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, multipliers)


def linear_to_zero(steps: int) -> Multiplier:
    return lambda step: max(0.0, 1.0 - step / steps)
