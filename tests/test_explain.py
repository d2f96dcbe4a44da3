"""Attributions and their faithfulness scores against references: saliency of a linear model is
its weights, integrated gradients add up to the logit's change (completeness, also through a
text model's embeddings), Spearman with ties agrees with scipy, a map that orders pixels by
their true contribution deletes faster than a random order; and the CLI and Python API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import neuralab
from neuralab.attribution import faithfulness as faith
from neuralab.attribution.explain import explain, faithfulness, methods_for
from neuralab.attribution.images import AttributionError, attribute_images, grad_cam_layer
from neuralab.attribution.texts import merge, token_words, words_of
from neuralab.cli import main as cli
from neuralab.inference.predict import Predictor

pytest.importorskip("captum", reason="attributions need Captum: pip install -e '.[test]'")
pytest.importorskip("sklearn", reason="the digits dataset needs scikit-learn")

MEAN, STD = (0.5,), (0.25,)


def linear_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()


def test_saliency_of_a_linear_model_is_its_weight_over_the_std() -> None:
    model = linear_model()
    pixels = torch.rand(4, 1, 4, 4)
    targets = torch.tensor([0, 1, 2, 1])
    maps = attribute_images(model, pixels, targets, "saliency", mean=MEAN, std=STD)
    expected = (model[1].weight[targets] / STD[0]).view(4, 4, 4)
    torch.testing.assert_close(maps, expected.abs())
    signed = attribute_images(model, pixels, targets, "saliency", mean=MEAN, std=STD, signed=True)
    torch.testing.assert_close(signed, expected)


@pytest.mark.parametrize("tta", ["off", "flip"])
@pytest.mark.parametrize("mean, std", [(MEAN, STD), ((0.2, 0.5, 0.7), (0.3, 0.2, 0.25))])
def test_integrated_gradients_add_up_to_the_change_from_the_mean_colour(tta, mean, std) -> None:
    """Completeness: the map sums to the target logit's change from the plain image of the
    training mean colour (per channel), the image the normalised model sees as zeros."""
    torch.manual_seed(1)
    channels = len(mean)
    model = nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.Tanh(), nn.Flatten(),
                          nn.Linear(64, 3)).eval()  # fmt: skip
    pixels, targets = torch.rand(3, channels, 4, 4), torch.tensor([2, 0, 1])
    maps = attribute_images(model, pixels, targets, "integrated-gradients", mean=mean,
                            std=std, tta=tta)  # fmt: skip
    from neuralab.models.tta import pixel_forward

    forward = pixel_forward(model, mean, std, tta)
    plain = torch.tensor(mean).view(1, -1, 1, 1).expand_as(pixels)
    change = forward(pixels) - forward(plain)
    expected = change.gather(1, targets.view(-1, 1))[:, 0]
    torch.testing.assert_close(maps.flatten(1).sum(1), expected, atol=2e-3, rtol=1e-2)
    # the mean colour is what the normalised model sees as zeros
    torch.testing.assert_close(model.eval()(torch.zeros(1, channels, 4, 4)).float(),
                               forward(plain[:1]))  # fmt: skip


def conv_net() -> nn.Module:
    torch.manual_seed(2)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(4), nn.Conv2d(4, 4, 1), nn.Flatten(), nn.Linear(64, 3),
    ).eval()  # fmt: skip


def test_grad_cam_picks_the_last_conv_with_a_7x7_map_and_upsamples() -> None:
    model = conv_net()
    example = torch.zeros(1, 1, 16, 16)
    assert grad_cam_layer(model, example, None) is model[2]  # model[5] is only 4×4
    assert grad_cam_layer(model, example, "5") is model[5]
    with pytest.raises(AttributionError, match="--layer 'nope' is not a layer .* 0, 2, 5"):
        grad_cam_layer(model, example, "nope")
    maps = attribute_images(model, torch.rand(2, 1, 16, 16), torch.tensor([0, 1]), "grad-cam",
                            mean=MEAN, std=STD)  # fmt: skip
    assert maps.shape == (2, 16, 16) and (maps >= 0).all()


def test_grad_cam_on_a_model_without_convolutions_names_the_other_methods() -> None:
    with pytest.raises(AttributionError, match="grad-cam needs a convolutional layer .* saliency"):
        attribute_images(linear_model(), torch.rand(1, 1, 4, 4), torch.tensor([0]), "grad-cam",
                         mean=MEAN, std=STD)  # fmt: skip


@pytest.mark.parametrize("method", ["smoothgrad", "occlusion"])
def test_every_method_gives_one_finite_map_per_image(method) -> None:
    maps = attribute_images(conv_net(), torch.rand(3, 1, 16, 16), torch.tensor([0, 1, 2]), method,
                            mean=MEAN, std=STD)  # fmt: skip
    assert maps.shape == (3, 16, 16) and torch.isfinite(maps).all() and maps.abs().sum() > 0


def test_spearman_with_ties_matches_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    generator = torch.Generator().manual_seed(0)
    first = torch.randint(0, 4, (5, 30), generator=generator).double()  # many ties
    second = torch.randn(5, 30, generator=generator).double()
    ours = faith.spearman(first, second)
    for row in range(5):
        expected = stats.spearmanr(first[row].numpy(), second[row].numpy()).statistic
        assert float(ours[row]) == pytest.approx(expected, abs=1e-9)
    assert faith.spearman(torch.zeros(1, 5), torch.randn(1, 5)).isnan().all()


def test_deletion_in_the_true_order_beats_a_random_order() -> None:
    """A linear model's exact per-pixel contributions, deleted first, drop the target's
    probability faster than a random order; insertion the other way round."""
    model = linear_model()
    pixels = torch.rand(20, 1, 4, 4)
    from neuralab.models.tta import pixel_forward

    forward = pixel_forward(model, MEAN, STD, "off")
    targets = forward(pixels).argmax(1)
    contribution = (pixels - MEAN[0]) / STD[0] * model[1].weight[targets].view(20, 1, 4, 4)

    def probability_of(images):
        return forward(images).softmax(1).gather(1, targets.view(-1, 1))[:, 0].detach()

    baseline = torch.full((1, 1, 1, 1), MEAN[0])
    ordered = faith.pixel_orders(contribution[:, 0])
    shuffled = torch.stack([torch.randperm(16) for _ in range(20)])
    for insertion in (False, True):
        ours = faith.auc(faith.image_curves(probability_of, pixels, ordered, baseline, insertion))
        chance = faith.auc(faith.image_curves(probability_of, pixels, shuffled, baseline,
                                              insertion))  # fmt: skip
        assert (ours.mean() > chance.mean()) if insertion else (ours.mean() < chance.mean())


def test_randomised_copy_changes_every_weight_and_leaves_the_model_alone() -> None:
    model = conv_net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    copied = faith.randomised_copy(model, seed=5)
    for name, value in copied.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], before[name])
        if value.is_floating_point() and "weight" in name:
            assert not torch.equal(value, before[name])


def test_tokens_merge_back_into_the_words_as_written() -> None:
    text = "A dull,  lifeless film"
    words = words_of(text)
    assert [w for w, _, _ in words] == ["A", "dull,", "lifeless", "film"]
    offsets = [(0, 1), (2, 6), (6, 7), (9, 13), (13, 17)]  # a, dull , , life less
    owners = token_words(offsets, words)
    assert owners == [0, 1, 1, 2, 2]
    merged = merge(words, owners, torch.tensor([1.0, 2.0, 0.5, -1.0, -2.0]))
    assert merged.weights == [1.0, 2.5, -3.0, 0.0] and merged.truncated == [False] * 3 + [True]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A digits MLP and two text models (TextCNN with token embeddings, n-gram without)."""
    folder = tmp_path_factory.mktemp("explain")
    neuralab.train(data="digits", model="mlp", epochs=10, out=str(folder / "mlp"), verbose=False,
                   overrides=["train.precision=fp32"])  # fmt: skip
    lines = ["review,label"]
    for index in range(200):
        word = ["superb", "lovely"][index % 2] if index % 4 < 2 else ["awful", "dull"][index % 2]
        filler = ["the", "film", "was", "a", "plot"][index % 5]
        lines.append(f"{filler} {word} {filler} film,{'pos' if index % 4 < 2 else 'neg'}")
    (folder / "reviews.csv").write_text("\n".join(lines) + "\n")
    common = ["data.options.text_field=review", "train.precision=fp32", "optim.name=adam",
              "optim.lr=0.02", "train.batch_size=16"]  # fmt: skip
    for model, extra in (("textcnn", ["model.args.embed_dim=16", "model.args.filters=8"]),
                         ("ngram", ["model.args.buckets=512"])):  # fmt: skip
        neuralab.train(data=f"csv:{folder / 'reviews.csv'}", model=model, epochs=6,
                       out=str(folder / model), verbose=False,
                       overrides=common + extra)  # fmt: skip
    return {"mlp": folder / "mlp", "textcnn": folder / "textcnn", "ngram": folder / "ngram"}


