"""ResNet-18 (He et al. 2016) with an ImageNet stem (7x7 stride 2 + max-pool) or a CIFAR stem
(3x3 stride 1, no pool) for small images."""

from __future__ import annotations

import torch
from torch import nn

from neuralab.models import training
from neuralab.models.registry import MODELS, InputSpec
from neuralab.registry import InvalidArgumentError

STEMS = ("imagenet", "cifar", "auto")
# "auto" uses the ImageNet stem from this side length up; it divides the image by 4 before the
# first block, which would leave a 32 px image with a 1x1 map in the last stage.
AUTO_IMAGENET_MIN_SIDE = 64
RESNET18_BLOCKS = (2, 2, 2, 2)  # BasicBlocks per stage
STAGE_WIDTH_MULTIPLIERS = (1, 2, 4, 8)  # stage widths 64, 128, 256, 512 for width=64


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut.

    (B, inputs, H, W) → (B, outputs, H/stride, W/stride).
    """

    def __init__(self, inputs: int, outputs: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(outputs)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or inputs != outputs:
            self.shortcut = nn.Sequential(
                nn.Conv2d(inputs, outputs, 1, stride=stride, bias=False),
                nn.BatchNorm2d(outputs),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual output relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """A stem, four stages of BasicBlocks, global average pooling and a linear classifier."""

    def __init__(
        self, stem: nn.Module, width: int, blocks: tuple[int, ...], num_classes: int
    ) -> None:
        super().__init__()
        self.stem = stem
        stages, inputs = [], width
        for index, (count, multiplier) in enumerate(
            zip(blocks, STAGE_WIDTH_MULTIPLIERS, strict=True)
        ):
            stride = 1 if index == 0 else 2  # each later stage halves the map
            stages.append(_stage(inputs, width * multiplier, count, stride))
            inputs = width * multiplier
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inputs, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) for float images (B, C, H, W)."""
        features = self.stages(self.stem(images))  # (B, 8*width, H', W')
        return self.fc(torch.flatten(self.pool(features), 1))  # (B, num_classes)


def _stage(inputs: int, outputs: int, count: int, stride: int) -> nn.Sequential:
    """`count` BasicBlocks; the first changes width and stride."""
    blocks = [BasicBlock(inputs, outputs, stride)]
    blocks += [BasicBlock(outputs, outputs) for _ in range(count - 1)]
    return nn.Sequential(*blocks)


def _make_stem(kind: str, channels: int, width: int) -> nn.Sequential:
    """ImageNet: 7x7/2 conv + 3x3/2 max-pool (H/4). CIFAR: 3x3/1 conv, no pool (H)."""
    if kind == "imagenet":
        return nn.Sequential(
            nn.Conv2d(channels, width, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
    return nn.Sequential(
        nn.Conv2d(channels, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
    )


def resolve_stem(stem: str, spec: InputSpec) -> str:
    """The stem to build, "imagenet" or "cifar"; "auto" picks the one that suits `spec`'s size."""
    if stem not in STEMS:
        raise InvalidArgumentError(f"resnet18 stem must be one of {', '.join(STEMS)}; got {stem!r}")
    if stem != "auto":
        return stem
    return "imagenet" if min(spec.height, spec.width) >= AUTO_IMAGENET_MIN_SIDE else "cifar"


def init_weights(model: nn.Module, zero_init_residual: bool) -> None:
    """Kaiming-normal convs (fan_out, ReLU), unit/zero batch norms, and optionally a zero gamma
    on the last BN of every block so each block starts as the identity (Goyal et al. 2017)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    if zero_init_residual:
        for module in model.modules():
            if isinstance(module, BasicBlock):
                nn.init.zeros_(module.bn2.weight)


@MODELS.register(
    "resnet18",
    summary="ResNet-18 (BasicBlock 2-2-2-2) with ImageNet or CIFAR stem",
    training=training.DEEP_CONVNET,
)
def resnet18(
    spec: InputSpec,
    *,
    stem: str = "auto",
    width: int = 64,
    zero_init_residual: bool = False,
) -> nn.Module:
    """ResNet-18: stem, stages of 2-2-2-2 BasicBlocks with widths w, 2w, 4w, 8w, average pool, fc.

    With width=64: 11,689,512 parameters on 3x224x224 / 1000 classes (ImageNet stem) and
    11,173,962 on 3x32x32 / 10 classes (CIFAR stem).

    Args:
        spec: input images and class count.
        stem: "imagenet", "cifar", or "auto" (ImageNet when min(H, W) >= 64, else CIFAR).
        width: channels of the stem and first stage (64 in the paper).
        zero_init_residual: start every block's last BN gamma at zero.
    """
    kind = resolve_stem(stem, spec)
    model = ResNet(_make_stem(kind, spec.channels, width), width, RESNET18_BLOCKS, spec.num_classes)
    init_weights(model, zero_init_residual)
    return model
