"""The training loop. The trainer gets built objects (model, optimizer, task, loaders,
callbacks), never a config, and never touches files; the task turns batches into losses and
metric sums, so the loop knows nothing of labels."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Literal, Protocol

import torch
from torch import nn

from neuralab.tasks.base import Batch, Task
from neuralab.train.callbacks import Callback, in_order
from neuralab.train.distributed import all_reduce_sums, broadcast_buffers, local_module

FiniteCheck = Literal["step", "epoch"]


class Loader(Protocol):
    """What the trainer needs of a loader: iterate batches and count them. `set_epoch` (a new
    shuffle each epoch) and `world_size` (a shard of a distributed split) are optional, so a
    plain `torch.utils.data.DataLoader` works too."""

    def __iter__(self) -> Iterator[Batch]: ...

    def __len__(self) -> int: ...


def planned_steps(epochs: float, steps_per_epoch: int) -> int:
    """round(epochs * steps_per_epoch), but at least one step: a run that never steps would
    write no checkpoint."""
    return max(1, round(epochs * steps_per_epoch))


def finite_check(setting: str, device: torch.device) -> str:
    """train.finite_check → the trainer's check: every step (`step`, and `auto` on a CPU,
    where it is free) or once per epoch."""
    return "step" if setting == "step" or (setting == "auto" and device.type == "cpu") else "epoch"


class NonFiniteStep(ArithmeticError):
    """A training step produced a NaN or infinite loss or gradient."""


class Trainer:
    """Runs the loop; everything it needs is handed in.

    Under torchrun hand in the DistributedDataParallel-wrapped model and loaders that shard
    (`world_size > 1`): each optimizer step then covers the global batch, and the epoch's
    metrics are summed over all processes.

    Args:
        task: what is learned (see tasks/base.py), e.g. `Classification("cross_entropy")`.
        callbacks: run in the order of their `order` attribute (see callbacks.Order), then in
            the order given.
        autocast_dtype: mixed precision for the forward pass (None: float32).
        grad_clip: clip the gradients' global norm to this value.
        ema_decay: evaluate and save an exponential moving average of the weights.
        grad_accumulation: micro-batches per optimizer step.
        finite_check: `step` checks the loss and gradients before every update and stops
            before a bad one reaches the weights (one host synchronisation per step: free on
            a CPU); `epoch` checks the epoch's loss once at its end (GPUs). Either way the run
            stops through `stop(..., failed=True)`.

    Example:
        >>> trainer = Trainer(model, optimizer, Classification(), scheduler=scheduler)
        >>> history = trainer.fit(train_loader, epochs=3, val_loader=val_loader)
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        task: Task,
        *,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        callbacks: Sequence[Callback] = (),
        autocast_dtype: torch.dtype | None = None,
        grad_clip: float | None = None,
        ema_decay: float | None = None,
        grad_accumulation: int = 1,
        finite_check: FiniteCheck = "step",
    ) -> None:
        self.model, self.optimizer, self.task = model, optimizer, task
        self.scheduler, self.callbacks = scheduler, in_order(callbacks)
        self.autocast_dtype, self.grad_clip = autocast_dtype, grad_clip
        self.grad_accumulation = grad_accumulation  # micro-batches per optimizer step
        self.finite_check = finite_check
        self.device = next(model.parameters()).device
        self.ema = make_ema(local_module(model), ema_decay) if ema_decay else None
        self.epoch, self.step, self.history = 0, 0, []
        self.total_steps = 0  # optimizer steps `fit` plans in all
        self.planned_epochs = 0
        self.steps_this_epoch = 0  # optimizer steps the current epoch will take
        self.running: tuple[dict[str, torch.Tensor], int] = ({}, 0)  # this epoch's sums, count
        self._stop_reason, self._stopping, self._failed = "", False, False
        self._restored_epoch: int | None = None

    # -- how callbacks steer the run ---------------------------------------------------------
    def stop(self, reason: str, failed: bool = False) -> None:
        """End the run after the current epoch (or step, when a step failed). `failed`: the
        run went wrong (e.g. a NaN loss) rather than finished early (e.g. early stopping)."""
        self._stopping, self._stop_reason = True, reason
        self._failed = self._failed or failed

    def restore(self, weights: dict[str, torch.Tensor], epoch: int) -> None:
        """Put an earlier epoch's weights back into the evaluated model (early stopping)."""
        self.eval_model.load_state_dict(weights)
        self._restored_epoch = epoch

    @property
    def stop_reason(self) -> str:
        return self._stop_reason

    @property
    def should_stop(self) -> bool:
        return self._stopping

    @property
    def failed(self) -> bool:
        """The run stopped because training went wrong (not, e.g., early stopping)."""
        return self._failed

    @property
    def restored_epoch(self) -> int | None:
        """The epoch whose weights `restore` put back, if any."""
        return self._restored_epoch

    def autocast(self) -> torch.autocast:
        dtype = self.autocast_dtype or torch.bfloat16
        return torch.autocast(
            self.device.type, dtype=dtype, enabled=self.autocast_dtype is not None
        )

    # -- the loop -----------------------------------------------------------------------------
    def fit(self, train_loader: Loader, epochs: float, val_loader: Loader | None = None) -> list:
        """Train for `epochs` (fractional: the last epoch stops early), validating each epoch.

        Returns the history: one dict per epoch with the task's train/val metrics, lr, seconds.
        """
        self.total_steps = planned_steps(epochs, len(train_loader))
        self.planned_epochs = -(-self.total_steps // len(train_loader))
        self.notify("on_fit_start")
        while self.step < self.total_steps and not self.should_stop:
            logs = self.run_epoch(train_loader, val_loader)
            if logs is None:  # a non-finite step: the partial epoch is neither logged nor saved
                break
            self.history.append(logs)
            self.notify("on_epoch_end", logs)
        self.notify("on_fit_end")
        return self.history

    def run_epoch(self, train_loader: Loader, val_loader: Loader | None) -> dict | None:
        """One epoch: train, validate, and the epoch's log row (None after a failed step)."""
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(self.epoch)
        self.steps_this_epoch = min(len(train_loader), self.total_steps - self.step)
        self.notify("on_epoch_start")
        start = time.perf_counter()
        logs = self.train_epoch(train_loader)
        if logs is None:
            return None
        broadcast_buffers(self.eval_model)  # all processes evaluate and save rank 0's model
        if val_loader is not None:
            metrics = self.score(val_loader)
            logs.update({f"val_{name}": metrics[name] for name in self.task.metric_names})
        logs["seconds"] = time.perf_counter() - start
        logs["examples_per_second"] = logs.pop("count") / logs["seconds"]
        self.epoch += 1
        if self.finite_check == "epoch":
            self.check_epoch_loss(logs)
        return {"epoch": self.epoch, **logs}

    def notify(self, hook: str, *args) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)

    def train_epoch(self, loader: Loader) -> dict | None:
        """One pass; running sums stay on the device so the loop never waits for the host.

        Returns None when a step's loss or gradients were not finite (the run is stopped).
        """
        self.model.train()
        sums: dict[str, torch.Tensor] = {}
        count = 0
        lr = self.optimizer.param_groups[0]["lr"]
        for batch in loader:
            if self.step >= self.total_steps:
                break
            lr = self.optimizer.param_groups[0]["lr"]  # logged: the epoch's last step's rate
            try:
                batch_sums, batch_count = self.train_step(batch)
            except NonFiniteStep as error:
                self.stop_non_finite(str(error), count // max(1, self.task.batch_size(batch)))
                return None
            if self.scheduler is not None:
                self.scheduler.step()
            if self.ema is not None:
                self.ema.update_parameters(local_module(self.model))
            add_sums(sums, batch_sums)
            count += batch_count
            self.running = (sums, count)
            self.step += 1
            self.notify("on_step_end")
        totals = sum_over_shards(loader, [*(value.item() for value in sums.values()), count])
        count = int(totals.pop())
        metrics = self.task.summarize(dict(zip(sums, totals, strict=True)), count)
        return {**{f"train_{k}": v for k, v in metrics.items()}, "lr": lr, "count": count}

    def train_step(self, batch: Batch) -> tuple[dict[str, torch.Tensor], int]:
        """One optimizer step on this process's batch.

        The batch is cut into `grad_accumulation` micro-batches and each micro-batch's mean loss
        is weighted by its share of the batch, so the accumulated gradient is the batch's mean
        gradient. Under DDP only the last micro-batch's backward all-reduces the gradients.

        Returns:
            The batch's metric sums (device tensors) and its number of examples.
        """
        self.optimizer.zero_grad(set_to_none=True)
        micro_batches = self.task.split(batch, self.grad_accumulation)
        total = self.task.batch_size(batch)
        sums: dict[str, torch.Tensor] = {}
        for index, micro_batch in enumerate(micro_batches):
            with self.gradient_sync(index == len(micro_batches) - 1):
                with self.autocast():
                    output = self.task.step(self.model, micro_batch)
                (output.loss * (output.count / total)).backward()
            add_sums(sums, output.sums)
        self.check_and_clip(sums["loss"])
        self.optimizer.step()
        return sums, total

    def check_and_clip(self, loss_sum: torch.Tensor) -> None:
        """Raise NonFiniteStep before a bad update reaches the weights; clip the gradients'
        global norm to `grad_clip` (one norm computation serves both)."""
        checking = self.finite_check == "step"
        if not (checking or self.grad_clip):
            return
        parameters = [p for p in self.model.parameters() if p.grad is not None]
        norm = None
        if checking:
            if not bool(torch.isfinite(loss_sum)):  # one host sync per step (see __init__)
                raise NonFiniteStep(f"the training loss became {float(loss_sum)}")
            norm = nn.utils.get_total_norm([stored_values(p.grad) for p in parameters])
            if not bool(torch.isfinite(norm)):
                raise NonFiniteStep(first_non_finite_grad(self.model))
        if self.grad_clip:
            if norm is None or any(p.grad.is_sparse for p in parameters):
                norm = nn.utils.get_total_norm([p.grad for p in parameters])
            nn.utils.clip_grads_with_norm_(parameters, self.grad_clip, norm)

    def stop_non_finite(self, what: str, batch: int) -> None:
        """Stop the run at this step: the optimizer did not take it, so the weights are those
        of the step before; callbacks do not see the partial epoch (nothing is saved)."""
        where = f"at epoch {self.epoch + 1}, step {self.step + 1} (batch {batch + 1} of the epoch)"
        self.stop(
            f"{what} {where}; the step was not taken. Lower the learning rate or set "
            "train.grad_clip",
            failed=True,
        )

    def check_epoch_loss(self, logs: dict) -> None:
        """`finite_check="epoch"`: stop when the epoch's training loss is NaN or infinite."""
        loss = logs["train_loss"]
        if not math.isfinite(loss):
            self.stop(
                f"training loss became {loss} in epoch {self.epoch} (step {self.step}); "
                "lower the learning rate or set train.grad_clip",
                failed=True,
            )

    def gradient_sync(self, last_micro_batch: bool) -> contextlib.AbstractContextManager:
        """DDP's `no_sync()` for all but the last micro-batch: their gradients only accumulate
        locally, and the last backward all-reduces the sum once."""
        if last_micro_batch or not hasattr(self.model, "no_sync"):
            return contextlib.nullcontext()
        return self.model.no_sync()

    def running_metrics(self) -> tuple[dict[str, float], int]:
        """This process's metrics so far this epoch (the task's means) and its example count
        (reads device tensors: a host synchronisation, so call it sparingly)."""
        sums, count = self.running
        if not count:
            return {}, 0
        return self.task.summarize({k: float(v) for k, v in sums.items()}, count), count

    @property
    def eval_model(self) -> nn.Module:
        """The model evaluated and saved: the weight average when EMA is on; never the DDP
        wrapper, whose forward may communicate (processes evaluate different batch counts)."""
        return self.ema.module if self.ema is not None else local_module(self.model)

    def score(self, loader: Loader) -> dict:
        """The task's metrics of `eval_model` over `loader`, under the training precision."""
        return score_loader(self.eval_model, loader, self.task, self.autocast_dtype)

    # -- resume --------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything beyond the saved weights that resuming needs. The checkpoint's weights
        are `eval_model`'s; with EMA those are the average, so the trained weights go here."""
        return {
            "epoch": self.epoch,
            "step": self.step,
            "history": self.history,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "model": local_module(self.model).state_dict() if self.ema is not None else None,
            "callbacks": {type(c).__name__: c.state_dict() for c in self.callbacks},
            "rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict, weights: dict[str, torch.Tensor]) -> None:
        """Continue where `state_dict()` was taken: `weights` are the checkpoint's model
        weights. The random state is restored too, so call this last, right before `fit`."""
        model = local_module(self.model)
        model.load_state_dict(state["model"] if state.get("model") is not None else weights)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        for callback in self.callbacks:  # by class name: progress printers may come and go
            callback.load_state_dict(state["callbacks"].get(type(callback).__name__, {}))
        self.epoch, self.step, self.history = state["epoch"], state["step"], list(state["history"])
        torch.set_rng_state(state["rng"])


def add_sums(total: dict[str, torch.Tensor], sums: dict[str, torch.Tensor]) -> None:
    """total += sums, key by key, in place (device tensors; no host synchronisation). `total`
    takes over the first sums it is given: tasks return fresh tensors for every batch."""
    for name, value in sums.items():
        if name in total:
            total[name].add_(value)
        else:
            total[name] = value


def stored_values(gradient: torch.Tensor) -> torch.Tensor:
    """A gradient's stored numbers: a sparse one's (uncoalesced) values, else itself. Enough
    to tell whether any is NaN/Inf, without coalescing (sparse embedding gradients)."""
    return gradient._values() if gradient.is_sparse else gradient


def first_non_finite_grad(model: nn.Module) -> str:
    """Names the first parameter whose gradient holds NaN or Inf."""
    for name, parameter in local_module(model).named_parameters():
        grad = parameter.grad
        if grad is not None and not bool(torch.isfinite(stored_values(grad)).all()):
            return f"the gradient of parameter {name!r} became non-finite"
    return "the gradients' global norm overflowed to infinity"


def sum_over_shards(loader: Iterable, values: Sequence[float]) -> list[float]:
    """`values` summed over all processes when `loader` is one shard of a distributed split
    (its `world_size` > 1), else unchanged."""
    if getattr(loader, "world_size", 1) > 1:
        return all_reduce_sums(values)
    return [float(v) for v in values]


def make_ema(model: nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel:
    """An exponential moving average of the weights (batch-norm buffers averaged too)."""
    average = torch.optim.swa_utils.get_ema_multi_avg_fn(decay)
    return torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=average, use_buffers=True)


def score_loader(
    model: nn.Module, loader: Iterable, task: Task, autocast_dtype: torch.dtype | None = None
) -> dict:
    """The task's metrics over every example of `loader` (each counted once), plus `count`.

    When `loader` is one process's shard (`world_size` > 1), the sums are added up over all
    processes, so every process returns the whole split's metrics. Runs in inference mode,
    or without gradients only for a task that adapts while it is scored (MAML's inner steps
    take gradients of their own; see tasks/fewshot.py).
    """
    adapts = getattr(task, "scores_with_gradients", False)
    model = local_module(model).eval()
    device = next(model.parameters()).device
    sums: dict[str, torch.Tensor] = {}  # stay on the device: one host sync per evaluation
    count = 0
    with (
        torch.no_grad() if adapts else torch.inference_mode(),
        torch.autocast(
            device.type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None
        ),
    ):
        for batch in loader:
            add_sums(sums, task.score(model, batch))
            count += task.batch_size(batch)
    totals = sum_over_shards(loader, [*(value.item() for value in sums.values()), count])
    count = int(totals.pop())
    return {**task.summarize(dict(zip(sums, totals, strict=True)), count), "count": count}
