"""torchrun environment helpers and `unwrap` (the bare model behind DDP / torch.compile)."""

from __future__ import annotations

import os

from torch import nn


def rank() -> int:
    """This process's global rank under torchrun (0 when not distributed)."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Only the main process logs, writes checkpoints and reports."""
    return rank() == 0


def unwrap(model: nn.Module) -> nn.Module:
    """Strip DistributedDataParallel (`.module`) and torch.compile (`._orig_mod`) wrappers, so
    that saved weights never carry `module.` / `_orig_mod.` prefixes."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model
