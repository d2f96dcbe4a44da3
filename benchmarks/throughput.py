"""Training throughput: neuralab against the plain eager fp32 PyTorch loop a user would write,
same model, same data, same machine, back to back in one invocation.

    NEURALAB_DATA=../shared/datasets python -m benchmarks.throughput

- ResNet-18 (CIFAR stem) on CIFAR-10, batch 128, crop + flip: the plain loop is a DataLoader
  whose Dataset crops, flips and normalises one image at a time (what torchvision transforms
  do), a contiguous fp32 model and torch's default threads; neuralab is `neuralab train
  --recipe cifar10-resnet18-classic` for a fraction of an epoch (its engine probe included).
- The bidirectional LSTM of `imdb-lstm` on IMDB, batch 64, 400 tokens: the plain loop is the
  tutorial's `pack_padded_sequence` over batches in random order; neuralab is `neuralab train
  --recipe imdb-lstm` for a fraction of an epoch. Both see the same token ids, so the ratio of
  reviews/s is the ratio of tokens/s.

Timed: training steps only, after warm-up steps. Appends to benchmarks/results/throughput.jsonl
and regenerates the `throughput` table in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import neuralab
from benchmarks.harness import engine_line
from benchmarks.machine import machine_info, machine_line
from benchmarks.report import replace_section

RESULTS = Path(__file__).parent / "results" / "throughput.jsonl"
WARMUP_STEPS = 2


class CropFlip(Dataset):
    """Per-example reflect-pad-4 crop, horizontal flip and normalisation (torchvision style)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean, std) -> None:
        self.images, self.labels = images, labels
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = self.images[index].float().div(255)
        padded = nn.functional.pad(image.unsqueeze(0), (4, 4, 4, 4), mode="reflect")[0]
        top, left = torch.randint(0, 9, (2,)).tolist()
        image = padded[:, top : top + 32, left : left + 32]
        if torch.rand(()) < 0.5:
            image = image.flip(-1)
        return (image - self.mean) / self.std, self.labels[index]


def timed_steps(model: nn.Module, batches, steps: int) -> float:
    """Examples per second over `steps` SGD steps after the warm-up ones."""
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    model.train()
    seen, start = 0, 0.0
    for index, (inputs, labels) in enumerate(batches):
        if index == WARMUP_STEPS:
            seen, start = 0, time.perf_counter()
        optimizer.zero_grad()
        loss_fn(model(inputs), labels).backward()
        optimizer.step()
        seen += len(labels)
        if index + 1 == WARMUP_STEPS + steps:
            break
    return seen / (time.perf_counter() - start)


def ours(recipe: str, epochs: float) -> tuple[float, str]:
    """Examples/s of neuralab's training loop (the history's figure) and its engine line."""
    with tempfile.TemporaryDirectory() as folder:
        run = neuralab.train(
            recipe, out=str(Path(folder) / "run"), overrides=[f"train.epochs={epochs}"]
        )
    return run.history[-1]["examples_per_second"], engine_line(run.metrics)


def plain_resnet(steps: int) -> float:
    data = neuralab.load_dataset("cifar10")
    dataset = CropFlip(data.train.images, data.train.labels, data.mean, data.std)
    loader = DataLoader(dataset, batch_size=128, shuffle=True)
    model = neuralab.build_model("resnet18", neuralab.InputSpec(3, 32, 32, 10), stem="cifar")
    return timed_steps(model, loader, steps)


class PackedLSTM(nn.Module):
    """The tutorial's bidirectional LSTM classifier over packed sequences, max-pooled."""

    def __init__(self, vocab: int, embed: int = 128, hidden: int = 64) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, embed, padding_idx=0)
        self.lstm = nn.LSTM(embed, hidden, batch_first=True, bidirectional=True)
        self.classifier = nn.Linear(2 * hidden, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        lengths = (ids != 0).sum(1).clamp_min(1)
        packed = nn.utils.rnn.pack_padded_sequence(
            self.embedding(ids), lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        outputs, _ = self.lstm(packed)
        padded, _ = nn.utils.rnn.pad_packed_sequence(
            outputs, batch_first=True, padding_value=float("-inf")
        )
        return self.classifier(padded.amax(1))


def plain_lstm(steps: int) -> float:
    """Token ids from neuralab's own tokenizer (data preparation is not timed)."""
    from neuralab.config import resolve_config
    from neuralab.inference.evaluation import load_data
    from neuralab.modalities.text import prepare_text

    config = resolve_config("imdb-lstm")
    inputs = prepare_text(load_data(config), config)
    ids = inputs.splits["train"].to_lists()
    labels = torch.as_tensor(inputs.labels("train"))
    order = torch.randperm(len(labels))

    def batches():
        for start in range(0, len(order), 64):
            rows = order[start : start + 64].tolist()
            texts = [ids[i] for i in rows]
            width = max(len(t) for t in texts)
            batch = torch.zeros(len(rows), width, dtype=torch.long)
            for row, text in enumerate(texts):
                batch[row, : len(text)] = torch.as_tensor(text)
            yield batch, labels[rows]

    model = PackedLSTM(inputs.spec.vocab_size)
    return timed_steps(model, batches(), steps)


def table(record: dict) -> str:
    lines = [
        f"One run, {record['date']}, {machine_line(record['machine'])}.",
        "",
        "| model | plain eager fp32 PyTorch | neuralab | ratio | neuralab engine |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in record["results"]:
        lines.append(
            f"| {r['model']} | {r['plain']:.1f} {r['unit']} | {r['ours']:.1f} {r['unit']} | "
            f"{r['ours'] / r['plain']:.2f}× | {r['engine']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resnet-steps", type=int, default=8)
    parser.add_argument("--lstm-steps", type=int, default=10)
    args = parser.parse_args()
    results = []
    ours_resnet, engine = ours("cifar10-resnet18-classic", 0.03)
    results.append(
        {
            "model": "ResNet-18, CIFAR-10, batch 128",
            "unit": "images/s",
            "plain": plain_resnet(args.resnet_steps),
            "ours": ours_resnet,
            "engine": engine,
        }
    )
    ours_lstm, engine = ours("imdb-lstm", 0.05)
    results.append(
        {
            "model": "BiLSTM (imdb-lstm), IMDB, batch 64",
            "unit": "reviews/s",
            "plain": plain_lstm(args.lstm_steps),
            "ours": ours_lstm,
            "engine": engine,
        }
    )
    record = {"date": time.strftime("%Y-%m-%d"), "machine": machine_info(), "results": results}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
    print(table(record))
    replace_section("throughput", table(record))


if __name__ == "__main__":
    main()
