"""Trainer tests on tiny separable synthetic data: it learns, stops where told, evaluates each
example once, and its options (mse, grad clipping, EMA, callbacks) do what they say."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from neuralab.data.dataset import Split, channel_stats
from neuralab.data.loader import BatchLoader
from neuralab.inference.predict import predict_logits
from neuralab.tasks.classification import Classification, make_loss
from neuralab.train.callbacks import Callback, PlainProgress
from neuralab.train.lookahead import Lookahead
from neuralab.train.trainer import Trainer, planned_steps, score_loader

CLASSES = 4  # class k lights up quadrant k of a 4x4 image


def quadrant_split(count: int, seed: int) -> Split:
    """Dark noise everywhere, bright noise in the label's 2x2 quadrant: (count, 1, 4, 4)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % CLASSES
    images = torch.randint(0, 60, (count, 1, 4, 4), dtype=torch.uint8, generator=generator)
    bright = torch.randint(180, 256, (count, 1, 2, 2), dtype=torch.uint8, generator=generator)
    for index, label in enumerate(labels.tolist()):
        row, col = divmod(label, 2)
        images[index, :, 2 * row : 2 * row + 2, 2 * col : 2 * col + 2] = bright[index]
    return Split(images, labels)


TRAIN, TEST = quadrant_split(128, seed=0), quadrant_split(60, seed=1)
MEAN, STD = channel_stats(TRAIN.images)


def loaders(batch_size: int = 16) -> tuple[BatchLoader, BatchLoader]:
    train = BatchLoader(TRAIN, batch_size, MEAN, STD, shuffle=True, seed=0)  # 8 steps per epoch
    return train, BatchLoader(TEST, 25, MEAN, STD)  # 25, 25, 10: a partial last batch


def linear_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, CLASSES))


def make_trainer(model: nn.Module | None = None, lr: float = 0.1, **kwargs) -> Trainer:
    model = model or linear_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    loss = kwargs.pop("loss_fn", nn.CrossEntropyLoss())
    return Trainer(model, optimizer, Classification(loss), **kwargs)


def test_learns_separable_data() -> None:
    trainer = make_trainer()
    train, test = loaders()
    before = trainer.score(test)["accuracy"]
    history = trainer.fit(train, epochs=3, val_loader=test)
    after = trainer.score(test)["accuracy"]
    assert before < 0.5 < 0.9 <= after  # chance is 0.25
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["val_accuracy"] == after
    assert {"lr", "seconds", "examples_per_second", "val_loss"} <= set(history[0])


def test_mse_loss_matches_manual_and_learns() -> None:
    logits, labels = torch.randn(5, 3), torch.tensor([0, 2, 1, 1, 0])
    target = torch.eye(3)[labels]
    torch.testing.assert_close(make_loss("mse")(logits, labels), ((logits - target) ** 2).mean())
    trainer = make_trainer(loss_fn=make_loss("mse"))
    train, test = loaders()
    trainer.fit(train, epochs=3)
    assert trainer.score(test)["accuracy"] >= 0.9


def test_cross_entropy_with_label_smoothing_is_torchs() -> None:
    logits, labels = torch.randn(5, 3), torch.tensor([0, 2, 1, 1, 0])
    expected = nn.functional.cross_entropy(logits, labels, label_smoothing=0.2)
    torch.testing.assert_close(make_loss("cross_entropy", 0.2)(logits, labels), expected)
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        make_loss("hinge")


class Recorder(Callback):
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def on_fit_start(self, trainer: Trainer) -> None:
        self.events.append(("start", trainer.planned_epochs))

    def on_epoch_end(self, trainer: Trainer, logs: dict) -> None:
        self.events.append(("epoch", logs["epoch"], trainer.step))

    def on_fit_end(self, trainer: Trainer) -> None:
        self.events.append(("end", trainer.step))


def test_fractional_epochs_stop_mid_epoch() -> None:
    recorder = Recorder()
    model = linear_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    trainer = Trainer(model, optimizer, Classification(), scheduler=scheduler, callbacks=[recorder])
    train, _ = loaders()
    history = trainer.fit(train, epochs=1.5)  # 8 steps per epoch -> 12 steps
    assert trainer.step == 12 and scheduler.last_epoch == 12
    assert recorder.events == [("start", 2), ("epoch", 1, 8), ("epoch", 2, 12), ("end", 12)]
    assert len(history) == 2 and trainer.epoch == 2


def test_planned_steps_rounds_but_always_trains() -> None:
    assert planned_steps(1.5, 8) == 12
    assert planned_steps(0.3, 10) == 3
    assert planned_steps(0.01, 10) == 1  # a run that never steps would save nothing


