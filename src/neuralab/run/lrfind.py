"""The learning-rate range test (Smith 2017, "Cyclical learning rates"; fastai's lr_find):
train a copy of the model for a few steps while the learning rate grows exponentially from
`start` to `end`, record the (smoothed) loss, and suggest the rate where the loss falls
fastest. The model handed in is never modified: the test trains a deep copy.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from neuralab.config import config_from
from neuralab.data.dataset import DataError
from neuralab.errors import ConfigError
from neuralab.inference.plots import have_matplotlib, new_figure
from neuralab.run import probe
from neuralab.run.tracking import write_text_atomic
from neuralab.tasks import Task

SMOOTHING = 0.05  # weight of the newest loss in the exponential moving average (fastai's 0.98)
DIVERGED = 4.0  # stop once the smoothed loss exceeds this multiple of the best one


@dataclass(frozen=True)
class LrFindResult:
    lrs: list[float]
    losses: list[float]  # raw loss of each step
    smoothed: list[float]  # bias-corrected exponential moving average
    suggestion: float  # the rate of steepest descent of the smoothed loss

    def to_csv(self) -> str:
        rows = ["step,lr,loss,smoothed_loss"]
        columns = zip(self.lrs, self.losses, self.smoothed, strict=True)
        rows += [
            f"{i + 1},{lr:.6g},{loss:.6g},{smooth:.6g}"
            for i, (lr, loss, smooth) in enumerate(columns)
        ]
        return "\n".join(rows) + "\n"


def lr_range_test(
    model: nn.Module,
    make_optimizer: Callable[[nn.Module], torch.optim.Optimizer],
    task: Task,
    batches: Iterable,
    start: float = 1e-7,
    end: float = 10.0,
    steps: int = 100,
) -> LrFindResult:
    """Run the test on a copy of `model`; `batches` is cycled if it has fewer than `steps`.

    Args:
        make_optimizer: builds the run's optimizer for a model (its lr is overwritten per step).
        task: what the model learns (tasks/base.py): turns a batch into the loss.
    """
    if not 0 < start < end or steps < 2:
        raise ConfigError(
            f"lr-find needs 0 < start < end and steps >= 2; got {start}, {end}, {steps}"
        )
    trial = copy.deepcopy(model).train()
    optimizer = make_optimizer(trial)
    growth = (end / start) ** (1 / (steps - 1))
    lrs, losses, smoothed = [], [], []
    average, best = 0.0, math.inf
    for step, batch in enumerate(cycle(batches, steps)):
        lr = start * growth**step
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        loss = task.step(trial, batch).loss
        loss.backward()
        optimizer.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            break
        average = (1 - SMOOTHING) * average + SMOOTHING * value
        smooth = average / (1 - (1 - SMOOTHING) ** (step + 1))  # bias correction
        lrs.append(lr), losses.append(value), smoothed.append(smooth)
        best = min(best, smooth)
        if smooth > DIVERGED * best:
            break
    if len(lrs) < 3:
        raise ConfigError(
            "lr-find: the loss diverged within the first steps; lower --start (e.g. 1e-9)"
        )
    return LrFindResult(lrs, losses, smoothed, steepest_descent(lrs, smoothed))


def cycle(batches: Iterable, count: int):
    """`count` items from `batches`, starting over as often as needed."""
    produced = 0
    while produced < count:
        empty = True
        for item in batches:
            empty = False
            yield item
            produced += 1
            if produced == count:
                return
        if empty:
            raise DataError("lr-find: the training loader is empty")


def steepest_descent(lrs: list[float], smoothed: list[float]) -> float:
    """The rate where the smoothed loss falls fastest per log-rate unit, among the steps
    before its minimum (after it, the loss is already blowing up)."""
    last = min(range(len(smoothed)), key=smoothed.__getitem__)
    last = max(last, 2)
    logs = [math.log(lr) for lr in lrs[: last + 1]]
    slopes = [
        (smoothed[i + 1] - smoothed[i - 1]) / (logs[i + 1] - logs[i - 1]) for i in range(1, last)
    ]
    return lrs[1 + min(range(len(slopes)), key=slopes.__getitem__)]


def lr_find_figure(result: LrFindResult, path: Path) -> Path:

    figure = new_figure(6.5, 4)
    axis = figure.subplots()
    axis.plot(result.lrs, result.losses, alpha=0.3, label="loss")
    axis.plot(result.lrs, result.smoothed, label="smoothed loss")
    axis.axvline(result.suggestion, color="tab:red", linestyle="--",
                 label=f"suggestion {result.suggestion:.2g} (steepest descent)")  # fmt: skip
    axis.set(xscale="log", xlabel="learning rate", ylabel="training loss",
             title="learning-rate range test")  # fmt: skip
    axis.grid(alpha=0.3, which="both")
    axis.legend()
    figure.savefig(path)
    return path


def lr_find(
    recipe: str | None = None,
    *,
    data: str | None = None,
    model: str | None = None,
    data_dir: str | None = None,
    overrides: list[str] | None = None,
    start: float = 1e-7,
    end: float = 10.0,
    steps: int = 100,
    out: str | Path | None = None,
) -> LrFindResult:
    """`neuralab lr-find`: the range test for the model, optimizer, loss and training batches a
    config would train with. Writes lr-find.csv, lr-find.json (the suggestion) and, with
    matplotlib, lr-find.png into `out` (default runs/lr-find-<time>).

    Example:
        >>> neuralab.lr_find("mnist-best").suggestion  # doctest: +SKIP
    """
    config = config_from(recipe, overrides, data=data, model=model, data_dir=data_dir)
    parts = probe.range_test_parts(config)
    result = lr_range_test(
        parts.model, parts.make_optimizer, parts.task, parts.batches, start, end, steps
    )
    folder = Path(out) if out else Path("runs") / f"lr-find-{time.strftime('%Y%m%d-%H%M%S')}"
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / "lr-find.csv", result.to_csv())
    summary = {"suggestion": result.suggestion, "steps": len(result.lrs), **parts.description}
    write_text_atomic(folder / "lr-find.json", json.dumps(summary, indent=2))
    if have_matplotlib():
        lr_find_figure(result, folder / "lr-find.png")
    return result
