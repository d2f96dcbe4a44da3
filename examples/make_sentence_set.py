"""Write a small sentence-level sentiment set from IMDB (as `csv:` files), to try small text
sets: from each review, its last sentence of 5..40 words (where reviews tend to give their
verdict), labelled with the review's label.

    python examples/make_sentence_set.py OUT_DIR [--train 5000] [--test 2000]
    neuralab train --data csv:OUT_DIR/train.csv --set data.options.test=OUT_DIR/test.csv \\
        --model textcnn

Sentences come from IMDB's train reviews for train.csv and its test reviews for test.csv,
balanced per class and seeded. Labels are the review's, so some sentences are neutral: the
set is harder than a sentence-labelled one (Kim's figures are for sentence labels).
Needs IMDB under $NEURALAB_DATA (or ~/.cache/neuralab).
"""

from __future__ import annotations

import argparse
import csv
import random
import re
from pathlib import Path

from neuralab.data import load_dataset

SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
TAGS = re.compile(r"<br\s*/?>", re.IGNORECASE)


def last_sentence(review: str, shortest: int = 5, longest: int = 40) -> str | None:
    """The review's last sentence with shortest..longest words, or None."""
    for sentence in reversed(SENTENCE_END.split(TAGS.sub(" ", review).strip())):
        if shortest <= len(sentence.split()) <= longest:
            return sentence.strip()
    return None


def write(path: Path, split, classes: list[str], per_class: int, rng: random.Random) -> int:
    rows = {name: [] for name in classes}
    order = list(range(len(split)))
    rng.shuffle(order)
    for index in order:
        label = classes[int(split.labels[index])]
        if len(rows[label]) < per_class and (sentence := last_sentence(split.texts[index])):
            rows[label].append(sentence)
    records = [(text, label) for label, texts in rows.items() for text in texts]
    rng.shuffle(records)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(records)
    return len(records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--train", type=int, default=5000, help="training sentences")
    parser.add_argument("--test", type=int, default=2000, help="test sentences")
    args = parser.parse_args()
    dataset = load_dataset("imdb", download=False)
    args.out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    classes = list(dataset.classes)
    train = write(args.out / "train.csv", dataset.train, classes, args.train // 2, rng)
    test = write(args.out / "test.csv", dataset.test, classes, args.test // 2, rng)
    print(f"wrote {train} training and {test} test sentences to {args.out}")


if __name__ == "__main__":
    main()
