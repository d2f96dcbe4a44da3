"""Few-shot learning: reference tests of prototypical networks and MAML (meta-gradients against
finite differences and against hand computations), the episode sampler, and the verbs on tiny
data. Real Omniglot tests are in test_omniglot.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from neuralab.cli.main import main
from neuralab.config import ConfigError, resolve_config
from neuralab.data import DataError, ImageDataset, Split
from neuralab.data.episodes import ClassIndex, EpisodeLoader, Episodes, class_disjoint
from neuralab.tasks import TASKS
from neuralab.tasks.batched import batched_forward, can_batch
from neuralab.tasks.fewshot import (
    MAML,
    FirstOrderMAML,
    PrototypicalNetworks,
    prototype_logits,
    transductive_batch_norm,
)

pytest.importorskip("sklearn", reason="the digits dataset needs scikit-learn")


def tiny_episodes(tasks=3, ways=3, shots=2, queries=2, features=5, seed=0, dtype=torch.float64):
    """Random episodes of vectors (T, N*K, features), labels grouped by class."""
    generator = torch.Generator().manual_seed(seed)
    support = torch.randn(tasks, ways * shots, features, generator=generator, dtype=dtype)
    query = torch.randn(tasks, ways * queries, features, generator=generator, dtype=dtype)
    labels = torch.arange(ways)
    return Episodes(
        support,
        labels.repeat_interleave(shots).expand(tasks, -1),
        query,
        labels.repeat_interleave(queries).expand(tasks, -1),
    )


def tiny_model(ways=3, features=5, dtype=torch.float64) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(features, 7), nn.Tanh(), nn.Linear(7, ways)).to(dtype)


def meta_loss(task, model, batch) -> torch.Tensor:
    return task.step(model, batch).loss


def gradient(task, model, batch) -> torch.Tensor:
    model.zero_grad()
    meta_loss(task, model, batch).backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()])


# -- prototypical networks ---------------------------------------------------------------------
def test_prototype_logits_are_negative_squared_distances_to_class_means() -> None:
    generator = torch.Generator().manual_seed(1)
    support = torch.randn(2, 7, 4, generator=generator)
    labels = torch.tensor([[0, 1, 2, 0, 1, 2, 2], [2, 2, 1, 0, 0, 1, 1]])  # any order
    query = torch.randn(2, 5, 4, generator=generator)
    logits = prototype_logits(support, labels, query, ways=3)
    for t in range(2):
        for c in range(3):
            mean = support[t][labels[t] == c].mean(0)
            for q in range(5):
                expected = -((query[t, q] - mean) ** 2).sum()
                assert torch.allclose(logits[t, q, c], expected, atol=1e-5)


def test_protonet_step_scores_each_episode() -> None:
    batch = tiny_episodes(tasks=4, dtype=torch.float32)
    output = PrototypicalNetworks().step(nn.Identity(), batch)
    assert output.count == 4
    logits = prototype_logits(batch.support, batch.support_labels, batch.query, 3)
    accuracy = (logits.argmax(-1) == batch.query_labels).double().mean(1)
    assert torch.allclose(output.sums["accuracy"], accuracy.sum())
    assert torch.allclose(output.sums["accuracy_squared"], accuracy.pow(2).sum())
    expected = F.cross_entropy(logits.flatten(0, 1), batch.query_labels.flatten())
    assert torch.allclose(output.loss, expected)


def test_summary_gives_the_mean_and_a_95_percent_interval_over_episodes() -> None:
    accuracies = [0.5, 1.0, 0.75, 0.25]
    sums = {
        "loss": 4.0,
        "accuracy": sum(accuracies),
        "accuracy_squared": sum(a * a for a in accuracies),
    }
    summary = PrototypicalNetworks().summarize(sums, len(accuracies))
    assert summary["accuracy"] == pytest.approx(np.mean(accuracies))
    standard_error = np.std(accuracies, ddof=1) / np.sqrt(len(accuracies))
    assert summary["accuracy_ci95"] == pytest.approx(1.959964 * standard_error)


# -- MAML ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("vectorize", [True, False])
@pytest.mark.parametrize("steps", [1, 2])
def test_maml_meta_gradient_matches_finite_differences(vectorize: bool, steps: int) -> None:
    model, batch = tiny_model(), tiny_episodes()
    task = MAML(3, inner_steps=steps, inner_lr=0.3, vectorize=vectorize)
    analytic = gradient(task, model, batch)
    parameters = list(model.parameters())
    numeric = []
    epsilon = 1e-6
    with torch.no_grad():
        for parameter in parameters:
            flat = parameter.view(-1)
            for index in range(flat.numel()):
                flat[index] += epsilon
                up = float(meta_loss(task, model, batch))
                flat[index] -= 2 * epsilon
                down = float(meta_loss(task, model, batch))
                flat[index] += epsilon
                numeric.append((up - down) / (2 * epsilon))
    assert torch.allclose(analytic, torch.tensor(numeric, dtype=torch.float64), atol=1e-7)


@pytest.mark.parametrize("steps", [1, 3])
def test_first_order_maml_is_maml_with_the_second_order_terms_dropped(steps: int) -> None:
    """FOMAML's meta-gradient is the query loss's gradient at the adapted weights, where the
    adaptation's own gradients are constants: computed here by hand, one episode at a time."""
    model, batch = tiny_model(), tiny_episodes()
    learned = gradient(FirstOrderMAML(3, inner_steps=steps, inner_lr=0.3), model, batch)
    names = [name for name, _ in model.named_parameters()]
    total = torch.zeros_like(learned)
    for support, support_labels, query, query_labels in zip(*batch, strict=True):
        fast = {n: p.detach().clone() for n, p in model.named_parameters()}
        for _ in range(steps):
            fast = {n: p.requires_grad_() for n, p in fast.items()}
            loss = F.cross_entropy(
                torch.func.functional_call(model, fast, (support,)), support_labels
            )
            grads = torch.autograd.grad(loss, list(fast.values()))
            fast = {
                n: (p - 0.3 * g).detach() for (n, p), g in zip(fast.items(), grads, strict=True)
            }
        fast = {n: p.requires_grad_() for n, p in fast.items()}
        loss = F.cross_entropy(torch.func.functional_call(model, fast, (query,)), query_labels)
        grads = torch.autograd.grad(loss, [fast[n] for n in names])
        total += torch.cat([g.flatten() for g in grads]) / len(batch.support)
    assert torch.allclose(learned, total, atol=1e-10)
    second_order = gradient(MAML(3, inner_steps=steps, inner_lr=0.3), model, batch)
    assert not torch.allclose(learned, second_order, atol=1e-4)  # the dropped terms matter


