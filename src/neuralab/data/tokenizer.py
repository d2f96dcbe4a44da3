"""Tokenizers trained on a run's training texts with the `tokenizers` library, saved as JSON.

Kinds:
    word       one id per word (WordLevel): the `vocab_size` most frequent words seen at least
               `min_frequency` times; any other word is [UNK]
    bpe        byte-pair-encoding subwords (BPE): rare words split into known pieces, no [UNK]
               for words made of seen characters
    wordpiece  BERT-style WordPiece subwords (continuations marked `##`)

Every kind normalises the same way: Unicode NFKC, HTML line breaks (`<br />`, common in IMDB)
become spaces, and (with `lowercase`) lower case; words are split from punctuation
(`\\w+|[^\\w\\s]+`). Id 0 is [PAD], id 1 is [UNK]; real tokens never get id 0, which is how models
tell padding from text.

Truncation (to `max_length` tokens): `head` keeps the first tokens; `head+tail` keeps the first
quarter of the budget and the last three quarters, because reviews often end with the verdict
(Sun et al. 2019, "How to fine-tune BERT for text classification", found head 128 + tail 382
best among 512-token policies on IMDB).

The tokenizer itself is saved as the `tokenizers` library's own `tokenizer.json`; its settings
(kind, max_length, truncation, ...) go in the checkpoint's meta.json, so a predictor rebuilds
exactly the training-time pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from neuralab.data.dataset import DataError
from neuralab.data.textloader import EncodedTexts
from neuralab.errors import ConfigError

PAD, UNK = "[PAD]", "[UNK]"
PAD_ID, UNK_ID = 0, 1
KINDS = ("word", "bpe", "wordpiece")
TRUNCATIONS = ("head", "head+tail")
LINE_BREAK = Regex(r"<br\s*/?>")  # IMDB reviews keep their HTML line breaks


@dataclass(frozen=True)
class TokenizerSettings:
    """How texts become ids; stored in the checkpoint's meta.json."""

    kind: str = "word"
    vocab_size: int = 30_000
    min_frequency: int = 2
    max_length: int = 400
    truncation: str = "head"
    lowercase: bool = True

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"tokenizer.kind {self.kind!r} is unknown; valid: {', '.join(KINDS)}")
        if self.truncation not in TRUNCATIONS:
            raise ConfigError(
                f"tokenizer.truncation {self.truncation!r} is unknown; valid: "
                f"{', '.join(TRUNCATIONS)}"
            )
        if self.max_length < 1 or self.vocab_size < 3:
            raise ConfigError("tokenizer.max_length must be >= 1 and vocab_size >= 3")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TokenizerSettings:
        """Settings from `to_dict` output (extra keys, e.g. learned_vocab_size, are ignored)."""
        return cls(**{k: v for k, v in values.items() if k in cls.__dataclass_fields__})


def new_backend(settings: TokenizerSettings) -> tuple[Tokenizer, trainers.Trainer]:
    """An untrained tokenizer for `settings` and the trainer that fits its vocabulary."""
    common = {
        "vocab_size": settings.vocab_size,
        "min_frequency": settings.min_frequency,
        "special_tokens": [PAD, UNK],  # in this order: PAD_ID = 0, UNK_ID = 1
        "show_progress": False,
    }
    if settings.kind == "word":
        backend, trainer = Tokenizer(models.WordLevel(unk_token=UNK)), trainers.WordLevelTrainer
    elif settings.kind == "bpe":
        backend, trainer = Tokenizer(models.BPE(unk_token=UNK)), trainers.BpeTrainer
    else:
        backend, trainer = Tokenizer(models.WordPiece(unk_token=UNK)), trainers.WordPieceTrainer
        backend.decoder = decoders.WordPiece()
    steps = [normalizers.NFKC(), normalizers.Replace(LINE_BREAK, " ")]
    backend.normalizer = normalizers.Sequence(
        steps + [normalizers.Lowercase()] if settings.lowercase else steps
    )
    backend.pre_tokenizer = pre_tokenizers.Whitespace()  # \w+|[^\w\s]+
    return backend, trainer(**common)


class TextTokenizer:
    """A trained `tokenizers.Tokenizer` plus the truncation policy.

    Example:
        >>> tokenizer = TextTokenizer.train(["a good film", "a bad film"], TokenizerSettings())
        >>> tokenizer.encode(["A GOOD film!"])  # doctest: +SKIP
        [[2, 5, 3, 1]]
    """

    def __init__(self, backend: Tokenizer, settings: TokenizerSettings) -> None:
        self.backend, self.settings = backend, settings
        if backend.token_to_id(PAD) != PAD_ID:
            raise DataError(f"tokenizer: {PAD} must have id {PAD_ID}; this tokenizer.json differs")

    @classmethod
    def train(cls, texts: Sequence[str], settings: TokenizerSettings) -> TextTokenizer:
        """Fit the vocabulary on `texts` (the training split only)."""
        backend, trainer = new_backend(settings)
        backend.train_from_iterator(texts, trainer=trainer, length=len(texts))
        return cls(backend, settings)

    @classmethod
    def load(cls, path: str | Path, settings: TokenizerSettings) -> TextTokenizer:
        """Read a tokenizer.json written by `save`."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path} is missing: this text checkpoint has no tokenizer")
        try:
            return cls(Tokenizer.from_file(str(path)), settings)
        except Exception as error:  # the Rust side raises a plain Exception
            raise DataError(f"{path} is not a valid tokenizer.json ({error})") from None

    def to_json(self) -> str:
        return self.backend.to_str()

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @property
    def vocab_size(self) -> int:
        """Number of ids (special tokens included); embedding tables need this many rows."""
        return self.backend.get_vocab_size()

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, truncated to `max_length` by the truncation policy."""
        encodings = self.backend.encode_batch_fast(list(texts), add_special_tokens=False)
        return [self.truncate(encoding.ids) for encoding in encodings]

    def encode_flat(self, texts: Sequence[str]) -> EncodedTexts:
        """`encode` stored flat (what loaders and the token cache keep)."""
        return EncodedTexts.from_lists(self.encode(texts))

    def tokens(self, text: str) -> list[str]:
        """The token strings of one text, truncated as `encode` truncates (for inspection)."""
        ids = self.encode([text])[0]
        return [self.backend.id_to_token(i) for i in ids]

    def encode_aligned(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """One text's token ids and each token's (start, end) characters in `text`,
        truncated as `encode` truncates (explanations map tokens back to words with them)."""
        encoding = self.backend.encode(text, add_special_tokens=False)
        return self.truncate(encoding.ids), self.truncate(list(encoding.offsets))

    def truncate(self, ids: list) -> list:
        limit = self.settings.max_length
        if len(ids) <= limit:
            return ids
        if self.settings.truncation == "head":
            return ids[:limit]
        head = (
            limit // 4
        )  # head+tail: a quarter of the budget from the start, the rest from the end
        return ids[:head] + ids[len(ids) - (limit - head) :]

    def describe(self) -> dict:
        """Settings plus the learned vocabulary size: what meta.json records."""
        return {**self.settings.to_dict(), "learned_vocab_size": self.vocab_size}
