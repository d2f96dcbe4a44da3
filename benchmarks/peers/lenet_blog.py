"""The LeNet-5 blog recipe that most PyTorch tutorials copy: conv 6 (5×5, padding 2) → pool →
conv 16 (5×5) → pool → fc 120 → fc 84 → fc 10 with ReLU and max-pooling, cross-entropy,
SGD lr 0.01 momentum 0.5, batch 64, 10 epochs, per-example normalisation in a DataLoader.

    NEURALAB_DATA=../shared/datasets python -m benchmarks.peers.lenet_blog
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn
from torch.utils.data import DataLoader

from benchmarks.peers.common import Curve, load_mnist
from benchmarks.peers.pytorch_mnist_example import Normalized, test_accuracy


def lenet() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, 10),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    torch.manual_seed(1)
    x_train, y_train, x_test, y_test = load_mnist()
    train = DataLoader(Normalized(x_train, y_train), batch_size=64, shuffle=True)
    test = DataLoader(Normalized(x_test, y_test), batch_size=1000)
    model = lenet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.5)
    loss_fn = nn.CrossEntropyLoss()
    curve = Curve("lenet-blog", "LeNet-5, SGD 0.01 momentum 0.5, b64, 10 ep")
    for _ in range(args.epochs):
        model.train()
        start = time.perf_counter()
        for data, target in train:
            optimizer.zero_grad()
            loss_fn(model(data), target).backward()
            optimizer.step()
        curve.add(time.perf_counter() - start, test_accuracy(model, test))
    curve.report(len(y_train))


if __name__ == "__main__":
    main()
