"""Your own data: `data.classes`, `data.labelled_per_class`, fine-tuning from a run
(`train.init_from`, `train.freeze`, `train.fine_tune_epochs`, `train.lr_mult`) and the
defaults that follow the model and the data when there is no recipe."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import neuralab
from neuralab.checkpoint.format import CheckpointError
from neuralab.config import ConfigError, resolve_config
from neuralab.data import DataError, load_dataset
from neuralab.data.dataset import TextDataset, TextSplit, labelled_subset
from neuralab.models import MODELS, InputSpec, TextSpec, build_model, model_input
from neuralab.run.defaults import fill_defaults
from neuralab.train.callbacks import Callback
from neuralab.train.optim import make_optimizer, make_scheduler, regroup
from neuralab.train.transfer import (
    TransferError,
    adapt_channels,
    group_factors,
    head_names,
    layer_groups,
    load_compatible,
)

pytest.importorskip("sklearn", reason="the digits dataset needs scikit-learn")

FAST = ["train.precision=fp32", "model.args.width=32", "optim.momentum=0.9", "train.batch_size=64"]


def digits_run(out: Path, *overrides: str, epochs: float = 2, **keywords) -> neuralab.Run:
    return neuralab.train(
        data="digits", model=keywords.pop("model", "mlp"), epochs=epochs, out=str(out),
        verbose=False, lr=0.1, overrides=[*FAST, *overrides], **keywords,
    )  # fmt: skip


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "checkpoint" / "model.safetensors"))


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> neuralab.Run:
    """An MLP trained on digits 0-4: the run the others start from."""
    return digits_run(tmp_path_factory.mktemp("source") / "run", "data.classes=[0,1,2,3,4]")


# -- data.classes and data.labelled_per_class ---------------------------------------------------
def test_classes_keep_and_relabel_in_the_order_given() -> None:
    full = load_dataset("digits")
    kept = load_dataset("digits", classes=["7", 2])
    assert kept.classes == ["7", "2"]
    for name in ("train", "test"):
        split, original = getattr(kept, name), getattr(full, name)
        assert len(split) == int(((original.labels == 7) | (original.labels == 2)).sum())
        sevens = split.images[split.labels == 0]
        assert torch.equal(sevens, original.images[original.labels == 7])


@pytest.mark.parametrize(
    ("classes", "message"),
    [(["7", "eight"], "no class 'eight'"), ([3, 3], "names a class twice"),
     ([12, 1], "index 12 is out of range"), (["1"], "at least 2 classes")],
)  # fmt: skip
def test_bad_classes_are_refused_by_name(classes, message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_dataset("digits", classes=classes)


def test_labelled_per_class_is_stratified_seeded_and_keeps_the_rest() -> None:
    full = load_dataset("digits")
    data = load_dataset("digits", labelled_per_class=20, seed=3)
    assert torch.bincount(data.train.labels).tolist() == [20] * 10
    assert len(data.train) + len(data.unlabelled) == len(full.train)
    again = load_dataset("digits", labelled_per_class=20, seed=3)
    other = load_dataset("digits", labelled_per_class=20, seed=4)
    assert torch.equal(again.train.images, data.train.images)
    assert not torch.equal(other.train.images, data.train.images)
    # labelled and unlabelled examples are disjoint and together the whole training split
    rows = lambda split: {bytes(image.numpy()) for image in split.images}  # noqa: E731
    assert not rows(data.train) & rows(data.unlabelled)
    assert len(data.test) == len(full.test)


def test_labelled_per_class_works_on_text_and_refuses_more_than_a_class_has() -> None:
    split = TextSplit([f"text {i}" for i in range(10)], torch.tensor([0] * 7 + [1] * 3))
    dataset = TextDataset("tiny", split, split, ["a", "b"])
    kept = labelled_subset(dataset, 2, seed=0)
    assert sorted(kept.train.labels.tolist()) == [0, 0, 1, 1] and len(kept.unlabelled) == 6
    with pytest.raises(
        DataError, match=r"labelled_per_class=4 .*\('b' has 3\); set it to at most 3"
    ):
        labelled_subset(TextDataset("tiny", split, split, ["a", "b"]), 4, seed=0)


# -- fine-tuning from a run ------------------------------------------------------------------
def test_head_replaced_and_frozen_layer_kept_exactly(source, tmp_path: Path) -> None:
    run = digits_run(
        tmp_path / "ft", "data.classes=[5,6,7,8,9]", "train.freeze=['1']",
        init_from=source.run_dir,
    )  # fmt: skip
    before, after = weights(source.run_dir), weights(run.run_dir)
    assert torch.equal(after["1.weight"], before["1.weight"])  # frozen: never trained
    assert torch.equal(after["1.bias"], before["1.bias"])
    assert not torch.allclose(after["3.weight"], before["3.weight"])  # the new head trained
    meta = json.loads((run.run_dir / "checkpoint" / "meta.json").read_text())
    assert meta["source"]["run"] == str(source.run_dir.resolve())
    assert meta["source"]["head"] == "replaced" and meta["source"]["loaded"] == 2
    assert len(meta["source"]["weights_sha256"]) == 64 and meta["classes"] == list("56789")
    assert run.metrics["accuracy"] > 0.6  # chance is 0.2; only the head trained


def test_fine_tune_trains_the_head_alone_first(source, tmp_path: Path) -> None:
    """After the first epoch only the head has moved; at the end the body has too."""

    class Snapshot(Callback):
        def __init__(self) -> None:
            self.first: dict[str, torch.Tensor] = {}

        def on_epoch_end(self, trainer, logs) -> None:
            if not self.first:
                self.first = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}

    snapshot = Snapshot()
    run = digits_run(
        tmp_path / "ft", "data.classes=[5,6,7,8,9]", "train.fine_tune_epochs=1",
        "train.lr_mult=10", init_from=source.run_dir, epochs=3, callbacks=[snapshot],
    )  # fmt: skip
    start, end = weights(source.run_dir), weights(run.run_dir)
    assert torch.equal(snapshot.first["1.weight"], start["1.weight"])
    assert not torch.equal(snapshot.first["3.weight"], start["3.weight"])
    assert not torch.equal(end["1.weight"], start["1.weight"])


def test_same_classes_load_every_tensor_including_the_head(source, tmp_path: Path) -> None:
    run = digits_run(tmp_path / "ft", "data.classes=[0,1,2,3,4]", init_from=source.run_dir,
                     epochs=0.01)  # fmt: skip
    meta = json.loads((run.run_dir / "checkpoint" / "meta.json").read_text())
    assert meta["source"]["head"] == "loaded" and meta["source"]["new"] == 0


def test_model_defaults_to_the_sources(source, tmp_path: Path) -> None:
    run = neuralab.train(
        data="digits", epochs=0.1, out=str(tmp_path / "ft"), verbose=False,
        init_from=source.run_dir, overrides=["train.precision=fp32"],
    )  # fmt: skip
    config = resolve_config(str(run.run_dir / "config.yaml"))
    assert config.model.name == "mlp" and config.model.args == {"width": 32}


def test_bad_sources_are_refused_and_leave_no_run(source, tmp_path: Path, fault_table) -> None:
    out = tmp_path / "ft"
    with pytest.raises(CheckpointError, match="not a neuralab run directory"):
        digits_run(out, init_from=tmp_path / "nowhere")
    with pytest.raises(TransferError, match="is a mlp model, this run asks for lenet"):
        digits_run(out, init_from=source.run_dir, model="lenet")
    with pytest.raises(TransferError, match=r"1.weight has shape \(32, 64\) .* \(16, 64\)"):
        digits_run(out, "model.args.width=16", init_from=source.run_dir)
    with pytest.raises(ConfigError, match="'nothing' names no parameter"):
        digits_run(out, "train.freeze=['nothing']", init_from=source.run_dir)
    copy = tmp_path / "tampered"
    copy.mkdir()
    for path in (source.run_dir / "checkpoint").iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (copy / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match"):
        digits_run(out, init_from=copy)
    assert not out.exists()
    fault_table(
        "init_from: missing, other model, other shape, tampered, bad freeze",
        5,
        "refused before the run directory is made, with the reason",
    )


def test_a_text_run_cannot_start_an_image_run(tmp_path: Path) -> None:
    rows = ["label,text"] + [f"{'pos' if i % 2 else 'neg'},word{i % 7} film" for i in range(40)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    text = neuralab.train(data=f"csv:{tmp_path / 't.csv'}", model="ngram", epochs=1,
                          out=str(tmp_path / "text"), verbose=False)  # fmt: skip
    with pytest.raises(TransferError, match="learned from text data, but digits is image data"):
        neuralab.train(data="digits", epochs=1, out=str(tmp_path / "ft"), verbose=False,
                       init_from=text.run_dir)  # fmt: skip
    # and a text run with another label set takes its tokenizer and embeddings
    other = ["label,text"] + [f"{'a' if i % 3 else 'b'},word{i % 7} film" for i in range(30)]
    (tmp_path / "o.csv").write_text("\n".join(other) + "\n", encoding="utf-8")
    tuned = neuralab.train(data=f"csv:{tmp_path / 'o.csv'}", epochs=1, verbose=False,
                           out=str(tmp_path / "tuned"), init_from=text.run_dir)  # fmt: skip
    same = (text.run_dir / "checkpoint" / "tokenizer.json").read_text()
    assert (tuned.run_dir / "checkpoint" / "tokenizer.json").read_text() == same
    with pytest.raises(ConfigError, match="tokenizer.max_length cannot be set"):
        neuralab.train(data=f"csv:{tmp_path / 'o.csv'}", epochs=1, verbose=False,
                       out=str(tmp_path / "x"), init_from=text.run_dir,
                       overrides=["tokenizer.max_length=10"])  # fmt: skip


# -- the pieces: heads, groups, loading, channels, schedules -----------------------------------
@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_has_a_findable_head(name: str) -> None:
    spec = TextSpec(50, 7, 16) if model_input(name) == "text" else InputSpec(3, 32, 32, 7)
    model = build_model(name, spec)
    head = head_names(model, 7)
    assert head and all(dict(model.named_parameters())[n].shape[0] == 7 for n in head)
    groups = layer_groups(model)
    assert sum(len(g) for g in groups) == len(list(model.parameters()))
    assert set(head) <= set(groups[-1])


def test_grey_filters_start_a_colour_model_with_the_same_response() -> None:
    grey, colour = nn.Conv2d(1, 4, 3), nn.Conv2d(3, 4, 3)
    colour.weight.data = adapt_channels(grey.weight.data, 3)
    colour.bias.data = grey.bias.data
    image = torch.rand(2, 1, 8, 8)
    assert torch.allclose(colour(image.expand(-1, 3, -1, -1)), grey(image), atol=1e-6)
    back = adapt_channels(colour.weight.data, 1)
    assert torch.allclose(back, grey.weight.data, atol=1e-6)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(2))
    model(torch.rand(1, 3, 8, 8))
    table = load_compatible(model, {"0.weight": grey.weight.data}, [], "")
    assert ("0.weight", "loaded", "1 → 3 input channels") in table.rows


def test_discriminative_rates_and_a_delayed_body() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.Linear(4, 2))
    factors = group_factors(layer_groups(model), 100.0)
    assert factors["0.weight"] == pytest.approx(0.01) and factors["2.weight"] == pytest.approx(0.1)
    assert factors["3.weight"] == 1.0
    optimizer = make_optimizer(model, "sgd", lr=1.0)
    body = {name: 2.0 for name in ("0.weight", "0.bias", "2.weight", "2.bias")}
    regroup(optimizer, model, factors, body)
    scheduler = make_scheduler(optimizer, "constant", 10, 40)
    rates = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert rates[id(model[3].weight)] == 1.0 and rates[id(model[0].weight)] == 0.0
    for _ in range(20):  # two epochs of 10 steps: the body starts
        optimizer.step()
        scheduler.step()
    rates = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert rates[id(model[0].weight)] == pytest.approx(0.01)
    assert rates[id(model[2].weight)] == pytest.approx(0.1)
    assert optimizer.param_groups[0]["lr"] == 1.0  # the trainer logs the head's rate


# -- defaults that follow the model and the data -----------------------------------------------
def test_without_a_recipe_the_family_and_the_data_choose() -> None:
    data = load_dataset("digits")
    config, notes = fill_defaults(resolve_config(None, **{"model.name": "mlp"}), data)
    assert (config.optim.name, config.optim.nesterov, config.schedule.name) == (
        "sgd", True, "onecycle",
    )  # fmt: skip
    assert config.train.batch_size == 128 and config.train.epochs == 50  # 12 steps an epoch
    assert any("family default" in note for note in notes)
    given = resolve_config(None, ["optim.name=adam", "train.epochs=2"], **{"model.name": "mlp"})
    config, _ = fill_defaults(given, data)
    assert config.optim.name == "adam" and config.optim.lr == 0.01  # the user's optimizer
    assert config.train.epochs == 2 and config.schedule.name == "onecycle"
    recipe = resolve_config("digits-best")
    assert fill_defaults(recipe, data) == (recipe, [])


def test_fine_tuning_defaults_take_fewer_steps_and_the_head_first() -> None:
    split = TextSplit(["a few words"] * 1000, torch.tensor([i % 2 for i in range(1000)]))
    data = TextDataset("t", split, split, ["a", "b"])
    plain, _ = fill_defaults(resolve_config(None, **{"model.name": "textcnn"}), data)
    tuned, notes = fill_defaults(
        resolve_config(None, **{"model.name": "textcnn", "train.init_from": "/runs/x"}), data
    )
    assert (plain.train.epochs, tuned.train.epochs) == (32, 8)  # 500 and 125 steps, 16 an epoch
    assert (tuned.train.fine_tune_epochs, tuned.train.lr_mult) == (1, 10.0)
    assert (plain.train.fine_tune_epochs, plain.train.lr_mult) == (0, 1.0)
    assert any("fine-tuning from train.init_from" in note for note in notes)


def test_text_defaults_follow_the_lengths_and_size() -> None:
    texts = [" ".join(["w"] * (10 + i % 20)) for i in range(1000)]
    split = TextSplit(texts, torch.tensor([i % 2 for i in range(1000)]))
    config, notes = fill_defaults(resolve_config(None, **{"model.name": "textcnn"}),
                                  TextDataset("t", split, split, ["a", "b"]))  # fmt: skip
    assert config.optim.name == "adam" and config.train.precision == "fp32"
    assert config.tokenizer.max_length == 32 and config.tokenizer.min_frequency == 1
    assert config.train.batch_size == 64 and config.train.epochs == 32  # 500 steps, 16 an epoch
    assert any("max_length 32" in note for note in notes)


SMALL_IMAGE_FAMILIES = {"perceptron": [], "mlp": [], "mnist_fast": ["model.args.width=8"]}


@pytest.mark.parametrize("name", SMALL_IMAGE_FAMILIES)
def test_families_for_small_images_learn_digits_with_no_settings(name: str, tmp_path) -> None:
    """No recipe and no settings (the epochs too come from the defaults): chance is 0.1."""
    run = neuralab.train(data="digits", model=name, out=str(tmp_path / "run"), verbose=False,
                         overrides=SMALL_IMAGE_FAMILIES[name])  # fmt: skip
    assert run.metrics["accuracy"] > 0.85, run.metrics


REAL_DATA = pytest.mark.skipif(
    not os.environ.get("NEURALAB_DATA"), reason="set NEURALAB_DATA to the datasets folder"
)
# 28x28 inputs; each with the arguments that fit them. The deep nets' defaults would train
# 50 epochs (minutes here): 8 (ResNet) and 20 (AlexNet, no batch norm) show that their
# optimizer and schedule learn.
IMAGE_FAMILIES = {
    "lenet": [], "cnn": [], "conv4": [], "airbench": ["model.args.widths=[16,32,32]"],
    "resnet18": ["model.args.stem=cifar", "model.args.width=16", "train.epochs=8"],
    "alexnet": ["model.args.variant=small", "train.epochs=20"],
}  # fmt: skip


@REAL_DATA
@pytest.mark.parametrize("name", IMAGE_FAMILIES)
def test_every_image_family_learns_a_little_mnist_with_its_defaults(name: str, tmp_path) -> None:
    """500 labelled MNIST digits, the family's optimizer, schedule and batch size."""
    run = neuralab.train(data="mnist", model=name, out=str(tmp_path / "run"), verbose=False,
                         overrides=["data.labelled_per_class=50",
                                              "data.classes=[0,1,2,3,4]",
                                              *IMAGE_FAMILIES[name]])  # fmt: skip
    assert run.metrics["accuracy"] > 0.6, run.metrics  # chance is 0.2
