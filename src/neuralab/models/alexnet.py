"""AlexNet (Krizhevsky et al. 2012) in its single-GPU torchvision form, plus a small form with
3x3 stride-1 convolutions for 28-32 px images (MNIST, CIFAR)."""

from __future__ import annotations

from torch import nn

from neuralab.models import training
from neuralab.models.lenet import FeaturesClassifier
from neuralab.models.linear import flat_features
from neuralab.models.registry import MODELS, InputSpec
from neuralab.registry import InvalidArgumentError

VARIANTS = ("imagenet", "small", "auto")
# "auto" picks the ImageNet form from this side length up: the 11x11 stride-4 stem and three
# 3/2 max-pools shrink a 64 px image to 1x1 already, so anything smaller needs the small form.
AUTO_IMAGENET_MIN_SIDE = 64
# Default fully connected widths: 4096 is the paper's; 1024 keeps the small form's classifier
# (4096 flattened features for 32x32 inputs) at about 5 M parameters instead of 34 M.
IMAGENET_FC_WIDTH = 4096
SMALL_FC_WIDTH = 1024
# The ImageNet form pools its last feature map to 6x6, as torchvision does, so the classifier
# size does not depend on the input size.
IMAGENET_POOLED_SIDE = 6


def _imagenet_features(channels: int) -> nn.Sequential:
    """The 5-conv feature extractor of torchvision's AlexNet; (B, C, H, W) → (B, 256, 6, 6)."""
    return nn.Sequential(
        nn.Conv2d(channels, 64, kernel_size=11, stride=4, padding=2),  # (B, 64, 55, 55) at 224
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),  # (B, 256, 6, 6) at 224
        nn.AdaptiveAvgPool2d(IMAGENET_POOLED_SIDE),
    )


def _small_features(channels: int) -> nn.Sequential:
    """The same 5 convs with 3x3 kernels, stride 1 and 2x2 max-pools; 32x32 → (B, 256, 4, 4)."""
    return nn.Sequential(
        nn.Conv2d(channels, 64, kernel_size=3, padding=1),  # (B, 64, H, W)
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 192, kernel_size=3, padding=1),  # (B, 192, H/2, W/2)
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1),  # (B, 384, H/4, W/4)
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),  # (B, 256, H/8, W/8)
    )


def _classifier(features: int, fc_width: int, num_classes: int, dropout: float) -> nn.Sequential:
    """dropout → fc → relu → dropout → fc → relu → fc; (B, features) → (B, num_classes)."""
    return nn.Sequential(
        nn.Dropout(dropout),
        nn.Linear(features, fc_width),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(fc_width, fc_width),
        nn.ReLU(inplace=True),
        nn.Linear(fc_width, num_classes),
    )


def resolve_variant(variant: str, spec: InputSpec) -> str:
    """The form to build, "imagenet" or "small"; "auto" picks the one that suits `spec`'s size."""
    if variant not in VARIANTS:
        raise InvalidArgumentError(
            f"alexnet variant must be one of {', '.join(VARIANTS)}; got {variant!r}"
        )
    if variant != "auto":
        return variant
    return "imagenet" if min(spec.height, spec.width) >= AUTO_IMAGENET_MIN_SIDE else "small"


@MODELS.register(
    "alexnet",
    summary="AlexNet: 5 conv + 3 fc; ImageNet form or a 3x3 small form",
    training=training.ALEXNET,
)
def alexnet(
    spec: InputSpec,
    *,
    variant: str = "auto",
    dropout: float = 0.5,
    fc_width: int | None = None,
) -> nn.Module:
    """AlexNet with the ImageNet stem (11x11 stride 4) or a small 3x3 stride-1 form.

    On 3x224x224 with 1000 classes the ImageNet form has 61,100,840 parameters (torchvision's).

    Args:
        spec: input images and class count.
        variant: "imagenet", "small", or "auto" (ImageNet when min(H, W) >= 64, else small).
        dropout: drop probability before each of the first two fc layers.
        fc_width: units of the two hidden fc layers; None means 4096 for the ImageNet form and
            1024 for the small form.
    """
    form = resolve_variant(variant, spec)
    if form == "imagenet":
        features = _imagenet_features(spec.channels)
        default_width = IMAGENET_FC_WIDTH
    else:
        features = _small_features(spec.channels)
        default_width = SMALL_FC_WIDTH
    flat = flat_features(features, spec, "alexnet")
    width = fc_width if fc_width is not None else default_width
    model = FeaturesClassifier(features, _classifier(flat, width, spec.num_classes, dropout))
    relu_init(model)
    return model


def relu_init(model: nn.Module) -> None:
    """He et al.'s initialisation for ReLU layers (weights N(0, 2 / fan_in), zero biases).

    AlexNet has no normalisation layer, and PyTorch's default initialisation (variance
    1 / (3 · fan_in)) shrinks the signal's variance about six-fold per layer over its eight:
    on small data some runs never left their starting plateau (250 MNIST digits, 20 epochs
    of Adam: 19% for 5 classes at one seed and precision, 91–97% at the others; with this
    initialisation 94–97% at all six seed × precision settings tried)."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(module.bias)
