"""A small pre-norm Transformer encoder text classifier."""

from __future__ import annotations

import torch
from torch import nn

from neuralab.models import training
from neuralab.models.registry import MODELS, TextSpec
from neuralab.models.sequence import PAD_ID, embedding, masked_mean


class TransformerClassifier(nn.Module):
    """Token + learned position embeddings → pre-norm Transformer encoder (multi-head
    self-attention with a key padding mask) → masked mean pooling → linear classifier."""

    def __init__(
        self,
        spec: TextSpec,
        embed_dim: int,
        heads: int,
        layers: int,
        ff_dim: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.max_length = spec.max_length
        self.embedding = embedding(spec, embed_dim)
        self.position = nn.Embedding(spec.max_length, embed_dim)
        for table in (self.embedding, self.position):
            nn.init.normal_(table.weight, std=0.02)  # GPT-2/BERT initialisation scale
        with torch.no_grad():
            self.embedding.weight[PAD_ID].zero_()
        block = nn.TransformerEncoderLayer(
            embed_dim, heads, ff_dim, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        # No dropout on the attention probabilities: drawing a (B, heads, T, T) mask cost a
        # quarter of each CPU training step at 256 tokens, and it rules out the fused attention
        # kernels. Dropout stays on the embeddings, the residual branches and the classifier.
        block.self_attn.dropout = 0.0
        self.encoder = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(embed_dim, spec.num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        # The check is eager-only: a traced export cannot raise, and its input contract says
        # texts are truncated to max_length (the run's tokenizer does that).
        if not torch.jit.is_tracing() and ids.shape[1] > self.max_length:
            if (ids[:, self.max_length :] != PAD_ID).any():
                raise ValueError(
                    f"transformer: a text is longer than max_length={self.max_length} tokens; "
                    "truncate it with the run's tokenizer"
                )
        ids = ids[:, : self.max_length]  # unconditional, so exports keep it for every T
        real = ids != PAD_ID  # (B, T)
        # An empty text attends to one padding token, not to nothing. (Out of place: ONNX has
        # no in-place `|=` on a slice.)
        first = torch.arange(ids.shape[1], device=ids.device) == 0  # (T,)
        real = real | (first & ~real.any(1, keepdim=True))  # (B, T)
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.dropout(self.embedding(ids) + self.position(positions))  # (B, T, E)
        x = self.norm(self.encoder(x, src_key_padding_mask=~real))
        return self.classifier(self.dropout(masked_mean(x, real)))


@MODELS.register(
    "transformer",
    summary="Transformer encoder, learned positions, masked mean pooling",
    input="text",
    training=training.TRANSFORMER,
)
def transformer(
    spec: TextSpec,
    *,
    embed_dim: int = 128,
    heads: int = 4,
    layers: int = 2,
    ff_dim: int = 256,
    dropout: float = 0.1,
) -> nn.Module:
    """A small pre-norm Transformer encoder classifier (positions up to spec.max_length)."""
    return TransformerClassifier(spec, embed_dim, heads, layers, ff_dim, dropout)