def conv_episodes() -> tuple[nn.Module, Episodes]:
    from neuralab.models import InputSpec, build_model

    torch.manual_seed(0)
    model = build_model("conv4", InputSpec(1, 8, 8, 3), width=4, blocks=2).double()
    batch = Episodes(
        torch.randn(2, 3, 1, 8, 8, dtype=torch.float64), torch.arange(3).expand(2, -1),
        torch.randn(2, 6, 1, 8, 8, dtype=torch.float64),
        torch.arange(3).repeat_interleave(2).expand(2, -1),
    )  # fmt: skip
    return model, batch


@pytest.mark.parametrize("vectorize", [True, False])
def test_maml_on_a_convnet_with_batch_norm_matches_finite_differences(vectorize: bool) -> None:
    model, batch = conv_episodes()
    task = MAML(3, inner_steps=2, inner_lr=0.1, vectorize=vectorize)
    analytic = gradient(task, model, batch)[:8]  # the first conv's first weights
    first = next(model.parameters()).view(-1)
    numeric = []
    with torch.no_grad():
        for index in range(8):
            first[index] += 1e-6
            up = float(meta_loss(task, model, batch))
            first[index] -= 2e-6
            down = float(meta_loss(task, model, batch))
            first[index] += 1e-6
            numeric.append((up - down) / 2e-6)
    assert torch.allclose(analytic, torch.tensor(numeric, dtype=torch.float64), atol=1e-8)
    running = model[1].running_mean.clone()
    with torch.no_grad():
        task.score(model.eval(), batch)
    assert torch.equal(model[1].running_mean, running)  # transductive: statistics untouched
    assert not model[1].training  # and the module's mode is put back


@pytest.mark.parametrize("first_order", [False, True])
def test_episodes_adapted_together_equal_episodes_adapted_one_by_one(first_order: bool) -> None:
    model, batch = conv_episodes()
    assert can_batch(model)
    tasks = [MAML(3, 3, 0.1, first_order=first_order, vectorize=v) for v in (True, False)]
    together, alone = (gradient(task, model, batch) for task in tasks)
    assert torch.allclose(together, alone, atol=1e-10)
    with torch.no_grad():
        scores = [task.score(model, batch) for task in tasks]
    assert all(torch.allclose(scores[0][k], scores[1][k], atol=1e-10) for k in scores[0])


