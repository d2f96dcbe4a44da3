"""Text classifiers: TextCNN, RNN/LSTM/GRU, a Transformer encoder and a fastText-style n-gram bag.

Every model takes padded token ids int64 (B, T), where id 0 is padding and sits only at the end
of a row, and returns logits (B, num_classes). Masks and lengths come from `ids != 0`, so
appending more padding never changes an output in eval mode, and a batch's longest text does not
change anyone else's prediction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from neuralab.models import MODELS, TextSpec

PAD_ID = 0  # data/tokenizer.py reserves id 0 for padding
# fastText's n-gram hash multiplier (src/dictionary.cc): odd and not a multiple of 5, so it is
# coprime with round bucket counts and spreads consecutive ids over the whole table. (A
# multiplier close to a fraction of the bucket count would fold most n-grams onto few rows.)
NGRAM_HASH_MULTIPLIER = 116_049_371
NB_SMOOTHING = 1.0  # add-one (Laplace) smoothing of naive-Bayes feature counts, as in NBSVM


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
            raise ValueError(f"textcnn: pooling {pooling!r} is unknown; valid: max, max+mean")
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
            raise ValueError(
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


class NgramBag(nn.Module):
    """fastText (Joulin et al. 2016): the mean embedding of a text's words and hashed word
    n-grams (n = 2..`ngrams`, hashed from the ids into `buckets` extra rows) through an
    nn.EmbeddingBag, then dropout and a linear classifier. N-grams touching padding are dropped.

    With `nb=True` a second, linear term is added to the logits: logistic regression on
    NBSVM's naive-Bayes scaled features (Wang & Manning 2012). Each feature f has a fixed
    log-count ratio r[f, c] (how much likelier f is in class c's texts than in the others',
    counted once per text with add-one smoothing, set by `initialize_from_texts`; 0 for features
    in fewer than `nb_min_count` texts) and a learned weight w[f, c] starting at 0; the term is
    `nb_scale` * sum over a text's features of r * w. Scaling by r lets informative features
    move the logits faster than uninformative ones; `nb_scale` sets this term's step size
    relative to the embeddings' under scale-free optimizers such as Adagrad (the linear term
    overfits IMDB within one epoch at the embeddings' learning rate).
    """

    def __init__(
        self,
        spec: TextSpec,
        embed_dim: int,
        ngrams: int,
        buckets: int,
        dropout: float,
        sparse: bool,
        binary: bool,
        nb: bool = False,
        nb_scale: float = 1.0,
        nb_min_count: int = 1,
    ) -> None:
        super().__init__()
        self.nb_scale, self.nb_min_count = nb_scale, nb_min_count
        self.vocab_size, self.ngrams, self.buckets = spec.vocab_size, ngrams, buckets
        self.binary = binary
        rows = spec.vocab_size + (buckets if ngrams > 1 else 0)
        self.bag: nn.EmbeddingBag | None = None  # embed_dim=0: no fastText part (NB-LR alone)
        if embed_dim:
            self.bag = nn.EmbeddingBag(
                rows, embed_dim, mode="mean", padding_idx=PAD_ID, sparse=sparse
            )
            bound = 1.0 / embed_dim  # fastText's uniform(-1/dim, 1/dim) initialisation
            nn.init.uniform_(self.bag.weight, -bound, bound)
            with torch.no_grad():
                self.bag.weight[PAD_ID].zero_()
        self.dropout = nn.Dropout(dropout)
        if embed_dim:
            self.classifier = nn.Linear(embed_dim, spec.num_classes)
        else:
            self.bias = nn.Parameter(torch.zeros(spec.num_classes))
        self.nb_weight: nn.Embedding | None = None
        if nb:
            self.nb_weight = nn.Embedding(rows, spec.num_classes, sparse=sparse)
            nn.init.zeros_(self.nb_weight.weight)
            # (rows, classes); zero until initialize_from_texts, and always zero for padding.
            self.register_buffer("nb_ratio", torch.zeros(rows, spec.num_classes))

    def features(self, ids: torch.Tensor) -> torch.Tensor:
        """Row ids of every word and n-gram: (B, T) → (B, T * ngrams), 0 = nothing.

        Column n·T + i holds the (n+1)-gram starting at token i (before `binary` sorts each
        row). N-grams that would run past the end of the row read padding and are dropped (0),
        and 0 adds nothing to the bag's mean or to the NB term (nb_ratio's padding row stays 0),
        so the extra columns change no output. Shifted slices of a padded
        copy (rather than `unfold` and a branch on T) keep the graph free of shape-dependent
        steps, so traced exports are right for every T, one-token texts included.
        """
        length = ids.shape[1]
        padded = nn.functional.pad(ids, (0, self.ngrams - 1), value=PAD_ID)  # (B, T + n - 1)
        grams, hashed, complete = [ids], ids, ids != PAD_ID  # hashed, complete: (B, T)
        for k in range(1, self.ngrams):  # extend every n-gram by its (k+1)-th token
            token = padded[:, k : k + length]  # (B, T): the token k places to the right
            # Reduced every step: stays far below int64 overflow.
            hashed = (hashed * NGRAM_HASH_MULTIPLIER + token).remainder(self.buckets)
            complete = complete & (token != PAD_ID)
            grams.append(torch.where(complete, self.vocab_size + hashed, PAD_ID))
        features = torch.cat(grams, dim=1)
        return distinct(features) if self.binary else features

    @torch.no_grad()
    def initialize_from_texts(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Set the naive-Bayes log-count ratios from the training texts (nb=True only).

        batches: (ids int64 (B, T), labels int64 (B,)) covering the training split once."""
        if self.nb_weight is None:
            return
        rows, classes = self.nb_ratio.shape
        counts = torch.zeros(classes * rows, dtype=torch.float64, device=self.nb_ratio.device)
        for ids, labels in batches:
            features = self.features(ids)  # already distinct when binary
            present = features if self.binary else distinct(features)  # (B, L): once per text
            cells = labels.unsqueeze(1) * rows + present  # (B, L) flat (class, row) index
            counts += torch.bincount(cells[present != PAD_ID], minlength=classes * rows)
        per_class = counts.view(classes, rows).T  # (rows, classes) texts holding f, per class
        inside = per_class + NB_SMOOTHING
        outside = per_class.sum(1, keepdim=True) - per_class + NB_SMOOTHING
        ratio = (inside / inside.sum(0)).log() - (outside / outside.sum(0)).log()
        ratio[PAD_ID] = 0.0
        # Features in fewer than nb_min_count texts say more about those texts than the class.
        ratio[per_class.sum(1) < self.nb_min_count] = 0.0
        self.nb_ratio.copy_(ratio.float())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        features = self.features(ids)  # (B, L)
        if self.bag is None:
            logits = self.bias.expand(len(ids), -1)
        else:
            logits = self.classifier(self.dropout(self.bag_mean(features)))
        if self.nb_weight is not None:
            weighted = self.nb_weight(features) * self.nb_ratio[features]  # (B, L, classes)
            logits = logits + self.nb_scale * weighted.sum(1)
        return logits

    def bag_mean(self, features: torch.Tensor) -> torch.Tensor:
        """Mean embedding of each row's features, padding left out: (B, L) → (B, E).

        Traced exports (ONNX has no EmbeddingBag with a padding index) take the same mean as a
        gather and a masked sum, equal up to float rounding (tests/test_export.py checks it);
        training keeps the EmbeddingBag, which is faster and can give sparse gradients.
        """
        if not torch.jit.is_tracing():
            return self.bag(features)
        real = (features != PAD_ID).unsqueeze(2).to(self.bag.weight.dtype)  # (B, L, 1)
        summed = (self.bag.weight[features] * real).sum(1)  # (B, E)
        return summed / real.sum(1).clamp_min(1.0)  # a bag of padding alone gives zeros


