"""The model registry, the specs models adapt to, and `build_model`.

Every factory takes a spec plus its own keyword arguments and returns a plain `nn.Module` that
maps a batch to logits (B, num_classes): image models take an `InputSpec` and float
(B, C, H, W); text models (registered with `input="text"`) take a `TextSpec` and padded token
ids int64 (B, T) with 0 as padding. Family modules import this module, never the `models`
package, so the package can import every family without an import cycle.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

from torch import nn

from neuralab.registry import InvalidArgumentError, Registry

MODELS = Registry("model", supplied=("spec",))


@dataclass(frozen=True)
class InputSpec:
    """What a model adapts to: image channels, height, width, and the number of classes."""

    channels: int
    height: int
    width: int
    num_classes: int
    kind: ClassVar[str] = "image"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TextSpec:
    """What a text model adapts to: the tokenizer's vocabulary size (ids 0..vocab_size-1, 0 is
    padding), the number of classes, and the longest token sequence it will be given."""

    vocab_size: int
    num_classes: int
    max_length: int
    kind: ClassVar[str] = "text"

    def to_dict(self) -> dict:
        return asdict(self)


def model_input(name: str) -> str:
    """What the registered model `name` takes: "image" or "text"."""
    return MODELS.get(name).info.get("input", "image")


def build_model(name: str, spec: InputSpec | TextSpec, **arguments) -> nn.Module:
    """Build the registered model `name` for `spec`, passing `arguments` to its factory.

    Raises:
        UnknownNameError: no model is registered as `name`.
        UnknownArgumentError: an argument the model does not take (or a required one missing),
            named with close matches and the model's valid arguments.
        InvalidArgumentError: an image model asked for text (or the reverse); names suitable models.
    """
    if model_input(name) != spec.kind:
        suitable = [n for n in MODELS.names() if model_input(n) == spec.kind]
        raise InvalidArgumentError(
            f"model {name!r} takes {model_input(name)} input but the data is {spec.kind}; "
            f"use one of: {', '.join(suitable)}"
        )
    return MODELS.build(name, spec, **arguments)
