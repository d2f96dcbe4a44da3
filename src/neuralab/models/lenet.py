"""Small convolutional nets for digit-sized images: the PyTorch-example LeNet, the Keras MNIST
convnet, and `mnist_fast`, our cheap batch-normalised net for the MNIST best recipe."""

from __future__ import annotations

import torch
from torch import nn

from neuralab.models import training
from neuralab.models.linear import flat_features
from neuralab.models.registry import MODELS, InputSpec

# `mnist_fast` uses unpadded ("valid") 3x3 convolutions, which shrink 28x28 to 2x2 and keep the
# cost near 10 M multiply-adds per image; below this size the map would shrink to nothing, so
# smaller images (e.g. 8x8 digits) get "same" padding instead. 24 px is the smallest side whose
# valid-padding map survives: 24 → 22 → 20 → 10 → 8 → 6 → 3 → 1.
MNIST_FAST_MIN_VALID_SIDE = 24


class FeaturesClassifier(nn.Module):
    """`features` (B, C, H, W) → flatten → `classifier` → logits (B, num_classes).

    The two-part layout (as in torchvision) gives readable state_dict keys such as
    `features.0.weight` and `classifier.1.weight`.
    """

    def __init__(self, features: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        self.features = features
        self.classifier = classifier

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) for float images (B, C, H, W)."""
        return self.classifier(torch.flatten(self.features(images), 1))


@MODELS.register(
    "lenet",
    summary="PyTorch-example LeNet: 2 conv (10, 20 filters 5x5) + 2 fc",
    training=training.CONVNET,
)
def lenet(spec: InputSpec, *, dropout: float = 0.5) -> nn.Module:
    """The 2-conv net of pytorch/examples/mnist, returning logits instead of log-softmax.

    conv(C,10,5) → maxpool 2 → relu → conv(10,20,5) → Dropout2d → maxpool 2 → relu → flatten →
    fc 50 → relu → dropout → fc num_classes. On 1x28x28 with 10 classes: 21,840 parameters.

    Args:
        spec: input images and class count.
        dropout: probability for both the channel dropout (Dropout2d) and the fc dropout.
    """
    features = nn.Sequential(
        nn.Conv2d(spec.channels, 10, kernel_size=5),  # (B, 10, H-4, W-4)
        nn.MaxPool2d(2),
        nn.ReLU(),
        nn.Conv2d(10, 20, kernel_size=5),
        nn.Dropout2d(dropout),
        nn.MaxPool2d(2),
        nn.ReLU(),  # (B, 20, 4, 4) for 28x28 inputs
    )
    hidden = 50  # fc width of the original example
    classifier = nn.Sequential(
        nn.Linear(flat_features(features, spec, "lenet"), hidden),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, spec.num_classes),
    )
    return FeaturesClassifier(features, classifier)


@MODELS.register(
    "cnn",
    summary="Keras MNIST convnet: conv 32, conv 64 (3x3), dropout, dense",
    training=training.CONVNET,
)
def cnn(spec: InputSpec, *, dropout: float = 0.5, width: int = 32) -> nn.Module:
    """The keras.io "simple MNIST convnet": Conv 3x3 relu → MaxPool 2 → Conv 3x3 relu → MaxPool 2
    → Flatten → Dropout → Dense. On 1x28x28 with 10 classes: 34,826 parameters.

    Args:
        spec: input images and class count.
        dropout: drop probability before the dense layer.
        width: filters in the first conv; the second has twice as many.
    """
    features = nn.Sequential(
        nn.Conv2d(spec.channels, width, kernel_size=3),  # (B, width, H-2, W-2)
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, kernel_size=3),
        nn.ReLU(),
        nn.MaxPool2d(2),  # (B, 2*width, 5, 5) for 28x28 inputs
    )
    classifier = nn.Sequential(
        nn.Dropout(dropout),
        nn.Linear(flat_features(features, spec, "cnn"), spec.num_classes),
    )
    return FeaturesClassifier(features, classifier)


def _conv_bn_relu(inputs: int, outputs: int, padding: int) -> list[nn.Module]:
    """3x3 conv (no bias: batch norm follows) → BatchNorm2d → ReLU."""
    return [
        nn.Conv2d(inputs, outputs, kernel_size=3, padding=padding, bias=False),
        nn.BatchNorm2d(outputs),
        nn.ReLU(inplace=True),
    ]


@MODELS.register(
    "mnist_fast",
    summary="cheap batch-norm convnet for the MNIST best recipe",
    training=training.CONVNET,
)
def mnist_fast(spec: InputSpec, *, width: int = 32) -> nn.Module:
    """Five 3x3 conv-BN-ReLU layers (w, w, pool, 2w, 2w, pool, 4w), global average pool, linear.

    With the default width on 1x28x28 (valid padding: 28→26→24→12→10→8→4→2) it costs about
    10 M multiply-adds (≈ 20 MFLOPs) per image and has about 140 k parameters.

    Args:
        spec: input images and class count.
        width: filters of the first two convs; later stages use 2x and 4x.
    """
    padding = 0 if min(spec.height, spec.width) >= MNIST_FAST_MIN_VALID_SIDE else 1
    features = nn.Sequential(
        *_conv_bn_relu(spec.channels, width, padding),
        *_conv_bn_relu(width, width, padding),
        nn.MaxPool2d(2),
        *_conv_bn_relu(width, 2 * width, padding),
        *_conv_bn_relu(2 * width, 2 * width, padding),
        nn.MaxPool2d(2),
        *_conv_bn_relu(2 * width, 4 * width, padding),
        nn.AdaptiveAvgPool2d(1),  # (B, 4*width, 1, 1)
    )
    flat_features(features, spec, "mnist_fast")  # fail now, with a clear message, if too small
    return FeaturesClassifier(features, nn.Linear(4 * width, spec.num_classes))
