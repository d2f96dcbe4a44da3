"""Export every model family after a short real-data run and record how closely the ONNX and
TorchScript exports match PyTorch on 1,000 real test inputs.

    NEURALAB_DATA=/work/shared/datasets python -m benchmarks.export_parity
    python -m benchmarks.export_parity lenet lstm --formats onnx

Each model trains for a fraction of an epoch at a small size (trained weights, not initial
ones, make the comparison meaningful; accuracy is not the point), then `neuralab.export` checks
each format on 1,000 test examples spread over the test split, in batches of several sizes.
Results go to benchmarks/results/export_parity.json and a markdown table is printed.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import neuralab
from benchmarks.machine import machine_info

RESULTS = Path(__file__).parent / "results" / "export_parity.json"
# fp32: no engine timing runs. Adam: the default plain SGD 0.01 barely moves in so few steps,
# and a model that predicts one class for everything makes top-1 agreement trivially 100%.
COMMON = ["train.precision=fp32", "train.tensorboard=off", "optim.name=adam", "optim.lr=0.002"]
# Text runs share one small tokenizer (cached after the first run) and short texts.
TEXT = ["tokenizer.vocab_size=10000", "tokenizer.max_length=128", "train.batch_size=32"]
SMALL_RNN = ["model.args.embed_dim=32", "model.args.hidden=32"]
SMALL_NGRAM = ["model.args.embed_dim=32", "model.args.buckets=100000", "model.args.nb=true",
               "model.args.binary=true"]  # fmt: skip
SMALL_TRANSFORMER = ["model.args.embed_dim=32", "model.args.heads=2", "model.args.layers=1",
                     "model.args.ff_dim=64"]  # fmt: skip
# (model, dataset, epochs, overrides): sizes chosen so the whole script takes minutes on 2 cores.
CASES = [
    ("perceptron", "mnist", 0.05, []),
    ("mlp", "mnist", 0.05, ["model.args.width=128"]),
    ("lenet", "mnist", 0.05, []),
    ("cnn", "mnist", 0.05, []),
    ("mnist_fast", "mnist", 0.05, []),
    ("alexnet", "cifar10", 0.03, ["model.args.variant=small", "model.args.fc_width=256"]),
    ("resnet18", "cifar10", 0.05, ["model.args.width=16"]),
    ("airbench", "cifar10", 0.05, ["model.args.widths=[32,64,64]"]),
    ("textcnn", "imdb", 0.2, [*TEXT, "model.args.embed_dim=32", "model.args.filters=32"]),
    ("ngram", "imdb", 0.1, [*TEXT, *SMALL_NGRAM]),
    ("rnn", "imdb", 0.2, [*TEXT, *SMALL_RNN]),
    ("lstm", "imdb", 0.2, [*TEXT, *SMALL_RNN]),
    ("gru", "imdb", 0.2, [*TEXT, *SMALL_RNN]),
    ("transformer", "imdb", 0.2, [*TEXT, *SMALL_TRANSFORMER]),
]
EXAMPLES = 1000


def measure(model: str, data: str, epochs: float, overrides: list[str], formats: list[str]):
    """Train one short run, export it in each format; one record per format."""
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        run = neuralab.train(data=data, model=model, epochs=epochs, out=str(Path(folder) / "run"),
                             verbose=False, overrides=[*COMMON, *overrides])  # fmt: skip
        train_seconds = time.perf_counter() - start
        records = []
        for format in formats:
            result = neuralab.export(run.run_dir, format, check_examples=EXAMPLES)
            records.append({
                "model": model, "data": data, "format": format, "epochs": epochs,
                "overrides": overrides, "test_accuracy": run.metrics["accuracy"],
                "examples": result.examples, "max_abs_diff": result.max_abs_diff,
                "tolerance": result.tolerance, "top1_agreement": result.top1_agreement,
                "export_seconds": result.seconds, "train_seconds": round(train_seconds, 1),
                "bytes": result.path.stat().st_size,
            })  # fmt: skip
            print(
                f"{model:<11} {format:<11} max |diff| {result.max_abs_diff:.2e}  "
                f"top-1 {result.top1_agreement:.2%}  ({result.seconds:.1f} s)",
                flush=True,
            )
    return records


def measure_or_record(case: tuple, formats: list[str]) -> list[dict]:
    """`measure`, or one record holding the error, so one broken case does not hide the rest."""
    try:
        return measure(*case, formats)
    except Exception as error:  # recorded and shown in the table
        print(f"{case[0]:<11} failed: {error}", flush=True)
        return [{"model": case[0], "data": case[1], "error": f"{type(error).__name__}: {error}"}]


def table(records: list[dict]) -> str:
    lines = [
        "| model | data | format | test acc. (short run) | examples | max abs diff | "
        "tolerance | top-1 agreement | export + check |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in records:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['data']} | — | failed: {r['error'][:120]} |")
            continue
        lines.append(
            f"| {r['model']} | {r['data']} | {r['format']} | {r['test_accuracy']:.1%} | "
            f"{r['examples']} | {r['max_abs_diff']:.1e} | {r['tolerance']:.1e} | "
            f"{r['top1_agreement']:.2%} | {r['export_seconds']:.1f} s |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help="default: every case")
    parser.add_argument("--formats", nargs="+", default=["onnx", "torchscript"])
    args = parser.parse_args()
    cases = [case for case in CASES if not args.models or case[0] in args.models]
    start = time.perf_counter()
    records = [record for case in cases for record in measure_or_record(case, args.formats)]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    summary = {"date": time.strftime("%Y-%m-%d"), "machine": machine_info(),
               "seconds": round(time.perf_counter() - start, 1), "records": records}  # fmt: skip
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(table(records))
    print(f"\n{len(records)} exports in {summary['seconds']:.0f} s; wrote {RESULTS}")


if __name__ == "__main__":
    main()
