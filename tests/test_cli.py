"""Every CLI verb, in-process on tiny offline data (scikit-learn's 8x8 digits and a small image
folder made here); the user errors that must exit 2 with one line instead of a traceback, and
the bugs that must show theirs; the one table of config flags.

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

import neuralab
from neuralab.cli import evaluate as cli_evaluate
from neuralab.cli.flags import CONFIG_FLAGS
from neuralab.cli.main import build_parser, main
from neuralab.cli.train import resolve_train_config
from neuralab.config import ConfigError, RunConfig, recipe_names
from neuralab.data import DATASETS, load_dataset
from neuralab.models import MODELS
from neuralab.tasks import TASKS

pytest.importorskip("sklearn", reason="the digits dataset needs scikit-learn")

FP32 = ["--set", "train.precision=fp32"]
DIGITS_MLP = ["train", "--data", "digits", "--model", "mlp", "--epochs", "1", *FP32]
# Enough to learn the digits: 96.4-98.1% test accuracy over seeds 0-4 (measured), in about 1 s.
LEARNED_EPOCHS = 5
DIGITS_LEARNED = [
    "train", "--data", "digits", "--model", "mlp", "--epochs", str(LEARNED_EPOCHS),
    "--lr", "0.1", "--set", "optim.momentum=0.9", *FP32,
]  # fmt: skip
DIGITS_TEST_COUNT = 359  # scikit-learn's 1,797 digits, 20% held out


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    """One digits run trained to >95% test accuracy, shared by the read-only tests below."""
    run_dir = tmp_path_factory.mktemp("runs") / "digits-mlp"
    assert main([*DIGITS_LEARNED, "--out", str(run_dir)]) == 0
    return run_dir


@pytest.fixture(scope="module")
def digit_pngs(tmp_path_factory) -> tuple[list[Path], list[int]]:
    """Every digits test image as an 8x8 greyscale PNG, and its label."""
    folder = tmp_path_factory.mktemp("pngs")
    test = load_dataset("digits").test
    paths = []
    for index in range(len(test.labels)):
        path = folder / f"digit{index}.png"
        Image.fromarray(test.images[index, 0].numpy(), "L").save(path)
        paths.append(path)
    return paths, test.labels.tolist()


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    ("verb", "names"),
    [
        ("models", MODELS.names()),
        ("datasets", DATASETS.names()),
        ("recipes", recipe_names()),
        ("tasks", TASKS.names()),
    ],
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


@pytest.mark.parametrize(
    ("verb", "pattern", "expected"),
    [
        ("models", "resnet*", ["resnet18"]),
        ("models", "NET", ["alexnet", "lenet", "resnet18"]),  # a part of the name, any case
        ("datasets", "*mnist", ["fashion-mnist", "mnist"]),
        ("recipes", "cifar10-*", [n for n in recipe_names() if n.startswith("cifar10-")]),
        ("recipes", "imdb", [n for n in recipe_names() if "imdb" in n]),
    ],
)
def test_listings_filter_by_a_glob_or_a_part_of_the_name(
    capsys, verb: str, pattern: str, expected: list[str]
) -> None:
    assert expected  # the pattern is meant to match something
    code, out, _ = run(capsys, verb, pattern)
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == expected
    code, out, _ = run(capsys, verb, pattern, "--json")
    assert [item["name"] for item in json.loads(out)] == expected


def test_a_listing_that_matches_nothing_says_so(capsys) -> None:
    code, out, _ = run(capsys, "models", "no-such-model*")
    assert code == 0
    assert out == "no models match 'no-such-model*'; `neuralab models` lists them all\n"
    code, out, _ = run(capsys, "recipes", "zzz", "--json")
    assert code == 0 and json.loads(out) == []


def test_train_writes_a_complete_run_directory(digits_run: Path) -> None:
    assert (digits_run / "checkpoint" / "model.safetensors").is_file()
    # Finished: nothing can resume it, so its checkpoint keeps no optimizer state.
    assert not (digits_run / "checkpoint" / "training.json").exists()
    assert (digits_run / "checkpoint" / "meta.json").is_file()
    config = yaml.safe_load((digits_run / "config.yaml").read_text(encoding="utf-8"))
    assert (config["data"]["name"], config["model"]["name"]) == ("digits", "mlp")
    history = json.loads((digits_run / "history.json").read_text(encoding="utf-8"))
    assert len(history) == LEARNED_EPOCHS


def test_evaluate_reproduces_the_training_metrics(capsys, digits_run: Path) -> None:
    metrics = json.loads((digits_run / "metrics.json").read_text(encoding="utf-8"))
    code, out, _ = run(capsys, "evaluate", str(digits_run), "--json")
    assert code == 0
    evaluated = json.loads(out)
    assert evaluated["accuracy"] == metrics["accuracy"]
    assert evaluated["count"] == metrics["count"] == DIGITS_TEST_COUNT
    assert evaluated["accuracy"] >= 0.95  # see LEARNED_EPOCHS
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
    paths = digit_pngs[0][:4]
    code, out, _ = run(capsys, "predict", str(digits_run), *map(str, paths), "--top-k", "3")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == len(paths)
    for line, path in zip(lines, paths, strict=True):
        assert line.startswith(f"{path}: ")
        assert len(line.split(": ", 1)[1].split(", ")) == 3


def test_predict_json_probabilities(capsys, digits_run: Path, digit_pngs) -> None:
    paths = digit_pngs[0][:4]
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

    paths = digit_pngs[0][:4]
    test = load_dataset("digits").test
    expected = [top[0][0] for top in load(digits_run).predict(list(test.images[:4]))]
    code, out, _ = run(capsys, "predict", str(digits_run), *map(str, paths), "--json")
    assert [item["top"][0]["class"] for item in json.loads(out)] == expected


def test_predicted_labels_are_the_known_digits(capsys, digits_run: Path, digit_pngs) -> None:
    """`predict` on every test image as a file names the known digit as often, and for the same
    images per class, as `evaluate` counts (the same confusion matrix): the files decode to the
    test tensors bit for bit. And that is at least 95% of them."""
    paths, labels = digit_pngs
    code, out, err = run(capsys, "predict", str(digits_run), *map(str, paths), "--json")
    assert code == 0, err
    predicted = [int(item["top"][0]["class"]) for item in json.loads(out)]
    correct = sum(guess == label for guess, label in zip(predicted, labels, strict=True))
    assert correct >= 0.95 * DIGITS_TEST_COUNT
    confusion = torch.zeros(10, 10, dtype=torch.long)  # rows: true digit, columns: predicted
    for guess, label in zip(predicted, labels, strict=True):
        confusion[label, guess] += 1
    code, out, _ = run(capsys, "evaluate", str(digits_run), "--json")
    assert confusion.tolist() == json.loads(out)["confusion_matrix"]


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
        # Learns red from blue: every image right for seeds 0-5 (2 epochs were a coin toss).
        "--epochs",
        "6",
        "--lr",
        "0.05",
        "--set",
        "optim.momentum=0.9",
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
    files = sorted(images.glob("*/*.png"))
    code, out, _ = run(capsys, "predict", str(run_dir), *map(str, files), "--json")
    assert code == 0
    for path, item in zip(files, json.loads(out), strict=True):
        top = item["top"]
        assert len(top) == 2  # top-k is capped at the number of classes
        assert top[0]["class"] == path.parent.name


@pytest.mark.parametrize(
    ("extra", "message", "before_run_dir"),
    [
        (["--model", "mlpp"], "unknown model 'mlpp'; did you mean 'mlp'", True),
        (["--data", "digitz"], "unknown dataset 'digitz'; did you mean 'digits'", True),
        (["--set", "optim.name=sgdd"], "unknown optimizer 'sgdd'; did you mean 'sgd'", False),
        (["--set", "train.epoch=1"], "Did you mean 'epochs'", True),
        (["--set", "model.args.depht=2"], "takes no argument 'depht'; did you mean 'depth'", True),
        (["--lr", "1e10"], "training loss became", False),
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
    assert err.count("\n") == 1 and "Traceback" not in err  # one line
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


def test_settings_that_conflict_are_one_config_error(capsys, tmp_path: Path) -> None:
    """Pydantic's validation errors arrive as ConfigError: no traceback."""
    argv = [*DIGITS_MLP, "--out", str(tmp_path / "run")]
    code, _, err = run(
        capsys, *argv, "--set", "train.lookahead_every=2", "--set", "train.ema_decay=0.9"
    )
    assert code == 2 and "Traceback" not in err
    assert "train.lookahead_every and train.ema_decay both average the weights" in err