def test_text_integrated_gradients_add_up_and_point_at_the_telling_word(runs) -> None:
    predictor = Predictor.load(runs["textcnn"])
    assert methods_for(predictor) == ("integrated-gradients", "occlusion")
    result = neuralab.explain(runs["textcnn"], texts=["the superb film"],
                              method="integrated-gradients")  # fmt: skip
    item = result.items[0]
    assert item.words == ["the", "superb", "film"] and item.predicted == "pos"
    assert max(range(3), key=lambda i: item.weights[i]) == 1
    ids = torch.tensor(predictor.modality.tokenizer.encode(["the superb film"]))
    with torch.no_grad():
        logits = predictor.model.eval()(ids)[0] - predictor.model(torch.zeros_like(ids))[0]
    target = predictor.classes.index("pos")
    assert sum(item.weights) == pytest.approx(float(logits[target]), abs=2e-2)


def test_ngram_runs_explain_by_occlusion_and_refuse_integrated_gradients(runs) -> None:
    result = neuralab.explain(runs["ngram"], texts=["a dull film"])
    assert result.method == "occlusion" and result.items[0].predicted == "neg"
    weights = dict(zip(result.items[0].words, result.items[0].weights, strict=True))
    assert weights["dull"] == max(weights.values()) > 0
    with pytest.raises(AttributionError, match="needs a token embedding .* takes: occlusion"):
        neuralab.explain(runs["ngram"], texts=["a dull film"], method="integrated-gradients")


