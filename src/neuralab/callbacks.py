"""Training hooks. The trainer calls each callback with itself as an explicit argument."""

from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from neuralab.trainer import Trainer


class Callback:
    """Override what you need; every hook receives the trainer."""

    def on_fit_start(self, trainer: Trainer) -> None: ...

    def on_step_end(self, trainer: Trainer) -> None:
        """After every optimizer step (`trainer.step` counts them); keep it cheap."""

    def on_epoch_end(self, trainer: Trainer, logs: dict) -> None: ...

    def on_fit_end(self, trainer: Trainer) -> None: ...

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None: ...


class PlainProgress(Callback):
    """One line per epoch (no carriage returns), safe for log files."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stdout

    def on_epoch_end(self, trainer: Trainer, logs: dict) -> None:
        parts = [
            f"epoch {logs['epoch']:>3}/{trainer.planned_epochs}",
            f"train loss {logs['train_loss']:.4f} acc {logs['train_accuracy']:.2%}",
        ]
        if logs.get("val_loss") is not None:
            parts.append(f"val loss {logs['val_loss']:.4f} acc {logs['val_accuracy']:.2%}")
        parts.append(f"lr {logs['lr']:.3g}")
        parts.append(f"{logs['seconds']:.1f}s ({logs['examples_per_second']:.0f} examples/s)")
        print(" · ".join(parts), file=self.stream, flush=True)


class StopOnNonFinite(Callback):
    """Stop as soon as an epoch's training loss is NaN or infinite, saying where."""

    def on_epoch_end(self, trainer: Trainer, logs: dict) -> None:
        if not math.isfinite(logs["train_loss"]):
            trainer.stop_reason = (
                f"training loss became {logs['train_loss']} in epoch "
                f"{logs['epoch']} (step {trainer.step}); lower the learning "
                "rate or set train.grad_clip"
            )
            trainer.should_stop = True
