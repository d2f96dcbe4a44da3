"""Defaults before and after (issue 22): each model family trained with no recipe, once with
the schema's old generic settings (SGD 0.01 without momentum, constant rate, batch 64, 10
epochs, 400 tokens, words seen twice) and once with the defaults that follow the model family
and the data (run/defaults.py), on the same data, one after the other.

    NEURALAB_DATA=../shared/datasets python -m benchmarks.defaults \\
        --sentences /tmp/sent        # from examples/make_sentence_set.py
    python -m benchmarks.defaults --only digits

Prints a markdown table and appends the records to benchmarks/results/defaults.jsonl.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import neuralab
from benchmarks.machine import machine_info, machine_line

RESULTS = Path(__file__).parent / "results" / "defaults.jsonl"
OLD = [
    "optim.name=sgd",
    "schedule.name=constant",
    "train.batch_size=64",
    "train.epochs=10",
    "train.label_smoothing=0",
    "train.grad_clip=null",
    "train.precision=auto",
    "train.lookahead_every=0",
]
OLD_TEXT = ["tokenizer.max_length=400", "tokenizer.min_frequency=2"]
IMAGE_CASES = [("digits", "perceptron", []), ("digits", "mlp", []), ("digits", "mnist_fast", [])]
TEXT_MODELS = ["textcnn", "lstm", "transformer"]


def train(data: str, model: str, overrides: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        run = neuralab.train(data=data, model=model, out=str(Path(folder) / "run"),
                             overrides=overrides, progress="none")  # fmt: skip
        seconds = time.perf_counter() - start
    return {"accuracy": run.metrics["accuracy"], "seconds": round(seconds, 1),
            "epochs": run.metrics["epochs"]}  # fmt: skip


def cases(sentences: Path | None, only: str | None) -> list[tuple[str, str, list[str], bool]]:
    found = [(data, model, extra, False) for data, model, extra in IMAGE_CASES]
    if sentences is not None:
        data = f"csv:{sentences / 'train.csv'}"
        test = [f"data.options.test={sentences / 'test.csv'}"]
        found += [(data, model, test, True) for model in TEXT_MODELS]
    return [case for case in found if only is None or only in case[0] or only == case[1]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=Path, help="folder with train.csv and test.csv")
    parser.add_argument("--only", help="a dataset name part or a model name")
    args = parser.parse_args()
    rows = ["| data | model | old generic defaults | model-and-data defaults |",
            "| --- | --- | ---: | ---: |"]  # fmt: skip
    for data, model, extra, text in cases(args.sentences, args.only):
        old = train(data, model, [*extra, *OLD, *(OLD_TEXT if text else [])])
        new = train(data, model, extra)
        record = {"data": data, "model": model, "old": old, "new": new,
                  "date": time.strftime("%Y-%m-%d"), "machine": machine_info()}  # fmt: skip
        with open(RESULTS, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        name = Path(data.partition(":")[2]).parent.name if ":" in data else data
        rows.append(
            f"| {name} | {model} | {old['accuracy']:.2%} ({old['seconds']:.0f} s) | "
            f"{new['accuracy']:.2%} ({new['seconds']:.0f} s, {new['epochs']} epochs) |"
        )
        print(rows[-1], flush=True)
    print(f"\n{machine_line(machine_info())}\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
