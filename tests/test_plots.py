"""Figures and the HTML report of image and text runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import neuralab
from neuralab.cli.main import main

pytest.importorskip("matplotlib")

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("sklearn")
    out = tmp_path_factory.mktemp("plots") / "run"
    neuralab.train(
        data="digits",
        model="mlp",
        epochs=2,
        out=str(out),
        overrides=["data.val_split=0.2", "train.threads=1"],
        verbose=False,
    )
    return out


def test_training_draws_the_curves(digits_run: Path, tmp_path: Path, capsys) -> None:
    assert (digits_run / "curves.png").read_bytes().startswith(PNG)
    neuralab.train(data="digits", model="mlp", epochs=1, out=str(tmp_path / "run"), progress="none")
    assert f"plots  {tmp_path / 'run' / 'curves.png'}" in capsys.readouterr().out


def test_report_writes_figures_and_a_self_contained_page(digits_run: Path, capsys) -> None:
    assert main(["report", str(digits_run)]) == 0
    assert "report.html" in capsys.readouterr().out
    for name in ("curves.png", "confusion.png", "worst.png"):
        assert (digits_run / name).read_bytes().startswith(PNG), name
    page = (digits_run / "report.html").read_text(encoding="utf-8")
    evaluation = json.loads((digits_run / "evaluation.json").read_text(encoding="utf-8"))
    assert f"{evaluation['accuracy']:.2%}" in page
    assert page.count("data:image/png;base64,") == 3  # every figure embedded
    assert 'src="http' not in page and "href=" not in page  # nothing fetched from elsewhere
    assert "model:" in page  # the config
    worst = evaluation["worst"]
    assert len(worst) == 16
    assert [w["loss"] for w in worst] == sorted((w["loss"] for w in worst), reverse=True)
    assert all(w["true"] != w["predicted"] or w["loss"] > 0 for w in worst)


def test_text_report_lists_the_worst_texts(tmp_path: Path) -> None:
    rows = ["text,label"] + [f"good fine great film {i},pos" for i in range(30)]
    rows += [f"bad awful dull film {i},neg" for i in range(30)]
    (tmp_path / "reviews.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    run = neuralab.train(
        data=f"csv:{tmp_path / 'reviews.csv'}",
        model="ngram",
        epochs=2,
        out=str(tmp_path / "run"),
        verbose=False,
    )
    page = neuralab.inference.evaluation.write_report(run.run_dir).read_text(encoding="utf-8")
    assert "Worst-predicted test texts" in page and "film" in page
    assert not (run.run_dir / "worst.png").exists()
