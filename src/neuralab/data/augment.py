"""Batched image augmentation on tensors (all ops work on a whole (B, C, H, W) batch at once,
on whatever device the batch lives on)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


def to_float(
    images: torch.Tensor,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """uint8 (B, C, H, W) → normalised float: (x / 255 - mean) / std per channel."""
    mean_t = torch.tensor(mean, device=images.device, dtype=dtype).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=images.device, dtype=dtype).view(1, -1, 1, 1)
    return (images.to(dtype) / 255.0 - mean_t) / std_t


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Pad by `padding` (reflect) and crop back to the original size at a random offset per image.

    Implemented as one gather over all images: (B, C, H, W) → (B, C, H, W).
    """
    if padding <= 0:
        return images
    batch, _, height, width = images.shape
    padded = torch.nn.functional.pad(
        images.float() if images.dtype == torch.uint8 else images, (padding,) * 4, mode="reflect"
    ).to(images.dtype)
    dy = torch.randint(0, 2 * padding + 1, (batch,), generator=generator).to(images.device)
    dx = torch.randint(0, 2 * padding + 1, (batch,), generator=generator).to(images.device)
    rows = (dy.view(-1, 1) + torch.arange(height, device=images.device)).view(batch, 1, height, 1)
    cols = (dx.view(-1, 1) + torch.arange(width, device=images.device)).view(batch, 1, 1, width)
    channels = images.shape[1]
    batch_index = torch.arange(batch, device=images.device).view(batch, 1, 1, 1)
    channel_index = torch.arange(channels, device=images.device).view(1, channels, 1, 1)
    return padded[batch_index, channel_index, rows, cols]


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(images.shape[0], generator=generator).to(images.device) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)


def cutout(images: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Zero a `size`×`size` square at a random centre per image (squares may clip at edges)."""
    if size <= 0:
        return images
    batch, _, height, width = images.shape
    cy = torch.randint(0, height, (batch, 1, 1), generator=generator).to(images.device)
    cx = torch.randint(0, width, (batch, 1, 1), generator=generator).to(images.device)
    ys = torch.arange(height, device=images.device).view(1, -1, 1)
    xs = torch.arange(width, device=images.device).view(1, 1, -1)
    half = size // 2
    # An even size covers [c - size/2, c + size/2 - 1]; an odd size [c - half, c + half].
    inside = (
        (ys >= cy - half) & (ys < cy - half + size) & (xs >= cx - half) & (xs < cx - half + size)
    )
    return images * (~inside).unsqueeze(1).to(images.dtype)


@dataclass
class Augment:
    """The augmentation policy of a run; applied to uint8 batches before normalisation.

    crop_padding: pixels of reflect padding for random crops (0 = off).
    flip: random horizontal flips (off for digits, where mirror images change meaning).
    cutout: side of the zeroed square in pixels (0 = off).
    """

    crop_padding: int = 0
    flip: bool = False
    cutout: int = 0

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.crop_padding:
            images = random_crop(images, self.crop_padding, generator)
        if self.flip:
            images = random_flip(images, generator)
        if self.cutout:
            images = cutout(images, self.cutout, generator)
        return images

    @property
    def active(self) -> bool:
        return bool(self.crop_padding or self.flip or self.cutout)
