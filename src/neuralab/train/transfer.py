"""Transfer learning on plain modules: load a trained model's compatible weights into a new
one (the classifier head replaced when the classes differ, a grey/colour first convolution
adapted), freeze parameters by name, the model's layer groups for discriminative learning
rates, and `HeadFirst`, which trains the head alone for a run's first steps.

Nothing here reads a config or a checkpoint: run/finetune.py does, and hands plain values on.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from neuralab.checkpoint.format import CheckpointError
from neuralab.errors import ConfigError
from neuralab.train.callbacks import Callback, Order


class TransferError(CheckpointError):
    """A source run whose weights cannot start this model; the message says which tensor and why."""


# -- which parameters are the head, and the model's layer groups --------------------------------
def head_names(model: nn.Module, num_classes: int) -> list[str]:
    """The parameter names of the classifier head: the last module holding parameters directly,
    whose weight has `num_classes` rows (Linear, or a 1x1 convolution). [] when the model has
    no such layer (e.g. an embedding network)."""
    last = [(name, module) for name, module in model.named_modules()
            if any(True for _ in module.parameters(recurse=False))]  # fmt: skip
    if not last:
        return []
    prefix, module = last[-1]
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.shape[0] != num_classes:
        return []
    return [f"{prefix}.{name}" if prefix else name for name, _ in module.named_parameters()]


def layer_groups(model: nn.Module) -> list[list[str]]:
    """Parameter names in layer groups, from the input side to the output side: the model's
    top-level children, sequential containers opened one level; children without parameters
    are left out. Discriminative learning rates scale each group's rate."""
    groups: list[list[str]] = []
    for name, child in model.named_children():
        parts = list(child.named_children()) if isinstance(child, nn.Sequential) else []
        units = [(f"{name}.{sub}", module) for sub, module in parts] or [(name, child)]
        for prefix, module in units:
            names = [f"{prefix}.{n}" for n, _ in module.named_parameters()]
            if names:
                groups.append(names)
    own = [name for name, _ in model.named_parameters(recurse=False)]
    return ([own] if own else []) + groups


def group_factors(groups: Sequence[Sequence[str]], lr_mult: float) -> dict[str, float]:
    """{parameter name: learning-rate factor}: the last group (the head's side) 1, the first
    1 / lr_mult, the ones between spaced geometrically (fastai's `slice(lr / lr_mult, lr)`)."""
    n = len(groups)
    factors = {}
    for index, names in enumerate(groups):
        factor = 1.0 if n == 1 else lr_mult ** (-(n - 1 - index) / (n - 1))
        factors.update(dict.fromkeys(names, factor))
    return factors


# -- loading a source model's weights -------------------------------------------------------------
@dataclass
class LoadTable:
    """What happened to each tensor: loaded (maybe adapted), new (initialised here), skipped
    (in the source, not used here), with the reason."""

    rows: list[tuple[str, str, str]] = field(default_factory=list)  # (tensor, status, reason)

    def count(self, status: str) -> int:
        return sum(1 for _, s, _ in self.rows if s == status)

    def summary(self) -> str:
        return (f"{self.count('loaded')} tensors loaded, {self.count('new')} new, "
                f"{self.count('skipped')} skipped")  # fmt: skip

    def lines(self) -> list[str]:
        """One line per top-level module and status, with the reasons: the log's table."""
        merged: dict[tuple[str, str, str], int] = {}
        for name, status, reason in self.rows:
            key = (name.split(".")[0], status, reason)
            merged[key] = merged.get(key, 0) + 1
        width = max((len(module) for module, _, _ in merged), default=6)
        return [f"  {module:<{width}}  {status:<7} {count:>3}  {reason}".rstrip()
                for (module, status, reason), count in merged.items()]  # fmt: skip


