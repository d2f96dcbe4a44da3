"""`airbench`: the fast CIFAR-10 network of Keller Jordan's airbench94 (2024), rebuilt on
plain torch. A frozen 2×2 patch-whitening convolution initialised from the data, then three
conv-pool-norm blocks; batch-norm scales are fixed at 1 and only their biases train."""

from __future__ import annotations

import torch
from torch import nn

from neuralab.models import training
from neuralab.models.registry import MODELS, InputSpec
from neuralab.registry import InvalidArgumentError


class ConvGroup(nn.Sequential):
    """conv 3×3 → max-pool 2 → BN → GELU → conv 3×3 → BN → GELU; halves H and W."""

    def __init__(
        self, channels_in: int, channels_out: int, bn_momentum: float, shift_scale: float
    ) -> None:
        super().__init__(
            nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=False),
            nn.MaxPool2d(2),
            ShiftOnlyNorm(channels_out, bn_momentum, shift_scale),
            nn.GELU(),
            nn.Conv2d(channels_out, channels_out, 3, padding=1, bias=False),
            ShiftOnlyNorm(channels_out, bn_momentum, shift_scale),
            nn.GELU(),
        )
        for conv in (self[0], self[4]):
            dirac_init(conv)


class ShiftOnlyNorm(nn.BatchNorm2d):
    """Batch norm with a fixed unit scale and a learned shift stored divided by `shift_scale`.

    Storing shift/k makes plain SGD move the shift k² times faster than other weights — the
    effect of airbench94's 64× learning rate for norm biases (k = 8), without the optimizer
    needing to know about it.
    """

    def __init__(self, channels: int, momentum: float, shift_scale: float) -> None:
        super().__init__(channels, momentum=momentum, eps=1e-12)  # eps as in airbench94
        self.weight.requires_grad_(False)
        self.shift_scale = shift_scale

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        use_batch = self.training or self.running_mean is None
        return nn.functional.batch_norm(
            images,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias * self.shift_scale,
            use_batch,
            self.momentum,
            self.eps,
        )


def dirac_init(conv: nn.Conv2d) -> None:
    """Identity-initialise the first min(in, out) filters so each block starts near a skip."""
    weight = conv.weight.data  # (out, in, 3, 3)
    nn.init.kaiming_normal_(weight, nonlinearity="relu")
    shared = min(weight.shape[0], weight.shape[1])
    torch.nn.init.dirac_(weight[:shared])


class AirbenchNet(nn.Module):
    """Whitening conv → 3 ConvGroups → global max-pool → linear (logits scaled by `scale`).

    Input (B, C, H, W) with H, W divisible by 8 after the 2×2 whitening (e.g. 32×32).
    """

    def __init__(
        self,
        spec: InputSpec,
        widths: tuple[int, int, int],
        bn_momentum: float,
        scale: float,
        shift_scale: float,
        head_std: float | None,
    ) -> None:
        super().__init__()
        patch = 2  # 2×2 patches: 4·C inputs, whitened into 2·4·C channels (±eigenvectors)
        self.whiten = nn.Conv2d(spec.channels, 2 * patch * patch * spec.channels, patch)
        self.whiten.weight.requires_grad_(False)
        self.body = nn.Sequential(
            nn.GELU(),
            ConvGroup(self.whiten.out_channels, widths[0], bn_momentum, shift_scale),
            ConvGroup(widths[0], widths[1], bn_momentum, shift_scale),
            ConvGroup(widths[1], widths[2], bn_momentum, shift_scale),
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(widths[2], spec.num_classes, bias=False)
        if head_std is not None:
            nn.init.normal_(self.head.weight, std=head_std)
        self.scale = scale

    @torch.no_grad()
    def initialize_from_data(self, images: torch.Tensor) -> None:
        """Set the whitening filters from the eigenvectors of the images' 2×2 patch covariance.

        images: normalised float (N, C, H, W).
        """
        patch = self.whiten.kernel_size[0]
        channels = images.shape[1]
        patches = images.float().unfold(2, patch, 1).unfold(3, patch, 1)  # (N, C, H', W', p, p)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, channels * patch * patch)
        patches = patches - patches.mean(0)
        covariance = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        # Scale by 1/sqrt(eigenvalue) (eps 5e-4 keeps near-zero directions bounded).
        filters = eigenvectors.T / (eigenvalues + 5e-4).sqrt().view(-1, 1)
        filters = filters.view(-1, channels, patch, patch)
        self.whiten.weight.copy_(torch.cat([filters, -filters]).to(self.whiten.weight))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.whiten(images))) * self.scale


@MODELS.register(
    "airbench",
    summary="airbench94's whitened 3-block convnet (fast CIFAR-10 net)",
    training=training.AIRBENCH,
)
def airbench(
    spec: InputSpec,
    *,
    widths: tuple[int, int, int] = (64, 256, 256),
    bn_momentum: float = 0.4,
    scale: float = 1 / 9,
    shift_scale: float = 8.0,
    head_std: float | None = None,
) -> nn.Module:
    """Args:
    widths: channels of the three conv groups (airbench94: 64, 256, 256).
    bn_momentum: PyTorch-convention batch-norm momentum (airbench94's 0.6 decay = 0.4).
    scale: multiplies the logits (airbench94: 1/9).
    shift_scale: batch-norm shifts are stored divided by this, so SGD moves them shift_scale²
        times faster than the other weights (airbench94: 8, its 64× bias learning rate; 1 when
        the optimizer gives them their own rate, as `muon` does).
    head_std: normal init std of the linear head (None: PyTorch's default uniform init).
    """
    if min(spec.height, spec.width) - 1 < 8:  # the 2x2 whitening, then three 2x pools
        raise InvalidArgumentError(
            f"airbench pools {spec.height}x{spec.width} images below one pixel (it needs at "
            "least 9x9); use larger images or a model for small inputs such as 'mnist_fast'"
        )
    return AirbenchNet(spec, tuple(widths), bn_momentum, scale, shift_scale, head_std)
