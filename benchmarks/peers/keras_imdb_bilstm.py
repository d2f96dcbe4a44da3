"""Keras's "Bidirectional LSTM on IMDB" (keras.io/examples/nlp/bidirectional_lstm_imdb, fchollet
2020) on Keras 3 with the torch backend, as published: the 20,000 most frequent words, each
review cut or padded to 200 tokens by `pad_sequences` (its defaults: zeros in front, and a longer
review keeps its *last* 200 tokens); Embedding(20000, 128) → Bidirectional(LSTM(64,
return_sequences=True)) → Bidirectional(LSTM(64)) → Dense(1, sigmoid); Adam (Keras defaults),
binary cross-entropy, batch 32, 2 epochs, all 25,000 training reviews.

Two things differ, because the example downloads `keras.datasets.imdb` and there is no network:
- The word index is built here from the raw training reviews, the way that dataset's
  documentation describes it: words ranked by frequency over the training split (ties: first
  seen), id = rank + 3 (0 pad, 1 start of review, 2 out of vocabulary), ids ≥ 20,000 become 2,
  every review starts with 1, and test words never seen in training are left out. Tokens:
  "<br />" → space, lowercase, the punctuation of Keras's classic `Tokenizer` filters
  (!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~) → space, split on whitespace (apostrophes stay in words).
  keras.datasets.imdb's own tokeniser is undocumented, so its vocabulary differs slightly.
- The example passes the test split as `validation_data`; here the same evaluation (batch 32,
  as Keras validates at the training batch size) runs after every epoch in a callback, outside
  the training clock but inside `wall_seconds` (files → test accuracy), as the example's user
  waits for it too.

    NEURALAB_DATA=../shared/datasets python -m benchmarks.peers.keras_imdb_bilstm [--limit N]
"""

from __future__ import annotations

import argparse
import os
import re
from collections import Counter

os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported: it picks its backend once

import keras  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.peers.common import Curve  # noqa: E402
from benchmarks.peers.imdb_text import add_limit_option, read_reviews  # noqa: E402
from benchmarks.peers.keras_clock import EpochClock  # noqa: E402

NUM_WORDS = 20_000  # max_features in the example: ids below this are kept
MAX_LENGTH = 200  # maxlen in the example
START, OUT_OF_VOCABULARY, INDEX_FROM = 1, 2, 3  # keras.datasets.imdb.load_data's defaults
BATCH_SIZE = 32
EPOCHS = 2
# keras.preprocessing.text.Tokenizer's default `filters` (tab and newline are whitespace anyway).
PUNCTUATION = re.compile(r"""[!"#$%&()*+,\-./:;<=>?@\[\\\]^_`{|}~]""")


def above_half(probabilities: np.ndarray) -> np.ndarray:
    """Sigmoid outputs (N, 1) → labels 0/1."""
    return (probabilities[:, 0] > 0.5).astype(np.int64)


def words(text: str) -> list[str]:
    """Lowercase words of one review ("<br />" was already replaced by `read_reviews`)."""
    return PUNCTUATION.sub(" ", text.lower()).split()


def word_index(tokenised: list[list[str]]) -> dict[str, int]:
    """word → id, by descending frequency over `tokenised` (the training reviews)."""
    counts = Counter(word for review in tokenised for word in review)
    return {word: rank + INDEX_FROM for rank, (word, _) in enumerate(counts.most_common(), 1)}


def encode(tokenised: list[list[str]], index: dict[str, int]) -> np.ndarray:
    """(N, 200) int32 ids: start mark, ids over 20,000 as out-of-vocabulary, unseen words left
    out, then `pad_sequences` as the example calls it."""
    sequences = [
        [START]
        + [
            index[word] if index[word] < NUM_WORDS else OUT_OF_VOCABULARY
            for word in review
            if word in index
        ]
        for review in tokenised
    ]
    return keras.utils.pad_sequences(sequences, maxlen=MAX_LENGTH)


def build_model() -> keras.Model:
    inputs = keras.Input(shape=(None,), dtype="int32")  # (B, T) word ids
    x = keras.layers.Embedding(NUM_WORDS, 128)(inputs)  # (B, T, 128)
    x = keras.layers.Bidirectional(keras.layers.LSTM(64, return_sequences=True))(x)  # (B, T, 128)
    x = keras.layers.Bidirectional(keras.layers.LSTM(64))(x)  # (B, 128)
    outputs = keras.layers.Dense(1, activation="sigmoid")(x)  # (B, 1)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_limit_option(parser)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    args = parser.parse_args()
    keras.utils.set_random_seed(1)
    curve = Curve(
        "keras-imdb-bilstm",
        "Keras 3 (torch) 2×BiLSTM 64, top 20k words, 200 tokens, Adam, b32, 2 ep",
    )
    train_texts, y_train = read_reviews("train", args.limit)
    test_texts, y_test = read_reviews("test", args.limit)
    train_words = [words(text) for text in train_texts]
    index = word_index(train_words)
    x_train = encode(train_words, index)
    x_test = encode([words(text) for text in test_texts], index)
    build_model().fit(
        x_train,
        y_train.astype("float32"),
        batch_size=BATCH_SIZE,
        epochs=args.epochs,
        verbose=0,
        callbacks=[EpochClock(curve, x_test, y_test, above_half, BATCH_SIZE)],
    )
    curve.report(len(y_train))


if __name__ == "__main__":
    main()
