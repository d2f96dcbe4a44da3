"""Model registry. Every factory takes an `InputSpec` plus its own keyword arguments and
returns a plain `nn.Module` whose forward maps float (B, C, H, W) to logits (B, num_classes)."""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass

from torch import nn

from neuralab.registry import Registry

MODELS = Registry("model")


@dataclass(frozen=True)
class InputSpec:
    """What a model adapts to: image channels, height, width, and the number of classes."""

    channels: int
    height: int
    width: int
    num_classes: int

    def to_dict(self) -> dict:
        return asdict(self)


def build_model(name: str, spec: InputSpec, **kwargs) -> nn.Module:
    """Build the registered model `name` for `spec`, passing `kwargs` to its factory.

    Unknown keyword arguments raise a TypeError that names the model and its valid arguments.
    """
    entry = MODELS.get(name)
    try:
        return entry.factory(spec, **kwargs)
    except TypeError as error:
        if "unexpected keyword argument" in str(error):
            import inspect

            params = [p for p in inspect.signature(entry.factory).parameters if p != "spec"]
            raise TypeError(
                f"model {name!r}: {error}. Valid arguments: {', '.join(params)}"
            ) from None
        raise


# Importing a family module registers its models.
for _family in ("linear", "lenet", "alexnet", "resnet", "airbench"):
    importlib.import_module(f"neuralab.models.{_family}")
