"""Knowledge distillation (`neuralab distill`, `train.distill.*`): the loss against a hand
computation, weight 0 as plain training, a student learning from a teacher, the teacher's
own normalisation and tokenizer, and the mismatches refused."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import neuralab
from neuralab.cli.main import main
from neuralab.config import ConfigError, resolve_config
from neuralab.data import DataError
from neuralab.tasks.classification import Classification
from neuralab.tasks.distillation import Distillation, TeacherView, soft_target_loss

pytest.importorskip("sklearn", reason="the digits dataset needs scikit-learn")

# Pinned engine: two runs must differ only by what the test changes.
SEEDED = ["train.threads=1", "train.precision=fp32", "train.channels_last=off",
          "train.deterministic=true", "optim.momentum=0.9", "train.batch_size=64"]  # fmt: skip


def digits(out: Path, *overrides: str, model: str = "mlp", epochs: float = 1) -> neuralab.Run:
    return neuralab.train(data="digits", model=model, epochs=epochs, lr=0.1, out=str(out),
                          verbose=False, overrides=[*SEEDED, *overrides])  # fmt: skip


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> neuralab.Run:
    """A small MLP trained on digits: the teacher of the tests."""
    return digits(tmp_path_factory.mktemp("teacher") / "run", epochs=3)


def weights_and_losses(run_dir: Path) -> tuple[dict, list[float]]:
    history = json.loads((run_dir / "history.json").read_text())
    return load_file(run_dir / "checkpoint" / "model.safetensors"), [
        row["train_loss"] for row in history
    ]


# -- the loss --------------------------------------------------------------------------------
def test_weight_one_is_t_squared_kl_by_hand() -> None:
    student = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]], requires_grad=True)
    teacher = torch.tensor([[1.5, 1.0, -0.5], [-1.0, 0.5, 2.0]])
    labels, temperature = torch.tensor([0, 2]), 3.0
    task = Distillation(Classification(), lambda inputs: teacher, temperature, weight=1.0)
    output = task.step(lambda inputs: student, (torch.zeros(2, 1), labels))
    expected = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist(), strict=True):
        s = [math.exp(v / temperature) for v in s_row]
        t = [math.exp(v / temperature) for v in t_row]
        p = [v / sum(s) for v in s]
        q = [v / sum(t) for v in t]
        expected += sum(qi * math.log(qi / pi) for pi, qi in zip(p, q, strict=True))
    expected = temperature**2 * expected / 2  # batch mean
    assert output.loss.item() == pytest.approx(expected, abs=1e-6)  # float32 sums
    output.loss.backward()  # gradients reach the student only
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_the_mix_weighs_hard_and_soft_terms() -> None:
    student, teacher = torch.randn(4, 5), torch.randn(4, 5)
    labels = torch.tensor([0, 1, 2, 3])
    task = Distillation(Classification(), lambda x: teacher, 2.0, weight=0.25)
    hard = nn.functional.cross_entropy(student, labels)
    soft = soft_target_loss(student, teacher, 2.0)
    loss = task.step(lambda x: student, (torch.zeros(4, 1), labels)).loss
    torch.testing.assert_close(loss, 0.75 * hard + 0.25 * soft)


def test_the_teacher_sees_the_students_pixels_through_its_own_normalisation() -> None:
    seen = []
    view = TeacherView(nn.Identity(), lambda model, x: seen.append(x) or x.flatten(1),
                       ((0.5,), (0.25,)), ((0.1,), (0.2,)))  # fmt: skip
    pixels = torch.rand(2, 1, 3, 3)
    view((pixels - 0.5) / 0.25)
    torch.testing.assert_close(seen[0], (pixels - 0.1) / 0.2)
    view.train()
    assert not view.model.training  # the teacher stays in eval mode


# -- runs ------------------------------------------------------------------------------------
def test_weight_zero_trains_exactly_as_without_a_teacher(teacher, tmp_path: Path) -> None:
    plain = digits(tmp_path / "plain", "model.args.width=16")
    taught = neuralab.distill(teacher.run_dir, data="digits", model="mlp", epochs=1, lr=0.1,
                              out=str(tmp_path / "taught"), weight=0.0, verbose=False,
                              overrides=[*SEEDED, "model.args.width=16"])  # fmt: skip
    (first, losses), (second, again) = map(weights_and_losses, (plain.run_dir, taught.run_dir))
    assert all(torch.allclose(first[name], second[name], atol=1e-6, rtol=0) for name in first)
    assert losses == pytest.approx(again, abs=1e-6)
    assert taught.metrics["accuracy"] == pytest.approx(plain.metrics["accuracy"], abs=1e-9)


def test_a_small_student_learns_from_the_teacher_and_records_it(
    teacher, tmp_path: Path, capsys
) -> None:
    student = neuralab.distill(teacher.run_dir, data="digits", model="mlp", epochs=2, lr=0.1,
                               out=str(tmp_path / "student"), temperature=2.0, weight=0.9,
                               overrides=[*SEEDED, "model.args.width=8"])  # fmt: skip
    log = capsys.readouterr().out
    assert f"distil from {teacher.run_dir.resolve()} (mlp on digits" in log and "T 2" in log
    assert student.metrics["accuracy"] > 0.6  # ten classes: chance is 0.1
    config = (student.run_dir / "config.yaml").read_text()
    assert str(teacher.run_dir.resolve()) in config and "temperature: 2.0" in config
    predictor = neuralab.load(student.run_dir)
    assert predictor.task.name == "classification"  # evaluated as any classifier


def test_classes_that_differ_are_refused_naming_both(teacher, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"has classes \['0', '1'.*has \['0', '1', '2'\]"):
        neuralab.distill(teacher.run_dir, data="digits", model="mlp", epochs=1, verbose=False,
                         out=str(tmp_path / "x"), overrides=["data.classes=[0,1,2]"])  # fmt: skip
    assert not (tmp_path / "x").exists()  # refused before the run directory


def test_bad_settings_are_config_errors(teacher, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="train.distill.weight"):
        resolve_config(None, ["train.distill.weight=1.5"])
    with pytest.raises(ConfigError, match="train.distill.temperature"):
        resolve_config(None, ["train.distill.temperature=0"])
    with pytest.raises(ConfigError, match="set one"):
        neuralab.distill(
            teacher.run_dir,
            data="digits",
            model="mlp",
            epochs=1,
            verbose=False,
            out=str(tmp_path / "adv"),
            overrides=["train.adversarial.method=pgd", "train.adversarial.eps=0.1"],
        )
    assert main(["distill", str(tmp_path / "missing"), "--data", "digits"]) == 2


def test_a_text_student_takes_its_teachers_tokenizer(tmp_path: Path) -> None:
    words = ["bad", "good"]
    rows = ["label,text"] + [f"{'pos' if i % 2 else 'neg'},word{i % 7} film {words[i % 2]}"
                             for i in range(60)]  # fmt: skip
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    data = f"csv:{tmp_path / 't.csv'}"
    teacher = neuralab.train(data=data, model="ngram", epochs=2, out=str(tmp_path / "teacher"),
                             verbose=False, overrides=["tokenizer.max_length=8"])  # fmt: skip
    student = neuralab.distill(teacher.run_dir, data=data, model="ngram", epochs=1,
                               out=str(tmp_path / "student"), verbose=False)  # fmt: skip
    same = (teacher.run_dir / "checkpoint" / "tokenizer.json").read_text()
    assert (student.run_dir / "checkpoint" / "tokenizer.json").read_text() == same
    with pytest.raises(ConfigError, match="tokenizer.max_length=5.*differ from the teacher's"):
        neuralab.distill(
            teacher.run_dir,
            data=data,
            epochs=1,
            verbose=False,
            out=str(tmp_path / "x"),
            overrides=["tokenizer.max_length=5"],
        )
    with pytest.raises(DataError, match="learned from text data"):
        neuralab.distill(
            teacher.run_dir,
            data="digits",
            model="mlp",
            epochs=1,
            verbose=False,
            out=str(tmp_path / "y"),
            overrides=["data.classes=[0,1]"],
        )


def test_cli_distill_dry_run_sets_the_section(teacher, capsys) -> None:
    code = main(["distill", str(teacher.run_dir), "--recipe", "mnist-fast", "--temperature",
                 "3", "--weight", "0.7", "--dry-run"])  # fmt: skip
    text = capsys.readouterr().out
    assert code == 0 and "temperature: 3.0" in text and "weight: 0.7" in text
    assert str(teacher.run_dir) in text
