"""Training hooks. The trainer calls each callback with itself as an explicit argument.

Callbacks read the trainer and steer it only through its methods (`trainer.stop(reason)`,
`trainer.restore(weights, epoch)`), never by writing its attributes. Their order is explicit:
each class says where it runs (`order`, see `Order`), and the trainer sorts them by it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from enum import IntEnum
from typing import Any, Protocol

import torch
from torch import nn

from neuralab.errors import ConfigError


class Order(IntEnum):
    """When a callback runs among the others at each hook (lower first; ties keep the order
    they were given in)."""

    WEIGHTS = 10  # changes the weights (lookahead): everything after sees the final ones
    MONITOR = 20  # watches a metric (early stopping, best checkpoint): state current before saving
    WRITE = 30  # writes history and checkpoint
    LOG = 40  # TensorBoard
    DISPLAY = 50  # progress lines and bars: print once the epoch is saved
    USER = 60  # the user's own callbacks


class Trainer(Protocol):
    """What callbacks see of train/trainer.py's Trainer (a Protocol, so this module does not
    import the trainer, which imports it)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    epoch: int
    step: int
    total_steps: int
    planned_epochs: int
    steps_this_epoch: int
    history: list[dict]

    @property
    def eval_model(self) -> nn.Module: ...

    @property
    def failed(self) -> bool: ...

    @property
    def restored_epoch(self) -> int | None: ...

    def stop(self, reason: str, failed: bool = False) -> None: ...

    def restore(self, weights: dict[str, torch.Tensor], epoch: int) -> None: ...

    def running_metrics(self) -> tuple[dict[str, float], int]: ...


class Callback:
    """Override what you need; every hook receives the trainer."""

    order: int = Order.USER

    def on_fit_start(self, trainer: Trainer) -> None: ...

    def on_epoch_start(self, trainer: Trainer) -> None: ...

    def on_step_end(self, trainer: Trainer) -> None:
        """After every optimizer step (`trainer.step` counts them); keep it cheap."""

    def on_epoch_end(self, trainer: Trainer, logs: dict) -> None: ...

    def on_fit_end(self, trainer: Trainer) -> None: ...

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None: ...


def in_order(callbacks: Sequence[Callback]) -> list[Callback]:
    """`callbacks` sorted by their `order` (stable: equal orders keep their given order)."""
    return sorted(callbacks, key=lambda callback: callback.order)


def format_metrics(metrics: dict[str, Any]) -> str:
    """`loss 0.1234 acc 98.00%`: losses to 4 decimals, accuracies as percentages, the rest
    to 4 significant digits."""
    parts = []
    for name, value in metrics.items():
        if name.endswith("accuracy"):
            parts.append(f"{name.replace('accuracy', 'acc')} {value:.2%}")
        else:
            parts.append(f"{name} {value:.4f}" if name.endswith("loss") else f"{name} {value:.4g}")
    return " ".join(parts)


def format_test_metrics(metrics: dict[str, Any], task) -> str:
    """The test line's metrics: `accuracy 92.10% · loss 0.2263`, then each head's accuracy
    or MAE when the task has several heads (multitask)."""
    parts = [f"accuracy {metrics['accuracy']:.2%}"] if "accuracy" in metrics else []
    parts.append(f"loss {metrics['loss']:.4f}")
    if getattr(task, "name", "") == "multitask":
        heads = [n for n in task.metric_names if n.endswith(("_accuracy", "_mae"))]
        parts += [format_metrics({name: metrics[name]}) for name in heads]
    return " · ".join(parts)


def prefixed(logs: dict, prefix: str) -> dict:
    """The metrics logged under `prefix` (e.g. `train_`), without it."""
    return {k[len(prefix) :]: v for k, v in logs.items() if k.startswith(prefix) and v is not None}


def epoch_line(trainer: Trainer, logs: dict) -> str:
    """The one-line summary of an epoch that both progress displays print."""
    parts = [
        f"epoch {logs['epoch']:>3}/{trainer.planned_epochs}",
        f"train {format_metrics(prefixed(logs, 'train_'))}",
    ]
    if prefixed(logs, "val_"):
        parts.append(f"val {format_metrics(prefixed(logs, 'val_'))}")
    if logs.get("pgd_accuracy") is not None:  # adversarial training's per-epoch check
        parts.append(f"pgd acc {logs['pgd_accuracy']:.2%}")
    parts.append(f"lr {logs['lr']:.3g}")
    parts.append(f"{logs['seconds']:.1f}s ({logs['examples_per_second']:.0f} examples/s)")
    return " · ".join(parts)


class PlainProgress(Callback):
    """One line per epoch (no carriage returns), safe for log files."""

    order = Order.DISPLAY

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stdout

    def on_epoch_end(self, trainer: Trainer, logs: dict) -> None:
        print(epoch_line(trainer, logs), file=self.stream, flush=True)


