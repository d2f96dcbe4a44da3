"""`neuralab explain RUN ...`: attributions for a saved run's inputs, and faithfulness scores.

    explain(run, ["seven.png"], method="integrated-gradients")    → an Explanation
    explain(run, texts=["a dull, lifeless film"])                 → per-word weights
    faithfulness(run, method="grad-cam", metric="deletion")       → AUC vs a random order

The target is the predicted class (with the run's test-time augmentation) unless `target`
names a class. Inputs are prepared exactly as `predict` prepares them (the run's modality).
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from neuralab.attribution import faithfulness as faith
from neuralab.attribution import texts as text_methods
from neuralab.attribution.images import (
    IMAGE_METHODS,
    AttributionError,
    attribute_images,
    conv_layers,
)
from neuralab.inference.fewshot import is_few_shot
from neuralab.inference.predict import Predictor, test_subset
from neuralab.models.tta import pixel_forward


@dataclass
class Explained:
    """One input's explanation: the class explained, the model's answer, and the map (images,
    (H, W) with the pixels (C, H, W) in [0, 1]) or the per-word weights (texts)."""

    name: str
    target: str
    predicted: str
    probability: float  # of the predicted class
    target_probability: float
    heatmap: torch.Tensor | None = None
    pixels: torch.Tensor | None = None
    words: list[str] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    truncated: list[bool] = field(default_factory=list)

    def to_dict(self) -> dict:
        """A JSON summary: the answer and, for images, the map's range and strongest pixels
        (the raw maps go to attributions.npz); for texts, every word's weight."""
        found = {"input": self.name, "target": self.target, "predicted": self.predicted,
                 "probability": round(self.probability, 6),
                 "target_probability": round(self.target_probability, 6)}  # fmt: skip
        if self.heatmap is not None:
            flat = self.heatmap.flatten()
            top = flat.abs().topk(min(10, len(flat))).indices
            width = self.heatmap.shape[1]
            found["map"] = {
                "shape": list(self.heatmap.shape), "min": float(flat.min()),
                "max": float(flat.max()), "sum": float(flat.sum()),
                "top_pixels": [[int(i) // width, int(i) % width, round(float(flat[i]), 6)]
                               for i in top],  # [row, column, value]
            }  # fmt: skip
        else:
            found["words"] = [
                {"word": w, "weight": round(v, 6), **({"truncated": True} if t else {})}
                for w, v, t in zip(self.words, self.weights, self.truncated, strict=True)
            ]
        return found


@dataclass
class Explanation:
    """What `explain` returns: the method, how the model was run, each input's result, and
    the files written (with `out`)."""

    run: str
    method: str
    kind: str
    view: str
    items: list[Explained]
    seconds: float
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"run": self.run, "method": self.method, "kind": self.kind, "view": self.view,
                "seconds": round(self.seconds, 3), "inputs": [i.to_dict() for i in self.items],
                "files": self.files}  # fmt: skip


def refuse_few_shot(predictor: Predictor) -> None:
    """Few-shot runs answer by comparing with support examples, not with class logits."""
    if is_few_shot(predictor):
        raise AttributionError(
            f"{predictor.meta.task.name} runs classify by example (no fixed classes to "
            "explain); explain a classifier run"
        )
    if predictor.heads:
        raise AttributionError(
            f"this run learned several label fields ({', '.join(h.name for h in predictor.heads)}"
            "); attributions explain the classes of one label. Explain a run trained on one "
            "label field"
        )


def methods_for(predictor: Predictor) -> tuple[str, ...]:
    """The methods that fit this run's model, its default first."""
    if predictor.modality.kind == "text":
        try:
            text_methods.token_embedding(predictor.model, predictor.modality.tokenizer.vocab_size)
        except AttributionError:
            return ("occlusion",)
        return ("integrated-gradients", "occlusion")
    spec = predictor.meta.spec
    example = torch.zeros(1, spec["channels"], spec["height"], spec["width"])
    if conv_layers(predictor.model.eval(), example.to(predictor.device)):
        return ("grad-cam", *(m for m in IMAGE_METHODS if m != "grad-cam"))
    return tuple(m for m in IMAGE_METHODS if m != "grad-cam")


