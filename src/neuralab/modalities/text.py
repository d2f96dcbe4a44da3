"""Texts: how a run's inputs are prepared, for training and for inference alike.

`TextModality` is the codec a checkpoint describes: the run's own tokenizer (trained on the
training split only) with its truncation; it turns strings into token ids and batches of them
into padded int64 (B, T) tensors. `TextInputs` is the training side: a text dataset, its
tokenizer and every split's token ids, with length-bucketed loaders.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from neuralab.data.dataset import DataError
from neuralab.data.heads import primary, slices
from neuralab.data.text import TextDataset, TextSplit
from neuralab.data.textloader import EncodedTexts, TextBatchLoader, pad_batch
from neuralab.data.tokencache import TokenCache, cache_dir
from neuralab.data.tokenizer import TextTokenizer, TokenizerSettings
from neuralab.data.vectors import read_word_vectors
from neuralab.models import TextSpec

TOKENIZER_FILE = "tokenizer.json"
ENGINE_SAMPLE = 128  # texts timed when choosing the engine (as for images)
TEXT_BATCH = 256  # texts per forward pass when predicting


@dataclass(frozen=True)
class TextModality:
    """Strings through the run's tokenizer.

    Example:
        >>> modality = TextModality(tokenizer)
        >>> [(rows, ids)] = modality.batches(modality.prepare_all(["a wonderful film"]))
    """

    tokenizer: TextTokenizer

    kind = "text"
    spec_type = TextSpec
    tta_allowed = False  # test-time augmentation mirrors images; texts have none
    dynamic_axes = {0: "batch", 1: "length"}  # of an exported graph's input

    @classmethod
    def from_meta(cls, fields: dict, folder: Path) -> TextModality:
        """The modality that `meta()`'s fields (the tokenizer settings) and `folder`'s
        tokenizer.json describe."""
        tokenizer_settings = TokenizerSettings.from_dict(fields["tokenizer"])
        return cls(TextTokenizer.load(folder / TOKENIZER_FILE, tokenizer_settings))

    def meta(self) -> dict:
        """What a checkpoint's meta.json stores to rebuild this modality (the tokenizer itself
        is `tokenizer.json`, see `files`)."""
        return {"tokenizer": self.tokenizer.describe()}

    def files(self) -> dict[str, str]:
        """Saved with every checkpoint: the tokenizer, so predict encodes exactly as training."""
        return {TOKENIZER_FILE: self.tokenizer.to_json()}

    def describe(self) -> dict:
        """The preprocessing, as the prediction service's /info shows it."""
        return {"tokenizer": self.tokenizer.describe()}

    # -- raw inputs → model inputs -------------------------------------------------------------
    def prepare_all(self, items: Sequence) -> list[list[int]]:
        """Strings → token id lists, truncated as in training."""
        if isinstance(items, str) or not all(isinstance(text, str) for text in items):
            raise DataError("a text model predicts a list of strings, e.g. ['a wonderful film']")
        return self.tokenizer.encode(list(items))

    def batches(self, examples: Sequence[list[int]]) -> list[tuple[list[int], torch.Tensor]]:
        """Token id lists → [(rows, int64 ids (B, T))], texts of similar length together
        (little padding per batch), at most TEXT_BATCH per batch."""
        order = sorted(range(len(examples)), key=lambda i: len(examples[i]))
        chunks = [order[start : start + TEXT_BATCH] for start in range(0, len(order), TEXT_BATCH)]
        return [(rows, pad_batch([examples[i] for i in rows])) for rows in chunks]

    def collate(self, chunk: Sequence[list[int]]) -> torch.Tensor:
        """Token id lists as an exported model takes them: int64 (B, T) padded with 0."""
        return pad_batch(chunk)

    def model_inputs(self, batch: torch.Tensor) -> torch.Tensor:
        """Padded token ids are what the model takes."""
        return batch

    @staticmethod
    def worst_examples(split: TextSplit, worst: list[dict], folder: Path, plots: Any) -> tuple:
        """The report's worst test examples: no figure, their texts."""
        return [], [split.texts[row["index"]] for row in worst]

    # -- data for evaluation and export checks -------------------------------------------------
    def eval_loader(self, split: TextSplit, batch_size: int, device: torch.device):
        """A loader over a labelled split, encoded now."""
        encoded = self.tokenizer.encode_flat(split.texts)
        return TextBatchLoader(encoded, split.labels, batch_size, device=device)

    def split_examples(self, split: TextSplit, index: torch.Tensor, dataset: str) -> list:
        """The split's texts at `index`, as token id lists."""
        return self.tokenizer.encode([split.texts[i] for i in index.tolist()])

    def random_examples(self, count: int, spec: dict, generator: torch.Generator) -> list:
        """`count` seeded random id lists of 0..max_length real tokens."""
        longest = self.tokenizer.settings.max_length
        lengths = torch.randint(0, longest + 1, (count,), generator=generator).tolist()
        return [torch.randint(1, spec["vocab_size"], (n,), generator=generator).tolist()
                for n in lengths]  # fmt: skip

    def export_contract(self, bare: bool, tta: str) -> dict:
        """The text part of an export's contract: what the token ids are."""
        return {
            "input": {
                "name": "token_ids", "dtype": "int64", "shape": ["batch", "length"],
                "padding_id": 0,
                "note": "ids from the run's tokenizer (truncated to tokenizer.max_length), "
                "padded with 0 at the end of each row",
                "tokenizer": self.tokenizer.describe(),
            }
        }  # fmt: skip

    @staticmethod
    def export_graph(model: nn.Module, contract: dict) -> nn.Module:
        """The module an export holds: the model itself."""
        return model.eval()

    @staticmethod
    def bare_model(module: nn.Module) -> nn.Module:
        return module