@pytest.mark.parametrize(
    "bug",
    [
        ZeroDivisionError("division by zero"),
        ValueError("an internal check failed"),  # no longer taken for a user error
        TypeError("unsupported operand type(s)"),
        ModuleNotFoundError("No module named 'neuralab.gone'", name="neuralab.gone"),
    ],
    ids=lambda bug: type(bug).__name__,
)
def test_a_bug_shows_its_traceback_and_asks_for_a_report(
    capsys, monkeypatch, digits_run: Path, bug: Exception
) -> None:
    def broken(*args, **kwargs):
        raise bug

    monkeypatch.setattr(cli_evaluate, "evaluate", broken)
    code, out, err = run(capsys, "evaluate", str(digits_run))
    assert code == 1 and out == ""
    lines = err.rstrip("\n").splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert f"{type(bug).__name__}: {bug}" in lines
    assert lines[-1] == (
        f"neuralab evaluate: internal error: this is a bug in neuralab {neuralab.__version__}; "
        "please report it with the command and the traceback above"
    )


@pytest.mark.parametrize(
    "error",
    [
        ImportError("neuralab compare draws with matplotlib: pip install 'neuralab[plots]'"),
        ModuleNotFoundError("No module named 'onnxruntime'", name="onnxruntime"),
        FileNotFoundError(2, "No such file or directory", "runs/x/evaluation.json"),
        ConfigError("train.epochs must be > 0"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_a_user_error_is_one_line_without_traceback(
    capsys, monkeypatch, digits_run: Path, error: Exception
) -> None:
    """A missing optional package, the OS refusing a file, a bad setting: exit 2, one line."""

    def refuse(*args, **kwargs):
        raise error

    monkeypatch.setattr(cli_evaluate, "evaluate", refuse)
    code, _, err = run(capsys, "evaluate", str(digits_run))
    assert code == 2
    assert err == f"neuralab evaluate: error: {error}\n"


def test_an_interrupt_exits_130(capsys, monkeypatch, digits_run: Path) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_evaluate, "evaluate", interrupted)
    code, _, err = run(capsys, "evaluate", str(digits_run))
    assert code == 130 and err == "neuralab evaluate: interrupted\n"


# One value per config flag, each different from the field's default.
FLAG_VALUES = {
    "data": "digits",
    "model": "mlp",
    "epochs": 2.5,
    "batch_size": 7,
    "lr": 0.3,
    "seed": 5,
    "deterministic": True,
    "data_dir": "/data/elsewhere",
    "out": "/runs/elsewhere",
    "task": "protonet",
    "ways": 7,
    "shots": 3,
    "init_from": "/runs/source",
}
# Flags whose fields only apply with another setting (few-shot sizes need a few-shot task).
FLAG_NEEDS = {"ways": ["--task", "protonet"], "shots": ["--task", "protonet"]}


def config_value(config: RunConfig, dotted: str):
    value = config
    for name in dotted.split("."):
        value = getattr(value, name)
    return value


@pytest.mark.parametrize("dest", list(CONFIG_FLAGS))
def test_each_config_flag_sets_its_config_field(dest: str) -> None:
    flag, value = CONFIG_FLAGS[dest], FLAG_VALUES[dest]
    argv = ["train", *FLAG_NEEDS.get(dest, []), flag.flag] + ([] if value is True else [str(value)])
    config = resolve_train_config(build_parser().parse_args(argv))
    assert config_value(config, flag.config_field) == value
    assert config_value(RunConfig(), flag.config_field) != value


@pytest.mark.parametrize(
    "given", [*(f.flag for f in CONFIG_FLAGS.values()), "--recipe", "--set", "--dry-run"]
)
def test_resume_refuses_every_flag_that_would_change_the_config(capsys, given: str) -> None:
    values = {f.flag: FLAG_VALUES[f.dest] for f in CONFIG_FLAGS.values()}
    values |= {"--recipe": "mnist-best", "--set": "train.epochs=3", "--dry-run": True}
    extra = [given] if values[given] is True else [given, str(values[given])]
    code, _, err = run(capsys, "train", "--resume", "auto", *extra)
    assert code == 2
    assert err.startswith(f"neuralab train: error: --resume continues a run exactly as it was "
                          f"configured; {given} would change it")  # fmt: skip


def test_summary_and_lr_find_hand_their_flags_to_the_api(capsys, monkeypatch) -> None:
    import neuralab.run.lrfind
    from neuralab import api

    calls = {}

    class Found:
        suggestion, lrs = 0.01, [0.001, 0.1]

        def format(self) -> str:
            return "table"

    def record(name):
        def call(*args, **kwargs):
            calls[name] = (args, kwargs)
            return Found()

        return call

    monkeypatch.setattr(api, "summary", record("summary"))
    monkeypatch.setattr(neuralab.run.lrfind, "lr_find", record("lr_find"))
    flags = ["--data", "digits", "--data-dir", "/data", "--recipe", "digits-best"]
    assert main(["summary", "mlp", *flags, "--set", "model.args.width=8"]) == 0
    assert calls["summary"] == (
        ("digits-best",),
        {
            "overrides": ["model.args.width=8"],
            "model": "mlp",
            "data": "digits",
            "data_dir": "/data",
        },
    )
    assert main(["lr-find", *flags, "--model", "mlp", "--steps", "5", "--out", "here"]) == 0
    args, kwargs = calls["lr_find"]
    assert args == ("digits-best",) and kwargs["out"] == "here" and kwargs["steps"] == 5
    assert {k: kwargs[k] for k in ("data", "model", "data_dir")} == {
        "data": "digits", "model": "mlp", "data_dir": "/data"
    }  # fmt: skip
