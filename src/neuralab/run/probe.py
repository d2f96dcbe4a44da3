"""What tools that inspect or probe a run's model without training it need (`neuralab
summary`, `neuralab lr-find`), built as `train` would build it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from neuralab.config import RunConfig
from neuralab.modalities import Inputs
from neuralab.run.inputs import build_inputs_and_model, build_loaders
from neuralab.run.settings import build_optimizer, build_task
from neuralab.tasks import Task
from neuralab.train.engine import Engine, pick_device


def model_for(config: RunConfig) -> tuple[RunConfig, Inputs, nn.Module]:
    """The config (defaults filled), inputs and a freshly built (CPU) model of a config, for
    tools that inspect a model without training it (summary, lr-find)."""
    torch.manual_seed(config.train.seed)
    return build_inputs_and_model(config, torch.device("cpu"))


@dataclass
class RangeTestParts:
    """What the learning-rate range test trains: a model on its device, the run's optimizer
    (for any copy of the model), its task and training batches."""

    model: nn.Module
    make_optimizer: Callable[[nn.Module], torch.optim.Optimizer]
    task: Task
    batches: object
    description: dict


def range_test_parts(config: RunConfig) -> RangeTestParts:
    """The parts `neuralab lr-find` needs, as `train` would build them."""
    config, inputs, model = model_for(config)
    device = pick_device(config.train.device)
    model = model.to(device)
    inputs.initialise(model, device)
    loaders = build_loaders(config, inputs, Engine(device, None, False, "lr-find"))
    described = {"optimizer": config.optim.name, "batch_size": config.train.batch_size}
    return RangeTestParts(
        model,
        partial(build_optimizer, config),
        build_task(config, inputs),
        loaders["train"],
        described,
    )
