"""Test-time augmentation for images: the logits of a few views of each image, averaged.

Modes (`train.tta` in a run's config; `true`/`false` mean `flip`/`off`):
    off         the image alone
    flip        the image and its mirror image, equally weighted
    flip+shift  half the weight on `flip`, a quarter each on `flip` of the image shifted one
                pixel up-left and one pixel down-right (reflect padding): six forward passes
                (the translate TTA of Jordan's airbench94 record CIFAR-10 recipe)

Pure tensor ops, so the same function serves evaluation, prediction and exported graphs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import nn

from neuralab.registry import InvalidArgumentError

TtaMode = Literal["off", "flip", "flip+shift"]
MODES: tuple[str, ...] = ("off", "flip", "flip+shift")


def tta_mode(value: bool | str | None) -> str:
    """A config or checkpoint value as a mode name (older runs stored true/false)."""
    if value is None or value is False:
        return "off"
    if value is True:
        return "flip"
    if value not in MODES:
        raise InvalidArgumentError(
            f"unknown test-time augmentation {value!r}: expected one of {MODES}"
        )
    return value


def flip_logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    return 0.5 * (model(images).float() + model(images.flip(-1)).float())


def shifted(images: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """(B, C, H, W) moved by (dy, dx) pixels (|d| ≤ 1) with the uncovered edge reflected."""
    height, width = images.shape[-2:]
    padded = nn.functional.pad(images, (1, 1, 1, 1), mode="reflect")
    return padded[..., 1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]


def tta_logits(model: nn.Module, images: torch.Tensor, mode: bool | str | None) -> torch.Tensor:
    """Float32 logits (B, classes) of `images` (B, C, H, W) under test-time augmentation."""
    mode = tta_mode(mode)
    if mode == "off":
        return model(images).float()
    logits = flip_logits(model, images)
    if mode == "flip":
        return logits
    up_left = flip_logits(model, shifted(images, -1, -1))
    down_right = flip_logits(model, shifted(images, 1, 1))
    return 0.5 * logits + 0.25 * (up_left + down_right)


def channel_view(values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    """Per-channel statistics (a mean or std colour) as a float32 (1, C, 1, 1) tensor on
    `like`'s device."""
    return torch.tensor(values, dtype=torch.float32, device=like.device).view(1, -1, 1, 1)


def pixel_forward(
    model: nn.Module, mean: tuple, std: tuple, mode: bool | str | None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model as `predict` runs it, as a function of pixels (B, C, H, W) in [0, 1]: the
    per-channel normalisation and the test-time augmentation `mode` inside, float32 (no
    autocast: attributions and attacks follow its gradients). What attributions explain and
    attacks attack.

    The normalised pixels go in channels-last: convolutions then run in the layout the CPU
    kernels prefer (the same float32 arithmetic; integrated gradients through cifar10-fast's
    six views 1.2× faster), and a model that flattens its input sees the same values."""

    def forward(pixels: torch.Tensor) -> torch.Tensor:
        with torch.autocast(pixels.device.type, enabled=False):
            normalised = (pixels - channel_view(mean, pixels)) / channel_view(std, pixels)
            normalised = normalised.contiguous(memory_format=torch.channels_last)
            return tta_logits(model, normalised, mode)

    return forward
