"""A disk cache of trained tokenizers and encoded texts, so that a second run on the same texts
with the same tokenizer settings skips tokenizer training and encoding (about 12 s on IMDB's
50,000 reviews on a 2-core CPU).

Entries are keyed by content, never by path or time: the SHA-256 of the training texts, the
tokenizer settings, the `tokenizers` version and this module's format version choose the
tokenizer; the SHA-256 of a split's texts then chooses its encoding. Changing any text, setting or
library version therefore misses the cache instead of reusing stale ids.

Layout (under `cache_dir()`, default `~/.cache/neuralab/tokens`, or `$NEURALAB_CACHE/tokens`):
    tokenizer-<key>.json                         a trained tokenizer
    <tokenizer content key>/<texts key>.safetensors   its encoding of some texts: tokens int32
                                                      (flat), lengths int64

Files are written to a temporary name and renamed, so a killed run never leaves half an entry.
A cache that cannot be written (read-only disk, full disk) is reported and the run goes on
without it; delete the folder at any time to reclaim the space.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import tokenizers
from safetensors.torch import load_file, save_file

from neuralab.data.textloader import EncodedTexts
from neuralab.data.tokenizer import TextTokenizer, TokenizerSettings

FORMAT = 1  # bump when encoding or the layout changes: old entries then stop matching
KEY_CHARS = 24  # hex digits of SHA-256 kept in folder and file names (96 bits)
T = TypeVar("T")


def cache_dir() -> Path:
    """`$NEURALAB_CACHE/tokens` if set, else `~/.cache/neuralab/tokens`."""
    base = os.environ.get("NEURALAB_CACHE")
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "neuralab") / "tokens"


def texts_key(texts: Sequence[str]) -> str:
    """SHA-256 of the texts, each length-prefixed so that splitting differently changes it."""
    digest = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()[:KEY_CHARS]


def tokenizer_key(train_texts_key: str, settings: TokenizerSettings) -> str:
    recipe = {
        "format": FORMAT,
        "tokenizers": tokenizers.__version__,
        "settings": settings.to_dict(),
        "train_texts": train_texts_key,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:KEY_CHARS]


def encoding_key(tokenizer: TextTokenizer) -> str:
    """Names a trained tokenizer by its content (vocabulary, normaliser, ...) and settings."""
    recipe = {"format": FORMAT, "tokenizer": tokenizer.to_json(), **tokenizer.settings.to_dict()}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:KEY_CHARS]


class TokenCache:
    """Trained tokenizers and encodings on disk; `root=None` disables caching.

    Example:
        >>> cache = TokenCache(cache_dir())
        >>> tokenizer = cache.tokenizer(train_texts, TokenizerSettings())
        >>> encoded = cache.encode(tokenizer, test_texts)  # EncodedTexts
    """

    def __init__(self, root: Path | None, report: Callable[[str], None] = print) -> None:
        self.root, self.report = root, report
        self.reused, self.computed = 0, 0

    def tokenizer(self, texts: Sequence[str], settings: TokenizerSettings) -> TextTokenizer:
        """The tokenizer trained on `texts` with `settings`: from the cache, else trained now."""
        if self.root is None:
            return TextTokenizer.train(texts, settings)
        path = self.root / f"tokenizer-{tokenizer_key(texts_key(texts), settings)}.json"
        tokenizer = self._read(path, lambda: TextTokenizer.load(path, settings))
        if tokenizer is None:
            tokenizer = TextTokenizer.train(texts, settings)
            self._write(path, tokenizer.save)
        return tokenizer

    def encode(self, tokenizer: TextTokenizer, texts: Sequence[str]) -> EncodedTexts:
        """`tokenizer.encode_flat(texts)`, from the cache when this tokenizer has encoded the
        same texts before."""
        if self.root is None:
            return tokenizer.encode_flat(texts)
        path = self.root / encoding_key(tokenizer) / f"{texts_key(texts)}.safetensors"
        encoded = self._read(path, lambda: EncodedTexts(**load_file(path)))
        if encoded is None:
            encoded = tokenizer.encode_flat(texts)
            tensors = {"tokens": encoded.tokens, "lengths": encoded.lengths}
            self._write(path, lambda temporary: save_file(tensors, temporary))
        return encoded

    def _read(self, path: Path, read: Callable[[], T]) -> T | None:
        """The entry at `path`, or None when absent; an unreadable entry is reported and then
        recomputed (and overwritten)."""
        if not path.is_file():
            self.computed += 1
            return None
        try:
            value = read()
        except Exception as error:  # safetensors and tokenizers raise their own exception types
            self.report(f"cache  {path} is unreadable ({error}); computing it again")
            self.computed += 1
            return None
        self.reused += 1
        return value

    def _write(self, path: Path, write: Callable[[Path], None]) -> None:
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write(temporary)
            os.replace(temporary, path)
        except OSError as error:
            with contextlib.suppress(OSError):  # nothing to remove when the folder is missing
                temporary.unlink()
            self.report(
                f"cache  could not write {path} ({error.strerror or error}); this run goes on "
                "without caching its tokens. Fix: set NEURALAB_CACHE to a writable folder, or "
                "--set tokenizer.cache=false to stop trying"
            )
            self.root = None

    def describe(self) -> str:
        """One log line: where the cache is and what it saved."""
        if self.root is None:
            return "tokens not cached"
        return f"tokens cached in {self.root} ({self.reused} reused, {self.computed} computed)"
