"""The text half of api.py: for a `TextDataset`, the config becomes a tokenizer (trained on the
training split only), a `TextSpec`, length-bucketed loaders and the checkpoint's metadata.

Kept apart from api.py so the image path reads the same as before; api.py branches on
`dataset.kind == "text"` and calls these.
"""

from __future__ import annotations

import torch

from neuralab import distributed
from neuralab.config import RunConfig, TokenizerConfig
from neuralab.data.text import TextDataset, TextSplit
from neuralab.data.textloader import TextBatchLoader, pad_batch
from neuralab.data.tokenizer import TextTokenizer, TokenizerSettings
from neuralab.engine import Engine
from neuralab.models import TextSpec

TOKENIZER_FILE = "tokenizer.json"
ENGINE_SAMPLE = 128  # texts timed when choosing the engine (as for images)


def settings_from(config: TokenizerConfig) -> TokenizerSettings:
    return TokenizerSettings(**config.model_dump())


def fit_tokenizer(dataset: TextDataset, config: RunConfig) -> TextTokenizer:
    """Train the configured tokenizer on the training texts (never on val or test)."""
    if config.train.tta:
        raise ValueError("train.tta mirrors images; it cannot be used with text data")
    return TextTokenizer.train(dataset.train.texts, settings_from(config.tokenizer))


def text_spec(dataset: TextDataset, tokenizer: TextTokenizer) -> TextSpec:
    return TextSpec(tokenizer.vocab_size, len(dataset.classes), tokenizer.settings.max_length)


def describe_text_data(dataset: TextDataset, tokenizer: TextTokenizer) -> str:
    """The `data` log line of a text run."""
    val = len(dataset.val) if dataset.val else 0
    settings = tokenizer.settings
    return (
        f"data   {dataset.name}: {len(dataset.train)} train, {val} val, {len(dataset.test)} test "
        f"texts, {len(dataset.classes)} classes; {settings.kind} tokenizer, "
        f"{tokenizer.vocab_size:,} ids, max {settings.max_length} tokens ({settings.truncation})"
    )


def sample_batch(
    dataset: TextDataset, tokenizer: TextTokenizer, config: RunConfig, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """A training-sized batch of padded ids and labels to time engine candidates with."""
    size = min(config.train.batch_size, len(dataset.train), ENGINE_SAMPLE)
    ids = pad_batch(tokenizer.encode(dataset.train.texts[:size]), device)
    return ids, dataset.train.labels[:size].to(device)


def split_loader(
    split: TextSplit, tokenizer: TextTokenizer, batch_size: int, device: torch.device, **kwargs
) -> TextBatchLoader:
    return TextBatchLoader(
        tokenizer.encode(split.texts), split.labels, batch_size, device=device, **kwargs
    )


def text_loaders(
    dataset: TextDataset, tokenizer: TextTokenizer, config: RunConfig, engine: Engine
) -> dict[str, TextBatchLoader]:
    """Train (shuffled, bucketed, sharded per process), test and val loaders."""
    shard = {"rank": distributed.rank(), "world_size": distributed.world_size()}
    eval_size = config.train.eval_batch_size
    loaders = {
        "train": split_loader(
            dataset.train,
            tokenizer,
            distributed.split_batch(config.train.batch_size, shard["world_size"]),
            engine.device,
            shuffle=True,
            seed=config.train.seed,
            pad_shards=True,
            **shard,
        ),
        "test": split_loader(dataset.test, tokenizer, eval_size, engine.device, **shard),
    }
    if dataset.val is not None:
        loaders["val"] = split_loader(dataset.val, tokenizer, eval_size, engine.device, **shard)
    return loaders


def text_meta(
    config: RunConfig,
    dataset: TextDataset,
    spec: TextSpec,
    tokenizer: TextTokenizer,
    engine: Engine,
) -> dict:
    """What a text checkpoint's meta.json holds; the tokenizer itself is `tokenizer.json`."""
    return {
        "kind": "text",
        "model": {"name": config.model.name, "args": config.model.args},
        "spec": spec.to_dict(),
        "classes": list(dataset.classes),
        "dataset": dataset.name,
        "tokenizer": tokenizer.describe(),
        "tta": False,
        "config": config.model_dump(mode="json"),
        "engine": engine.describe(),
    }