def load_compatible(
    model: nn.Module, source: dict[str, torch.Tensor], replace: Iterable[str], why: str
) -> LoadTable:
    """Copy every tensor of `source` into `model`'s state of the same name and shape.

    `replace` (the head, when the classes differ) stays as initialised, for the reason `why`.
    A first convolution trained on grey images starts a colour model (its filter repeated over
    the channels, / 3) and the reverse (summed over the channels). Any other tensor whose shape
    differs raises TransferError naming it: its layer cannot start from the source's.
    """
    state, table, loaded, replaced = model.state_dict(), LoadTable(), {}, set(replace)
    modules = {name.rpartition(".")[0] + "." for name in replaced if "." in name}  # + buffers
    first_conv = next((n for n, t in state.items() if t.ndim == 4 and n.endswith("weight")), None)
    for name, tensor in state.items():
        if name in replaced or any(name.startswith(module) for module in modules):
            table.rows.append((name, "new", why))
        elif name not in source:
            table.rows.append((name, "new", "not in the source model"))
        elif source[name].shape == tensor.shape:
            loaded[name] = source[name]
            table.rows.append((name, "loaded", ""))
        elif name == first_conv and adaptable(source[name], tensor):
            loaded[name] = adapt_channels(source[name], tensor.shape[1])
            table.rows.append((name, "loaded", f"{source[name].shape[1]} → {tensor.shape[1]} "
                                               "input channels"))  # fmt: skip
        else:
            raise TransferError(
                f"{name} has shape {tuple(source[name].shape)} in the source model and "
                f"{tuple(tensor.shape)} here, so it cannot start from the source's weights. "
                "Fix: use the source run's input size and model arguments (image size, "
                "vocabulary, widths), or a model whose layers do not depend on them"
            )
    table.rows += [(name, "skipped", "not in this model") for name in source if name not in state]
    model.load_state_dict({**state, **loaded})
    return table


def adaptable(source: torch.Tensor, target: torch.Tensor) -> bool:
    """A first convolution's filter bank, grey ↔ colour, otherwise the same."""
    same_rest = source.shape[0] == target.shape[0] and source.shape[2:] == target.shape[2:]
    return same_rest and {source.shape[1], target.shape[1]} == {1, 3}


def adapt_channels(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """Grey → colour: the filter on each channel, / 3 (a grey image as colour gives the same
    response); colour → grey: summed over the channels (the same response to a grey image)."""
    if channels == 3:
        return weight.repeat(1, 3, 1, 1) / 3
    return weight.sum(dim=1, keepdim=True)


# -- freezing -------------------------------------------------------------------------------------
def matching(names: Iterable[str], patterns: Sequence[str]) -> dict[str, list[str]]:
    """{pattern: the names it matches}: a glob (`features.*`) or a module prefix (`features`)."""
    names = list(names)
    return {
        pattern: [
            n for n in names if fnmatch.fnmatchcase(n, pattern) or n.startswith(pattern + ".")
        ]
        for pattern in patterns
    }


def freeze(model: nn.Module, patterns: Sequence[str]) -> list[str]:
    """Stop training the parameters that `patterns` name (requires_grad off); returns their
    names. A pattern that names no parameter is an error listing some valid names."""
    named = dict(model.named_parameters())
    matches = matching(named, patterns)
    empty = [pattern for pattern, found in matches.items() if not found]
    if empty:
        listed = ", ".join(list(named)[:10])
        raise ConfigError(
            f"train.freeze: {', '.join(repr(p) for p in empty)} names no parameter of "
            f"{type(model).__name__} (its parameters: {listed}{', …' if len(named) > 10 else ''})"
        )
    frozen = sorted({name for found in matches.values() for name in found})
    for name in frozen:
        named[name].requires_grad_(False)
    if len(frozen) == len(named):
        raise ConfigError(
            f"train.freeze {list(patterns)} freezes every parameter: nothing would train"
        )
    return frozen


class HeadFirst(Callback):
    """Trains only the head for the first `steps` optimizer steps, then every parameter that
    is not frozen: the body's gradients are not even computed meanwhile (fastai's
    `fine_tune`: the new head settles before it moves the pretrained layers). The body's
    learning rates stay at zero until then (`make_scheduler` reads the groups' `start_epoch`)."""

    order = Order.WEIGHTS

    def __init__(self, body: Sequence[nn.Parameter], steps: int) -> None:
        self.body, self.steps = [p for p in body if p.requires_grad], steps

    def on_fit_start(self, trainer) -> None:
        self.set_training(trainer.step >= self.steps)

    def on_step_end(self, trainer) -> None:
        if trainer.step == self.steps:
            self.set_training(True)

    def on_fit_end(self, trainer) -> None:
        self.set_training(True)

    def set_training(self, on: bool) -> None:
        for parameter in self.body:
            parameter.requires_grad_(on)