def labels_note(dataset: TextDataset) -> str:
    """`2 classes`, or with several label fields `heads sentiment (2 classes), stars (...)`."""
    if not dataset.heads:
        return f"{len(dataset.classes)} classes"
    return "heads " + ", ".join(head.describe() for head in dataset.heads)


def vocabulary_tokenizer(
    dataset: TextDataset, settings: TokenizerSettings, cache: bool, unlabelled: bool = True
) -> TextTokenizer:
    """The tokenizer trained on the training texts (never on val or test) and, with
    `unlabelled`, the dataset's unlabelled texts (a run whose word vectors saw them), from the
    token cache (`cache`) when an identical run made it."""
    texts = vocabulary_texts(dataset, unlabelled)
    return TokenCache(cache_dir() if cache else None).tokenizer(texts, settings)


def vocabulary_texts(dataset: TextDataset, unlabelled: bool = True) -> list[str]:
    """The texts a tokenizer (and word vectors) may learn from: the training split's and,
    with `unlabelled`, the dataset's unlabelled texts; never validation or test texts."""
    texts = list(dataset.train.texts)
    if unlabelled and dataset.unlabelled is not None:
        texts += dataset.unlabelled.texts
    return texts


def prepare_text(
    dataset: TextDataset,
    settings: TokenizerSettings,
    cache: bool,
    trained: TextTokenizer | None = None,
    unlabelled_words: bool = False,
) -> TextInputs:
    """Train the tokenizer (`vocabulary_tokenizer`; with `unlabelled_words` on the unlabelled
    texts too), or take the `trained` one, and encode every split, reusing both from the token
    cache (`cache`) when an identical run made them."""
    token_cache = TokenCache(cache_dir() if cache else None)
    tokenizer = trained or vocabulary_tokenizer(dataset, settings, cache, unlabelled_words)
    splits = {"train": dataset.train, "test": dataset.test, "val": dataset.val}
    encoded = {
        name: token_cache.encode(tokenizer, split.texts)
        for name, split in splits.items()
        if split is not None
    }
    return TextInputs(dataset, tokenizer, encoded, token_cache.describe())


