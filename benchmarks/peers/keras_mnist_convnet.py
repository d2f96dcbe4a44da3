"""Keras's "Simple MNIST convnet" (keras.io/examples/vision/mnist_convnet) on Keras 3 with the
torch backend, as published: inputs scaled to [0, 1]; Conv2D 32 (3×3, relu) → MaxPool 2 →
Conv2D 64 (3×3, relu) → MaxPool 2 → Flatten → Dropout 0.5 → Dense 10 softmax; categorical
cross-entropy, Adam, batch 128, 15 epochs, validation_split 0.1 (so 54,000 training images).

    NEURALAB_DATA=../shared/datasets python -m benchmarks.peers.keras_mnist_convnet
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.peers.common import Curve, load_mnist  # noqa: E402
from benchmarks.peers.keras_clock import EpochClock  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()
    keras.utils.set_random_seed(1)
    x_train, y_train, x_test, y_test = load_mnist()
    x_train = np.expand_dims(x_train.astype("float32") / 255, -1)
    x_test = np.expand_dims(x_test.astype("float32") / 255, -1)
    model = keras.Sequential(
        [
            keras.Input(shape=(28, 28, 1)),
            keras.layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
            keras.layers.MaxPooling2D(pool_size=(2, 2)),
            keras.layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
            keras.layers.MaxPooling2D(pool_size=(2, 2)),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    curve = Curve("keras-mnist-convnet", "Keras 3 (torch) convnet, Adam, b128, 15 ep")
    model.fit(
        x_train,
        keras.utils.to_categorical(y_train, 10),
        batch_size=128,
        epochs=args.epochs,
        validation_split=0.1,
        verbose=0,
        callbacks=[EpochClock(curve, x_test, y_test, lambda p: p.argmax(1), 1000)],
    )
    curve.report(int(len(y_train) * 0.9))


if __name__ == "__main__":
    main()
