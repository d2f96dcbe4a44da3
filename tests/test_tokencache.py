"""The token cache: reuse only for identical texts and settings, atomic entries, loud failures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from neuralab.data.textloader import EncodedTexts
from neuralab.data.tokencache import TokenCache, cache_dir, texts_key
from neuralab.data.tokenizer import TextTokenizer, TokenizerSettings

TEXTS = ["a good film", "a bad film", "good acting, bad plot", "what a wonderful film"]
SETTINGS = TokenizerSettings(vocab_size=50, min_frequency=1, max_length=8)


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_second_use_reuses_the_tokenizer_and_ids(tmp_path: Path) -> None:
    first = TokenCache(tmp_path)
    tokenizer = first.tokenizer(TEXTS, SETTINGS)
    encoded = first.encode(tokenizer, TEXTS)
    assert (first.reused, first.computed) == (0, 2)
    assert encoded.to_lists() == tokenizer.encode(TEXTS)

    second = TokenCache(tmp_path)
    again = second.tokenizer(TEXTS, SETTINGS)
    reread = second.encode(again, TEXTS)
    assert (second.reused, second.computed) == (2, 0)
    assert again.to_json() == tokenizer.to_json()
    assert torch.equal(reread.tokens, encoded.tokens)
    assert torch.equal(reread.lengths, encoded.lengths)
    assert "2 reused, 0 computed" in second.describe()
    assert not [p for p in files_under(tmp_path) if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    "texts, settings",
    [
        (TEXTS[:3] + ["what a dreadful film"], SETTINGS),  # other training texts
        (TEXTS, TokenizerSettings(vocab_size=50, min_frequency=1, max_length=4)),
        (TEXTS, TokenizerSettings(vocab_size=50, min_frequency=1, max_length=8, kind="bpe")),
    ],
)
def test_any_change_of_texts_or_settings_misses(texts, settings, tmp_path: Path) -> None:
    cache = TokenCache(tmp_path)
    cache.encode(cache.tokenizer(TEXTS, SETTINGS), TEXTS)
    other = TokenCache(tmp_path)
    tokenizer = other.tokenizer(texts, settings)
    assert other.encode(tokenizer, texts).to_lists() == tokenizer.encode(texts)
    assert other.reused == 0


def test_texts_key_depends_on_how_texts_split() -> None:
    assert texts_key(["ab", "c"]) != texts_key(["a", "bc"])
    assert texts_key(["ab", "c"]) == texts_key(["ab", "c"])


def test_unwritable_cache_is_reported_and_the_run_goes_on(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    messages: list[str] = []
    cache = TokenCache(blocker / "tokens", report=messages.append)
    tokenizer = cache.tokenizer(TEXTS, SETTINGS)
    assert cache.encode(tokenizer, TEXTS).to_lists() == tokenizer.encode(TEXTS)
    assert (
        len(messages) == 1 and "could not write" in messages[0] and "NEURALAB_CACHE" in messages[0]
    )
    assert cache.describe() == "tokens not cached"


def test_corrupt_entry_is_reported_and_recomputed(tmp_path: Path) -> None:
    cache = TokenCache(tmp_path)
    tokenizer = cache.tokenizer(TEXTS, SETTINGS)
    cache.encode(tokenizer, TEXTS)
    (entry,) = tmp_path.glob("*/*.safetensors")
    entry.write_bytes(b"garbage")
    messages: list[str] = []
    again = TokenCache(tmp_path, report=messages.append)
    encoded = again.encode(again.tokenizer(TEXTS, SETTINGS), TEXTS)
    assert encoded.to_lists() == tokenizer.encode(TEXTS)
    assert len(messages) == 1 and str(entry) in messages[0] and "unreadable" in messages[0]
    assert TokenCache(tmp_path).encode(tokenizer, TEXTS).to_lists() == tokenizer.encode(TEXTS)


def test_disabled_cache_writes_nothing(tmp_path: Path) -> None:
    cache = TokenCache(None)
    tokenizer = cache.tokenizer(TEXTS, SETTINGS)
    assert isinstance(cache.encode(tokenizer, TEXTS), EncodedTexts)
    assert files_under(tmp_path) == []


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NEURALAB_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path / "tokens"
    monkeypatch.delenv("NEURALAB_CACHE")
    assert cache_dir() == Path.home() / ".cache" / "neuralab" / "tokens"


def test_encoded_texts_round_trip_lists() -> None:
    lists = [[5, 6, 7], [], [8]]
    encoded = EncodedTexts.from_lists(lists)
    assert encoded.to_lists() == lists and len(encoded) == 3
    assert encoded.tokens.dtype == torch.int32


def test_tokenizer_loaded_from_cache_encodes_like_the_trained_one(tmp_path: Path) -> None:
    trained = TokenCache(tmp_path).tokenizer(TEXTS, SETTINGS)
    loaded = TokenCache(tmp_path).tokenizer(TEXTS, SETTINGS)
    assert isinstance(loaded, TextTokenizer)
    novel = ["an unseen review, good or bad?"]
    assert loaded.encode(novel) == trained.encode(novel)
