"""Lookahead with a slowly ramped weight average, as in Jordan's airbench94 CIFAR-10 recipe
(after Zhang et al. 2019, "Lookahead Optimizer: k steps forward, 1 step back").

Every `every` optimizer steps, with progress p = step / total steps:
    d = decay · p³          (0 at the start: the slow weights simply follow; larger late on)
    slow ← d · slow + (1 − d) · fast
    fast ← slow
and after the last step the model takes the slow weights, as airbench94 ends (its final
`update(decay=1.0)`): when the run ends between two syncs, the fast steps since the last one
are dropped rather than mixed in. Batch-norm running statistics are averaged with the weights.
"""

from __future__ import annotations

import torch

from neuralab.errors import ConfigError
from neuralab.train.callbacks import Callback, Order, Trainer
from neuralab.train.distributed import local_module


class Lookahead(Callback):
    """Runs first (Order.WEIGHTS): every callback after it sees the averaged weights."""

    order = Order.WEIGHTS

    def __init__(self, every: int, decay: float) -> None:
        if every < 1 or not 0.0 < decay < 1.0:
            raise ConfigError(f"lookahead needs every ≥ 1 and 0 < decay < 1, got {every}, {decay}")
        self.every, self.decay = every, decay
        self.slow: dict[str, torch.Tensor] = {}

    def averaged(self, trainer: Trainer) -> dict[str, torch.Tensor]:
        """The model's floating-point state (weights and BN statistics), by name."""
        state = local_module(trainer.model).state_dict(keep_vars=False)
        return {name: value for name, value in state.items() if value.is_floating_point()}

    def on_fit_start(self, trainer: Trainer) -> None:
        if not self.slow:
            self.slow = {k: v.detach().clone() for k, v in self.averaged(trainer).items()}

    @torch.no_grad()
    def on_step_end(self, trainer: Trainer) -> None:
        syncing = trainer.step % self.every == 0
        if not syncing and trainer.step < trainer.total_steps:
            return
        d = self.decay * (trainer.step / trainer.total_steps) ** 3
        for name, fast in self.averaged(trainer).items():
            slow = self.slow[name]
            if syncing:
                slow.lerp_(fast, 1.0 - d)
            fast.copy_(slow)  # the last step of a run between syncs: the slow weights alone

    def state_dict(self) -> dict:
        return {"slow": dict(self.slow)}

    def load_state_dict(self, state: dict) -> None:
        self.slow = {k: v.clone() for k, v in state.get("slow", {}).items()}
