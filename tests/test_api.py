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
