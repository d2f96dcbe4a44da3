"""Attributions for text models: one weight per word of the text as the user wrote it.

    integrated-gradients  layer integrated gradients on the token embeddings (Captum's
                          LayerIntegratedGradients, baseline: padding), summed over the
                          embedding dimension; models with a token embedding table (TextCNN,
                          RNN/LSTM/GRU, Transformer)
    occlusion             how much the target class's log-odds drop when the word is removed;
                          any text model (the n-gram models too: they have no token embedding)

Tokens are merged back to whitespace-separated words by their character offsets (a word cut
into several sub-word tokens gets their sum); words past the run's truncation get no weight
and are flagged. Recurrent layers run with cuDNN off: its RNN backward needs training mode.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from neuralab.attribution.images import IG_STEPS, AttributionError, captum
from neuralab.data.tokenizer import PAD_ID

TEXT_METHODS = ("integrated-gradients", "occlusion")
WORD = re.compile(r"\S+")


@dataclass
class WordWeights:
    """One text's words, their weights, and which words the model never saw (truncated)."""

    words: list[str]
    weights: list[float]
    truncated: list[bool]


def token_embedding(model: nn.Module, vocab_size: int) -> nn.Embedding:
    """The embedding table indexed by token ids (rows = the tokenizer's vocabulary)."""
    for module in model.modules():
        if isinstance(module, nn.Embedding) and module.num_embeddings == vocab_size:
            return module
    raise AttributionError(
        f"integrated-gradients on text needs a token embedding table and "
        f"{type(model).__name__} has none (n-gram models hash n-grams); use --method occlusion"
    )


def words_of(text: str) -> list[tuple[str, int, int]]:
    """Whitespace-separated words with their (start, end) characters."""
    return [(match.group(), match.start(), match.end()) for match in WORD.finditer(text)]


def token_words(offsets: list[tuple[int, int]], words: list[tuple[str, int, int]]) -> list[int]:
    """The word index of each token (by the token's first character)."""
    starts = [start for _, start, _ in words]
    index, found = 0, []
    for start, _ in offsets:
        while index + 1 < len(starts) and starts[index + 1] <= start:
            index += 1
        found.append(index)
    return found


def integrated_gradients(model, tokenizer, text: str, target: int) -> WordWeights:
    """Layer integrated gradients on the token embeddings of one text, merged into words."""
    attr = captum()
    ids, offsets = tokenizer.encode_aligned(text)
    words = words_of(text)
    if not ids:
        raise AttributionError(f"the text {text[:40]!r} has no token the model knows")
    embedding = token_embedding(model, tokenizer.vocab_size)
    inputs = torch.tensor([ids], device=embedding.weight.device)  # (1, T)
    explainer = attr.LayerIntegratedGradients(lambda x: model(x).float(), embedding)
    with torch.backends.cudnn.flags(enabled=False):
        found = explainer.attribute(
            inputs,
            baselines=torch.full_like(inputs, PAD_ID),
            target=target,
            n_steps=IG_STEPS,
            internal_batch_size=IG_STEPS,
        )  # (1, T, D)
    # (T,); a model that pads short texts to its widest filter embeds trailing padding too
    per_token = found.detach().float().sum(-1)[0, : len(ids)].cpu()
    return merge(words, token_words(offsets, words), per_token)


def merge(words, owners: list[int], per_token: torch.Tensor) -> WordWeights:
    """Token weights summed per word; words without a kept token are flagged truncated."""
    weights = [0.0] * len(words)
    seen = [False] * len(words)
    for owner, weight in zip(owners, per_token.tolist(), strict=True):
        weights[owner] += weight
        seen[owner] = True
    return WordWeights([w for w, _, _ in words], weights, [not s for s in seen])


def log_odds(probabilities: torch.Tensor) -> torch.Tensor:
    """log(p / (1 - p)) in float64, p kept 1e-7 (float32's resolution near 1) from 0 and 1:
    a confident prediction's probability barely moves (0.9995 → 0.999), its log-odds do."""
    p = probabilities.double().clamp(1e-7, 1 - 1e-7)
    return p.log() - (1 - p).log()


def occlusion(probabilities_of, text: str, target: int) -> WordWeights:
    """Each word's weight: the target's log-odds on the text minus on the text without that
    word (positive: the word pushed towards the target). `probabilities_of(texts)` →
    (N, classes); the text and its variants go through it together."""
    words = [w for w, _, _ in words_of(text)]
    if not words:
        raise AttributionError("the text is empty: nothing to explain")
    variants = [" ".join(words)] + [" ".join(words[:i] + words[i + 1 :]) for i in range(len(words))]
    odds = log_odds(probabilities_of(variants)[:, target])
    weights = torch.nan_to_num(odds[0] - odds[1:])  # an empty variant may score NaN: 0
    return WordWeights(words, weights.tolist(), [False] * len(words))
