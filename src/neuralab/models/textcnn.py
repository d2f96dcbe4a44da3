"""Kim's TextCNN: parallel 1-D convolutions over word embeddings, max-pooled over time."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from neuralab.models import training
from neuralab.models.registry import MODELS, TextSpec
from neuralab.models.sequence import PAD_ID, embedding, lengths_of
from neuralab.registry import InvalidArgumentError


class TextCNN(nn.Module):
    """Kim (2014): parallel 1-D convolutions of several widths over word embeddings, each
    max-pooled over time (windows that start in the padding are masked out), then dropout and
    a linear classifier. `embed_dropout` drops whole embedding channels of the input
    (Dropout1d over (B, E, T)), a regulariser against memorising words. `pooling="max+mean"`
    adds each filter's mean over the real windows to its max (concat pooling, as ULMFiT does
    for its classifier): the max finds the strongest phrase, the mean how the whole text leans,
    which matters for long reviews."""

    def __init__(
        self,
        spec: TextSpec,
        embed_dim: int,
        widths: Sequence[int],
        filters: Sequence[int],
        dropout: float,
        embed_dropout: float = 0.0,
        pooling: str = "max",
    ) -> None:
        super().__init__()
        if pooling not in ("max", "max+mean"):
            raise InvalidArgumentError(
                f"textcnn: pooling {pooling!r} is unknown; valid: max, max+mean"
            )
        self.mean_pooling = pooling == "max+mean"
        self.embedding = embedding(spec, embed_dim)
        self.embed_dropout = nn.Dropout1d(embed_dropout)
        self.widths = list(widths)
        self.convs = nn.ModuleList(
            nn.Conv1d(embed_dim, count, width) for width, count in zip(widths, filters, strict=True)
        )
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(sum(filters) * (1 + self.mean_pooling), spec.num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        lengths = lengths_of(ids)  # (B,)
        # Every window must fit even in a one-token batch. Always padding (rather than only when
        # T is short) keeps the computation free of shape-dependent branches, so traced exports
        # (ONNX, TorchScript) work for every T; the extra positions embed to zeros and fall
        # outside `valid` below, so no output changes.
        ids = nn.functional.pad(ids, (0, max(self.widths) - 1), value=PAD_ID)  # (B, T + w - 1)
        x = self.embed_dropout(self.embedding(ids).transpose(1, 2))  # (B, E, T)
        pooled = []
        for width, conv in zip(self.widths, self.convs, strict=True):
            features = conv(x)  # (B, F, T - width + 1): one value per window start
            starts = torch.arange(features.shape[2], device=ids.device)
            valid = starts < (lengths - width + 1).clamp_min(1).unsqueeze(1)  # (B, T - width + 1)
            pooled.append(features.masked_fill(~valid.unsqueeze(1), float("-inf")).amax(2))
            if self.mean_pooling:  # mean of the rectified windows (ReLU first, as for max)
                rectified = torch.relu(features) * valid.unsqueeze(1)
                pooled.append(rectified.sum(2) / valid.sum(1, keepdim=True).clamp_min(1))
        features = torch.relu(torch.cat(pooled, dim=1))  # (B, sum(filters) * poolings)
        return self.classifier(self.dropout(features))


def as_list(value: int | Sequence[int], count: int, name: str) -> list[int]:
    """One value per convolution width: an int is repeated, a list must match the widths."""
    if isinstance(value, int):
        return [value] * count
    if len(value) != count:
        raise InvalidArgumentError(
            f"textcnn: {name} has {len(value)} entries but there are {count} widths"
        )
    return list(value)


@MODELS.register(
    "textcnn",
    summary="Kim's TextCNN: 3/4/5-wide convs, max-over-time",
    input="text",
    training=training.TEXT_CNN,
)
def textcnn(
    spec: TextSpec,
    *,
    embed_dim: int = 128,
    widths: Sequence[int] = (3, 4, 5),
    filters: int | Sequence[int] = 100,
    dropout: float = 0.5,
    embed_dropout: float = 0.0,
    pooling: str = "max",
) -> nn.Module:
    """TextCNN; `filters` is one count for every width or one per width (e.g. [32, 64, 128])."""
    counts = as_list(filters, len(widths), "filters")
    return TextCNN(spec, embed_dim, widths, counts, dropout, embed_dropout, pooling)