def check_method(predictor: Predictor, method: str | None) -> str:
    """`method`, or the run's default, checked against what fits the model."""
    fitting = methods_for(predictor)
    if method is None:
        return fitting[0]
    every = IMAGE_METHODS if predictor.modality.kind == "image" else text_methods.TEXT_METHODS
    if method not in every:
        raise AttributionError(f"unknown method {method!r}; {predictor.modality.kind} runs "
                               f"take: {', '.join(every)}")  # fmt: skip
    if method not in fitting:
        model = type(predictor.model).__name__
        if method == "grad-cam":
            reason = f"grad-cam needs a convolutional layer and {model} has none"
        else:
            reason = f"{method} needs a token embedding table and {model} has none"
        raise AttributionError(f"{reason}; this run takes: {', '.join(fitting)}")
    return method


def target_index(predictor: Predictor, target: str | int | None) -> int | None:
    """A class name or index → its index (None: explain each input's predicted class)."""
    if target is None:
        return None
    classes = predictor.classes
    if str(target) in classes:
        return classes.index(str(target))
    if isinstance(target, int) or str(target).isdigit():
        index = int(target)
        if 0 <= index < len(classes):
            return index
    close = difflib.get_close_matches(str(target), classes, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise AttributionError(f"--target {target!r} is not a class of this run{hint}; its "
                           f"classes: {', '.join(classes[:20])}")  # fmt: skip


def explain(
    run_dir: str | Path | Predictor,
    inputs: Sequence | None = None,
    *,
    texts: Sequence[str] | None = None,
    method: str | None = None,
    target: str | int | None = None,
    layer: str | None = None,
    seed: int = 0,
    out: str | Path | None = None,
) -> Explanation:
    """Attributions for image inputs (files, PIL images, arrays) or texts of a saved run.

    Args:
        method: image runs: saliency, smoothgrad, integrated-gradients, grad-cam, occlusion;
            text runs: integrated-gradients (token embeddings), occlusion. None: the first
            that fits (grad-cam for conv nets, integrated-gradients for embedding text models).
        target: a class (name or index) to explain instead of each input's prediction.
        layer: Grad-CAM's layer (a module name), instead of the last convolution.
        out: a folder for overlay PNGs (input | heat map | overlay), explanations.html,
            explanations.json and attributions.npz (images) — see attribution/render.py.

    Example:
        >>> neuralab.explain("runs/mnist-best", ["seven.png"], method="grad-cam").items[0].target
        '7'
    """
    predictor = run_dir if isinstance(run_dir, Predictor) else Predictor.load(run_dir)
    refuse_few_shot(predictor)
    kind = predictor.modality.kind
    given = texts if texts is not None else inputs
    if not given:
        raise AttributionError("nothing to explain: pass image files or --text")
    if kind == "image" and texts is not None:
        raise AttributionError("this run classifies images: pass image files, not --text")
    if kind == "text" and any(not isinstance(item, str) for item in given):
        raise AttributionError('this run classifies texts: pass --text "...", not image files')
    method = check_method(predictor, method)
    wanted = target_index(predictor, target)
    started = time.perf_counter()
    if kind == "image":
        items, view = explain_images(predictor, list(given), method, wanted, layer, seed)
    else:
        items, view = explain_texts(predictor, list(given), method, wanted), "the text as tokenized"
    name = predictor.meta.dataset if isinstance(run_dir, Predictor) else str(run_dir)
    result = Explanation(name, method, kind, view, items, time.perf_counter() - started)
    if out is not None:
        from neuralab.attribution import render

        result.files = render.write_explanation(Path(out), result)
    return result


def input_name(item, index: int) -> str:
    return str(item) if isinstance(item, (str, Path)) else f"input {index}"


def explain_images(predictor, given: list, method, wanted, layer, seed) -> tuple[list, str]:
    """Maps for image inputs; returns the items and how the model was run."""
    prepared = predictor.modality.prepare_all(given)  # uint8 (C, H, W) each
    probabilities = predictor.probabilities(prepared)
    predicted = probabilities.argmax(1)
    targets = predicted if wanted is None else torch.full_like(predicted, wanted)
    pixels = torch.stack(prepared).float().div(255.0).to(predictor.device)
    modality, tta = predictor.modality, predictor.task.tta
    maps = attribute_images(
        predictor.model, pixels, targets.to(predictor.device), method,
        mean=modality.mean, std=modality.std, tta=tta, layer=layer, seed=seed,
    ).cpu()  # fmt: skip
    view = "plain view" if method == "grad-cam" or tta == "off" else f"test-time augmentation {tta}"
    classes = predictor.classes
    items = [
        Explained(
            input_name(item, i),
            classes[int(targets[i])],
            classes[int(predicted[i])],
            float(probabilities[i, predicted[i]]),
            float(probabilities[i, targets[i]]),
            heatmap=maps[i],
            pixels=pixels[i].cpu(),
        )  # fmt: skip
        for i, item in enumerate(given)
    ]
    return items, f"pixels in [0, 1], the run's normalisation inside, eval mode, {view}"


def shortened(text: str, limit: int = 60) -> str:
    """A text's name in listings: itself, or its first `limit` - 1 characters and '…'."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def explain_texts(predictor, given: list[str], method: str, wanted) -> list[Explained]:
    """Per-word weights for texts."""
    probabilities = predictor.probabilities(given)
    predicted = probabilities.argmax(1).tolist()
    classes, items = predictor.classes, []
    for index, text in enumerate(given):
        target = predicted[index] if wanted is None else wanted
        if method == "occlusion":
            found = text_methods.occlusion(predictor.probabilities, text, target)
        else:
            found = text_methods.integrated_gradients(
                predictor.model.eval(), predictor.modality.tokenizer, text, target
            )
        items.append(Explained(
            shortened(text), classes[target], classes[predicted[index]],
            float(probabilities[index, predicted[index]]), float(probabilities[index, target]),
            words=found.words, weights=found.weights, truncated=found.truncated,
        ))  # fmt: skip
    return items


def faithfulness(
    run_dir: str | Path,
    *,
    method: str | None = None,
    metric: str | Sequence[str] = "deletion",
    count: int = 500,
    layer: str | None = None,
    seed: int = 0,
    data: str | None = None,
    data_dir: str | None = None,
) -> dict:
    """Score a method on `count` test examples: deletion or insertion AUC against a random
    order, or the model-randomisation sanity check (see faithfulness.py).

    `metric` may be a list: the maps are then computed once, and the result holds one entry
    per metric under "metrics" (what benchmarks/explain.py uses).

    Example:
        >>> neuralab.attribution.explain.faithfulness("runs/cifar10-best", method="grad-cam")
    """
    wanted = [metric] if isinstance(metric, str) else list(metric)
    for name in wanted:
        if name not in faith.METRICS:
            raise AttributionError(f"unknown metric {name!r}; valid: {', '.join(faith.METRICS)}")
    predictor = Predictor.load(run_dir)
    refuse_few_shot(predictor)
    method = check_method(predictor, method)
    split, index, dataset = test_subset(predictor, count, None, data, data_dir)
    started = time.perf_counter()
    if predictor.modality.kind == "image":
        found = image_faithfulness(predictor, split, index, dataset, method, wanted, layer, seed)
    else:
        texts = [split.texts[i] for i in index]
        found = text_faithfulness(predictor, texts, method, wanted, seed)
    head = {"dataset": dataset, "count": len(index), "method": method}
    seconds = {"seconds": round(time.perf_counter() - started, 2)}
    if isinstance(metric, str):
        return {**head, **found[metric], **seconds}
    return {**head, "metrics": found, **seconds}


def image_faithfulness(predictor, split, index, dataset, method, metrics, layer, seed) -> dict:
    """{metric: result} for deletion / insertion / sanity on test images, from one set of
    maps (and, for sanity, the randomised model's)."""
    images = predictor.modality.split_examples(split, index, dataset)
    pixels = images.float().div(255.0).to(predictor.device)
    modality, tta, model = predictor.modality, predictor.task.tta, predictor.model.eval()
    run = pixel_forward(model, modality.mean, modality.std, tta)
    targets = batched_logits(run, pixels).argmax(1)
    settings = dict(mean=modality.mean, std=modality.std, tta=tta, layer=layer, seed=seed)
    maps = attribute_images(model, pixels, targets, method, **settings)
    found = {}
    if "sanity" in metrics:
        found["sanity"] = image_sanity(model, pixels, targets, method, maps, settings)

    def probability_of(degraded: torch.Tensor) -> torch.Tensor:
        return batched_logits(run, degraded).softmax(1).gather(1, targets.view(-1, 1))[:, 0]

    baseline = torch.tensor(modality.mean, device=pixels.device).view(1, -1, 1, 1)
    generator = torch.Generator().manual_seed(seed)
    area = pixels.shape[-2] * pixels.shape[-1]
    shuffled = torch.stack([torch.randperm(area, generator=generator) for _ in range(len(pixels))])
    ordered = faith.pixel_orders(maps).to(pixels.device)
    for metric in (m for m in metrics if m != "sanity"):
        insertion = metric == "insertion"
        curves = faith.image_curves(probability_of, pixels, ordered, baseline, insertion)
        chance = faith.image_curves(probability_of, pixels, shuffled.to(pixels.device), baseline,
                                    insertion)  # fmt: skip
        found[metric] = faith.summary(curves.cpu(), chance.cpu(), metric)
    return found


def image_sanity(model, pixels, targets, method, maps, settings) -> dict:
    """Adebayo et al.'s check: the same method on a copy with every layer re-initialised;
    for magnitudes (saliency, SmoothGrad) the signed gradients are compared too."""
    randomised = faith.randomised_copy(model, settings["seed"])
    found = faith.sanity(maps, attribute_images(randomised, pixels, targets, method, **settings))
    if method in ("saliency", "smoothgrad"):
        pair = [attribute_images(net, pixels, targets, method, signed=True, **settings)
                for net in (model, randomised)]  # fmt: skip
        found["rank_correlation_signed"] = faith.sanity(*pair)["rank_correlation_signed"]
    return found


@torch.no_grad()
def batched_logits(run, pixels: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """`run`'s logits (N, classes) for pixels (N, C, H, W), `batch` images at a time."""
    return torch.cat([run(pixels[start : start + batch]) for start in range(0, len(pixels), batch)])


def text_faithfulness(predictor, given: list[str], method, metrics, seed) -> dict:
    """{metric: result} for deletion / insertion on test texts (words removed or inserted in
    weight order)."""
    if "sanity" in metrics:
        raise AttributionError("--metric sanity is for image runs; text runs take deletion "
                               "or insertion")  # fmt: skip
    explained = explain_texts(predictor, given, method, None)
    targets = [predictor.classes.index(item.target) for item in explained]
    words = [item.words for item in explained]
    orders = [sorted(range(len(w)), key=lambda i, v=item.weights: -v[i])
              for w, item in zip(words, explained, strict=True)]  # fmt: skip
    generator = torch.Generator().manual_seed(seed)
    shuffled = [torch.randperm(len(w), generator=generator).tolist() for w in words]

    def probability_of(texts: list[str], owners: list[int]) -> torch.Tensor:
        probabilities = predictor.probabilities(texts)
        return probabilities.gather(1, torch.tensor(owners).view(-1, 1))[:, 0]

    found = {}
    for metric in metrics:
        insertion = metric == "insertion"
        curves = faith.word_curves(probability_of, words, orders, targets, insertion)
        chance = faith.word_curves(probability_of, words, shuffled, targets, insertion)
        found[metric] = faith.summary(curves, chance, metric)
    return found
