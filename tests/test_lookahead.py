"""Lookahead (train.lookahead_every / lookahead_decay) against the published behaviour of
airbench94's LookaheadState (Jordan 2024, after Zhang et al. 2019), through `neuralab.train`.

airbench94, restated: the slow copy starts as the network's state; after optimizer step n,
when n is a multiple of k, with d = decay·(n/N)³ (N the run's total steps), every floating-point
entry of the state dict — weights AND batch-norm running_mean / running_var — moves
slow ← slow + (1 − d)·(fast − slow), and the network continues from slow (fast ← slow). After the
last step the network is set to the slow copy (its update with d = 1).

The test model has batch norm, so the buffers' averaging is observable: a Lookahead that averaged
only parameters leaves the network's running statistics at their fast values and fails here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import neuralab
from neuralab.train.callbacks import Callback

CLASSES = 4  # class k lights up quadrant k of an 8×8 grey image
PER_CLASS = 15  # 12 train + 3 test per class with the default 20% split
BATCH = 8  # 48 training images → 6 steps per epoch
EPOCHS = 2  # → N = 12 optimizer steps
TOTAL_STEPS = 12
DECAY = 0.7  # lookahead_decay; the default is airbench94's 0.95⁵ ≈ 0.77


def write_quadrant_folder(root: Path) -> Path:
    """PNG files root/q<k>/<i>.png: dark noise with a bright 4×4 quadrant k."""
    rng = np.random.default_rng(0)
    for label in range(CLASSES):
        (root / f"q{label}").mkdir(parents=True)
        row, col = divmod(label, 2)
        for index in range(PER_CLASS):
            pixels = rng.integers(0, 60, (8, 8), dtype=np.uint8)
            pixels[4 * row : 4 * row + 4, 4 * col : 4 * col + 4] += 180
            Image.fromarray(pixels, "L").save(root / f"q{label}" / f"{index}.png")
    return root


def float_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What airbench94 averages: every floating-point state-dict entry (weights, biases, BN
    running_mean / running_var; not the integer num_batches_tracked)."""
    return {
        name: value.detach().clone()
        for name, value in model.state_dict().items()
        if value.is_floating_point()
    }


class Witness(Callback):
    """Records the model's state at the start, right after each optimizer step (before any
    callback runs: the fast state), and after every callback's on_step_end (the state the next
    step starts from). User callbacks run after the built-in Lookahead."""

    def __init__(self) -> None:
        self.start: dict[str, torch.Tensor] = {}
        self.fast: list[dict[str, torch.Tensor]] = []
        self.kept: list[dict[str, torch.Tensor]] = []

    def on_fit_start(self, trainer) -> None:
        model = trainer.model
        self.start = float_state(model)
        trainer.optimizer.register_step_post_hook(lambda *_: self.fast.append(float_state(model)))

    def on_step_end(self, trainer) -> None:
        self.kept.append(float_state(trainer.model))


def airbench94_lookahead(
    start: dict[str, torch.Tensor], fast: list[dict[str, torch.Tensor]], every: int, decay: float
) -> tuple[list[dict[str, torch.Tensor]], list[int]]:
    """The state airbench94 leaves the network in after each step, given the fast state each
    step produced; and the steps that synced."""
    total = len(fast)
    slow = {name: value.clone() for name, value in start.items()}
    expected, syncs = [], []
    for step, state in enumerate(fast, start=1):
        network = state
        if step % every == 0:
            d = decay * (step / total) ** 3
            slow = {name: slow[name] + (1 - d) * (state[name] - slow[name]) for name in slow}
            network, syncs = slow, [*syncs, step]
        if step == total:  # update(decay=1.0): slow stays, the network takes it
            network = slow
        expected.append(network)
    return expected, syncs


@pytest.fixture(scope="module")
def quadrants(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_quadrant_folder(tmp_path_factory.mktemp("lookahead") / "quadrants")


def train_with_lookahead(folder: Path, out: Path, every: int) -> Witness:
    witness = Witness()
    neuralab.train(
        data=f"folder:{folder}",
        data_dir=str(out / "data"),
        model="mlp",
        epochs=EPOCHS,
        batch_size=BATCH,
        lr=0.2,
        out=str(out / "run"),
        verbose=False,
        callbacks=[witness],
        overrides=[
            "train.precision=fp32",  # skips the engine's timing
            "data.options.image_size=8",
            "model.args={depth: 1, width: 16, batch_norm: true}",  # BatchNorm1d with buffers
            "optim.momentum=0.9",
            f"train.lookahead_every={every}",
            f"train.lookahead_decay={DECAY}",
        ],
    )
    assert len(witness.fast) == len(witness.kept) == TOTAL_STEPS
    return witness


def assert_states_equal(actual: dict, expected: dict, step: int) -> None:
    assert actual.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(
            actual[name],
            expected[name],
            msg=lambda message, where=f"after step {step}, {name}": f"{where}: {message}",
        )


@pytest.mark.parametrize("every", [3, 4])  # both divide N = 12: the last step is a sync
def test_lookahead_averages_weights_and_batch_norm_statistics_like_airbench94(
    quadrants: Path, tmp_path: Path, every: int
) -> None:
    witness = train_with_lookahead(quadrants, tmp_path, every)
    expected, syncs = airbench94_lookahead(witness.start, witness.fast, every, DECAY)
    assert syncs == list(range(every, TOTAL_STEPS + 1, every))
    for step, (kept, reference) in enumerate(zip(witness.kept, expected, strict=True), start=1):
        assert_states_equal(kept, reference, step)
    # The reference is not vacuous: at the last sync (d = DECAY) the averaged statistics sit
    # well away from the fast ones the step produced.
    buffers = [name for name in witness.start if name.endswith(("running_mean", "running_var"))]
    assert buffers  # the model has batch norm
    for name in [*buffers, "1.weight"]:  # 1.weight: the hidden layer's weights
        assert (witness.kept[-1][name] - witness.fast[-1][name]).abs().max() > 1e-3, name


def test_steps_before_the_last_match_airbench94_when_the_run_ends_between_syncs(
    quadrants: Path, tmp_path: Path
) -> None:
    """every = 5, N = 12: syncs after steps 5 and 10; steps 1–11 must match."""
    witness = train_with_lookahead(quadrants, tmp_path, every=5)
    expected, syncs = airbench94_lookahead(witness.start, witness.fast, 5, DECAY)
    assert syncs == [5, 10]
    for step in range(1, TOTAL_STEPS):
        assert_states_equal(witness.kept[step - 1], expected[step - 1], step)


def test_a_run_that_ends_between_syncs_ends_on_the_slow_copy_like_airbench94(
    quadrants: Path, tmp_path: Path
) -> None:
    witness = train_with_lookahead(quadrants, tmp_path, every=5)
    expected, _ = airbench94_lookahead(witness.start, witness.fast, 5, DECAY)
    assert_states_equal(witness.kept[-1], expected[-1], TOTAL_STEPS)
