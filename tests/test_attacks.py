"""Adversarial attacks against references: on a linear classifier the worst L∞ perturbation is
known in closed form (move every pixel by eps against the margin's weights), so PGD and
APGD-CE must find exactly the examples it breaks; FGSM is one signed step of a plain
autograd gradient; every attack stays inside its ball and [0, 1]."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

import neuralab
from neuralab.adversarial.attacks import (
    AttackError,
    AttackSettings,
    apgd_checkpoints,
    attack,
    fgsm,
)
from neuralab.adversarial.robust import parse_eps
from neuralab.cli import main as cli

pytest.importorskip("sklearn", reason="the digits dataset needs scikit-learn")


def linear_problem(count: int = 200, seed: int = 0):
    """A two-class linear model on 3×4×4 'images' in the middle of [0, 1] (no clamping within
    eps 0.1), and the exact L∞ robustness of each example."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(2, 48, generator=generator)
    bias = torch.zeros(2)
    images = 0.3 + 0.4 * torch.rand(count, 3, 4, 4, generator=generator)
    labels = (images.flatten(1) @ weight.T + bias).argmax(1)  # the model is right everywhere

    def classify(pixels: torch.Tensor) -> torch.Tensor:
        return pixels.flatten(1) @ weight.T + bias

    return classify, images, labels, weight


def exactly_robust(images, labels, weight, eps: float) -> torch.Tensor:
    """Correct under every L∞ perturbation of size eps: margin > eps · ||w_y - w_other||_1."""
    logits = images.flatten(1) @ weight.T
    margin = (
        logits.gather(1, labels.view(-1, 1))[:, 0]
        - logits.gather(1, (1 - labels).view(-1, 1))[:, 0]
    )
    difference = (weight[0] - weight[1]).abs().sum()
    return margin > eps * difference


@pytest.mark.parametrize("name", ["pgd", "apgd-ce"])
def test_iterative_attacks_find_exactly_the_breakable_examples_of_a_linear_model(name) -> None:
    classify, images, labels, weight = linear_problem()
    eps = 0.1
    settings = AttackSettings(name, eps, steps=20)
    result = attack(classify, images, labels, settings, torch.Generator().manual_seed(0))
    expected = exactly_robust(images, labels, weight, eps)
    assert 0 < int(expected.sum()) < len(labels)  # the problem has both kinds
    assert torch.equal(result.correct, expected)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("name", ["fgsm", "pgd"])
def test_attacks_stay_inside_the_ball_and_the_pixel_range(name, norm) -> None:
    classify, images, labels, _ = linear_problem(50)
    images = torch.rand(50, 3, 4, 4)  # touches 0 and 1: the box clamps
    eps = 0.2 if norm == "linf" else 1.0
    result = attack(classify, images, labels, AttackSettings(name, eps, norm, steps=5))
    delta = (result.adversarial - images).flatten(1)
    assert result.adversarial.min() >= 0 and result.adversarial.max() <= 1
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert (size <= eps + 1e-5).all()
    torch.testing.assert_close(result.logits, classify(result.adversarial))


def test_fgsm_is_one_signed_step_of_the_cross_entropy_gradient() -> None:
    classify, images, labels, _ = linear_problem(20)
    pixels = images.clone().requires_grad_(True)
    F.cross_entropy(classify(pixels), labels, reduction="sum").backward()
    expected = (images + 0.05 * pixels.grad.sign()).clamp(0, 1)
    torch.testing.assert_close(fgsm(classify, images, labels, 0.05, "linf"), expected)


def test_restarts_only_help_and_eps_zero_is_the_clean_accuracy() -> None:
    classify, images, labels, _ = linear_problem(100, seed=1)
    clean = attack(classify, images, labels, AttackSettings("pgd", 0.0))
    assert clean.correct.all() and torch.equal(clean.adversarial, images)
    one = attack(classify, images, labels, AttackSettings("pgd", 0.05, steps=2, restarts=1),
                 torch.Generator().manual_seed(3))  # fmt: skip
    five = attack(classify, images, labels, AttackSettings("pgd", 0.05, steps=2, restarts=5),
                  torch.Generator().manual_seed(3))  # fmt: skip
    assert five.correct.sum() <= one.correct.sum()


