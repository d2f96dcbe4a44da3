"""The Keras peers' clock: training time per epoch (whatever Keras does inside `fit`'s epoch,
as users see it), then the test accuracy, measured outside the clock."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported: it picks it once

import keras  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.peers.common import Curve  # noqa: E402


class EpochClock(keras.callbacks.Callback):
    """`to_labels` turns the model's predictions on `x_test` into predicted labels."""

    def __init__(
        self,
        curve: Curve,
        x_test: np.ndarray,
        y_test: np.ndarray,
        to_labels: Callable[[np.ndarray], np.ndarray],
        batch_size: int,
    ) -> None:
        super().__init__()
        self.curve, self.x_test, self.y_test = curve, x_test, y_test
        self.to_labels, self.batch_size = to_labels, batch_size

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None) -> None:
        seconds = time.perf_counter() - self.start
        predictions = self.model.predict(self.x_test, batch_size=self.batch_size, verbose=0)
        self.curve.add(seconds, float(np.mean(self.to_labels(predictions) == self.y_test)))
