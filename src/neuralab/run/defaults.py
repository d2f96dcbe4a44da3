"""Defaults that follow the model and the data, for runs without a recipe.

A recipe is a complete statement: its fields stand and the rest keep the schema's defaults.
Without one (`neuralab train --data csv:FILE --model textcnn`), every field that no flag or
`--set` gave is chosen here, and each choice is logged with its reason:

- the model family's optimizer, schedule, batch size and regularisation (models/training.py;
  the family's optimizer applies unless `optim.name` is given, its schedule unless
  `schedule.name` is);
- the batch size, at most 1/8 of the training split (at least 8 steps per epoch);
- the epochs: the family's budget of optimizer steps over this training split, within 3..50
  (a quarter of it when fine-tuning from `train.init_from`, with the head alone for the first
  epoch and `lr_mult` 10);
- for texts: `tokenizer.max_length` from the training texts' lengths (95th percentile), and
  `tokenizer.min_frequency` 1 on small sets (fewer than 20,000 texts: rare words kept).
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel

from neuralab.config import RunConfig
from neuralab.models import MODELS

MIN_EPOCHS, MAX_EPOCHS = 3, 50
MIN_STEPS_PER_EPOCH = 8
SMALL_TEXT_SET = 20_000  # texts: below this, words seen once are kept
LENGTH_PERCENTILE = 0.95
FINE_TUNE_SHARE = 4  # a pretrained model: a quarter of the family's steps
FINE_TUNE_LR_MULT = 10.0
MAX_TOKENS = 400  # the schema's default max_length: never longer than that


def fill_defaults(config: RunConfig, dataset: Any) -> tuple[RunConfig, list[str]]:
    """`config` with the unset fields chosen for its model and `dataset`, and the log lines
    saying what was chosen and why. A config from a recipe, and a few-shot run (its episodes
    are not a training split's examples), are returned as they are."""
    if config.recipe is not None or config.task.name != "classification":
        return config, []
    family = MODELS.get(config.model.name).info.get("training")
    if family is None:
        return config, []
    config, notes = config.model_copy(deep=True), []
    notes += family_settings(config, family)
    notes += data_settings(config, family, dataset)
    return config, [f"default {note}" for note in notes]


def unset(section: BaseModel, field: str) -> bool:
    return field not in section.model_fields_set


def family_settings(config: RunConfig, family: dict) -> list[str]:
    """The family's optimizer, schedule and train settings, where the config is silent."""
    notes, name = [], config.model.name
    for section_name in ("optim", "schedule"):
        section, values = getattr(config, section_name), family[section_name]
        if unset(section, "name"):
            chosen = {k: v for k, v in values.items() if unset(section, k)}
            update(config, section_name, chosen)
            shown = ", ".join(f"{k} {v}" for k, v in chosen.items())
            notes.append(f"{section_name} {shown} ({name}'s family default)")
    chosen = {k: v for k, v in family["train"].items() if unset(config.train, k)}
    update(config, "train", chosen)
    if chosen:
        shown = ", ".join(f"{k} {v}" for k, v in chosen.items())
        notes.append(f"train {shown} ({name}'s family default)")
    return notes


def data_settings(config: RunConfig, family: dict, dataset: Any) -> list[str]:
    """Batch size, epochs and (texts) tokenizer settings that follow the training split."""
    notes, train, count = [], config.train, len(dataset.train)
    if unset(train, "batch_size") and train.batch_size * MIN_STEPS_PER_EPOCH > count:
        batch = max(1, 2 ** int(math.log2(max(1, count // MIN_STEPS_PER_EPOCH))))
        update(config, "train", {"batch_size": batch})
        notes.append(f"batch_size {batch} (≥ {MIN_STEPS_PER_EPOCH} steps per epoch over "
                     f"{count:,} training examples)")  # fmt: skip
    tuning = train.init_from is not None
    budget = family["steps"] // FINE_TUNE_SHARE if tuning else family["steps"]
    if unset(train, "epochs"):
        steps = math.ceil(count / config.train.batch_size)
        epochs = min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(budget / steps)))
        update(config, "train", {"epochs": epochs})
        why = f"1/{FINE_TUNE_SHARE} of {family['steps']:,}: fine-tuning" if tuning else ""
        notes.append(f"epochs {epochs} (about {budget:,} steps{f' ({why})' if why else ''} "
                     f"of {config.train.batch_size} over {count:,} training examples, within "
                     f"{MIN_EPOCHS}..{MAX_EPOCHS})")  # fmt: skip
    if tuning:
        notes += fine_tune_settings(config)
    if dataset.kind == "text":
        notes += text_settings(config, dataset.train.texts)
    return notes


def fine_tune_settings(config: RunConfig) -> list[str]:
    """From a pretrained run: the new head alone for the first epoch, then every layer with
    discriminative rates (fastai's fine_tune; measured better on both our transfer tests)."""
    chosen, train = {}, config.train
    if unset(train, "fine_tune_epochs") and train.epochs > 1:
        chosen["fine_tune_epochs"] = 1
    if unset(train, "lr_mult"):
        chosen["lr_mult"] = FINE_TUNE_LR_MULT
    update(config, "train", chosen)
    if not chosen:
        return []
    shown = ", ".join(f"{k} {v}" for k, v in chosen.items())
    return [f"train {shown} (fine-tuning from train.init_from)"]


def text_settings(config: RunConfig, texts: list[str]) -> list[str]:
    """max_length from the training texts' word counts; min_frequency 1 on small sets."""
    notes, tokenizer = [], config.tokenizer
    if unset(tokenizer, "max_length") and texts:
        words = sorted(len(text.split()) for text in texts)
        typical = words[min(len(words) - 1, int(LENGTH_PERCENTILE * len(words)))]
        per_word = 1.0 if tokenizer.kind == "word" else 1.3  # subwords: more tokens per word
        length = min(MAX_TOKENS, max(16, 8 * math.ceil(typical * per_word * 1.1 / 8)))
        update(config, "tokenizer", {"max_length": length})
        notes.append(f"tokenizer.max_length {length} ({LENGTH_PERCENTILE:.0%} of the training "
                     f"texts have ≤ {typical} words; at most {MAX_TOKENS})")  # fmt: skip
    if unset(tokenizer, "min_frequency") and len(texts) < SMALL_TEXT_SET:
        update(config, "tokenizer", {"min_frequency": 1})
        notes.append(f"tokenizer.min_frequency 1 (fewer than {SMALL_TEXT_SET:,} training "
                     "texts: words seen once are kept)")  # fmt: skip
    return notes


def update(config: RunConfig, section_name: str, values: dict) -> None:
    """Set `values` in a section, validated, without marking them as given by the user (a
    later default still sees them as unset; config.yaml stores them all the same)."""
    if not values:
        return
    section = getattr(config, section_name)
    given = set(section.model_fields_set)
    updated = type(section).model_validate({**section.model_dump(), **values})
    updated.__pydantic_fields_set__ = given
    setattr(config, section_name, updated)