def distinct(rows: torch.Tensor) -> torch.Tensor:
    """Each row's ids with repeats replaced by padding: (B, L) → (B, L), sorted per row."""
    ordered = rows.sort(dim=1).values
    first = torch.zeros_like(ordered[:, :1], dtype=torch.bool)  # (B, 1): never a repeat
    repeat = torch.cat([first, ordered[:, 1:] == ordered[:, :-1]], dim=1)  # (B, L)
    return ordered.masked_fill(repeat, PAD_ID)


def as_list(value: int | Sequence[int], count: int, name: str) -> list[int]:
    """One value per convolution width: an int is repeated, a list must match the widths."""
    if isinstance(value, int):
        return [value] * count
    if len(value) != count:
        raise ValueError(f"textcnn: {name} has {len(value)} entries but there are {count} widths")
    return list(value)


@MODELS.register("textcnn", summary="Kim's TextCNN: 3/4/5-wide convs, max-over-time", input="text")
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
    MODELS.register(cell, summary=summary, input="text")(factory)


recurrent_factory("rnn", "Elman RNN (tanh) over packed sequences, bidirectional by default")
recurrent_factory("lstm", "LSTM over packed sequences, bidirectional by default")
recurrent_factory("gru", "GRU over packed sequences, bidirectional by default")


@MODELS.register(
    "transformer",
    summary="Transformer encoder, learned positions, masked mean pooling",
    input="text",
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


@MODELS.register(
    "ngram", summary="fastText-style bag of word + hashed n-gram embeddings", input="text"
)
def ngram(
    spec: TextSpec,
    *,
    embed_dim: int = 64,
    ngrams: int = 2,
    buckets: int = 1_000_000,
    dropout: float = 0.0,
    sparse: bool = False,
    binary: bool = False,
    nb: bool = False,
    nb_scale: float = 1.0,
    nb_min_count: int = 1,
) -> nn.Module:
    """fastText: mean of word and hashed n-gram embeddings → linear (ngrams=2: uni+bigrams).

    `sparse=True` gives the table sparse gradients: each step then touches only the rows its
    batch uses, which makes plain SGD (fastText's optimizer, no momentum or weight decay) fast
    even with millions of buckets; optimizers with dense state (Adam) cannot take them.
    `binary=True` counts each distinct word or n-gram once per text (as NBSVM does), so a
    word repeated ten times weighs no more than once.
    `nb=True` adds a logistic regression on NBSVM's naive-Bayes scaled features (see NgramBag),
    its steps scaled by `nb_scale`; features in fewer than `nb_min_count` texts get no weight.
    """
    if ngrams < 1 or buckets < 1:
        raise ValueError(f"ngram: ngrams and buckets must be >= 1, got {ngrams}, {buckets}")
    if embed_dim < 0 or (embed_dim == 0 and not nb):
        raise ValueError(
            f"ngram: embed_dim must be >= 1 (or 0 together with nb=true, for NB-weighted "
            f"logistic regression alone), got {embed_dim}"
        )
    return NgramBag(
        spec, embed_dim, ngrams, buckets, dropout, sparse, binary, nb, nb_scale, nb_min_count
    )
