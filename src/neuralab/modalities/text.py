"""The text half of api.py: for a `TextDataset`, the config becomes a tokenizer (trained on the
training split only, cached with the token ids), a `TextSpec`, length-bucketed loaders and the
checkpoint's metadata. `TextInputs` offers the same methods as `imagerun.ImageInputs`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from neuralab.config import RunConfig, TokenizerConfig
from neuralab.data.text import TextDataset, TextSplit
from neuralab.data.textloader import EncodedTexts, TextBatchLoader
from neuralab.data.tokencache import TokenCache, cache_dir
from neuralab.data.tokenizer import TextTokenizer, TokenizerSettings
from neuralab.models import TextSpec
from neuralab.train import distributed
from neuralab.train.engine import Engine

TOKENIZER_FILE = "tokenizer.json"
ENGINE_SAMPLE = 128  # texts timed when choosing the engine (as for images)


def settings_from(config: TokenizerConfig) -> TokenizerSettings:
    return TokenizerSettings.from_dict(config.model_dump())


def prepare_text(dataset: TextDataset, config: RunConfig) -> TextInputs:
    """Train the configured tokenizer on the training texts (never on val or test) and encode
    every split, reusing both from the token cache when an identical run made them."""
    if config.train.tta != "off":
        raise ValueError("train.tta mirrors images; it cannot be used with text data")
    cache = TokenCache(cache_dir() if config.tokenizer.cache else None)
    tokenizer = cache.tokenizer(dataset.train.texts, settings_from(config.tokenizer))
    splits = {"train": dataset.train, "test": dataset.test, "val": dataset.val}
    encoded = {
        name: cache.encode(tokenizer, split.texts)
        for name, split in splits.items()
        if split is not None
    }
    return TextInputs(dataset, tokenizer, encoded, cache.describe())


@dataclass(frozen=True)
class TextInputs:
    """A text dataset, its trained tokenizer and every split's token ids ("train", "test",
    maybe "val"); the same methods as `imagerun.ImageInputs`."""

    dataset: TextDataset
    tokenizer: TextTokenizer
    splits: dict[str, EncodedTexts]
    cache_note: str

    @property
    def spec(self) -> TextSpec:
        settings = self.tokenizer.settings
        return TextSpec(self.tokenizer.vocab_size, len(self.dataset.classes), settings.max_length)

    def describe(self) -> str:
        """The `data` log line."""
        d, settings = self.dataset, self.tokenizer.settings
        return (
            f"data   {d.name}: {len(d.train)} train, {len(d.val) if d.val else 0} val, "
            f"{len(d.test)} test texts, {len(d.classes)} classes; {settings.kind} tokenizer, "
            f"{self.tokenizer.vocab_size:,} ids, max {settings.max_length} tokens "
            f"({settings.truncation}); {self.cache_note}"
        )

    def labels(self, split: str) -> torch.Tensor:
        return getattr(self.dataset, split).labels

    def initialise(self, model: torch.nn.Module, device: torch.device) -> None:
        """Models with data-dependent initialisation (e.g. naive-Bayes feature ratios) see the
        training texts once, in batches."""
        if hasattr(model, "initialize_from_texts"):
            loader = TextBatchLoader(self.splits["train"], self.labels("train"), 256, device=device)
            model.initialize_from_texts(loader)

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

    def loaders(self, config: RunConfig, engine: Engine) -> dict[str, TextBatchLoader]:
        """Train (shuffled, bucketed, sharded per process), test and val loaders."""
        shard = {"rank": distributed.rank(), "world_size": distributed.world_size()}
        train_batch = distributed.split_batch(config.train.batch_size, shard["world_size"])
        loaders = {}
        for name, encoded in self.splits.items():
            training = name == "train"
            loaders[name] = TextBatchLoader(
                encoded,
                self.labels(name),
                train_batch if training else config.train.eval_batch_size,
                device=engine.device,
                shuffle=training,
                seed=config.train.seed,
                pad_shards=training,
                **shard,
            )
        return loaders

    def meta(self, config: RunConfig, engine: Engine) -> dict:
        """What a text checkpoint's meta.json holds; the tokenizer itself is `tokenizer.json`."""
        return {
            "kind": "text",
            "model": {"name": config.model.name, "args": config.model.args},
            "spec": self.spec.to_dict(),
            "classes": list(self.dataset.classes),
            "dataset": self.dataset.name,
            "tokenizer": self.tokenizer.describe(),
            "tta": False,
            "config": config.model_dump(mode="json"),
            "engine": engine.describe(),
        }

    def files(self) -> dict[str, str]:
        """Saved with every checkpoint: the tokenizer, so predict encodes exactly as training."""
        return {TOKENIZER_FILE: self.tokenizer.to_json()}


def split_loader(
    split: TextSplit, tokenizer: TextTokenizer, batch_size: int, device: torch.device
) -> TextBatchLoader:
    """A loader over `split`, encoded now (for evaluating a saved run)."""
    encoded = tokenizer.encode_flat(split.texts)
    return TextBatchLoader(encoded, split.labels, batch_size, device=device)
