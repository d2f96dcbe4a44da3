"""Every CLI verb, in-process on tiny offline data (scikit-learn's 8x8 digits and a small image
folder made here), plus the user errors that must exit 2 with a message instead of a traceback.

Runs pin `train.precision=fp32`: `auto` may time bf16 on this CPU, and the final test metrics
are then computed under bf16 autocast while `neuralab evaluate` runs in fp32.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from neuralab.cli.main import main
from neuralab.config import recipe_names
from neuralab.data import DATASETS, load_dataset
from neuralab.models import MODELS

pytest.importorskip("sklearn", reason="the digits dataset needs scikit-learn")

FP32 = ["--set", "train.precision=fp32"]
DIGITS_MLP = ["train", "--data", "digits", "--model", "mlp", "--epochs", "1", *FP32]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    """One trained digits run shared by the read-only tests below."""
    run_dir = tmp_path_factory.mktemp("runs") / "digits-mlp"
    assert main([*DIGITS_MLP, "--out", str(run_dir)]) == 0
    return run_dir


@pytest.fixture(scope="module")
def digit_pngs(tmp_path_factory) -> tuple[list[Path], list[int]]:
    """Four 8x8 greyscale PNGs of digits test images, and their labels."""
    folder = tmp_path_factory.mktemp("pngs")
    test = load_dataset("digits").test
    paths = []
    for index in range(4):
        path = folder / f"digit{index}.png"
        Image.fromarray(test.images[index, 0].numpy(), "L").save(path)
        paths.append(path)
    return paths, test.labels[:4].tolist()


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    ("verb", "names"),
    [("models", MODELS.names()), ("datasets", DATASETS.names()), ("recipes", recipe_names())],
)
def test_listings_plain_and_json(capsys, verb: str, names: list[str]) -> None:
    code, out, _ = run(capsys, verb)
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == names
    code, out, _ = run(capsys, verb, "--json")
    assert code == 0
    listing = json.loads(out)
    assert [item["name"] for item in listing] == names
    assert all(item["summary"] for item in listing)


def test_train_writes_a_complete_run_directory(digits_run: Path) -> None:
    assert (digits_run / "checkpoint" / "model.safetensors").is_file()
    assert (digits_run / "checkpoint" / "training.json").is_file()
    config = yaml.safe_load((digits_run / "config.yaml").read_text(encoding="utf-8"))
    assert (config["data"]["name"], config["model"]["name"]) == ("digits", "mlp")
    assert len(json.loads((digits_run / "history.json").read_text(encoding="utf-8"))) == 1


def test_evaluate_reproduces_the_training_metrics(capsys, digits_run: Path) -> None:
    metrics = json.loads((digits_run / "metrics.json").read_text(encoding="utf-8"))
    code, out, _ = run(capsys, "evaluate", str(digits_run), "--json")
    assert code == 0
    evaluated = json.loads(out)
    assert evaluated["accuracy"] == metrics["accuracy"]
    assert evaluated["count"] == metrics["count"] == 359
    assert evaluated["accuracy"] > 0.3  # one epoch already beats chance (0.1) by far
    code, out, _ = run(capsys, "evaluate", str(digits_run))
    assert code == 0 and out.startswith("digits test: 359 examples")
    assert "macro avg" in out and "weighted avg" in out and "top-5" in out
    assert "confusion (rows: true, columns: predicted)" in out
    assert f"saved {digits_run / 'evaluation.json'}" in out


def test_evaluate_saves_a_consistent_per_class_report(capsys, digits_run: Path) -> None:
    code, out, _ = run(capsys, "evaluate", str(digits_run), "--json")
    assert code == 0
    printed = json.loads(out)
    saved = json.loads((digits_run / "evaluation.json").read_text(encoding="utf-8"))
    assert saved == printed
    confusion = torch.tensor(saved["confusion_matrix"])
    assert confusion.shape == (10, 10) and int(confusion.sum()) == saved["count"] == 359
    assert saved["accuracy"] == pytest.approx(float(confusion.trace()) / 359)
    for index, name in enumerate(saved["per_class"]):
        row = saved["per_class"][name]
        assert row["support"] == int(confusion[index].sum())
        assert row["recall"] == pytest.approx(float(confusion[index, index]) / row["support"])
    assert saved["top_k_accuracy"]["5"] >= saved["top_k_accuracy"]["1"] == saved["accuracy"]


def test_predict_prints_top_k(capsys, digits_run: Path, digit_pngs) -> None:
    paths, _ = digit_pngs
    code, out, _ = run(capsys, "predict", str(digits_run), *map(str, paths), "--top-k", "3")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == len(paths)
    for line, path in zip(lines, paths, strict=True):
        assert line.startswith(f"{path}: ")
        assert len(line.split(": ", 1)[1].split(", ")) == 3


def test_predict_json_probabilities(capsys, digits_run: Path, digit_pngs) -> None:
    paths, _ = digit_pngs
    code, out, _ = run(capsys, "predict", str(digits_run), *map(str, paths), "--json")
    assert code == 0
    results = json.loads(out)
    assert [item["input"] for item in results] == [str(path) for path in paths]
    for item in results:
        probabilities = [entry["probability"] for entry in item["top"]]
        assert len(probabilities) == 3
        assert probabilities == sorted(probabilities, reverse=True)
        assert 0 < sum(probabilities) <= 1 + 1e-5
        assert {entry["class"] for entry in item["top"]} <= {str(d) for d in range(10)}


def test_predict_files_agree_with_predict_tensors(capsys, digits_run: Path, digit_pngs) -> None:
    """PNG round trip is lossless at 8x8, so files and tensors must give the same answer."""
    from neuralab import load

    paths, _ = digit_pngs
    test = load_dataset("digits").test
    expected = [top[0][0] for top in load(digits_run).predict(list(test.images[:4]))]
    code, out, _ = run(capsys, "predict", str(digits_run), *map(str, paths), "--json")
    assert [item["top"][0]["class"] for item in json.loads(out)] == expected


def make_folder(root: Path) -> Path:
    """Two colour classes, 6 noisy 20x20 images each."""
    generator = np.random.default_rng(0)
    for name, colour in (("red", (220, 30, 30)), ("blue", (30, 30, 220))):
        (root / name).mkdir(parents=True)
        for index in range(6):
            noise = generator.integers(-30, 30, (20, 20, 3))
            pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels, "RGB").save(root / name / f"{index}.png")
    return root


def test_train_evaluate_predict_on_an_image_folder(capsys, tmp_path: Path) -> None:
    images = make_folder(tmp_path / "colours")
    run_dir = tmp_path / "run"
    code, out, err = run(
        capsys,
        "train",
        "--data",
        f"folder:{images}",
        "--data-dir",
        str(tmp_path / "data"),
        "--model",
        "cnn",
        "--set",
        "model.args.width=4",
        "--set",
        "data.options.image_size=16",
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--out",
        str(run_dir),
        *FP32,
    )
    assert code == 0, err
    assert "3×16×16, 2 classes" in out
    code, out, _ = run(capsys, "evaluate", str(run_dir), "--json")
    assert code == 0 and json.loads(out)["count"] == 2  # 20% of 6 per class held out
    code, out, _ = run(capsys, "predict", str(run_dir), str(images / "red" / "0.png"), "--json")
    top = json.loads(out)[0]["top"]
    assert code == 0 and len(top) == 2  # top-k is capped at the number of classes
    assert {entry["class"] for entry in top} == {"red", "blue"}


@pytest.mark.parametrize(
    ("extra", "message", "before_run_dir"),
    [
        (["--model", "mlpp"], "unknown model 'mlpp'; did you mean 'mlp'", True),
        (["--data", "digitz"], "unknown dataset 'digitz'; did you mean 'digits'", True),
        (["--set", "optim.name=sgdd"], "unknown optimizer 'sgdd'; did you mean 'sgd'", False),
        (["--set", "train.epoch=1"], "Did you mean 'epochs'", True),
        (["--set", "model.args.depht=2"], "unexpected keyword argument 'depht'", True),
        (["--lr", "1e10"], "training loss became nan at epoch 1, step", False),
    ],
    ids=["model", "dataset", "optimizer", "config-key", "model-argument", "diverged"],
)
def test_user_errors_exit_2_with_a_message(
    capsys, tmp_path: Path, extra: list[str], message: str, before_run_dir: bool
) -> None:
    argv = [*DIGITS_MLP, "--out", str(tmp_path / "run"), *extra]
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert err.startswith("neuralab train: error: ")
    assert message in err
    if before_run_dir:  # bad names and arguments leave no half-made run directory behind
        assert not (tmp_path / "run").exists()


def test_existing_run_is_not_overwritten(capsys, digits_run: Path) -> None:
    before = {p: p.read_bytes() for p in sorted(digits_run.rglob("*")) if p.is_file()}
    code, _, err = run(capsys, *DIGITS_MLP, "--out", str(digits_run))
    assert code == 2
    assert "already holds a run" in err and "nothing was overwritten" in err
    after = {p: p.read_bytes() for p in sorted(digits_run.rglob("*")) if p.is_file()}
    assert after == before


def test_predict_on_a_non_image_names_the_file(capsys, tmp_path: Path, digits_run: Path) -> None:
    for name in ("notes.txt", "fake.png"):
        path = tmp_path / name
        path.write_text("not an image", encoding="utf-8")
        code, _, err = run(capsys, "predict", str(digits_run), str(path))
        assert code == 2
        assert f"cannot read image {path}" in err


def test_missing_run_directory_is_a_clear_error(capsys, tmp_path: Path) -> None:
    for verb in (["evaluate"], ["predict"]):
        extra = [str(tmp_path / "x.png")] if verb == ["predict"] else []
        code, _, err = run(capsys, *verb, str(tmp_path / "nothing"), *extra)
        assert code == 2
        assert "is not a neuralab run directory" in err


def test_dry_run_prints_the_resolved_yaml_and_trains_nothing(capsys, tmp_path: Path) -> None:
    out_dir = tmp_path / "never"
    code, out, _ = run(
        capsys,
        "train",
        "--recipe",
        "mnist-best",
        "--epochs",
        "0.5",
        "--set",
        "model.args.width=8",
        "--out",
        str(out_dir),
        "--dry-run",
    )
    assert code == 0
    config = yaml.safe_load(out)
    assert config["train"]["epochs"] == 0.5
    assert config["model"] == {"name": "mnist_fast", "args": {"width": 8}}
    assert config["schedule"]["name"] == "onecycle"
    assert not out_dir.exists()


def test_missing_command_is_an_argparse_error(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
