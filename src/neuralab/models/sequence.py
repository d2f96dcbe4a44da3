"""Pieces shared by the text models: the padding id, token embeddings, and lengths and masked
pooling over padded batches.

Every text model takes padded token ids int64 (B, T), where id 0 is padding and sits only at
the end of a row, and returns logits (B, num_classes). Masks and lengths come from `ids != 0`,
so appending more padding never changes an output in eval mode, and a batch's longest text
does not change anyone else's prediction.
"""

from __future__ import annotations

import torch
from torch import nn

from neuralab.models.registry import TextSpec

PAD_ID = 0  # data/tokenizer.py reserves id 0 for padding


def lengths_of(ids: torch.Tensor) -> torch.Tensor:
    """Number of real (non-padding) tokens per row: (B, T) → (B,)."""
    return (ids != PAD_ID).sum(dim=1)


def embedding(spec: TextSpec, dim: int) -> nn.Embedding:
    """Token embeddings with the padding row fixed at zero (it never receives a gradient)."""
    return nn.Embedding(spec.vocab_size, dim, padding_idx=PAD_ID)


def masked_mean(values: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Mean over real positions: values (B, T, D), real bool (B, T) → (B, D)."""
    weights = real.unsqueeze(2).to(values.dtype)
    return (values * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def masked_max(values: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Max over real positions (zeros for a row without any): (B, T, D), (B, T) → (B, D)."""
    filled = values.masked_fill(~real.unsqueeze(2), float("-inf")).amax(1)
    return torch.where(real.any(1, keepdim=True), filled, torch.zeros_like(filled))
