"""An explanation's files: what a person looks at, and what a program reads.

    <out>/<name>.png            input | heat map | overlay, side by side (images)
    <out>/explanations.html     every input on one page: overlays, or coloured words (texts)
    <out>/explanations.json     the summary (Explanation.to_dict)
    <out>/attributions.npz      the raw maps, one (H, W) array per input (images)

Heat maps use matplotlib's perceptual `inferno` colours for magnitudes and a diverging
blue–red map for signed methods (red: evidence for the target, blue: against); each map is
scaled to its own largest |value|. Small images are enlarged with nearest-neighbour pixels so
a 28 × 28 digit stays readable.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from pathlib import Path

import numpy as np
import torch

from neuralab.checkpoint.format import write_text_atomic
from neuralab.inference.plots import PLOTS_EXTRA, have_matplotlib

PANEL = 224  # pixels per side of each panel in an overlay PNG
OVERLAY_OPACITY = 0.85  # the overlay's opacity where the attribution is strongest
SIGNED = ("integrated-gradients", "occlusion")  # methods whose maps have a meaningful sign


def colour_map(heatmap: torch.Tensor, signed: bool) -> np.ndarray:
    """(H, W) attributions → (H, W, 3) uint8 colours, scaled by the map's max |value|."""
    from matplotlib import colormaps

    values = heatmap.float()
    scale = float(values.abs().max()) or 1.0
    if signed:
        unit = (values / scale + 1) / 2  # -max..max → 0..1, 0.5 is no evidence
        colours = colormaps["RdBu_r"](unit.numpy())
    else:
        colours = colormaps["inferno"]((values.clamp_min(0) / scale).numpy())
    return (colours[..., :3] * 255).astype(np.uint8)


def as_rgb(pixels: torch.Tensor) -> np.ndarray:
    """(C, H, W) floats in [0, 1] → (H, W, 3) uint8."""
    image = (pixels.clamp(0, 1) * 255).round().to(torch.uint8)
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    return image.permute(1, 2, 0).numpy()


def overlay_png(pixels: torch.Tensor, heatmap: torch.Tensor, signed: bool) -> bytes:
    """input | heat map | overlay (the heat map's colours over the input, opaque where the
    attribution is strong and clear where it is zero), as PNG bytes."""
    from PIL import Image

    image = as_rgb(pixels)
    heat = colour_map(heatmap, signed)
    strength = (heatmap.abs() / (heatmap.abs().max() or 1.0)).numpy()[..., None]  # (H, W, 1)
    alpha = OVERLAY_OPACITY * np.sqrt(strength)  # sqrt: weak evidence stays visible
    blended = ((1 - alpha) * image + alpha * heat).astype(np.uint8)
    panels = [
        Image.fromarray(p).resize((PANEL, PANEL), Image.NEAREST) for p in (image, heat, blended)
    ]
    sheet = Image.new("RGB", (3 * PANEL + 16, PANEL), "white")
    for index, panel in enumerate(panels):
        sheet.paste(panel, (index * (PANEL + 8), 0))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()


def file_stem(name: str, index: int) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(name).stem).strip("-")[:60]
    return f"{index:03d}-{stem or 'input'}"


def write_explanation(folder: Path, explanation) -> list[str]:
    """Write an `Explanation`'s files into `folder`; returns their paths."""
    if not have_matplotlib():
        raise ImportError(f"explanations are drawn with matplotlib: {PLOTS_EXTRA}")
    folder.mkdir(parents=True, exist_ok=True)
    written, blocks = [], []
    signed = explanation.method in SIGNED
    maps = {}
    for index, item in enumerate(explanation.items):
        if item.heatmap is None:
            blocks.append(text_block(item))
            continue
        png = overlay_png(item.pixels, item.heatmap, signed)
        path = folder / f"{file_stem(item.name, index)}.png"
        path.write_bytes(png)
        written.append(str(path))
        maps[path.stem] = item.heatmap.numpy()
        blocks.append(image_block(item, png))
    if maps:
        np.savez_compressed(folder / "attributions.npz", **maps)
        written.append(str(folder / "attributions.npz"))
    summary = {**explanation.to_dict(), "files": written}
    write_text_atomic(folder / "explanations.json", json.dumps(summary, indent=2))
    write_text_atomic(folder / "explanations.html", page(explanation, blocks))
    return [*written, str(folder / "explanations.json"), str(folder / "explanations.html")]


def caption(item) -> str:
    answer = f"predicted <b>{html.escape(item.predicted)}</b> ({item.probability:.1%})"
    if item.target != item.predicted:
        answer += f"; explaining <b>{html.escape(item.target)}</b> ({item.target_probability:.1%})"
    return f"<p>{html.escape(item.name)}: {answer}</p>"


def image_block(item, png: bytes) -> str:
    data = base64.b64encode(png).decode()
    return (f'<figure>{caption(item)}<img src="data:image/png;base64,{data}" '
            f'alt="input, heat map and overlay of {html.escape(item.name)}"></figure>')  # fmt: skip


def text_block(item) -> str:
    """The words coloured by weight: red for the target, blue against, scaled per text."""
    scale = max((abs(w) for w in item.weights), default=0.0) or 1.0
    spans = []
    for word, weight, cut in zip(item.words, item.weights, item.truncated, strict=True):
        strength = min(1.0, abs(weight) / scale)
        colour = (
            f"rgba(220,40,40,{strength:.2f})" if weight > 0 else f"rgba(40,90,220,{strength:.2f})"
        )
        title = "past the run's truncation: not seen" if cut else f"{weight:+.4f}"
        spans.append(
            f'<span style="background:{colour}" title="{title}">{html.escape(word)}</span>'
        )
    return f'<figure>{caption(item)}<p class="words">{" ".join(spans)}</p></figure>'


def page(explanation, blocks: list[str]) -> str:
    """One self-contained HTML page."""
    legend = (
        "red: evidence for the explained class, blue: against"
        if explanation.method in SIGNED or explanation.kind == "text"
        else "bright: most important"
    )
    title = html.escape(f"neuralab explain: {Path(explanation.run).name}")
    panels = "Panels: input | heat map | overlay. " if explanation.kind == "image" else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font:15px system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em}}
figure{{margin:1.5em 0}} img{{max-width:100%;image-rendering:pixelated}}
.words span{{padding:1px 2px;border-radius:3px;line-height:1.9}}</style></head>
<body><h1>{html.escape(explanation.method)}: {html.escape(Path(explanation.run).name)}</h1>
<p>{html.escape(explanation.view)}. {panels}{legend}.</p>
{"".join(blocks)}
</body></html>
"""