def test_apgd_checkpoints_follow_croce_and_hein() -> None:
    assert apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"name": "cw"}, "unknown attack 'cw'; valid: fgsm, pgd, apgd-ce"),
        ({"eps": 1.5}, "eps 1.5 is out of range"),
        ({"eps": -0.1}, "out of range"),
        ({"name": "apgd-ce", "norm": "l2"}, "apgd-ce runs in the L∞ ball"),
        ({"norm": "l1"}, "unknown norm 'l1'"),
        ({"steps": 0}, "steps and restarts must be ≥ 1"),
    ],
)
def test_bad_attack_settings_are_refused_with_the_choices(settings, message) -> None:
    with pytest.raises(AttackError, match=message.replace("(", r"\(")):
        AttackSettings(**settings)


def test_eps_lists_and_fractions_parse_and_garbage_is_refused() -> None:
    assert parse_eps("0,0.1, 8/255") == [0.0, 0.1, 8 / 255]
    with pytest.raises(AttackError, match="expected numbers in pixel units"):
        parse_eps("0.1,abc")


@pytest.fixture(scope="module")
def digits_cnn(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("attack") / "run"
    neuralab.train(data="digits", model="mlp", epochs=10, out=str(out), verbose=False,
                   overrides=["train.precision=fp32"])  # fmt: skip
    return out


def test_evaluate_attack_writes_the_curve_examples_and_the_runs_record(
    digits_cnn, tmp_path
) -> None:
    report = neuralab.evaluate(digits_cnn, attack="pgd", eps=[0.0, 0.1, 0.3], steps=5,
                               count=60, out=tmp_path / "robust")  # fmt: skip
    accuracy = [point["accuracy"] for point in report["points"]]
    assert accuracy[0] == report["clean_accuracy"] > 0.5
    assert accuracy[2] <= accuracy[1] <= accuracy[0]
    assert accuracy[2] < 0.2  # eps 0.3 breaks an undefended net
    for name in ("curve.png", "examples.png", "robustness.json"):
        assert (tmp_path / "robust" / name).stat().st_size > 0
    saved = json.loads((digits_cnn / "robustness.json").read_text())
    assert any(entry["points"] == report["points"] for entry in saved.values())


def test_cli_attack_prints_the_table_and_refuses_bad_eps(digits_cnn, capsys) -> None:
    code = cli.main(["evaluate", str(digits_cnn), "--attack", "fgsm", "--eps", "0,0.2",
                     "--count", "40", "--json"])  # fmt: skip
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert [p["eps"] for p in report["points"]] == [0.0, 0.2]
    assert cli.main(["evaluate", str(digits_cnn), "--attack", "pgd", "--eps", "2"]) == 2
    assert "eps 2.0 is out of range" in capsys.readouterr().err


def test_attacks_refuse_a_text_run(tmp_path) -> None:
    lines = ["review,label"] + [f"{'good fine' if i % 2 else 'bad poor'} film,{i % 2}"
                                for i in range(40)]  # fmt: skip
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    neuralab.train(data=f"csv:{tmp_path / 't.csv'}", model="ngram", epochs=1,
                   out=str(tmp_path / "run"), verbose=False,
                   overrides=["data.options.text_field=review",
                              "model.args.buckets=64"])  # fmt: skip
    with pytest.raises(AttackError, match="attacks perturb pixels: .* is a text run"):
        neuralab.evaluate(tmp_path / "run", attack="fgsm", eps=0.1)


def test_report_gains_a_robustness_section_once_the_run_was_attacked(digits_cnn) -> None:
    neuralab.evaluate(digits_cnn, attack="fgsm", eps=[0.0, 0.2], count=30)
    assert cli.main(["report", str(digits_cnn)]) == 0
    page = (digits_cnn / "report.html").read_text()
    assert "<h2>Robustness</h2>" in page and "fgsm L∞ eps 0.2" in page
    assert (digits_cnn / "robustness.png").stat().st_size > 0
