"""Word vectors learned from texts without their labels (train.semi.vectors; run/semi.py
decides which texts): word2vec (Mikolov et al. 2013) through gensim, stored keyed by token
string, so every stage's tokenizer takes the rows of the words it knows.

The file (safetensors) holds `vectors` float32 (W, E), with metadata `tokens` (a JSON list of
the W token strings, in row order), `method`, `texts` (how many texts the vectors saw) and
`texts_sha256` (their digest, so a log or a test can tell which texts they were).

gensim is an optional extra (`pip install 'neuralab[vectors]'`), imported when vectors are
learned; reading a vectors file needs only safetensors.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from neuralab.data.dataset import DataError, texts_digest
from neuralab.data.tensorfile import load_tensors, save_tensors
from neuralab.data.tokenizer import TextTokenizer

METHODS = {"cbow": 0, "skipgram": 1}  # gensim's `sg` flag
MIN_COUNT = 2  # words in fewer places say little; as word2vec's default 5, lower for 1k labels


@dataclass(frozen=True)
class WordVectors:
    tokens: list[str]  # (W,) in row order
    vectors: torch.Tensor  # (W, E) float32
    info: dict  # method, texts, texts_sha256, seconds

    def rows_for(self, tokenizer: TextTokenizer) -> tuple[torch.Tensor, torch.Tensor]:
        """The vectors in `tokenizer`'s id order: (vocab_size, E) float32 (zero rows for the
        words without one) and (vocab_size,) bool, the ids that have one."""
        size, dim = tokenizer.vocab_size, self.vectors.shape[1]
        ids = [tokenizer.backend.token_to_id(token) for token in self.tokens]
        pairs = [(row, i) for row, i in enumerate(ids) if i is not None and i < size]
        table = torch.zeros(size, dim)
        known = torch.zeros(size, dtype=torch.bool)
        if pairs:
            rows, at = map(torch.tensor, zip(*pairs, strict=True))
            table[at] = self.vectors[rows]
            known[at] = True
        return table, known


def learn_word_vectors(
    texts: Sequence[str],
    tokenizer: TextTokenizer,
    dim: int,
    method: str,
    epochs: int,
    window: int,
    seed: int,
) -> WordVectors:
    """word2vec (`method` cbow or skipgram, negative sampling) on `texts` split into tokens by
    `tokenizer`, `dim`-dimensional, over `epochs` passes; words in fewer than MIN_COUNT places
    get none. gensim's threads make it vary slightly from run to run even with `seed`."""
    try:
        from gensim.models import Word2Vec
    except ImportError:
        raise DataError(
            "train.semi.vectors learns word vectors with gensim, which is not installed. "
            "Fix: pip install 'neuralab[vectors]'"
        ) from None
    start = time.perf_counter()
    names = [tokenizer.backend.id_to_token(i) for i in range(tokenizer.vocab_size)]
    sentences = [[names[i] for i in ids] for ids in tokenizer.encode(list(texts))]
    model = Word2Vec(
        sentences, vector_size=dim, window=window, min_count=MIN_COUNT, sg=METHODS[method],
        negative=5, epochs=epochs, workers=max(1, torch.get_num_threads()), seed=seed,
    )  # fmt: skip
    tokens = list(model.wv.index_to_key)
    vectors = torch.from_numpy(model.wv.vectors.copy()).float()
    info = {
        "method": method,
        "texts": len(texts),
        "texts_sha256": texts_digest(texts),
        "seconds": round(time.perf_counter() - start, 1),
    }
    return WordVectors(tokens, vectors, info)


def write_word_vectors(path: Path, words: WordVectors) -> Path:
    """Store `words` at `path` (atomically: a temp file, then a rename)."""
    metadata = {key: str(value) for key, value in words.info.items()}
    metadata["tokens"] = json.dumps(words.tokens, ensure_ascii=False)
    return save_tensors(path, {"vectors": words.vectors}, metadata)


def read_word_vectors(path: str | Path) -> WordVectors:
    """The word vectors `write_word_vectors` stored; DataError naming the file when it is
    missing or is not such a file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"data.word_vectors: {path} does not exist (train.semi.vectors writes it; "
            "check the path)"
        )
    what = "word vectors (the word-vectors.safetensors train.semi.vectors writes)"
    metadata, tensors = load_tensors(path, ("vectors",), what)
    vectors = tensors["vectors"]
    try:
        tokens = json.loads(metadata.pop("tokens"))
    except (KeyError, ValueError) as error:
        raise DataError(f"{path}: cannot read {what} (its token list: {error})") from None
    if vectors.ndim != 2 or len(tokens) != len(vectors):
        raise DataError(
            f"data.word_vectors: {path} holds {len(tokens)} tokens for a vectors table of "
            f"shape {tuple(vectors.shape)}; the file is damaged, learn the vectors again"
        )
    return WordVectors(tokens, vectors.float(), metadata)
