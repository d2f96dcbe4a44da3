"""Run directories written before the checkpoint metadata had `kind`, `task` and `data`
(meta version 2) still evaluate, predict, export and serve.

tests/data/runs-v2/ holds two such runs, trained by neuralab as of commit cf2d6d2: an MLP on
scikit-learn's 8x8 digits (with flip test-time augmentation) and a TextCNN on a 120-line CSV of
reviews. Each keeps the metrics.json its training wrote, so the migrated runs must reproduce
their own test scores exactly.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import neuralab
from neuralab.checkpoint.format import read_json
from neuralab.checkpoint.meta import META_VERSION, read_meta

pytest.importorskip("sklearn", reason="install scikit-learn (the test extra) for the digits")
OLD = Path(__file__).parent / "data" / "runs-v2"
REVIEWS = OLD / "reviews.csv"


@pytest.fixture
def old_runs(tmp_path: Path) -> Path:
    """A writable copy: evaluating and exporting write beside the checkpoint."""
    shutil.copytree(OLD, tmp_path / "runs")
    return tmp_path / "runs"


def trained_metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text(encoding="utf-8"))


def test_version_2_metadata_is_migrated_on_read() -> None:
    image = read_meta(read_json(OLD / "digits-mlp/checkpoint/meta.json"), Path("meta.json"))
    text = read_meta(read_json(OLD / "csv-textcnn/checkpoint/meta.json"), Path("meta.json"))
    assert "meta_version" not in read_json(OLD / "digits-mlp/checkpoint/meta.json")
    assert (image.kind, image.task.tta, image.data.name) == ("image", "flip", "digits")
    assert (text.kind, text.task.tta, text.task.loss) == ("text", "off", "cross_entropy")
    assert text.data.options["test_split"] == 0.25
    assert image.to_dict()["meta_version"] == META_VERSION


def test_old_image_run_evaluates_to_its_own_test_score(old_runs: Path) -> None:
    run = old_runs / "digits-mlp"
    report = neuralab.evaluate(run)
    expected = trained_metrics(run)
    assert report["count"] == expected["count"]
    assert report["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-12)
    assert report["loss"] == pytest.approx(expected["loss"], rel=1e-5)


def test_old_text_run_evaluates_to_its_own_test_score(old_runs: Path) -> None:
    run = old_runs / "csv-textcnn"
    report = neuralab.evaluate(run, data=f"csv:{old_runs / 'reviews.csv'}")
    expected = trained_metrics(run)
    assert report["count"] == expected["count"] == 30  # test_split 0.25 of 120 lines
    assert report["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-12)


def test_old_runs_predict(old_runs: Path) -> None:
    image = neuralab.load(old_runs / "digits-mlp")
    pixels = torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8)
    assert [len(top) for top in image.predict(list(pixels), top_k=3)] == [3, 3]
    text = neuralab.load(old_runs / "csv-textcnn")
    probabilities = text.probabilities(["a great film", "a dull plot"])
    assert probabilities.shape == (2, 2)
    torch.testing.assert_close(probabilities.sum(1), torch.ones(2))


@pytest.mark.parametrize("name", ["digits-mlp", "csv-textcnn"])
def test_old_runs_export_with_parity(old_runs: Path, name: str) -> None:
    result = neuralab.export(old_runs / name, "safetensors", check_data="random", check_examples=40)
    assert result.max_abs_diff < 1e-5 and result.top1_agreement == 1.0


def test_old_runs_serve(old_runs: Path) -> None:
    pytest.importorskip("fastapi", reason="install the serve extra: pip install 'neuralab[serve]'")
    from fastapi.testclient import TestClient

    from neuralab.serve.app import create_app

    client = TestClient(create_app(neuralab.load(old_runs / "csv-textcnn")))
    info = client.get("/info").json()
    assert info["kind"] == "text" and info["preprocessing"]["tokenizer"]["max_length"] == 16
    answer = client.post("/predict", json={"texts": ["a lovely film", "an awful plot"]})
    assert answer.status_code == 200 and len(answer.json()["predictions"]) == 2
