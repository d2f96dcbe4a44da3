"""fastText-style bag of word and hashed n-gram embeddings, with an optional NBSVM-style
naive-Bayes logistic-regression term."""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn

from neuralab.models import training
from neuralab.models.kept_rows import compact_rows, select_rows
from neuralab.models.registry import MODELS, TextSpec
from neuralab.models.sequence import PAD_ID
from neuralab.registry import InvalidArgumentError

# fastText's n-gram hash multiplier (src/dictionary.cc): odd and not a multiple of 5, so it is
# coprime with round bucket counts and spreads consecutive ids over the whole table. (A
# multiplier close to a fraction of the bucket count would fold most n-grams onto few rows.)
NGRAM_HASH_MULTIPLIER = 116_049_371
NB_SMOOTHING = 1.0  # add-one (Laplace) smoothing of naive-Bayes feature counts, as in NBSVM


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

    With `compact=True`, `initialize_from_texts` also shrinks the tables to the rows of the
    features the training texts hold (models/kept_rows.py): those in at least `nb_min_count`
    texts for NB alone (the others' r is 0, so they add nothing), in at least one text when
    there are embeddings. The kept ids are the buffer `kept_rows` (empty: the full table).

    With `embed_words_only=True` the embeddings average the words alone (their table has a row
    per word, not per n-gram) while the NB term keeps every n-gram: a dense bag of words beside
    NBSVM, their logits summed. `load_word_vectors` starts the word rows from vectors learned
    elsewhere (train.semi.vectors: word2vec on unlabelled texts); compaction keeps those rows
    even for words no training text holds.
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
        compact: bool = False,
        embed_words_only: bool = False,
    ) -> None:
        super().__init__()
        self.nb_scale, self.nb_min_count = nb_scale, nb_min_count
        self.vocab_size, self.ngrams, self.buckets = spec.vocab_size, ngrams, buckets
        self.binary, self.compact, self.num_classes = binary, compact, spec.num_classes
        rows = spec.vocab_size + (buckets if ngrams > 1 else 0)
        self.hashed_rows = rows  # ids features() gives: 0 .. rows - 1
        # (K,) int32: sorted ids of the rows kept (compact=True, once initialised); empty = all.
        self.register_buffer("kept_rows", torch.zeros(0, dtype=torch.int32))
        self.folded_nb: torch.Tensor | None = None  # set on the copy for_export makes
        self.words_only = embed_words_only
        # (vocab_size,) bool: the words load_word_vectors gave a vector (kept by compaction)
        self.pretrained: torch.Tensor | None = None
        self.bag: nn.EmbeddingBag | None = None  # embed_dim=0: no fastText part (NB-LR alone)
        if embed_dim:
            self.bag = nn.EmbeddingBag(
                spec.vocab_size if embed_words_only else rows,
                embed_dim,
                mode="mean",
                padding_idx=PAD_ID,
                sparse=sparse,
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
        """Set the naive-Bayes log-count ratios from the training texts (nb=True), and keep
        only the rows of the features they hold (compact=True).

        batches: (ids int64 (B, T), labels int64 (B,)) covering the training split once."""
        if self.nb_weight is None and not self.compact:
            return
        if len(self.kept_rows):
            raise RuntimeError("initialize_from_texts: the tables are already compact")
        per_class = self.texts_holding(batches)  # (rows, classes)
        if self.nb_weight is not None:
            self.nb_ratio.copy_(self.log_count_ratios(per_class))
        if self.compact:
            needed = self.nb_min_count if self.bag is None else 1
            texts = per_class.sum(1)  # (rows,): how many training texts hold each feature
            seen = texts >= needed
            if self.words_only:  # the n-grams feed the NB term alone
                seen[self.vocab_size :] = texts[self.vocab_size :] >= self.nb_min_count
            if self.pretrained is not None:
                seen[: self.vocab_size] |= self.pretrained.to(seen.device)
            seen[PAD_ID] = False
            if not seen.any():
                raise InvalidArgumentError(
                    f"ngram: no word or n-gram is in {needed} training texts, so the model "
                    "would have no features; lower nb_min_count or check the training data"
                )
            self.keep_rows(seen.nonzero().squeeze(1).to(torch.int32))

    def texts_holding(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """(rows, classes) float64: how many texts of each class hold each feature."""
        rows, classes = self.hashed_rows, self.num_classes
        device = self.kept_rows.device
        counts = torch.zeros(classes * rows, dtype=torch.float64, device=device)
        for ids, labels in batches:
            features = self.features(ids)  # already distinct when binary
            present = features if self.binary else distinct(features)  # (B, L): once per text
            cells = labels.unsqueeze(1) * rows + present  # (B, L) flat (class, row) index
            counts += torch.bincount(cells[present != PAD_ID], minlength=classes * rows)
        return counts.view(classes, rows).T

    def log_count_ratios(self, per_class: torch.Tensor) -> torch.Tensor:
        """NBSVM's r (rows, classes) from the per-class text counts, float32."""
        inside = per_class + NB_SMOOTHING
        outside = per_class.sum(1, keepdim=True) - per_class + NB_SMOOTHING
        ratio = (inside / inside.sum(0)).log() - (outside / outside.sum(0)).log()
        ratio[PAD_ID] = 0.0
        # Features in fewer than nb_min_count texts say more about those texts than the class.
        ratio[per_class.sum(1) < self.nb_min_count] = 0.0
        # Output columns no text counts for (a multi-task run's regression heads) get none.
        ratio[:, per_class.sum(0) == 0] = 0.0
        return ratio.float()

    def keep_rows(self, kept: torch.Tensor) -> None:
        """Shrink every table to the padding row and the `kept` rows (K,) int32, in order."""
        self.kept_rows = kept
        if self.bag is not None:
            # words-only: the kept ids are sorted, so the kept words come first
            rows = kept[: int((kept < self.vocab_size).sum())] if self.words_only else kept
            weight = select_rows(self.bag.weight.detach(), rows)
            frozen = not self.bag.weight.requires_grad  # train.freeze, set before compaction
            self.bag = nn.EmbeddingBag.from_pretrained(
                weight, freeze=frozen, mode="mean", padding_idx=PAD_ID, sparse=self.bag.sparse
            )
        if self.nb_weight is not None:
            weight = select_rows(self.nb_weight.weight.detach(), kept)
            self.nb_weight = nn.Embedding.from_pretrained(
                weight,
                freeze=not self.nb_weight.weight.requires_grad,
                sparse=self.nb_weight.sparse,
            )
            self.nb_ratio = select_rows(self.nb_ratio, kept)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        """A compact checkpoint resizes the tables before its values are copied in; one saved
        before `kept_rows` existed holds full tables."""
        kept = state_dict.setdefault(prefix + "kept_rows", torch.zeros(0, dtype=torch.int32))
        if len(kept) and not len(self.kept_rows):
            self.keep_rows(kept.to(self.kept_rows.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def table_rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Each word's and n-gram's row in the tables: (B, T) → (B, T * ngrams), 0 = none."""
        features = self.features(ids)
        return compact_rows(self.kept_rows, features) if len(self.kept_rows) else features

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = self.table_rows(ids)  # (B, L)
        if self.bag is None:  # NB-weighted logistic regression alone (embed_dim=0 needs nb)
            return self.nb_term(rows) + self.bias  # no len(ids): a trace would freeze it
        words = rows
        if self.words_only:  # word rows come first (ids below vocab_size, or compact ranks)
            words = torch.where(rows < self.bag.num_embeddings, rows, PAD_ID)
        logits = self.classifier(self.dropout(self.bag_mean(words)))
        if self.nb_weight is not None:
            logits = logits + self.nb_term(rows)
        return logits

    @torch.no_grad()
    def load_word_vectors(self, vectors: torch.Tensor, known: torch.Tensor) -> None:
        """Start the word embeddings of the `known` words (vocab_size,) bool from `vectors`
        (vocab_size, E); the other rows keep their random start. Before initialize_from_texts."""
        if self.bag is None:
            raise InvalidArgumentError(
                "ngram: word vectors start the embeddings, and this model has none "
                "(embed_dim=0); set model.args.embed_dim to the vectors' size"
            )
        if len(self.kept_rows):
            raise RuntimeError("load_word_vectors: the tables are already compact")
        if vectors.shape != (self.vocab_size, self.bag.embedding_dim):
            raise InvalidArgumentError(
                f"ngram: the word vectors are {vectors.shape[1]}-dimensional and the model's "
                f"embeddings {self.bag.embedding_dim}; set model.args.embed_dim="
                f"{vectors.shape[1]}"
            )
        known = known.clone()
        known[PAD_ID] = False
        weight = self.bag.weight
        weight[: self.vocab_size][known] = vectors[known].to(weight.device, weight.dtype)
        self.pretrained = known

    def nb_term(self, rows: torch.Tensor) -> torch.Tensor:
        """nb_scale * sum over each text's features of r * w: (B, L) → (B, classes)."""
        if self.folded_nb is not None:  # a copy made by for_export
            return self.folded_nb[rows].sum(1)
        weighted = self.nb_weight(rows) * self.nb_ratio[rows]  # (B, L, classes)
        return self.nb_scale * weighted.sum(1)

    def for_export(self) -> NgramBag:
        """A copy to trace: nb_scale * r * w folded into one table (rows, classes), so an
        export stores it once instead of r and w. Equal up to float rounding; the state_dict
        is unchanged (the folded table is a plain attribute, a constant to the tracer)."""
        exported = copy.deepcopy(self)
        if self.nb_weight is not None:
            exported.folded_nb = self.nb_scale * self.nb_weight.weight.detach() * self.nb_ratio
        return exported

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


@MODELS.register(
    "ngram",
    summary="fastText-style bag of word + hashed n-gram embeddings",
    input="text",
    training=training.NGRAM,
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
    compact: bool = True,
    embed_words_only: bool = False,
) -> nn.Module:
    """fastText: mean of word and hashed n-gram embeddings → linear (ngrams=2: uni+bigrams).

    `sparse=True` gives the table sparse gradients: each step then touches only the rows its
    batch uses, which makes plain SGD (fastText's optimizer, no momentum or weight decay) fast
    even with millions of buckets; optimizers with dense state (Adam) cannot take them.
    `binary=True` counts each distinct word or n-gram once per text (as NBSVM does), so a
    word repeated ten times weighs no more than once.
    `nb=True` adds a logistic regression on NBSVM's naive-Bayes scaled features (see NgramBag),
    its steps scaled by `nb_scale`; features in fewer than `nb_min_count` texts get no weight.
    `compact=True` keeps only the table rows of features the training texts hold (the run's
    size then follows its data, not `buckets`); `false` keeps every bucket.
    `embed_words_only=True` gives the embeddings the words alone (the n-grams then feed the NB
    term only, so it needs nb=true): a dense bag of (pretrained) word vectors beside NBSVM.
    """
    if ngrams < 1 or buckets < 1:
        raise InvalidArgumentError(
            f"ngram: ngrams and buckets must be >= 1, got {ngrams}, {buckets}"
        )
    if embed_dim < 0 or (embed_dim == 0 and not nb):
        raise InvalidArgumentError(
            f"ngram: embed_dim must be >= 1 (or 0 together with nb=true, for NB-weighted "
            f"logistic regression alone), got {embed_dim}"
        )
    if embed_words_only and (not embed_dim or (ngrams > 1 and not nb)):
        raise InvalidArgumentError(
            "ngram: embed_words_only=true embeds the words alone; it needs embed_dim >= 1, "
            f"and with ngrams={ngrams} nb=true (nothing else would use the n-grams)"
        )
    return NgramBag(
        spec, embed_dim, ngrams, buckets, dropout, sparse, binary, nb, nb_scale, nb_min_count,
        compact, embed_words_only,
    )  # fmt: skip
