"""`neuralab runs` and `neuralab compare` on run directories."""

from __future__ import annotations

from pathlib import Path

import pytest

import neuralab
from neuralab.cli.main import main


@pytest.fixture(scope="module")
def runs_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("sklearn")
    folder = tmp_path_factory.mktemp("runs")
    for name, epochs in (("short", 1), ("longer", 2)):
        neuralab.train(
            data="digits",
            model="mlp",
            epochs=epochs,
            out=str(folder / name),
            overrides=["data.val_split=0.2", "train.threads=1"],
            verbose=False,
        )
    (folder / "not-a-run").mkdir()
    unfinished = folder / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text((folder / "short" / "config.yaml").read_text())
    return folder


def test_runs_lists_every_run_with_its_figures(runs_folder: Path, capsys) -> None:
    assert main(["runs", str(runs_folder)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["run", "data", "model", "epochs"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == {"short", "longer", "unfinished"}  # not-a-run has no config.yaml
    assert " 2/2 " in rows["longer"] and "%" in rows["longer"]
    assert "unfinished" in rows["unfinished"].split()[4]
    assert lines[0].split()[-1] == "size" and rows["longer"].split()[-1] in ("kB", "MB")
    assert rows["unfinished"].split()[-2:] != rows["longer"].split()[-2:]  # a config.yaml only


def test_runs_on_a_missing_folder_says_so(tmp_path: Path, capsys) -> None:
    assert main(["runs", str(tmp_path / "nope")]) != 0
    assert "is not a folder of runs" in capsys.readouterr().err


def test_compare_overlays_runs_in_one_png(runs_folder: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "both.png"
    runs = [str(runs_folder / "short"), str(runs_folder / "longer")]
    assert main(["compare", *runs, "--out", str(out)]) == 0
    assert out.read_bytes().startswith(b"\x89PNG")
    assert main(["compare", str(runs_folder / "not-a-run"), "--out", str(out)]) != 0