def test_wrong_inputs_and_targets_get_one_clear_line(runs) -> None:
    with pytest.raises(AttributionError, match="this run classifies texts: pass --text"):
        explain(runs["ngram"], [torch.zeros(1, 8, 8, dtype=torch.uint8)])
    with pytest.raises(AttributionError, match="this run classifies images"):
        explain(runs["mlp"], texts=["hello"])
    with pytest.raises(AttributionError, match=r"unknown method 'lime'; image runs take"):
        explain(runs["mlp"], [torch.zeros(1, 8, 8, dtype=torch.uint8)], method="lime")
    with pytest.raises(AttributionError, match="did you mean pos"):
        explain(runs["ngram"], texts=["a film"], target="poss")


def test_cli_explain_writes_overlays_and_scores_faithfulness(runs, tmp_path, capsys) -> None:
    from PIL import Image

    image = tmp_path / "digit.png"
    Image.fromarray(torch.randint(0, 255, (8, 8), dtype=torch.uint8).numpy()).save(image)
    code = cli.main(["explain", str(runs["mlp"]), str(image), "--method", "integrated-gradients",
                     "--target", "3", "--out", str(tmp_path / "out")])  # fmt: skip
    assert code == 0 and "explaining 3" in capsys.readouterr().out
    summary = json.loads((tmp_path / "out" / "explanations.json").read_text())
    assert summary["inputs"][0]["target"] == "3" and summary["inputs"][0]["map"]["shape"] == [8, 8]
    overlay = Image.open(tmp_path / "out" / "000-digit.png")
    assert overlay.size[0] > 3 * overlay.size[1] - 50  # three panels side by side
    assert cli.main(["explain", str(runs["mlp"]), "--test", "40", "--method", "saliency",
                     "--metric", "deletion", "--json"]) == 0  # fmt: skip
    found = json.loads(capsys.readouterr().out)
    assert found["count"] == 40 and found["auc"] < found["random_auc"]
    assert cli.main(["explain", str(runs["mlp"]), str(image), "--method", "grad-cam"]) == 2
    assert "grad-cam needs a convolutional layer" in capsys.readouterr().err


def test_text_deletion_scores_against_random(runs) -> None:
    found = faithfulness(runs["ngram"], method="occlusion", metric="deletion", count=30)
    assert found["count"] == 30 and found["auc"] < found["random_auc"]
    both = faithfulness(runs["ngram"], method="occlusion", metric=["deletion", "insertion"],
                        count=30)["metrics"]  # fmt: skip
    assert both["deletion"]["auc"] == found["auc"] and both["insertion"]["metric"] == "insertion"
    with pytest.raises(AttributionError, match="--metric sanity is for image runs"):
        faithfulness(runs["ngram"], method="occlusion", metric="sanity", count=5)


def test_few_shot_runs_are_refused_by_explain_and_attacks() -> None:
    from types import SimpleNamespace

    from neuralab.adversarial.attacks import AttackError
    from neuralab.adversarial.robust import pixel_classifier
    from neuralab.attribution.explain import refuse_few_shot

    run = SimpleNamespace(task=SimpleNamespace(episodic=True),
                          meta=SimpleNamespace(task=SimpleNamespace(name="protonet")))  # fmt: skip
    with pytest.raises(AttributionError, match="protonet runs classify by example"):
        refuse_few_shot(run)
    with pytest.raises(AttackError, match="protonet runs classify by example"):
        pixel_classifier(run)