def test_batched_forward_equals_each_copy_run_on_its_own() -> None:
    model, _ = conv_episodes()
    model.train()
    copies = 3
    weights = {n: p.detach() + 0.1 * torch.randn(copies, *p.shape, dtype=p.dtype)
               for n, p in model.named_parameters()}  # fmt: skip
    inputs = torch.randn(copies, 4, 1, 8, 8, dtype=torch.float64)
    outputs = batched_forward(model, weights, inputs)
    with transductive_batch_norm(model):
        for t in range(copies):
            own = {n: w[t] for n, w in weights.items()}
            expected = torch.func.functional_call(model, own, (inputs[t],))
            assert torch.allclose(outputs[t], expected, atol=1e-12)
    assert not can_batch(nn.Sequential(nn.Conv2d(1, 2, 3), nn.GELU()))


def test_transductive_batch_norm_uses_the_batch_statistics_and_restores_the_modules() -> None:
    norm = nn.BatchNorm1d(2).eval()
    norm.running_mean.fill_(5.0)
    inputs = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
    with transductive_batch_norm(norm):
        outputs = norm(inputs)
    assert torch.allclose(outputs.mean(0), torch.zeros(2), atol=1e-6)
    assert not norm.training and norm.track_running_stats
    assert torch.equal(norm.running_mean, torch.full((2,), 5.0))


def test_maml_refuses_episodes_of_another_width() -> None:
    with pytest.raises(ConfigError, match="is 3-way.*episodes are 4-way"):
        MAML(3).step(tiny_model(), tiny_episodes(ways=4))


# -- episodes ------------------------------------------------------------------------------------
def labelled_split(counts: list[int], side: int = 4) -> Split:
    labels = torch.cat([torch.full((count,), c) for c, count in enumerate(counts)])
    images = (labels * 10).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, side, side).clone()
    # Each image's index written into its first pixel, to check which examples were drawn.
    images[:, 0, 0, 0] = torch.arange(len(labels), dtype=torch.uint8)
    return Split(images, labels)


def test_episodes_hold_distinct_examples_of_each_drawn_class() -> None:
    split = labelled_split([5, 6, 7, 5, 9])
    loader = EpisodeLoader(split, 3, 2, 3, episodes=20, mean=(0.0,), std=(1 / 255,),
                           meta_batch=4)  # fmt: skip
    assert len(loader) == 5
    for batch in loader:
        assert batch.support.shape == (4, 6, 1, 4, 4) and batch.query.shape == (4, 9, 1, 4, 4)
        for t in range(4):
            index = (
                torch.cat([batch.support[t, :, 0, 0, 0], batch.query[t, :, 0, 0, 0]]).round().long()
            )
            assert len(set(index.tolist())) == 15  # no example twice
            true_class = split.labels[index]
            episode_labels = torch.cat([batch.support_labels[t], batch.query_labels[t]])
            for label in range(3):  # one dataset class per episode label
                assert true_class[episode_labels == label].unique().numel() == 1
            assert true_class.unique().numel() == 3


def test_episodes_are_seeded_per_epoch_and_fixed_loaders_repeat() -> None:
    split = labelled_split([6] * 6)
    common = {"mean": (0.0,), "std": (1.0,), "seed": 3}

    def draws(loader, epoch):
        loader.set_epoch(epoch)
        return torch.cat([b.support.flatten() for b in loader])

    loader = EpisodeLoader(split, 2, 1, 1, 5, **common)
    assert torch.equal(draws(loader, 0), draws(EpisodeLoader(split, 2, 1, 1, 5, **common), 0))
    assert not torch.equal(draws(loader, 0), draws(loader, 1))
    fixed = EpisodeLoader(split, 2, 1, 1, 5, fixed=True, **common)
    assert torch.equal(draws(fixed, 0), draws(fixed, 7))


def test_class_index_lists_every_example_of_each_class() -> None:
    labels = torch.tensor([2, 0, 2, 1, 0, 2])
    index = ClassIndex(labels)
    for row, cls in enumerate(index.classes.tolist()):
        members = index.table[row][index.table[row] >= 0]
        assert sorted(members.tolist()) == (labels == cls).nonzero().flatten().tolist()


def test_class_disjoint_splits_share_no_class_and_keep_every_example() -> None:
    train = labelled_split([4] * 8)
    test = labelled_split([2] * 8)
    dataset = ImageDataset("toy", train, test, [str(i) for i in range(10)], (0.5,), (0.2,))
    split = class_disjoint(dataset, seed=0)
    classes = [set(getattr(split, name).labels.tolist()) for name in ("train", "val", "test")]
    assert not (classes[0] & classes[1] or classes[0] & classes[2] or classes[1] & classes[2])
    assert len(split.train) + len(split.val) + len(split.test) == len(train) + len(test)
    assert class_disjoint(split, seed=5) is split  # already disjoint: kept as it is


