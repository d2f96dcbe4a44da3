"""Conv-4: the embedding network of the few-shot literature (Vinyals et al. 2016; Snell et al.
2017's prototypical networks; Finn et al. 2017's MAML on Omniglot)."""

from __future__ import annotations

from torch import nn

from neuralab.models import training
from neuralab.models.registry import MODELS, InputSpec
from neuralab.registry import InvalidArgumentError


@MODELS.register(
    "conv4",
    summary="few-shot Conv-4: 4 × (conv 3x3 64, BN, ReLU, pool 2) + head",
    training=training.CONVNET,
)
def conv4(spec: InputSpec, *, width: int = 64, blocks: int = 4, head: bool = True) -> nn.Module:
    """`blocks` blocks of conv 3x3 (padding 1) → batch norm → ReLU → max-pool 2, flattened.

    On 1x28x28 the four pools leave (width, 1, 1): a `width`-dimensional feature vector, the
    prototypical networks' embedding (112,128 parameters at width 64). `head` adds a linear
    layer to `num_classes` outputs (MAML's N-way classifier, or ordinary classification).

    Args:
        spec: input images and class count.
        width: filters of every conv.
        blocks: conv blocks; each halves the height and width (rounding down).
        head: end in a linear classifier; without it the model returns its features.
    """
    layers: list[nn.Module] = []
    channels, height, width_px = spec.channels, spec.height, spec.width
    for _ in range(blocks):
        layers += [
            nn.Conv2d(channels, width, kernel_size=3, padding=1),  # (B, width, H, W)
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(2),  # (B, width, H/2, W/2)
        ]
        channels, height, width_px = width, height // 2, width_px // 2
    if min(height, width_px) < 1:
        raise InvalidArgumentError(
            f"conv4 with {blocks} blocks halves {spec.height}x{spec.width} images below one "
            f"pixel; use fewer blocks or larger images"
        )
    layers.append(nn.Flatten())  # (B, width * H' * W')
    if head:
        layers.append(nn.Linear(width * height * width_px, spec.num_classes))
    return nn.Sequential(*layers)
