"""Global magnitude pruning (torch.nn.utils.prune) and the callback that keeps pruned weights
at zero while a pruned model is fine-tuned.

`magnitude_prune` ranks the weights of every Linear, Conv and Embedding layer together by
absolute value (`prune.global_unstructured` with `L1Unstructured`: layers with many small
weights lose more of them than a per-layer rule would) and zeroes the smallest fraction. The
pruning re-parametrisation is removed at once (`prune.remove`): the model keeps plain
`weight` tensors with zeros in them, so its state_dict, checkpoint and every verb are those of
a dense model. Biases and normalisation layers are never pruned.

Dense tensors with zeros take the same time on a CPU as without them: pruning here makes a
model smaller only once compressed (zeros compress well) and is the first step towards a
sparse or structured runtime, not a speed-up by itself (`batch_latency` measures it).
"""

from __future__ import annotations

import math
import statistics
import time

import torch
from torch import nn
from torch.nn.utils import prune

from neuralab.errors import ConfigError
from neuralab.train.callbacks import Callback, Order, Trainer

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding)
Masks = dict[str, torch.Tensor]  # parameter name → bool mask (True: the weight is kept)


def check_sparsity(sparsity: float) -> float:
    """`sparsity` as a float in [0, 1), else a ConfigError naming it."""
    if not isinstance(sparsity, (int, float)) or not 0.0 <= sparsity < 1.0:
        raise ConfigError(
            f"sparsity {sparsity!r} is the fraction of prunable weights set to zero: it must "
            "be at least 0 and below 1 (e.g. 0.8 for 80%)"
        )
    return float(sparsity)


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """{weight parameter name: layer} of the Linear, Conv and Embedding layers, in order."""
    return {
        f"{name}.weight" if name else "weight": module
        for name, module in model.named_modules()
        if isinstance(module, PRUNABLE) and isinstance(module.weight, nn.Parameter)
    }


def magnitude_prune(model: nn.Module, sparsity: float) -> Masks:
    """Zero the smallest-magnitude `sparsity` fraction of the prunable weights of `model`,
    ranked globally, in place; returns the masks by parameter name.

    The count pruned is ceil(sparsity · total), so at least the fraction asked is zero.

    Example:
        >>> masks = magnitude_prune(model, 0.8)  # 80% of Linear/Conv/Embedding weights → 0
    """
    check_sparsity(sparsity)
    layers = prunable_layers(model)
    if not layers:
        raise ConfigError(
            f"{type(model).__name__} has no Linear, Conv or Embedding weights to prune"
        )
    total = sum(layer.weight.numel() for layer in layers.values())
    targets = [(layer, "weight") for layer in layers.values()]
    count = math.ceil(sparsity * total)
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=count)
    masks = {name: layer.weight_mask.detach().bool() for name, layer in layers.items()}
    for layer, _ in targets:
        prune.remove(layer, "weight")  # plain `weight` again, zeros in place
    return masks


def apply_masks(model: nn.Module, masks: Masks) -> None:
    """Set the pruned weights of `model` (named as in `masks`) back to zero, in place."""
    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            weight = parameters[name]
            weight.masked_fill_(~mask.to(weight.device), 0.0)


def sparsity_report(model: nn.Module) -> dict:
    """Zeros per prunable layer and in total: {"layers": {name: {shape, weights, zeros,
    sparsity}}, "total": {weights, zeros, sparsity}}."""
    layers = {}
    for name, layer in prunable_layers(model).items():
        weight = layer.weight.detach()
        zeros = int((weight == 0).sum())
        layers[name] = {
            "shape": list(weight.shape), "weights": weight.numel(), "zeros": zeros,
            "sparsity": zeros / max(1, weight.numel()),
        }  # fmt: skip
    weights = sum(row["weights"] for row in layers.values())
    zeros = sum(row["zeros"] for row in layers.values())
    return {
        "layers": layers,
        "total": {"weights": weights, "zeros": zeros, "sparsity": zeros / max(1, weights)},
    }


@torch.inference_mode()
def batch_latency(model: nn.Module, inputs: torch.Tensor, repeats: int = 20) -> float:
    """Median seconds of one forward pass of `inputs` through `model` (eval mode), after
    three warm-up passes."""
    model.eval()
    for _ in range(3):
        model(inputs)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(inputs)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def zero_masks(model: nn.Module) -> Masks:
    """The masks of the prunable weights that are not exactly zero now."""
    return {name: layer.weight.detach() != 0 for name, layer in prunable_layers(model).items()}


class KeepPruned(Callback):
    """Keeps pruned weights at zero while training: the masks are applied when training
    starts and after every optimizer step, to the trained model and to the evaluated one
    (the EMA, when there is one), so momentum and weight decay cannot regrow them.

    Args:
        masks: {parameter name: bool mask} as `magnitude_prune` returns them; None: the
            prunable weights that are zero when training starts (a pruned run's, loaded by
            train.init_from, or a resumed run's) stay zero (`train.keep_zeros`).
    """

    order = Order.WEIGHTS

    def __init__(self, masks: Masks | None = None) -> None:
        self.masks = masks

    def apply(self, trainer: Trainer) -> None:
        trained = getattr(trainer.model, "module", trainer.model)  # DDP's wrapped module
        apply_masks(trained, self.masks)
        if trainer.eval_model is not trained:
            apply_masks(trainer.eval_model, self.masks)

    def on_fit_start(self, trainer: Trainer) -> None:
        if self.masks is None:
            self.masks = zero_masks(getattr(trainer.model, "module", trainer.model))
        self.apply(trainer)

    def on_step_end(self, trainer: Trainer) -> None:
        self.apply(trainer)