def test_evaluate_counts_each_example_once() -> None:
    model = linear_model()
    _, test = loaders()
    metrics = score_loader(model, test, Classification())
    assert metrics["count"] == len(TEST) == 60
    images = next(iter(BatchLoader(TEST, 1000, MEAN, STD)))[0]
    with torch.no_grad():
        logits = model(images)
    manual_accuracy = (logits.argmax(1) == TEST.labels).float().mean().item()
    assert metrics["accuracy"] == pytest.approx(manual_accuracy)
    expected_loss = nn.functional.cross_entropy(logits, TEST.labels).item()
    assert metrics["loss"] == pytest.approx(expected_loss, rel=1e-5)


def test_tta_averages_the_mirror_image() -> None:
    model = linear_model().eval()
    images = torch.randn(3, 1, 4, 4)
    with torch.no_grad():
        expected = 0.5 * (model(images) + model(images.flip(-1)))
    torch.testing.assert_close(predict_logits(model, images, Classification(tta=True)), expected)


def test_flip_shift_tta_weights_the_plain_and_the_shifted_views() -> None:
    model = linear_model().eval()
    images = torch.randn(3, 1, 4, 4)

    def mirrored(x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (model(x) + model(x.flip(-1)))

    padded = nn.functional.pad(images, (1, 1, 1, 1), mode="reflect")  # (3, 1, 6, 6)
    up_left, down_right = padded[..., 0:4, 0:4], padded[..., 2:6, 2:6]
    with torch.no_grad():
        expected = 0.5 * mirrored(images) + 0.25 * (mirrored(up_left) + mirrored(down_right))
    flip_shift, off = Classification(tta="flip+shift"), Classification(tta="off")
    torch.testing.assert_close(predict_logits(model, images, flip_shift), expected)
    torch.testing.assert_close(predict_logits(model, images, off), model(images))
    with pytest.raises(ValueError, match="flip\\+shift"):
        Classification(tta="rotate")


def gradient_norm(model: nn.Module) -> float:
    return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()])).item()


def test_grad_clip_bounds_the_gradient_norm() -> None:
    train, _ = loaders()
    unclipped = make_trainer(lr=1e-4)
    unclipped.fit(train, epochs=0.25)
    assert gradient_norm(unclipped.model) > 0.5  # so the bound below is a real constraint
    clipped = make_trainer(lr=1e-4, grad_clip=0.5)
    clipped.fit(train, epochs=0.25)
    assert gradient_norm(clipped.model) <= 0.5 + 1e-5


def record_optimizer_steps(trainer: Trainer) -> list[list[torch.Tensor]]:
    """A list that fills with the model's parameters right after each optimizer step."""
    seen: list[list[torch.Tensor]] = []
    step = trainer.optimizer.step

    def recording_step(*args, **kwargs):
        result = step(*args, **kwargs)
        seen.append([p.detach().clone() for p in trainer.model.parameters()])
        return result

    trainer.optimizer.step = recording_step
    return seen


def test_ema_weights_are_the_average_of_the_raw_weights() -> None:
    trainer = make_trainer(ema_decay=0.8)
    seen = record_optimizer_steps(trainer)
    train, test = loaders()
    trainer.fit(train, epochs=1)
    average = seen[0]  # the first update copies the weights, then each step mixes in 20%
    for weights in seen[1:]:
        average = [0.8 * a + 0.2 * w for a, w in zip(average, weights, strict=True)]
    assert trainer.eval_model is not trainer.model
    for ema, expected, raw in zip(
        trainer.eval_model.parameters(), average, trainer.model.parameters(), strict=True
    ):
        torch.testing.assert_close(ema, expected)
        assert not torch.allclose(ema, raw)
    assert trainer.state_dict()["ema"] is not None
    assert trainer.score(test)["count"] == 60  # evaluation runs on the average


class NaNLoader:
    """Any object with set_epoch, __len__ and __iter__ is a loader; this one yields NaN images
    from batch `bad_batch` (counted from 1) of epoch `bad_epoch` on, finite ones before."""

    def __init__(self, bad_epoch: int = 1, bad_batch: int = 1) -> None:
        self.bad_epoch, self.bad_batch = bad_epoch, bad_batch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return 4

    def __iter__(self):
        for batch in range(1, 5):
            bad = (self.epoch + 1, batch) >= (self.bad_epoch, self.bad_batch)
            images = torch.full((2, 1, 4, 4), float("nan") if bad else 0.5)
            yield images, torch.tensor([0, 1])


