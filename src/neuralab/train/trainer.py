"""fit / evaluate / predict. The trainer gets built objects and never touches files."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from neuralab.models.tta import tta_logits
from neuralab.train.callbacks import Callback
from neuralab.train.distributed import all_reduce_sums, broadcast_buffers, local_module

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def make_loss(name: str, label_smoothing: float = 0.0) -> LossFn:
    """`cross_entropy` (with optional label smoothing) or `mse`: squared error between the
    logits and one-hot targets, the least-squares criterion of the perceptron era."""
    if name == "cross_entropy":
        return nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    if name == "mse":

        def mse(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            target = nn.functional.one_hot(labels, logits.shape[1]).to(logits.dtype)
            return nn.functional.mse_loss(logits, target)

        return mse
    raise ValueError(f"unknown loss {name!r}; valid: cross_entropy, mse")


def planned_steps(epochs: float, steps_per_epoch: int) -> int:
    """round(epochs * steps_per_epoch), but at least one step: a run that never steps would
    write no checkpoint."""
    return max(1, round(epochs * steps_per_epoch))


class Trainer:
    """Runs the loop; everything it needs is handed in.

    Under torchrun hand in the DistributedDataParallel-wrapped model and loaders that shard
    (`world_size > 1`): each optimizer step then covers the global batch, and the epoch's
    metrics are summed over all processes.

    Example:
        >>> trainer = Trainer(model, optimizer, nn.CrossEntropyLoss(), scheduler=scheduler)
        >>> history = trainer.fit(train_loader, epochs=3, val_loader=val_loader)
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: LossFn,
        *,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        callbacks: Sequence[Callback] = (),
        autocast_dtype: torch.dtype | None = None,
        grad_clip: float | None = None,
        ema_decay: float | None = None,
        channels_last: bool = False,
        grad_accumulation: int = 1,
        check_finite: bool = True,
    ) -> None:
        """check_finite: before every optimizer step, check that the loss and the gradients
        are finite, and stop at the first step where they are not (one host synchronisation
        per step: free on a CPU; on a GPU `False` leaves it to StopOnNonFinite per epoch)."""
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.check_finite = check_finite
        self.scheduler, self.callbacks = scheduler, list(callbacks)
        self.autocast_dtype, self.grad_clip = autocast_dtype, grad_clip
        self.grad_accumulation = grad_accumulation  # micro-batches per optimizer step
        self.device = next(model.parameters()).device
        self.ema = make_ema(local_module(model), ema_decay) if ema_decay else None
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.epoch, self.step, self.history = 0, 0, []
        self.total_steps = 0  # optimizer steps `fit` plans in all
        self.planned_epochs, self.should_stop, self.stop_reason = 0, False, ""
        self.steps_this_epoch = 0  # optimizer steps the current epoch will take
        self.running = (0.0, 0.0, 0)  # the current epoch's loss sum, correct, count so far
        self.failed = False  # stopped because training went wrong (not, e.g., early stopping)
        self.restored_epoch: int | None = None  # set when a callback restored earlier weights

    def autocast(self) -> torch.autocast:
        dtype = self.autocast_dtype or torch.bfloat16
        return torch.autocast(
            self.device.type, dtype=dtype, enabled=self.autocast_dtype is not None
        )

    def fit(self, train_loader, epochs: float, val_loader=None) -> list[dict]:
        """Train for `epochs` (fractional: the last epoch stops early), validating each epoch.

        Returns the history: one dict per epoch with train/val loss and accuracy, lr, seconds.
        """
        total_steps = planned_steps(epochs, len(train_loader))
        self.total_steps = total_steps
        self.planned_epochs = -(-total_steps // len(train_loader))
        for callback in self.callbacks:
            callback.on_fit_start(self)
        while self.step < total_steps and not self.should_stop:
            train_loader.set_epoch(self.epoch)
            self.steps_this_epoch = min(len(train_loader), total_steps - self.step)
            for callback in self.callbacks:
                callback.on_epoch_start(self)
            start = time.perf_counter()
            logs = self.train_epoch(train_loader, total_steps)
            if logs is None:  # a non-finite step: the partial epoch is neither logged nor saved
                break
            broadcast_buffers(self.eval_model)  # all processes evaluate and save rank 0's model
            if val_loader is not None:
                logs.update(
                    {
                        f"val_{k}": v
                        for k, v in self.evaluate(val_loader).items()
                        if k in ("loss", "accuracy")
                    }
                )
            logs["seconds"] = time.perf_counter() - start
            logs["examples_per_second"] = logs.pop("count") / logs["seconds"]
            self.epoch += 1
            logs = {"epoch": self.epoch, **logs}
            self.history.append(logs)
            for callback in self.callbacks:
                callback.on_epoch_end(self, logs)
        for callback in self.callbacks:
            callback.on_fit_end(self)
        return self.history

    def train_epoch(self, loader: Iterable, total_steps: int) -> dict | None:
        """One pass; running sums stay on the device so the loop never waits for the host.

        Returns None when a step's loss or gradients were not finite (see `stop_non_finite`).
        """
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        count = 0
        lr = self.optimizer.param_groups[0]["lr"]
        for images, labels in loader:
            if self.step >= total_steps:
                break
            lr = self.optimizer.param_groups[0]["lr"]  # logged: the epoch's last step's rate
            try:
                batch_loss, batch_correct = self.train_step(images, labels)
            except NonFiniteStep as error:
                self.stop_non_finite(str(error), count // max(1, len(labels)))
                return None
            if self.scheduler is not None:
                self.scheduler.step()
            if self.ema is not None:
                self.ema.update_parameters(local_module(self.model))
            loss_sum += batch_loss
            correct += batch_correct
            count += len(labels)
            self.running = (loss_sum, correct, count)
            self.step += 1
            for callback in self.callbacks:
                callback.on_step_end(self)
        loss_total, correct_total, count = sum_over_shards(
            loader, [loss_sum.item(), correct.item(), count]
        )
        return {
            "train_loss": loss_total / max(1, count),
            "train_accuracy": correct_total / max(1, count),
            "lr": lr,
            "count": int(count),
        }

    def train_step(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on this process's batch (B, C, H, W), (B,).

        The batch is cut into `grad_accumulation` micro-batches and each micro-batch's mean loss
        is weighted by its share of the batch, so the accumulated gradient is the batch's mean
        gradient. Under DDP only the last micro-batch's backward all-reduces the gradients.

        Returns:
            The batch's summed loss and number of correct predictions (device tensors).
        """
        self.optimizer.zero_grad(set_to_none=True)
        parts = min(self.grad_accumulation, len(labels))  # a short last batch: none empty
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        micro_batches = zip(images.tensor_split(parts), labels.tensor_split(parts), strict=True)
        for index, (micro_images, micro_labels) in enumerate(micro_batches):
            with self.gradient_sync(index == parts - 1):
                with self.autocast():
                    logits = self.model(micro_images)
                    loss = self.loss_fn(logits.float(), micro_labels)
                (loss * (len(micro_labels) / len(labels))).backward()
            loss_sum += loss.detach() * len(micro_labels)
            correct += (logits.argmax(1) == micro_labels).sum()
        self.check_and_clip(loss_sum)
        self.optimizer.step()
        return loss_sum, correct

    def check_and_clip(self, loss_sum: torch.Tensor) -> None:
        """Raise NonFiniteStep before a bad update reaches the weights; clip the gradients'
        global norm to `grad_clip` (one norm computation serves both)."""
        if not (self.check_finite or self.grad_clip):
            return
        parameters = [p for p in self.model.parameters() if p.grad is not None]
        norm = None
        if self.check_finite:
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
        self.stop_reason = (
            f"{what} at epoch {self.epoch + 1}, step {self.step + 1} (batch {batch + 1} of "
            "the epoch); the step was not taken. Lower the learning rate or set train.grad_clip"
        )
        self.should_stop = self.failed = True

    def gradient_sync(self, last_micro_batch: bool) -> contextlib.AbstractContextManager:
        """DDP's `no_sync()` for all but the last micro-batch: their gradients only accumulate
        locally, and the last backward all-reduces the sum once."""
        if last_micro_batch or not hasattr(self.model, "no_sync"):
            return contextlib.nullcontext()
        return self.model.no_sync()

    def running_metrics(self) -> tuple[float, float, int]:
        """This process's mean loss and accuracy so far this epoch, and its example count
        (reads device tensors: a host synchronisation, so call it sparingly)."""
        loss_sum, correct, count = self.running
        if not count:
            return 0.0, 0.0, 0
        return float(loss_sum) / count, float(correct) / count, count

    @property
    def eval_model(self) -> nn.Module:
        """The model evaluated and saved: the weight average when EMA is on; never the DDP
        wrapper, whose forward may communicate (processes evaluate different batch counts)."""
        return self.ema.module if self.ema is not None else local_module(self.model)

    def evaluate(self, loader: Iterable, tta: bool | str = False) -> dict:
        return evaluate(self.eval_model, loader, self.loss_fn, self.autocast_dtype, tta)

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


class NonFiniteStep(ArithmeticError):
    """A training step produced a NaN or infinite loss or gradient."""


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


@torch.inference_mode()
def predict_logits(
    model: nn.Module,
    images: torch.Tensor,
    autocast_dtype: torch.dtype | None = None,
    tta: bool | str = False,
) -> torch.Tensor:
    """Float32 logits (B, classes); `tta` is a test-time augmentation mode (see tta.py)."""
    model.eval()
    with torch.autocast(
        images.device.type,
        dtype=autocast_dtype or torch.bfloat16,
        enabled=autocast_dtype is not None,
    ):
        return tta_logits(model, images, tta)


def evaluate(
    model: nn.Module,
    loader: Iterable,
    loss_fn: LossFn,
    autocast_dtype: torch.dtype | None = None,
    tta: bool | str = False,
) -> dict:
    """Mean loss, accuracy and count over every example of `loader` (each counted once).

    When `loader` is one process's shard (`world_size` > 1), the sums of loss, correct and
    count are added up over all processes, so every process returns the whole split's metrics.
    """
    model = local_module(model)
    device = next(model.parameters()).device
    # Sums stay on the device: one host synchronisation per evaluation, not per batch.
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.long)
    count = 0
    for images, labels in loader:
        logits = predict_logits(model, images, autocast_dtype, tta)
        loss_sum += loss_fn(logits, labels).double() * len(labels)
        correct += (logits.argmax(1) == labels).sum()
        count += len(labels)
    loss_sum, correct, count = sum_over_shards(loader, [loss_sum.item(), correct.item(), count])
    count = int(count)
    return {"loss": loss_sum / max(1, count), "accuracy": correct / max(1, count), "count": count}