@dataclass(frozen=True)
class TextInputs:
    """A text dataset, its trained tokenizer and every split's token ids ("train", "test",
    maybe "val"): the training side of the text modality (the same methods as ImageInputs)."""

    dataset: TextDataset
    tokenizer: TextTokenizer
    splits: dict[str, EncodedTexts]
    cache_note: str

    @property
    def modality(self) -> TextModality:
        return TextModality(self.tokenizer)

    @property
    def spec(self) -> TextSpec:
        settings = self.tokenizer.settings
        return TextSpec(self.tokenizer.vocab_size, len(self.dataset.classes), settings.max_length)

    def describe(self) -> str:
        """The `data` log line."""
        d, settings = self.dataset, self.tokenizer.settings
        return (
            f"data   {d.name}: {len(d.train)} train, {len(d.val) if d.val else 0} val, "
            f"{len(d.test)} test texts, {labels_note(d)}; {settings.kind} tokenizer, "
            f"{self.tokenizer.vocab_size:,} ids, max {settings.max_length} tokens "
            f"({settings.truncation}); {self.cache_note}"
        )

    def labels(self, split: str) -> torch.Tensor:
        return getattr(self.dataset, split).labels

    def initialise(self, model: torch.nn.Module, device: torch.device) -> None:
        """Models with data-dependent initialisation (e.g. naive-Bayes feature ratios) see the
        training texts once, in batches."""
        if hasattr(model, "initialize_from_texts"):
            labels = self.column_labels(model)
            loader = TextBatchLoader(self.splits["train"], labels, 256, device=device)
            model.initialize_from_texts(loader)

    def column_labels(self, model: torch.nn.Module) -> torch.Tensor:
        """Each training text's output column to count it under (naive-Bayes ratios, kept
        rows): its class; with several label fields, its class in the first classification
        head (regression columns count no text, so their ratios are 0)."""
        d = self.dataset
        if not d.heads:
            return d.train.labels
        index = primary(d.heads)
        if index is None:
            if getattr(model, "nb_weight", None) is not None:
                raise DataError(
                    f"{d.name}: naive-Bayes ratios (model.args.nb) weigh features by class, and "
                    "every label field is a regression. Fix: set model.args.nb=false"
                )
            return torch.zeros(len(d.train), dtype=torch.long)
        return d.train.labels[:, index].long() + slices(d.heads)[index].start

    def examples(self) -> list[str]:
        """A few training texts, to show in TensorBoard."""
        return list(self.dataset.train.texts[:8])

    def example(self, device: torch.device) -> torch.Tensor:
        """One text of max_length tokens, (1, T), for `neuralab summary` (FLOPs grow with T)."""
        return torch.ones(1, self.spec.max_length, dtype=torch.long, device=device)

    def sample_batch(
        self, batch_size: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A training-sized batch (at most ENGINE_SAMPLE) to time engine candidates with."""
        size = min(batch_size, len(self.dataset.train), ENGINE_SAMPLE)
        labels = self.labels("train")[:size]
        loader = TextBatchLoader(self.splits["train"].head(size), labels, size, device=device)
        first = torch.arange(size)  # the first texts as stored (sorted order would be shortest)
        return loader.gather(first), labels.to(device)

    def loaders(
        self,
        batch_size: int,
        eval_batch_size: int,
        seed: int,
        augment: object,
        device: torch.device,
        channels_last: bool,
        rank: int = 0,
        world_size: int = 1,
    ) -> dict[str, TextBatchLoader]:
        """Train (shuffled, bucketed, sharded per process), test and val loaders;
        `batch_size` is this process's share of the global batch. Texts take no image
        augmentation and no memory layout: `augment` and `channels_last` are not used."""
        loaders = {}
        for name, encoded in self.splits.items():
            training = name == "train"
            loaders[name] = TextBatchLoader(
                encoded,
                self.labels(name),
                batch_size if training else eval_batch_size,
                device=device,
                shuffle=training,
                seed=seed,
                pad_shards=training,
                rank=rank,
                world_size=world_size,
            )
        return loaders


def start_from_vectors(model: torch.nn.Module, inputs: Any, path: str, name: str) -> str:
    """Start `model`'s word embeddings (model `name`) from the word-vectors file `path`
    (data.word_vectors), by `inputs`' tokenizer; returns the `vectors` log line."""
    if not isinstance(inputs, TextInputs) or not hasattr(model, "load_word_vectors"):
        raise DataError(
            f"data.word_vectors starts a text model's word embeddings; model {name} on "
            f"{inputs.dataset.kind} data has none to start (use model ngram)"
        )
    words = read_word_vectors(path)
    table, known = words.rows_for(inputs.tokenizer)
    model.load_word_vectors(table, known)
    method, count = words.info.get("method"), words.info.get("texts")
    return (f"vectors {int(known.sum()):,} of {len(known):,} word embeddings start from {path} "
            f"({method} word2vec on {count} texts)")  # fmt: skip