class BarProgress(Callback):
    """A live bar per epoch in a terminal (rich): steps, running loss and accuracy, examples/s
    and ETA; each finished epoch leaves its summary line, as PlainProgress prints it.

    The running loss is read from the trainer at most `refresh_per_second` times a second, so
    the bar costs no host synchronisation per step on a GPU.
    """

    order = Order.DISPLAY

    def __init__(self, console=None, refresh_per_second: float = 4.0) -> None:
        from rich.console import Console  # imported lazily: only terminals need it

        self.console = console or Console()
        self.interval = 1.0 / refresh_per_second
        self.progress = None
        self.task = None
        self.last_refresh = 0.0

    def on_epoch_start(self, trainer: Trainer) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn(f"epoch {trainer.epoch + 1}/{trainer.planned_epochs}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self.progress.start()
        self.task = self.progress.add_task("train", total=trainer.steps_this_epoch, status="")
        self.epoch_start = self.last_refresh = time.perf_counter()

    def on_step_end(self, trainer: Trainer) -> None:
        now = time.perf_counter()
        if now - self.last_refresh < self.interval:
            self.progress.advance(self.task)
            return
        self.last_refresh = now
        metrics, count = trainer.running_metrics()
        speed = count / max(now - self.epoch_start, 1e-9)
        status = f"{format_metrics(metrics).replace(' acc', ' · acc')} · {speed:,.0f} examples/s"
        self.progress.update(self.task, advance=1, status=status)

    def on_epoch_end(self, trainer: Trainer, logs: dict) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        self.console.print(epoch_line(trainer, logs), highlight=False)

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.progress is not None:  # stopped mid-epoch
            self.progress.stop()


def progress_callbacks(mode: str, stream=None) -> list[Callback]:
    """`auto`: a bar when standard output is a terminal, else plain lines; `bar`, `plain`,
    `none` force a choice."""
    if mode not in ("auto", "bar", "plain", "none"):
        raise ConfigError(f"progress {mode!r} is unknown; valid: auto, bar, plain, none")
    stream = stream or sys.stdout
    if mode == "auto":
        mode = "bar" if stream.isatty() else "plain"
    if mode == "bar":
        return [BarProgress()]
    return [PlainProgress(stream)] if mode == "plain" else []


class MetricWatch:
    """Whether a logged metric improved: loss-like names (and a head's `_mae`) must fall, the
    others (accuracy) rise, by more than `min_delta`."""

    def __init__(self, metric: str, min_delta: float = 0.0) -> None:
        self.metric, self.min_delta = metric, min_delta
        self.lower_is_better = "loss" in metric or metric.endswith("_mae")
        self.best: float | None = None
        self.best_epoch = 0

    def value(self, logs: dict) -> float:
        if logs.get(self.metric) is None:
            raise ConfigError(
                f"monitor.metric {self.metric!r} is not in this run's history (it has "
                f"{', '.join(k for k, v in logs.items() if v is not None)}); validation metrics "
                "need a validation split: set data.val_split, e.g. 0.1"
            )
        return float(logs[self.metric])

    def update(self, logs: dict) -> bool:
        """Record this epoch's value; True when it is the best so far."""
        value = self.value(logs)
        if self.best is None:
            improved = True
        elif self.lower_is_better:
            improved = value < self.best - self.min_delta
        else:
            improved = value > self.best + self.min_delta
        if improved:
            self.best, self.best_epoch = value, logs["epoch"]
        return improved

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]


class EarlyStopping(Callback):
    """Stop when `metric` has not improved by more than `min_delta` for `patience` epochs; with
    `restore_best`, end with the best epoch's weights (kept in memory, and in the resume state).

    It runs before the RunWriter (Order.MONITOR): its state must be current when the
    checkpoint is written, and the restored weights must be in place when the run writes its
    final checkpoint.
    """

    order = Order.MONITOR

    def __init__(
        self, metric: str, patience: int, min_delta: float = 0.0, restore_best: bool = True
    ) -> None:
        self.watch = MetricWatch(metric, min_delta)
        self.patience, self.restore_best = patience, restore_best
        self.waited = 0
        self.best_weights: dict | None = None

    def on_epoch_end(self, trainer: Trainer, logs: dict) -> None:
        if self.watch.update(logs):
            self.waited = 0
            if self.restore_best:
                weights = trainer.eval_model.state_dict()
                self.best_weights = {k: v.detach().clone().cpu() for k, v in weights.items()}
            return
        self.waited += 1
        if self.waited >= self.patience:
            trainer.stop(
                f"early stopping after epoch {logs['epoch']}: {self.watch.metric} did not "
                f"improve for {self.patience} epochs (best {self.watch.best:.4g} at epoch "
                f"{self.watch.best_epoch})"
            )

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.restore_best and self.best_weights is not None:
            if self.watch.best_epoch != trainer.epoch:
                trainer.restore(self.best_weights, self.watch.best_epoch)

    def state_dict(self) -> dict:
        return {**self.watch.state_dict(), "waited": self.waited, "weights": self.best_weights}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.watch.load_state_dict(state)
            self.waited, self.best_weights = state["waited"], state["weights"]
