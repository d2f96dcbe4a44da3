"""What `POST /explain` computes: which methods fit the served model, and heat maps as PNGs.

The attributions themselves are the library's (`neuralab.attribution.images` and `.texts`,
through Captum); this module picks the methods a model takes, runs an image's attribution
next to its prediction, and renders a map as a colour PNG the page can draw.

    image models   grad-cam (default when the model has a convolution with a spatial map),
                   saliency (default otherwise), smoothgrad, integrated-gradients, occlusion
    text models    occlusion (default, any model; needs no Captum) and integrated-gradients
                   (models with a token embedding table)
"""

from __future__ import annotations

import base64
import functools
import importlib.util
import io

import numpy as np
import torch
from PIL import Image

from neuralab.attribution import texts
from neuralab.attribution.explain import methods_for as fitting_methods
from neuralab.attribution.images import (
    attribute_images,
)
from neuralab.inference.predict import Predictor
from neuralab.serve.payloads import PayloadError, clean_texts, json_items

EXPLAIN_EXTRA = "pip install 'neuralab[explain]'"
TEXT_DEFAULT = "occlusion"  # works for every text model, n-gram ones included, without Captum
# Inferno (matplotlib's perceptually uniform map) sampled at 0, 1/8, ..., 1: the fallback
# colour table when matplotlib is not installed (it is an optional dependency).
INFERNO_STOPS = (
    (0, 0, 4), (33, 12, 74), (87, 16, 110), (138, 34, 106), (188, 55, 84),
    (228, 90, 49), (249, 142, 9), (249, 203, 53), (252, 255, 164),
)  # fmt: skip


class ExplainUnavailable(Exception):
    """An explanation needs a package that is not installed: 501 with the fix."""


def captum_missing() -> str | None:
    """Why Captum-based explanations cannot run here (None when Captum is importable)."""
    if importlib.util.find_spec("captum") is None:
        return f"heat maps and integrated gradients need Captum: {EXPLAIN_EXTRA}"
    return None


def methods_for(predictor: Predictor) -> tuple[str, ...]:
    """The methods `/explain` takes for this model (the library's), its default first: for
    text, occlusion (fast, and it needs no Captum) rather than the library's default."""
    methods = fitting_methods(predictor)
    if predictor.modality.kind == "text":
        return (TEXT_DEFAULT, *(method for method in methods if method != TEXT_DEFAULT))
    return methods


def needs_captum(kind: str, method: str) -> bool:
    """True for every method but text occlusion (it only runs the model on shorter texts)."""
    return not (kind == "text" and method == TEXT_DEFAULT)


def text_to_explain(payload: dict, default: str, max_words: int) -> tuple[str, str]:
    """The (text, method) of a text /explain payload `{"text": ..., "method": ...}`."""
    method = payload.pop("method", default)
    if method not in texts.TEXT_METHODS:
        raise PayloadError(f"unknown method {method!r}; text models take: "
                           f"{', '.join(texts.TEXT_METHODS)}")  # fmt: skip
    if set(payload) != {"text"}:
        found = sorted(payload)
        raise PayloadError(f'/explain takes one text: send {{"text": "..."}}, got {found}')
    field, values = json_items(payload, True, 1)
    text = clean_texts(values, field)[0]
    words = len(text.split())
    if words > max_words:
        raise PayloadError(
            f"{words} words is more than /explain takes ({max_words}: the text and one "
            "variant per word must fit --max-queue); explain a shorter passage"
        )
    return text, method


def explain_image(
    predictor: Predictor, image: torch.Tensor, method: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The probabilities (classes,) of one prepared uint8 image (C, H, W) and the attribution
    map (H, W) of its predicted class. Call it where nothing else runs the model."""
    with torch.inference_mode():
        probabilities = predictor.probabilities([image])[0]  # (classes,)
    target = probabilities.argmax().view(1)  # (1,)
    pixels = image.unsqueeze(0).to(predictor.device).float() / 255  # (1, C, H, W) in [0, 1]
    pixels.requires_grad_()  # what gradient methods differentiate (Captum warns otherwise)
    found = attribute_images(
        predictor.model, pixels, target.to(predictor.device), method,
        mean=predictor.modality.mean, std=predictor.modality.std,
        tta=getattr(predictor.task, "tta", "off"),
    )  # fmt: skip
    return probabilities, found[0].float().cpu()  # (H, W)


def explain_text_gradients(predictor: Predictor, text: str, target: int) -> texts.WordWeights:
    """Integrated gradients of `target` on one text's token embeddings, per word."""
    return texts.integrated_gradients(predictor.model, predictor.modality.tokenizer, text, target)


@functools.cache
def colour_table() -> np.ndarray:
    """uint8 (256, 3): matplotlib's inferno if matplotlib is importable, else its stops
    interpolated linearly (close to it to a few levels per channel)."""
    try:
        import matplotlib
    except ImportError:
        stops = np.array(INFERNO_STOPS, dtype=np.float64)  # (9, 3)
        where = np.linspace(0, len(stops) - 1, 256)
        table = [np.interp(where, np.arange(len(stops)), stops[:, c]) for c in range(3)]
        return np.stack(table, axis=1).round().astype(np.uint8)
    rgba = matplotlib.colormaps["inferno"](np.linspace(0, 1, 256))  # (256, 4) in [0, 1]
    return (rgba[:, :3] * 255).round().astype(np.uint8)


def heatmap_png(values: torch.Tensor) -> str:
    """A map (H, W) as a PNG data URL: |value| / max |value| through the colour table
    (signed maps show strength, not sign; the raw values go out beside it)."""
    magnitude = values.abs().double().numpy()  # (H, W)
    largest = magnitude.max()
    scaled = magnitude / largest if largest > 0 else magnitude  # a flat map stays dark
    rgb = colour_table()[(scaled * 255).round().astype(np.intp)]  # (H, W, 3)
    buffer = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def map_json(method: str, values: torch.Tensor) -> dict:
    """The heat map part of an image's /explain answer."""
    return {
        "method": method,
        "size": list(values.shape),
        "heatmap": heatmap_png(values),
        "values": values.double().round(decimals=4).tolist(),
    }
