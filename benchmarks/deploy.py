"""Deploy small and fast: size, latency, throughput and accuracy of each form of a run.

    python -m benchmarks.deploy --run mnist-best=RUN --run imdb-best=RUN \
        [--student mnist-best=RUN] [--pruned mnist-best=RUN] [--threads 2] [--repeats 300]

For every run: the PyTorch model (model.safetensors), its fp32 ONNX export and its int8 ONNX
export (`neuralab export --quantize int8`, written if missing; refused ones are reported as
such), and — when given — a distilled student and a pruned run standing for it, each as PyTorch:

    size          the file that holds the model (the int8 and fp32 .onnx, model.safetensors)
    p50 / p99     latency of one example (a real test example; text: the first test review),
                  after 20 warm-up calls, `repeats` calls
    throughput    examples/s on batches of 256 real test examples
    accuracy      on the whole test split, computed the same way for every form (argmax of
                  the logits the form returns, on uint8 images / token ids as exported)

Rows go to benchmarks/results/deploy.jsonl with the machine line; the markdown table is
printed. Nothing else should run meanwhile: the times are wall clock.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.machine import append_record, machine_info, machine_line
from neuralab.errors import UserError
from neuralab.inference.export import export
from neuralab.inference.predict import Predictor, predict_logits
from neuralab.inference.quantize import quantize, session

RESULTS = Path(__file__).parent / "results" / "deploy.jsonl"
WARMUP = 20
BATCH = 256


def record(row: dict) -> dict:
    return append_record(RESULTS, row)


class TestSet:
    """A run's whole test split as its exports take it: uint8 images or padded token ids."""

    def __init__(self, predictor: Predictor) -> None:
        dataset = predictor.meta.data.load(download=False)
        self.modality = predictor.modality
        index = torch.arange(len(dataset.test))
        self.examples = predictor.modality.split_examples(dataset.test, index, dataset.name)
        self.labels = dataset.test.labels
        self.single = self.modality.collate(self.examples[:1])

    def batches(self):
        for start in range(0, len(self.labels), BATCH):
            yield self.modality.collate(self.examples[start : start + BATCH])


def latency(call, single: torch.Tensor, repeats: int) -> tuple[float, float]:
    """p50 and p99 milliseconds of `call(single)`."""
    for _ in range(WARMUP):
        call(single)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call(single)
        times.append(time.perf_counter() - start)
    return float(np.percentile(times, 50) * 1e3), float(np.percentile(times, 99) * 1e3)


def measure(name: str, form: str, call, size: int, test: TestSet, repeats: int) -> dict:
    """One table row: size, latency, throughput and test accuracy of `call`."""
    p50, p99 = latency(call, test.single, repeats)
    correct, seconds = 0, 0.0
    for batch, labels in zip(test.batches(), test.labels.split(BATCH), strict=True):
        start = time.perf_counter()
        logits = call(batch)
        seconds += time.perf_counter() - start
        correct += int((logits.argmax(1) == labels).sum())
    row = {"run": name, "form": form, "bytes": size, "p50_ms": round(p50, 3),
           "p99_ms": round(p99, 3), "examples_per_s": round(len(test.labels) / seconds, 1),
           "accuracy": correct / len(test.labels)}  # fmt: skip
    print(markdown_row(row), flush=True)
    return record(row)


def torch_call(predictor: Predictor):
    def call(batch: torch.Tensor) -> torch.Tensor:
        inputs = predictor.modality.model_inputs(batch)
        return predict_logits(predictor.model, inputs, predictor.task)

    return call


def onnx_call(path: Path):
    loaded = session(path)

    def call(batch: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(loaded.run(None, {loaded.input: batch.numpy()})[0])

    return call


def deploy_rows(name: str, run: str, repeats: int, extra: dict[str, str]) -> None:
    """Every form of one run (and its student / pruned stand-ins), measured in turn."""
    predictor = Predictor.load(run)
    test = TestSet(predictor)
    weights = Path(run) / "checkpoint" / "model.safetensors"
    measure(name, "PyTorch", torch_call(predictor), weights.stat().st_size, test, repeats)
    fp32 = export(run, "onnx", check_examples=200).path
    measure(name, "ONNX fp32", onnx_call(fp32), fp32.stat().st_size, test, repeats)
    int8 = fp32.with_name(fp32.name.replace(".onnx", ".int8.onnx"))
    try:
        if not int8.exists():
            quantize(run)
        measure(name, "ONNX int8", onnx_call(int8), int8.stat().st_size, test, repeats)
    except UserError as error:  # a refused or impossible int8 model is a result too
        print(f"| {name} | ONNX int8 | refused: {error} |", flush=True)
        record({"run": name, "form": "ONNX int8", "refused": str(error)})
    for form, other in extra.items():
        small = Predictor.load(other)
        size = (Path(other) / "checkpoint" / "model.safetensors").stat().st_size
        measure(name, form, torch_call(small), size, TestSet(small), repeats)


def markdown_row(row: dict) -> str:
    return (
        f"| {row['run']} | {row['form']} | {row['bytes'] / 1e6:.3f} MB | {row['p50_ms']:.3f} | "
        f"{row['p99_ms']:.3f} | {row['examples_per_s']:,.0f} | {row['accuracy']:.2%} |"
    )


def parse(values: list[str]) -> dict[str, str]:
    return dict(value.split("=", 1) for value in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", default=[], help="NAME=RUN_DIR (repeatable)")
    parser.add_argument("--student", action="append", default=[], help="NAME=RUN_DIR")
    parser.add_argument("--pruned", action="append", default=[], help="NAME=RUN_DIR")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # onnxruntime sessions take the same count
    print(machine_line(machine_info()), flush=True)
    print("| run | form | size | p50 ms | p99 ms | examples/s (batch 256) | test accuracy |")
    print("| --- | --- | --- | --- | --- | --- | --- |", flush=True)
    students, pruned = parse(args.student), parse(args.pruned)
    for name, run in parse(args.run).items():
        extra = {}
        if name in students:
            extra["distilled student"] = students[name]
        if name in pruned:
            extra["pruned"] = pruned[name]
        deploy_rows(name, run, args.repeats, extra)


if __name__ == "__main__":
    main()
