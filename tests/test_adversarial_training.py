"""Adversarial training: the task wrapper attacks inside the eps-ball and leaks no attack
gradient into the parameters; the run builder wraps (or refuses) as configured; the PGD check
stops and restores on a collapse and survives resume; the config section checks its values."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from neuralab.adversarial.attacks import AttackSettings
from neuralab.adversarial.training import AdversarialTraining, PgdCheck, TrainingAttack
from neuralab.config import resolve_config
from neuralab.errors import ConfigError
from neuralab.run.settings import build_task, check_attack
from neuralab.tasks.classification import Classification

MEAN, STD = (0.5,), (0.25,)


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))


def tiny_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pixels (8, 1, 4, 4) in [0, 1] (some at the edges), their normalised inputs, labels."""
    generator = torch.Generator().manual_seed(1)
    pixels = torch.rand(8, 1, 4, 4, generator=generator)
    pixels[0], pixels[1] = 0.0, 1.0
    labels = torch.randint(0, 3, (8,), generator=generator)
    return pixels, (pixels - MEAN[0]) / STD[0], labels


class Recording(Classification):
    """Classification that keeps the inputs its step saw."""

    def step(self, model, batch):
        self.seen = batch[0].detach().clone()
        return super().step(model, batch)


@pytest.mark.parametrize(
    "attack", [TrainingAttack("fgsm-rs", 0.1, 0.125), TrainingAttack("pgd", 0.1, 0.05, 3)]
)
def test_step_trains_on_inputs_inside_the_ball(attack: TrainingAttack) -> None:
    pixels, inputs, labels = tiny_batch()
    inner = Recording()
    task = AdversarialTraining(inner, attack, MEAN, STD)
    model = tiny_model()
    output = task.step(model, (inputs, labels))
    attacked = inner.seen * STD[0] + MEAN[0]  # back to pixels
    assert (attacked - pixels).abs().max() <= attack.eps + 1e-5
    assert attacked.min() >= -1e-6 and attacked.max() <= 1 + 1e-6
    assert not torch.allclose(attacked, pixels)
    plain = nn.functional.cross_entropy(model(inner.seen), labels)
    assert torch.allclose(output.loss, plain)


def test_n_fgsm_steps_from_wider_noise_without_projecting_into_the_ball() -> None:
    """N-FGSM: noise in the 2·eps ball plus one eps step: within 3·eps, beyond eps for some
    pixels, and the step is the signed gradient at the noisy point."""
    pixels, inputs, labels = tiny_batch()
    inner = Recording()
    task = AdversarialTraining(inner, TrainingAttack("n-fgsm", 0.1, 0.1), MEAN, STD)
    task.step(tiny_model(), (inputs, labels))
    moved = (inner.seen * STD[0] + MEAN[0]) - pixels
    assert moved.abs().max() <= 0.3 + 1e-5 and moved.abs().max() > 0.1 + 1e-3
    assert (pixels + moved).min() >= -1e-6 and (pixels + moved).max() <= 1 + 1e-6


def test_attack_gradients_do_not_reach_the_parameters() -> None:
    _, inputs, labels = tiny_batch()
    inner = Recording()
    task = AdversarialTraining(inner, TrainingAttack("pgd", 0.2, 0.1, 4), MEAN, STD)
    model = tiny_model()
    task.step(model, (inputs, labels)).loss.backward()
    wrapped = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    Classification().step(model, (inner.seen, labels)).loss.backward()
    for got, expected in zip(wrapped, [p.grad for p in model.parameters()], strict=True):
        assert torch.allclose(got, expected)


def test_everything_but_the_step_is_the_wrapped_task() -> None:
    task = AdversarialTraining(Classification(), TrainingAttack("fgsm-rs", 0.1, 0.125), MEAN, STD)
    assert task.name == "classification" and task.metric_names == ("loss", "accuracy")
    _, inputs, labels = tiny_batch()
    model = tiny_model().eval()
    with torch.no_grad():
        assert torch.equal(task.predict(model, inputs), Classification().predict(model, inputs))
    assert task.summarize({"loss": 4.0, "correct": 3.0}, 4) == {"loss": 1.0, "accuracy": 0.75}
    assert "fgsm-rs L∞ eps 0.1, step 0.125" in task.describe()


