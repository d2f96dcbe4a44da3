"""Batched image augmentation on tensors (all ops work on a whole (B, C, H, W) batch at once,
on whatever device the batch lives on)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from neuralab.errors import ConfigError


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

    One gather over all images, (B, C, H, W) → (B, C, H, W), whose row and column indices are
    reflected at the borders: the padded batch is never built (padding it took longer than the
    gather).
    """
    if padding <= 0:
        return images
    batch, channels, height, width = images.shape
    device = images.device
    dy = torch.randint(0, 2 * padding + 1, (batch,), generator=generator).to(device)
    dx = torch.randint(0, 2 * padding + 1, (batch,), generator=generator).to(device)
    rows = reflected(dy - padding, height).view(batch, 1, height, 1)
    cols = reflected(dx - padding, width).view(batch, 1, 1, width)
    batch_index = torch.arange(batch, device=device).view(batch, 1, 1, 1)
    channel_index = torch.arange(channels, device=device).view(1, channels, 1, 1)
    return images[batch_index, channel_index, rows, cols]


def reflected(offsets: torch.Tensor, size: int) -> torch.Tensor:
    """(B, size) indices offset + 0..size-1, mirrored at 0 and size-1 as reflect padding does
    (-1 → 1, size → size-2); offsets must lie within ±(size-1)."""
    index = (offsets.view(-1, 1) + torch.arange(size, device=offsets.device)).abs()
    return (size - 1) - ((size - 1) - index).abs()


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(images.shape[0], generator=generator).to(images.device) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)


def hashed_bits(index: torch.Tensor, seed: int) -> torch.Tensor:
    """A fixed pseudo-random 0/1 per example index (a 32-bit integer hash of index and seed)."""
    x = (index.long() + seed * 0x9E3779B9) & 0xFFFFFFFF
    for _ in range(2):
        x = ((x ^ (x >> 16)) * 0x45D9F3B) & 0xFFFFFFFF
    return (x ^ (x >> 16)) & 1


def alternating_flip(
    images: torch.Tensor, index: torch.Tensor, epoch: int, seed: int
) -> torch.Tensor:
    """Mirror a fixed random half of the examples (by index) in even epochs and the other half
    in odd ones, so each image is seen both ways in every pair of epochs."""
    flip = hashed_bits(index, seed).to(images.device).bool() ^ bool(epoch % 2)
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


def random_affine(
    images: torch.Tensor, degrees: float, scale: float, generator: torch.Generator
) -> torch.Tensor:
    """Rotate each image by a random angle in ±`degrees` and scale it by a random factor in
    1 ± `scale` about its centre (bilinear; the border pixels fill what comes into view, e.g.
    the white paper of a drawing). uint8 (B, C, H, W) in and out."""
    if not (degrees or scale):
        return images
    batch = images.shape[0]
    angle = (torch.rand(batch, generator=generator) * 2 - 1) * math.radians(degrees)
    factor = 1 + (torch.rand(batch, generator=generator) * 2 - 1) * scale
    cos, sin = torch.cos(angle) / factor, torch.sin(angle) / factor  # output → input map
    zero = torch.zeros(batch)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    theta = theta.to(images.device)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    warped = F.grid_sample(images.float(), grid, padding_mode="border", align_corners=False)
    return warped.round_().clamp_(0, 255).to(torch.uint8)


@dataclass
class Augment:
    """The augmentation policy of a run; applied to uint8 batches before normalisation.

    crop_padding: pixels of reflect padding for random crops (0 = off).
    flip: horizontal flips, "off" (digits: mirror images change meaning), "random" (a coin
        flip per image per epoch) or "alternate" (see `alternating_flip`); True = "random".
    cutout: side of the zeroed square in pixels (0 = off).
    rotate, scale: random rotation within ±rotate degrees and scaling within 1 ± scale
        (`random_affine`; 0 = off).
    """

    crop_padding: int = 0
    flip: str | bool = "off"
    cutout: int = 0
    rotate: float = 0.0
    scale: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.flip, bool):
            self.flip = "random" if self.flip else "off"
        if self.flip not in ("off", "random", "alternate"):
            raise ConfigError(f"augment.flip must be off, random or alternate, not {self.flip!r}")

    def __call__(
        self,
        images: torch.Tensor,
        generator: torch.Generator,
        index: torch.Tensor | None = None,
        epoch: int = 0,
        seed: int = 0,
    ) -> torch.Tensor:
        """Augment a uint8 batch; `index` (the examples' indices in their split), `epoch` and
        `seed` are needed by alternating flips only."""
        if self.rotate or self.scale:
            images = random_affine(images, self.rotate, self.scale, generator)
        if self.crop_padding:
            images = random_crop(images, self.crop_padding, generator)
        if self.flip == "random":
            images = random_flip(images, generator)
        elif self.flip == "alternate":
            if index is None:
                raise ValueError("alternating flips need the examples' indices")
            images = alternating_flip(images, index, epoch, seed)
        if self.cutout:
            images = cutout(images, self.cutout, generator)
        return images

    @property
    def active(self) -> bool:
        return bool(
            self.crop_padding or self.flip != "off" or self.cutout or self.rotate or self.scale
        )
