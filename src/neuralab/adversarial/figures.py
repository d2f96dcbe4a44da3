"""Figures of a robustness evaluation (matplotlib, headless; imported lazily).

curve.png        accuracy against eps, the clean point (eps 0) included
examples.png     adversarial images at the largest eps, titled true → predicted
robustness.json  the report itself
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from neuralab.checkpoint.format import write_text_atomic
from neuralab.inference.plots import PLOTS_EXTRA, have_matplotlib, new_figure, robustness_figure


def write_robustness(
    folder: Path, report: dict, images: torch.Tensor | None, predicted: list[str],
    truth: list[str],
) -> list[str]:  # fmt: skip
    """Write the report and its figures into `folder`; returns the files written."""
    if not have_matplotlib():
        raise ImportError(f"the robustness figures are drawn with matplotlib: {PLOTS_EXTRA}")
    folder.mkdir(parents=True, exist_ok=True)
    written = [robustness_figure(report, folder / "curve.png")]
    if images is not None and len(images):
        eps = report["points"][-1]["eps"]
        written.append(examples_figure(images, predicted, truth, eps, folder / "examples.png"))
    path = folder / "robustness.json"
    write_text_atomic(path, json.dumps(report, indent=2))
    return [str(p) for p in [*written, path]]


def examples_figure(
    images: torch.Tensor, predicted: list[str], truth: list[str], eps: float, path: Path
) -> Path:
    """Adversarial images (N, C, H, W) in [0, 1], each titled `true → predicted` (red when
    the attack changed the answer)."""
    count = len(images)
    columns = min(8, count)
    rows = (count + columns - 1) // columns
    figure = new_figure(1.3 * columns, 1.5 * rows + 0.3)
    figure.suptitle(f"adversarial examples, eps {eps:.4g}")
    axes = figure.subplots(rows, columns, squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index >= count:
            continue
        image = images[index].clamp(0, 1)
        if image.shape[0] == 1:
            axis.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1)
        else:
            axis.imshow(image.permute(1, 2, 0).numpy())
        wrong = predicted[index] != truth[index]
        axis.set_title(f"{truth[index]} → {predicted[index]}"[:18], fontsize=8,
                       color="tab:red" if wrong else "black")  # fmt: skip
    figure.savefig(path)
    return path
