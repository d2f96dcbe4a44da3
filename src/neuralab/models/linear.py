"""Fully connected models: the perceptron and the multi-layer perceptron.

Also holds two small helpers the convolutional families share: `make_activation` (a validated
name → activation module) and `flat_features` (the flatten size of a feature extractor, found by
a dry run so every model adapts to its `InputSpec`).
"""

from __future__ import annotations

import torch
from torch import nn

from neuralab.models import training
from neuralab.models.registry import MODELS, InputSpec
from neuralab.registry import InvalidArgumentError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
}


def make_activation(name: str) -> nn.Module:
    """A fresh activation module for `name` (one of `ACTIVATIONS`).

    Raises:
        InvalidArgumentError: `name` is not a known activation; the message lists the valid ones.
    """
    if name not in ACTIVATIONS:
        valid = ", ".join(ACTIVATIONS)
        raise InvalidArgumentError(f"unknown activation {name!r}; expected one of: {valid}")
    return ACTIVATIONS[name]()


def flat_features(features: nn.Module, spec: InputSpec, model_name: str) -> int:
    """Number of values per image that `features` produces for inputs shaped like `spec`.

    Runs one zeros image through `features` (in eval mode, without gradients) at construction.

    Raises:
        InvalidArgumentError: the image is too small for the model (a kernel no longer fits).
    """
    image = torch.zeros(1, spec.channels, spec.height, spec.width)  # (1, C, H, W)
    was_training = features.training
    features.eval()  # a batch of one must not touch batch-norm running statistics
    try:
        with torch.no_grad():
            output = features(image)
    except RuntimeError as error:
        raise InvalidArgumentError(
            f"model {model_name!r} cannot take {spec.channels}x{spec.height}x{spec.width} images "
            f"({error}); use larger images or a model for small inputs such as 'mlp'"
        ) from None
    finally:
        features.train(was_training)
    return output[0].numel()


@MODELS.register(
    "perceptron",
    summary="flatten + one linear layer (multinomial logistic regression)",
    training=training.CONVNET,
)
def perceptron(spec: InputSpec) -> nn.Module:
    """A single linear layer over the flattened image: C·H·W → num_classes.

    On 1x28x28 images with 10 classes it has 784·10 + 10 = 7,850 parameters.
    """
    inputs = spec.channels * spec.height * spec.width
    return nn.Sequential(nn.Flatten(), nn.Linear(inputs, spec.num_classes))


@MODELS.register(
    "mlp",
    summary="multi-layer perceptron; depth=1, width=512 is the classic 784-512-10",
    training=training.CONVNET,
)
def mlp(
    spec: InputSpec,
    *,
    depth: int = 1,
    width: int = 512,
    activation: str = "relu",
    dropout: float = 0.0,
    batch_norm: bool = False,
) -> nn.Module:
    """Flatten, then `depth` hidden blocks of Linear → [BatchNorm1d] → activation → [Dropout],
    then a linear classifier.

    Args:
        spec: input images and class count.
        depth: number of hidden layers (0 gives the perceptron).
        width: units in every hidden layer.
        activation: one of sigmoid, tanh, relu, gelu.
        dropout: drop probability after each hidden activation (0 disables it).
        batch_norm: add BatchNorm1d before each activation (the linear bias is then dropped).

    Example:
        >>> sum(p.numel() for p in mlp(InputSpec(1, 28, 28, 10)).parameters())
        407050
    """
    if depth < 0:
        raise InvalidArgumentError(f"mlp depth must be >= 0, got {depth}")
    make_activation(activation)  # validate the name even when depth == 0
    layers: list[nn.Module] = [nn.Flatten()]  # (B, C, H, W) -> (B, C*H*W)
    features = spec.channels * spec.height * spec.width
    for _ in range(depth):
        layers += _hidden_block(features, width, activation, dropout, batch_norm)
        features = width
    layers.append(nn.Linear(features, spec.num_classes))
    return nn.Sequential(*layers)


def _hidden_block(
    inputs: int, width: int, activation: str, dropout: float, batch_norm: bool
) -> list[nn.Module]:
    """Linear → [BatchNorm1d] → activation → [Dropout]; (B, inputs) → (B, width)."""
    block: list[nn.Module] = [nn.Linear(inputs, width, bias=not batch_norm)]
    if batch_norm:
        block.append(nn.BatchNorm1d(width))
    block.append(make_activation(activation))
    if dropout > 0:
        block.append(nn.Dropout(dropout))
    return block
