"""The Python API: `neuralab.train(...).load().predict(...)` agrees exactly with
`neuralab.evaluate` on the digits test images, and every input form predicts the same."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import neuralab
from neuralab.data import DataError, load_dataset

pytest.importorskip("sklearn", reason="the digits dataset needs scikit-learn")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> neuralab.Run:
    out = tmp_path_factory.mktemp("api") / "digits-mlp"
    # fp32: with `auto` this CPU may train under bf16 autocast, while predictors run fp32.
    return neuralab.train(
        data="digits",
        model="mlp",
        epochs=1,
        out=str(out),
        verbose=False,
        lr=0.1,
        overrides=["train.precision=fp32", "model.args.width=64", "optim.momentum=0.9"],
    )


@pytest.fixture(scope="module")
def test_split():
    return load_dataset("digits").test


def test_train_returns_the_run(run: neuralab.Run) -> None:
    assert run.run_dir.is_dir() and len(run.history) == 1
    assert run.metrics["count"] == 359
    saved = json.loads((run.run_dir / "metrics.json").read_text(encoding="utf-8"))
    assert saved["accuracy"] == run.metrics["accuracy"]


def test_predict_agrees_with_evaluate(run: neuralab.Run, test_split) -> None:
    predictions = run.load().predict(list(test_split.images), top_k=1)
    predicted = [int(top[0][0]) for top in predictions]
    accuracy = float(np.mean(np.array(predicted) == test_split.labels.numpy()))
    evaluated = neuralab.evaluate(run.run_dir)
    assert evaluated["count"] == len(test_split) == 359
    assert accuracy == evaluated["accuracy"] == run.metrics["accuracy"]
    assert accuracy > 0.7  # chance is 0.1


def test_load_accepts_run_or_checkpoint_folder(run: neuralab.Run, test_split) -> None:
    images = list(test_split.images[:5])
    by_run = neuralab.load(run.run_dir).probabilities(images)
    by_checkpoint = neuralab.load(run.run_dir / "checkpoint").probabilities(images)
    assert torch.equal(by_run, by_checkpoint)
    torch.testing.assert_close(by_run.sum(1), torch.ones(5))


def test_every_input_form_gives_the_same_probabilities(
    run: neuralab.Run, test_split, tmp_path: Path
) -> None:
    image = test_split.images[0]  # uint8 (1, 8, 8)
    path = tmp_path / "digit.png"
    Image.fromarray(image[0].numpy(), "L").save(path)
    predictor = run.load()
    forms = [image, image[0], image[0].numpy(), Image.open(path), path, str(path)]
    probabilities = predictor.probabilities(forms)
    for row in probabilities[1:]:
        assert torch.equal(row, probabilities[0])


def test_top_k_is_sorted_and_capped(run: neuralab.Run, test_split) -> None:
    (top,) = run.load().predict([test_split.images[0]], top_k=50)
    assert len(top) == 10
    probabilities = [p for _, p in top]
    assert probabilities == sorted(probabilities, reverse=True)
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)


def test_wrong_tensor_input_is_a_clear_error(run: neuralab.Run) -> None:
    predictor = run.load()
    with pytest.raises(DataError, match=r"uint8 \(1, 8, 8\)"):
        predictor.predict([torch.zeros(1, 8, 8)])  # float, not uint8
    with pytest.raises(DataError, match="pass image files"):
        predictor.predict([torch.zeros(3, 8, 8, dtype=torch.uint8)])


def test_evaluate_on_data_with_other_classes_is_refused(run: neuralab.Run, tmp_path: Path) -> None:
    for name in ("cat", "dog"):
        (tmp_path / "pets" / name).mkdir(parents=True)
        for index in range(3):
            Image.new("L", (8, 8), 40 * index).save(tmp_path / "pets" / name / f"{index}.png")
    with pytest.raises(DataError, match="trained on"):
        neuralab.evaluate(
            run.run_dir, data=f"folder:{tmp_path / 'pets'}", data_dir=str(tmp_path / "data")
        )


def test_quiet_training_prints_nothing(tmp_path: Path, capsys) -> None:
    neuralab.train(
        data="digits",
        model="perceptron",
        epochs=0.1,
        out=str(tmp_path / "quiet"),
        verbose=False,
        overrides=["train.precision=fp32"],
    )
    assert capsys.readouterr().out == ""
    assert (tmp_path / "quiet" / "checkpoint" / "meta.json").is_file()


def test_public_api_is_explicit() -> None:
    for name in neuralab.__all__:
        assert hasattr(neuralab, name), name
    assert {"train", "evaluate", "load", "Predictor", "resolve_config"} <= set(neuralab.__all__)


# Everything the engine would otherwise time is pinned (threads, precision, layout): two runs
# must not differ because the machine was busier during one engine choice than the other.
SEEDED = [
    "model.args.dropout=0.3",
    "augment.crop_padding=1",
    "train.threads=1",
    "train.precision=fp32",
    "train.channels_last=off",
]


def weights_and_history(run_dir: Path) -> tuple[dict, list]:
    from safetensors.torch import load_file

    history = json.loads((Path(run_dir) / "history.json").read_text())
    timeless = [{k: v for k, v in row.items() if "second" not in k} for row in history]
    return load_file(Path(run_dir) / "checkpoint" / "model.safetensors"), timeless


def test_same_seed_gives_bit_identical_runs_and_another_seed_does_not(
    tmp_path: Path, fault_table
) -> None:
    results = []
    for index, seed in enumerate((5, 5, 6)):
        out = tmp_path / f"run{index}"
        neuralab.train(
            data="digits",
            model="mlp",
            epochs=2,
            seed=seed,
            out=str(out),
            overrides=SEEDED,
            verbose=False,
        )
        results.append(weights_and_history(out))
    (first, history), (second, again), (other, _) = results
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert history == again
    assert not all(torch.equal(first[name], other[name]) for name in first)
    fault_table(
        "the same seed twice (dropout, augmentation, shuffling)",
        2,
        "bit-identical weights and history; a third seed differs",
    )


def test_deterministic_flag_pins_the_engine_and_the_kernels(tmp_path: Path) -> None:
    """--deterministic: nothing timed, only deterministic kernels while training (checked
    from inside the loop), and the global setting restored afterwards."""
    from neuralab.cli import main as cli
    from neuralab.train.callbacks import Callback

    seen = []

    class Watch(Callback):
        def on_step_end(self, trainer) -> None:
            seen.append(torch.are_deterministic_algorithms_enabled())

    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        neuralab.train(
            data="digits",
            model="mlp",
            epochs=1,
            out=str(out),
            verbose=False,
            overrides=["train.deterministic=true"],
            callbacks=[Watch()],
        )
    assert seen and all(seen) and not torch.are_deterministic_algorithms_enabled()
    first, second = (weights_and_history(out) for out in outs)
    assert all(torch.equal(first[0][name], second[0][name]) for name in first[0])
    assert "deterministic: true" in (outs[0] / "config.yaml").read_text()
    args = cli.build_parser().parse_args(["train", "--deterministic", "--data", "digits"])
    assert cli.resolve_train_config(args).train.deterministic is True


def test_non_finite_step_in_epoch_two_names_the_last_good_checkpoint(
    tmp_path: Path, fault_table
) -> None:
    """A gradient poisoned from the 5th step of epoch 2 on: the run stops at that step, the
    error names epoch/step/batch and the epoch-1 checkpoint, which is untouched and finite."""
    from neuralab.api import TrainingStopped
    from neuralab.train.callbacks import Callback

    class PoisonGradients(Callback):
        def on_step_end(self, trainer) -> None:
            if trainer.epoch == 1 and trainer.step == trainer.steps_this_epoch + 4:
                weight = next(trainer.model.parameters())
                weight.register_hook(lambda grad: grad * float("nan"))

    out = tmp_path / "run"
    with pytest.raises(TrainingStopped) as stopped:
        neuralab.train(
            data="digits",
            model="mlp",
            epochs=3,
            batch_size=64,
            out=str(out),
            verbose=False,
            callbacks=[PoisonGradients()],
            overrides=["train.threads=1"],
        )
    message = str(stopped.value)
    steps = 23  # 1437 digits / 64
    assert f"at epoch 2, step {steps + 5} (batch 5 of the epoch)" in message
    assert "gradient of parameter" in message
    assert f"last good checkpoint is {out / 'checkpoint'} (epoch 1)" in message
    weights, history = weights_and_history(out)
    assert [row["epoch"] for row in history] == [1]
    assert all(torch.isfinite(tensor).all() for tensor in weights.values())
    fault_table(
        "NaN gradient in the middle of epoch 2",
        1,
        "stopped at that step naming epoch, step, batch, parameter and the last good "
        "checkpoint (epoch 1, intact and finite)",
    )


def test_a_misspelt_setting_fails_before_data_is_read_or_anything_written(tmp_path: Path) -> None:
    """The run builder checks model, optimizer and schedule arguments first: the missing
    folder is never read (its DataError would come first otherwise) and no run directory
    appears."""
    from neuralab.registry import UnknownArgumentError

    out = tmp_path / "run"
    cases = [
        ("optim.name=adam", "optim.momentum=0.9"),
        ("model.args.widht=3",),
        ("schedule.name=onecycle", "schedule.warmup_epochs=1"),
    ]
    for overrides in cases:
        with pytest.raises(UnknownArgumentError):
            neuralab.train(
                data=f"folder:{tmp_path / 'missing'}", model="mlp", out=str(out),
                overrides=list(overrides), verbose=False,
            )  # fmt: skip
        assert not out.exists()
