"""PyTorch's official MNIST example (pytorch/examples, mnist/main.py), its recipe followed as
published: conv 32 → conv 64 → max-pool → dropout 0.25 → fc 128 → dropout 0.5 → fc 10,
log-softmax + NLL, Adadelta lr 1.0, StepLR(step 1, gamma 0.7), batch 64, test batch 1000,
14 epochs, per-example ToTensor + Normalize((0.1307,), (0.3081,)) in a DataLoader (no workers
on CPU, as the example sets them only for CUDA). torchvision's MNIST class is replaced by the
same files read with numpy (torchvision has no CPU build here).

    NEURALAB_DATA=../shared/datasets python -m benchmarks.peers.pytorch_mnist_example
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from benchmarks.peers.common import Curve, load_mnist


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = torch.flatten(self.dropout1(x), 1)
        x = self.dropout2(F.relu(self.fc1(x)))
        return F.log_softmax(self.fc2(x), dim=1)


class Normalized(Dataset):
    """ToTensor + Normalize per example, like the example's torchvision transform."""

    def __init__(self, images, labels) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = torch.from_numpy(self.images[index]).float().div(255).unsqueeze(0)
        return (image - 0.1307) / 0.3081, int(self.labels[index])


def test_accuracy(model: nn.Module, loader: DataLoader) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for data, target in loader:
            correct += model(data).argmax(1).eq(target).sum().item()
    return correct / len(loader.dataset)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=14)
    args = parser.parse_args()
    torch.manual_seed(1)  # the example's default seed
    x_train, y_train, x_test, y_test = load_mnist()
    train = DataLoader(Normalized(x_train, y_train), batch_size=64, shuffle=True)
    test = DataLoader(Normalized(x_test, y_test), batch_size=1000)
    model = Net()
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    curve = Curve("pytorch-mnist-example", "conv32/64 fc128, Adadelta 1.0, StepLR 0.7, b64, 14 ep")
    for _ in range(args.epochs):
        model.train()
        start = time.perf_counter()
        for data, target in train:
            optimizer.zero_grad()
            loss = F.nll_loss(model(data), target)
            loss.backward()
            optimizer.step()
        scheduler.step()
        curve.add(time.perf_counter() - start, test_accuracy(model, test))
    curve.report(len(y_train))


if __name__ == "__main__":
    main()