def image_inputs(kind: str = "image") -> SimpleNamespace:
    modality = SimpleNamespace(kind=kind, mean=MEAN, std=STD)
    return SimpleNamespace(modality=modality, dataset=SimpleNamespace(heads=None))


def test_method_off_builds_the_plain_task() -> None:
    config = resolve_config("mnist-best")
    assert type(build_task(config, image_inputs())) is Classification


def test_method_pgd_wraps_the_task_with_the_configured_attack() -> None:
    config = resolve_config(
        "mnist-best", ["train.adversarial.method=pgd", "train.adversarial.eps=0.3"]
    )
    task = build_task(config, image_inputs())
    assert isinstance(task, AdversarialTraining)
    assert task.attack == TrainingAttack("pgd", 0.3, 2.5 * 0.3 / 7, 7)


def test_adversarial_training_on_text_is_refused() -> None:
    config = resolve_config(
        "imdb-ngram", ["train.adversarial.method=fgsm-rs", "train.adversarial.eps=0.1"]
    )
    with pytest.raises(ConfigError, match="train.adversarial works on image runs; imdb is text"):
        build_task(config, image_inputs("text"))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.adversarial.method=pgd", "train.adversarial.eps=1.5"], "less than or equal to 1"),
        (["train.adversarial.method=pgd", "train.adversarial.eps=0"], "greater than 0"),
        (
            ["train.adversarial.method=fgsm", "train.adversarial.eps=0.1"],
            "'off', 'fgsm-rs', 'n-fgsm' or",
        ),
        (["train.adversarial.method=pgd"], "needs train.adversarial.eps"),
        (["train.adversarial.epsilon=0.3"], "Did you mean 'eps'"),
    ],
)
def test_config_rejects_bad_settings(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_config("mnist-best", overrides)


def test_default_steps_follow_the_papers() -> None:
    fgsm = resolve_config(None, ["train.adversarial.method=fgsm-rs", "train.adversarial.eps=0.2"])
    assert fgsm.train.adversarial.step == pytest.approx(0.25)  # 1.25 · eps (Wong et al.)
    pgd = resolve_config(None, ["train.adversarial.method=pgd", "train.adversarial.eps=0.2"])
    assert pgd.train.adversarial.step == pytest.approx(2.5 * 0.2 / 7)  # Madry et al.
    assert resolve_config(None, ["train.adversarial.method=off"]).train.adversarial.method == "off"


def test_the_check_attacks_at_check_eps_when_given() -> None:
    adversarial = ["train.adversarial.method=n-fgsm", "train.adversarial.eps=0.0275"]
    same = check_attack(resolve_config("mnist-best", adversarial))
    assert (same.eps, same.steps) == (0.0275, 10)
    wider = check_attack(
        resolve_config("mnist-best", [*adversarial, "train.adversarial.check_eps=0.0314"])
    )
    assert wider.eps == 0.0314
    with pytest.raises(ConfigError, match="check_eps"):
        resolve_config("mnist-best", [*adversarial, "train.adversarial.check_eps=2"])


class FakeTrainer:
    """What PgdCheck uses of the trainer: eval_model, stop() and restore()."""

    def __init__(self, model: nn.Module) -> None:
        self.eval_model, self.epoch = model, 0
        self.stopped: str | None = None
        self.restored: tuple[dict, int] | None = None

    def stop(self, reason: str, failed: bool = False) -> None:
        self.stopped = reason

    def restore(self, weights: dict, epoch: int) -> None:
        self.restored = (weights, epoch)


def scripted_check(accuracies: list[float], early_stop: bool = True) -> PgdCheck:
    """A PgdCheck whose measured accuracies are `accuracies`, epoch after epoch."""
    images, labels = torch.zeros(4, 1, 4, 4, dtype=torch.uint8), torch.zeros(4, dtype=torch.long)
    check = PgdCheck(images, labels, AttackSettings("pgd", 0.1, steps=2), early_stop, MEAN, STD)
    values = iter(accuracies)
    check.accuracy = lambda model: next(values)
    return check


def run_epochs(check: PgdCheck, trainer: FakeTrainer, epochs: int) -> list[dict]:
    history = []
    for epoch in range(1, epochs + 1):
        with torch.no_grad():
            trainer.eval_model[1].weight.fill_(epoch)  # each epoch's weights differ
        logs = {"epoch": epoch}
        check.on_epoch_end(trainer, logs)
        history.append(logs)
        if trainer.stopped:
            break
    check.on_fit_end(trainer)
    return history


def test_check_stops_and_restores_the_best_weights_on_a_collapse() -> None:
    trainer = FakeTrainer(tiny_model())
    history = run_epochs(scripted_check([0.5, 0.7, 0.6, 0.05, 0.9]), trainer, 5)
    assert [row["pgd_accuracy"] for row in history] == [0.5, 0.7, 0.6, 0.05]
    assert "catastrophic overfitting after epoch 4" in trainer.stopped
    weights, epoch = trainer.restored
    assert epoch == 2 and torch.all(weights["1.weight"] == 2)


def test_check_without_early_stop_only_logs() -> None:
    trainer = FakeTrainer(tiny_model())
    history = run_epochs(scripted_check([0.7, 0.05, 0.1], early_stop=False), trainer, 3)
    assert len(history) == 3 and trainer.stopped is None and trainer.restored is None


def test_check_state_survives_resume() -> None:
    trainer = FakeTrainer(tiny_model())
    first = scripted_check([0.8, 0.75])
    run_epochs(first, trainer, 2)
    resumed = scripted_check([0.1])
    resumed.load_state_dict(first.state_dict())
    logs = {"epoch": 3}
    resumed.on_epoch_end(trainer, logs)
    resumed.on_fit_end(trainer)
    assert "from 80.0% at epoch 1" in trainer.stopped
    assert trainer.restored[1] == 1 and torch.all(trainer.restored[0]["1.weight"] == 1)


def test_check_measures_pgd_accuracy_in_eval_mode() -> None:
    pixels, _, labels = tiny_batch()
    images = (pixels * 255).round().to(torch.uint8)
    model = tiny_model().train()
    check = PgdCheck(images, labels, AttackSettings("pgd", 0.0, steps=2), True, MEAN, STD)
    with torch.no_grad():
        clean = model((images.float() / 255 - MEAN[0]) / STD[0]).argmax(1) == labels
    assert check.accuracy(model) == pytest.approx(clean.float().mean().item())
    assert model.training  # put back


def test_a_robust_run_logs_the_attack_and_the_check(tmp_path, capsys) -> None:
    pytest.importorskip("sklearn", reason="the digits dataset needs scikit-learn")
    import json

    import neuralab

    out = tmp_path / "digits-robust"
    settings = ["method=fgsm-rs", "eps=0.1", "check_count=50", "check_steps=2"]
    neuralab.train(
        data="digits", model="mlp", epochs=1, out=str(out), verbose=True, lr=0.1,
        overrides=["train.precision=fp32", *[f"train.adversarial.{s}" for s in settings]],
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert "adv    fgsm-rs L∞ eps 0.1, step 0.125 per batch (2 forward/backward passes" in printed
    assert "on the first 50 training examples (no validation split)" in printed
    assert "pgd acc" in printed
    history = json.loads((out / "history.json").read_text())
    assert 0.0 <= history[0]["pgd_accuracy"] <= 1.0
    meta = json.loads((out / "checkpoint" / "meta.json").read_text())
    assert meta["task"]["name"] == "classification"