def test_impossible_episodes_are_refused_with_the_numbers() -> None:
    split = labelled_split([5, 5, 3])
    with pytest.raises(DataError, match="4-way episodes need 4 classes but the split has 3"):
        EpisodeLoader(split, 4, 1, 1, 10, (0.0,), (1.0,))
    with pytest.raises(DataError, match="4 examples per class.*1 of its 3 classes have fewer"):
        EpisodeLoader(split, 2, 1, 3, 10, (0.0,), (1.0,))


def test_few_shot_settings_are_checked_in_the_config() -> None:
    with pytest.raises(ConfigError, match="task.ways only apply to few-shot tasks"):
        resolve_config(None, ["task.ways=20"])
    with pytest.raises(ConfigError, match="task.inner_lr only apply to task.name=maml"):
        resolve_config(None, ["task.name=protonet", "task.inner_lr=0.1"])
    with pytest.raises(ConfigError, match="evaluated 5-way, not task.eval_ways=20"):
        resolve_config(None, ["task.name=maml", "task.eval_ways=20"])
    assert sorted(TASKS.names()) == ["classification", "fomaml", "maml", "multitask", "protonet"]


# -- the verbs on tiny data ----------------------------------------------------------------------
DIGITS_FEW_SHOT = [
    "--data", "digits", "--model", "conv4", "--set", "model.args.blocks=2",
    "--set", "model.args.width=16", "--ways", "2", "--shots", "1", "--set", "task.queries=3",
    "--set", "task.episodes=100", "--set", "task.eval_episodes=20", "--epochs", "2",
    "--set", "train.precision=fp32", "--progress", "none",
]  # fmt: skip


@pytest.fixture(scope="module")
def protonet_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "protonet"
    argv = ["train", *DIGITS_FEW_SHOT, "--task", "protonet", "--set", "model.args.head=false"]
    assert main([*argv, "--set", "optim.name=adam", "--lr", "0.003", "--out", str(run_dir)]) == 0
    return run_dir


def test_protonet_trains_and_evaluates_on_unseen_classes(capsys, protonet_run: Path) -> None:
    metrics = json.loads((protonet_run / "metrics.json").read_text())
    assert metrics["count"] == 20 and metrics["accuracy"] > 0.7  # chance: 50%, 120 queries
    meta = json.loads((protonet_run / "checkpoint" / "meta.json").read_text())
    assert meta["task"]["name"] == "protonet"
    capsys.readouterr()
    assert main(["evaluate", str(protonet_run), "--ways", "2", "--episodes", "20", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    found = report["episodes"]["2-way 1-shot"]
    assert found["episodes"] == 20
    assert found["accuracy"] == pytest.approx(metrics["accuracy"])  # the same fixed episodes
    assert 0 < found["ci95"] < 0.5


def test_predict_classifies_against_classes_given_by_example(
    capsys, protonet_run: Path, tmp_path: Path
) -> None:
    from neuralab.data import load_dataset

    digits = load_dataset("digits")
    paths = {}
    for digit in (0, 1):
        images = digits.train.images[digits.train.labels == digit][:3]
        (tmp_path / str(digit)).mkdir()
        paths[digit] = []
        for index, image in enumerate(images):
            path = tmp_path / str(digit) / f"{index}.png"
            Image.fromarray(image[0].numpy(), "L").save(path)
            paths[digit].append(str(path))
    support = [paths[0][0], paths[0][1], paths[1][0], paths[1][1]]
    queries = [paths[0][2], paths[1][2]]
    capsys.readouterr()
    code = main(["predict", str(protonet_run), "--support", *support, "--query", *queries,
                 "--json"])  # fmt: skip
    assert code == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["input"] for r in results] == queries
    assert {c["class"] for c in results[0]["top"]} == {"0", "1"}
    total = sum(c["probability"] for c in results[0]["top"])
    assert total == pytest.approx(1.0, abs=1e-5)
    assert main(["predict", str(protonet_run), paths[0][0]]) == 2
    assert "pass --support" in capsys.readouterr().err


def test_a_protonet_run_exports_its_embedding_network_and_is_not_served(
    protonet_run: Path, tmp_path: Path
) -> None:
    import neuralab
    from neuralab.serve.app import create_app

    result = neuralab.export(protonet_run, format="torchscript", out=tmp_path / "net.pt")
    exported = torch.jit.load(str(result.path))
    images = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8)
    assert exported(images).shape == (3, 64)  # the embedding: 16 channels × 2 × 2
    with pytest.raises(ConfigError, match="few-shot \\(protonet\\) run"):
        create_app(neuralab.load(protonet_run))


