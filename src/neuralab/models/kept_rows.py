"""Hashed feature tables sized to the features seen in training.

A hashed n-gram table has a row for every bucket, though a training set fills only a fraction
of them (IMDB's 25,000 reviews: 0.5M of 8.1M rows hold a uni-, bi- or trigram seen in at least
four reviews). The kept rows' ids are stored sorted, and a feature's row in the compact table is
its rank among them (1-based; 0 = padding, or a feature never seen in training, which then
adds nothing: its row would hold only its random initialisation).
"""

from __future__ import annotations

import torch


def compact_rows(kept: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Each feature's row in the compact table: (B, L) hashed row ids → (B, L) int64.

    kept: (K,) int32, the sorted, distinct row ids kept (none of them 0, the padding row).
    A feature whose id is kept gets its 1-based rank in `kept`; any other gets 0.
    """
    query = features.to(torch.int32)
    if torch.jit.is_tracing():  # ONNX has no searchsorted: a fixed-depth binary search
        count = traced_count_at_most(kept, query)
    else:
        count = torch.searchsorted(kept, query, right=True)  # kept ids <= each query
    found = kept[(count - 1).clamp_min(0)] == query  # (B, L)
    return torch.where(found & (count > 0), count, 0).long()


def traced_count_at_most(kept: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """How many of the sorted `kept` ids are <= each query, with gathers and comparisons only.

    The branchless binary search decides the answer one bit at a time from the highest:
    adding 2^bit to the count is right exactly when that many entries exist and the entry at
    (count + 2^bit) - 1 is still <= the query. depth = K.bit_length() steps; `kept` is read
    in place (a padded copy would be stored in the export a second time).
    """
    size = len(kept)
    count = torch.zeros_like(query)
    for bit in reversed(range(max(1, size.bit_length()))):
        probe = count + (1 << bit)
        entry = kept[(probe - 1).clamp_max(size - 1)]
        count = torch.where((probe <= size) & (entry <= query), probe, count)
    return count


def select_rows(table: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """The padding row 0 and the kept rows of a full table: (rows, D) → (K + 1, D)."""
    index = torch.cat([torch.zeros(1, dtype=torch.long), kept.long().cpu()])
    return table[index.to(table.device)].clone()