def weights_of(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_lookahead_resumes_to_the_same_weights() -> None:
    def trainer_with_lookahead(stop_after: int | None = None) -> Trainer:
        callbacks: list[Callback] = [Lookahead(2, 0.9)]
        if stop_after is not None:
            callbacks.append(StopAfter(stop_after))
        return make_trainer(linear_model(), callbacks=callbacks)

    train, _ = loaders()
    torch.manual_seed(0)
    whole = trainer_with_lookahead()
    whole.fit(train, epochs=3)
    torch.manual_seed(0)
    first = trainer_with_lookahead(stop_after=1)
    first.fit(train, epochs=3)
    state, weights = first.state_dict(), first.model.state_dict()
    second = trainer_with_lookahead()
    second.load_state_dict(state, weights)
    second.fit(train, epochs=3)
    for a, b in zip(whole.model.parameters(), second.model.parameters(), strict=True):
        torch.testing.assert_close(a, b)


class StopAfter(Callback):
    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_epoch_end(self, trainer: Trainer, logs: dict) -> None:
        if trainer.epoch >= self.epochs:
            trainer.stop(f"stopped after {self.epochs} epochs")


def test_non_finite_loss_stops_at_that_step_before_the_update() -> None:
    """Epoch 2, batch 3 is NaN: the run stops there, names epoch/step/batch, logs only the
    complete epoch, and the weights are those after the last good step (step 6)."""
    trainer = make_trainer()
    good = make_trainer()
    good.fit(NaNLoader(bad_epoch=9), epochs=1.5)  # the same 6 good steps, nothing else
    history = trainer.fit(NaNLoader(bad_epoch=2, bad_batch=3), epochs=3)
    assert trainer.failed and [row["epoch"] for row in history] == [1]
    assert trainer.step == 6
    assert "training loss became nan at epoch 2, step 7 (batch 3 of the epoch)" in (
        trainer.stop_reason
    )
    for got, expected in zip(weights_of(trainer.model), weights_of(good.model), strict=True):
        assert torch.equal(got, expected)


def test_non_finite_gradient_names_the_parameter() -> None:
    """A finite loss with an infinite gradient (a hook poisons the bias's gradient)."""
    model = linear_model()
    trainer = make_trainer(model)
    model[1].bias.register_hook(lambda grad: grad * float("inf"))
    before = weights_of(model)
    trainer.fit(loaders()[0], epochs=1)
    assert trainer.failed and trainer.step == 0 and trainer.history == []
    assert "gradient of parameter '1.bias' became non-finite at epoch 1, step 1" in (
        trainer.stop_reason
    )
    assert all(torch.equal(a, b) for a, b in zip(weights_of(model), before, strict=True))


class BagOfIds(nn.Module):
    """A sparse-gradient model (like the n-gram bag): an EmbeddingBag over pixel levels."""

    def __init__(self) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(256, CLASSES, mode="mean", sparse=True)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        levels = (images.flatten(1) * 40 + 128).clamp(0, 255).long()  # (B, 16)
        return self.bag(levels)


def test_sparse_gradients_are_checked_and_a_poisoned_one_is_named() -> None:
    torch.manual_seed(0)
    model = BagOfIds()
    optimizer = torch.optim.SparseAdam(model.parameters(), lr=0.05)
    trainer = Trainer(model, optimizer, Classification())
    trainer.fit(loaders()[0], epochs=1)
    assert not trainer.failed and trainer.step == 8
    model.bag.weight.register_hook(lambda grad: grad * float("nan"))
    trainer.fit(loaders()[0], epochs=2)
    assert trainer.failed and "parameter 'bag.weight'" in trainer.stop_reason


def test_epoch_check_stops_after_the_epoch_when_steps_are_not_checked() -> None:
    """finite_check="epoch" (a GPU's default): the trainer catches it at the epoch's end."""
    trainer = make_trainer(finite_check="epoch")
    history = trainer.fit(NaNLoader(), epochs=3)
    assert trainer.should_stop and trainer.failed and len(history) == 1
    assert "epoch 1 (step 4)" in trainer.stop_reason
    assert "learning rate" in trainer.stop_reason


def test_huge_learning_rate_is_stopped() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, CLASSES))
    trainer = make_trainer(model, lr=1e10)
    train, _ = loaders()
    history = trainer.fit(train, epochs=3)
    assert trainer.failed and len(history) < 3
    assert all(torch.isfinite(p).all() for p in model.parameters())  # no bad step was taken
    assert f"step {trainer.step + 1} " in trainer.stop_reason


def test_plain_progress_writes_one_line_per_epoch() -> None:
    stream = io.StringIO()
    train, test = loaders()
    make_trainer(callbacks=[PlainProgress(stream)]).fit(train, epochs=2, val_loader=test)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("epoch   1/2") and "val loss" in lines[0]


def test_state_dict_holds_what_resuming_needs() -> None:
    trainer = make_trainer(callbacks=[PlainProgress(io.StringIO())])
    train, _ = loaders()
    trainer.fit(train, epochs=1)
    state = trainer.state_dict()
    assert (state["epoch"], state["step"], len(state["history"])) == (1, 8, 1)
    assert state["optimizer"]["state"]  # momentum buffers
    assert state["callbacks"] == {"PlainProgress": {}}
    assert state["rng"].dtype == torch.uint8
