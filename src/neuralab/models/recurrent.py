"""Recurrent text classifiers: RNN, LSTM and GRU layers over padded batches, bidirectional by
default."""

from __future__ import annotations

import torch
from torch import nn

from neuralab.models import training
from neuralab.models.registry import MODELS, TextSpec
from neuralab.models.sequence import PAD_ID, embedding, masked_max, masked_mean
from neuralab.registry import InvalidArgumentError


class RecurrentClassifier(nn.Module):
    """Embeddings → (bi)directional RNN/LSTM/GRU layers → pooled states → dropout → linear.

    Padding never enters a real position's state, without packed sequences: padding sits only
    at the end of a row, so the forward direction reaches it only after every real token, and
    the backward direction runs forward over each row's real tokens reversed in place
    (`reverse_real`), padding again last. Packed sequences of unequal lengths take PyTorch's
    slow generic CPU path (about 10x slower for an LSTM here); padded batches take the fused
    kernels, and length bucketing keeps the padding few.

    Pooling: `last` concatenates each direction's state after its last real token (the classic
    choice); `max` and `mean` pool every real position's output.
    """

    CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}

    def __init__(
        self,
        spec: TextSpec,
        cell: str,
        embed_dim: int,
        hidden: int,
        layers: int,
        bidirectional: bool,
        dropout: float,
        pooling: str,
    ) -> None:
        super().__init__()
        if pooling not in ("last", "max", "mean"):
            raise InvalidArgumentError(
                f"model {cell!r}: pooling {pooling!r} is unknown; valid: last, max, mean"
            )
        self.embedding = embedding(spec, embed_dim)
        directions = 2 if bidirectional else 1
        self.forward_layers, self.backward_layers = nn.ModuleList(), nn.ModuleList()
        for layer in range(layers):
            size = embed_dim if layer == 0 else hidden * directions
            self.forward_layers.append(self.CELLS[cell](size, hidden, batch_first=True))
            if bidirectional:
                self.backward_layers.append(self.CELLS[cell](size, hidden, batch_first=True))
        self.pooling, self.dropout = pooling, nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden * directions, spec.num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        real = ids != PAD_ID  # (B, T)
        lengths = real.sum(1).clamp_min(1)  # an empty text runs over one padding step
        x = self.embedding(ids)  # (B, T, E)
        for index, forward_rnn in enumerate(self.forward_layers):
            x = self.dropout(x)  # on the embeddings, then between layers
            outputs = [forward_rnn(x)[0]]  # (B, T, H)
            if self.backward_layers:
                reversed_outputs = self.backward_layers[index](reverse_real(x, lengths))[0]
                outputs.append(reverse_real(reversed_outputs, lengths))
            x = torch.cat(outputs, dim=2)  # (B, T, H * directions)
        if self.pooling == "last":
            last = (lengths - 1).view(-1, 1, 1).expand(-1, 1, x.shape[2])
            pooled = x.gather(1, last).squeeze(1)  # forward half: state after the last token
            if self.backward_layers:  # backward half: its state after the first token
                half = x.shape[2] // 2
                pooled = torch.cat([pooled[:, :half], x[:, 0, half:]], dim=1)
        else:
            real = torch.arange(x.shape[1], device=ids.device) < lengths.unsqueeze(1)
            pooled = (masked_max if self.pooling == "max" else masked_mean)(x, real)
        return self.classifier(self.dropout(pooled))


def reverse_real(values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each row's first `lengths` positions in place, padding left at the end:
    (B, T, D), (B,) → (B, T, D). Its own inverse."""
    positions = torch.arange(values.shape[1], device=values.device)  # (T,)
    lengths = lengths.unsqueeze(1)  # (B, 1)
    order = torch.where(positions < lengths, lengths - 1 - positions, positions)  # (B, T)
    return values.gather(1, order.unsqueeze(2).expand_as(values))


def recurrent_factory(cell: str, summary: str) -> None:
    """Register `cell` (rnn, lstm, gru) as a model with the shared keyword arguments."""

    def factory(
        spec: TextSpec,
        *,
        embed_dim: int = 128,
        hidden: int = 128,
        layers: int = 1,
        bidirectional: bool = True,
        dropout: float = 0.3,
        pooling: str = "max",
    ) -> nn.Module:
        return RecurrentClassifier(
            spec, cell, embed_dim, hidden, layers, bidirectional, dropout, pooling
        )

    factory.__doc__ = summary
    MODELS.register(cell, summary=summary, input="text", training=training.RECURRENT)(factory)


recurrent_factory("rnn", "Elman RNN (tanh) over padded batches, bidirectional by default")
recurrent_factory("lstm", "LSTM over padded batches, bidirectional by default")
recurrent_factory("gru", "GRU over padded batches, bidirectional by default")
