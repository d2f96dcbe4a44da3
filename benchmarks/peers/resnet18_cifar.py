"""The common "ResNet-18 on CIFAR-10" blog recipe, as users write it in plain eager PyTorch:

- the CIFAR variant of ResNet-18 (as in kuangliu/pytorch-cifar, the model most such posts
  copy): 3x3 stem conv 3 → 64 + BN + ReLU, no max-pool, BasicBlocks [2, 2, 2, 2] of widths
  64/128/256/512 (strides 1/2/2/2, 1x1 conv + BN shortcuts where the shape changes), global
  average pool, linear 512 → 10; PyTorch's default initialisation;
- torchvision-style per-example transforms in a DataLoader: RandomCrop(32, padding=4) (zero
  padding), RandomHorizontalFlip, ToTensor, Normalize((0.4914, 0.4822, 0.4465),
  (0.2023, 0.1994, 0.2010)); batch 128, shuffled;
- cross-entropy, SGD lr 0.001 momentum 0.9 (the PyTorch CIFAR-10 tutorial's optimizer line),
  no weight decay, no schedule; 20 epochs (the length of neuralab's `cifar10-resnet18-classic`);
- fp32, NCHW, torch's default threads, no workers (a 2-core CPU has none to spare).

torchvision's CIFAR10 class and transforms are replaced by the same files read with numpy and
the same operations on tensors (torchvision has no CPU build here). The test split is evaluated
after every epoch outside the training clock. A full run takes many hours on a small CPU:
`--max-minutes M` stops at the first epoch boundary after M minutes of training and records
that the run was cut.

    NEURALAB_DATA=../shared/datasets python -m benchmarks.peers.resnet18_cifar [--epochs 20]
        [--max-minutes M] [--limit N] [--test-limit N] [--seed S]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from benchmarks.peers.common import Curve, load_cifar10, report_notes

EPOCHS = 20
BATCH_SIZE = 128
TEST_BATCH_SIZE = 1000
LR, MOMENTUM = 0.001, 0.9
CROP_PADDING = 4  # pixels of zero padding before the random 32x32 crop
MEAN = (0.4914, 0.4822, 0.4465)  # the constants these posts copy from kuangliu/pytorch-cifar
STD = (0.2023, 0.1994, 0.2010)


class BasicBlock(nn.Module):
    """relu(bn(conv(relu(bn(conv(x))))) + shortcut(x)); 3x3 convs, the first with `stride`."""

    def __init__(self, inputs: int, outputs: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(outputs)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        self.shortcut = nn.Sequential()
        if stride != 1 or inputs != outputs:
            self.shortcut = nn.Sequential(
                nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """(B, 3, 32, 32) normalised images → (B, 10) logits."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        stages, inputs = [], 64
        for width, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages.append(
                nn.Sequential(BasicBlock(inputs, width, stride), BasicBlock(width, width, 1))
            )
            inputs = width
        self.layers = nn.Sequential(*stages)
        self.linear = nn.Linear(512, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(F.relu(self.bn1(self.conv1(x))))  # (B, 512, 4, 4)
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


class CifarTransforms(Dataset):
    """One example at a time, like torchvision's CIFAR10 with a transform: optional zero-pad +
    random crop and horizontal flip (probability 1/2), then ToTensor and Normalize."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, augment: bool) -> None:
        self.images = torch.from_numpy(images)  # uint8 (N, 3, 32, 32)
        self.labels, self.augment = labels, augment
        self.mean = torch.tensor(MEAN).view(3, 1, 1)
        self.std = torch.tensor(STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        if self.augment:
            padded = F.pad(image, (CROP_PADDING,) * 4)  # (3, 40, 40), zeros like RandomCrop
            top, left = torch.randint(0, 2 * CROP_PADDING + 1, (2,)).tolist()
            image = padded[:, top : top + 32, left : left + 32]
            if torch.rand(1).item() < 0.5:
                image = image.flip(-1)
        image = image.float().div(255)
        return (image - self.mean) / self.std, int(self.labels[index])


def test_accuracy(model: nn.Module, loader: DataLoader) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for images, labels in loader:
            correct += model(images).argmax(1).eq(labels).sum().item()
    return correct / len(loader.dataset)


def train_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer) -> None:
    model.train()
    for images, labels in loader:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description="ResNet-18 on CIFAR-10, the blog recipe")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument(
        "--max-minutes", type=float, help="stop at the first epoch end after M training minutes"
    )
    parser.add_argument("--limit", type=int, help="train on the first N images only (smoke runs)")
    parser.add_argument("--test-limit", type=int, help="test on the first N images (smoke runs)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    x_train, y_train, x_test, y_test = load_cifar10()
    train = DataLoader(
        CifarTransforms(x_train[: args.limit], y_train[: args.limit], augment=True),
        batch_size=BATCH_SIZE,
        shuffle=True,
    )
    test = DataLoader(
        CifarTransforms(x_test[: args.test_limit], y_test[: args.test_limit], augment=False),
        batch_size=TEST_BATCH_SIZE,
    )
    model = ResNet18()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    curve = Curve(
        "resnet18-cifar",
        f"CIFAR ResNet-18, SGD {LR} momentum {MOMENTUM}, b{BATCH_SIZE}, crop 4 + flip, "
        f"{args.epochs} ep, eager fp32 NCHW",
    )
    cut = False
    for epoch in range(args.epochs):
        start = time.perf_counter()
        train_epoch(model, train, optimizer)
        curve.add(time.perf_counter() - start, test_accuracy(model, test))
        out_of_time = args.max_minutes is not None and curve.train_seconds >= 60 * args.max_minutes
        if out_of_time and epoch + 1 < args.epochs:
            cut = True
            print(
                f"cut after epoch {epoch + 1} of {args.epochs} (--max-minutes {args.max_minutes:g})"
            )
            break
    report_notes(planned_epochs=args.epochs, cut=cut, max_minutes=args.max_minutes)
    curve.report(len(train.dataset))


if __name__ == "__main__":
    main()