@pytest.mark.parametrize("task", ["maml", "fomaml"])
def test_maml_runs_train_and_evaluate_at_their_own_width(capsys, tmp_path: Path, task: str) -> None:
    run_dir = tmp_path / task
    argv = ["train", *DIGITS_FEW_SHOT, "--task", task, "--set", "task.meta_batch=4",
            "--set", "task.inner_lr=0.1", "--set", "optim.name=adam", "--lr", "0.003"]  # fmt: skip
    assert main([*argv, "--out", str(run_dir)]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["count"] == 20 and metrics["accuracy"] > 0.6  # chance: 50%
    capsys.readouterr()
    assert main(["evaluate", str(run_dir), "--ways", "5"]) == 2
    assert "is 2-way" in capsys.readouterr().err


def test_impossible_few_shot_runs_fail_before_writing_anything(capsys, tmp_path: Path) -> None:
    argv = ["train", *DIGITS_FEW_SHOT, "--task", "protonet", "--out", str(tmp_path / "r")]
    assert main([*argv, "--set", "task.eval_ways=3"]) == 2
    assert "3-way episodes need 3 classes but the split has 2" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    texts = tmp_path / "texts.csv"
    texts.write_text("text,label\n" + "".join(f"review {i},{i % 3}\n" for i in range(30)))
    argv[argv.index("digits")] = f"csv:{texts}"
    assert main(argv) == 2
    assert f"learns from episodes of images; csv:{texts} is text data" in capsys.readouterr().err


MAML_ARGS = {"data": "digits", "model": "conv4", "epochs": 3, "seed": 2, "task": "maml",
             "ways": 2, "shots": 1}  # fmt: skip
MAML_OVERRIDES = [
    "model.args.blocks=2", "model.args.width=8", "task.queries=2", "task.episodes=40",
    "task.meta_batch=4", "task.eval_episodes=8", "task.inner_lr=0.1", "optim.name=adam",
    "augment.rotate=10", "augment.crop_padding=1", "train.threads=1", "train.precision=fp32",
    "train.channels_last=off",
]  # fmt: skip
KILLED_MAML = """
import os, signal, neuralab
from neuralab.train.callbacks import Callback

class KillMidEpoch(Callback):
    def on_step_end(self, trainer):
        if trainer.step == 17:  # the middle of the second epoch (10 meta-batches an epoch)
            os.kill(os.getpid(), signal.SIGKILL)

neuralab.train(**{args}, out={out!r}, overrides={overrides!r}, verbose=False,
               callbacks=[KillMidEpoch()])
"""


def test_a_sigkilled_maml_run_resumes_to_the_same_weights(tmp_path: Path) -> None:
    import subprocess
    import sys

    from safetensors.torch import load_file

    import neuralab

    whole = tmp_path / "whole"
    neuralab.train(**MAML_ARGS, out=str(whole), overrides=MAML_OVERRIDES, verbose=False)
    killed = tmp_path / "killed"
    script = KILLED_MAML.format(args=MAML_ARGS, out=str(killed), overrides=MAML_OVERRIDES)
    assert subprocess.run([sys.executable, "-c", script], check=False).returncode == -9
    assert [row["epoch"] for row in json.loads((killed / "history.json").read_text())] == [1]
    neuralab.resume(killed, verbose=False)
    resumed = load_file(killed / "checkpoint" / "model.safetensors")
    expected = load_file(whole / "checkpoint" / "model.safetensors")
    assert all(torch.equal(resumed[name], expected[name]) for name in expected)
    assert (
        json.loads((killed / "metrics.json").read_text())["accuracy"]
        == json.loads((whole / "metrics.json").read_text())["accuracy"]
    )


def test_report_shows_the_episode_table(protonet_run: Path) -> None:
    pytest.importorskip("matplotlib")
    from neuralab.inference.evaluation import write_report

    page = write_report(protonet_run).read_text()
    # digits' test split has 2 classes: no standard setting fits, so the run's own (2-way)
    assert "2-way 1-shot" in page and "5-way" not in page and "±" in page
    assert "accuracy (95% interval)" in page and (protonet_run / "curves.png").exists()
