"""Figures and the HTML report of a run (matplotlib, headless; imported lazily).

    <run>/curves.png      loss and accuracy per epoch (train and validation), learning rate
    <run>/confusion.png   the test confusion matrix (rows: true class), by `neuralab report`
    <run>/worst.png       the worst-predicted test images (image runs), by `neuralab report`
    <run>/robustness.png  accuracy against eps, when `neuralab evaluate --attack` swept eps
    <run>/report.html     one self-contained page: config, curves, metrics, figures

matplotlib is an optional dependency (`pip install 'neuralab[plots]'`); without it the run
says so and writes no figure.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import torch

PLOTS_EXTRA = "pip install 'neuralab[plots]' (matplotlib)"
DPI = 110  # figure resolution: crisp on screens, small files


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def new_figure(width: float, height: float) -> Any:
    """A figure drawn by the Agg backend only: no display, no global pyplot state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def history_figure(history: list[dict], path: Path) -> Path:
    """Loss, accuracy (train and, when present, validation and adversarial training's PGD
    check) and learning rate per epoch. A run whose labels are all regressions shows its
    first head's MAE instead of accuracy."""
    figure = new_figure(11, 3.2)
    epochs = [row["epoch"] for row in history]
    panels = figure.subplots(1, 3)
    second = "accuracy"
    if "train_accuracy" not in history[0]:
        second = next(k for k in history[0] if k.startswith("train_") and k.endswith("_mae"))[6:]
    for axis, metric in zip(panels[:2], ("loss", second), strict=True):
        axis.plot(epochs, [row[f"train_{metric}"] for row in history], "o-", label="train")
        validation = [row.get(f"val_{metric}") for row in history]
        if any(v is not None for v in validation):
            axis.plot(epochs, validation, "s-", label="validation")
        robust = [row.get("pgd_accuracy") for row in history]  # adversarial training's check
        if metric == "accuracy" and any(v is not None for v in robust):
            axis.plot(epochs, robust, "^-", label="PGD (check set)")
        axis.set(title=metric, xlabel="epoch")
        axis.grid(alpha=0.3)
        axis.legend()
    panels[2].plot(epochs, [row["lr"] for row in history], "o-", color="tab:green")
    panels[2].set(title="learning rate (last step of each epoch)", xlabel="epoch")
    panels[2].grid(alpha=0.3)
    figure.savefig(path)
    return path


def confusion_figure(report: dict, path: Path) -> Path:
    """The confusion matrix, each row normalised by its class's support, counts written in."""
    classes = list(report["per_class"])
    matrix = torch.tensor(report["confusion_matrix"], dtype=torch.float64)
    share = matrix / matrix.sum(1, keepdim=True).clamp_min(1)
    size = min(12.0, 2.5 + 0.45 * len(classes))
    figure = new_figure(size, size * 0.85)
    axis = figure.subplots()
    image = axis.imshow(share.numpy(), cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axis, label="share of the true class")
    ticks = range(len(classes))
    axis.set_xticks(ticks, classes, rotation=45 if len(classes) > 6 else 0, ha="right")
    axis.set_yticks(ticks, classes)
    axis.set(xlabel="predicted", ylabel="true", title=f"confusion ({report['count']} examples)")
    if len(classes) <= 20:  # counts stay legible
        for i in ticks:
            for j in ticks:
                color = "white" if share[i, j] > 0.5 else "black"
                axis.text(j, i, int(matrix[i, j]), ha="center", va="center", color=color)
    figure.savefig(path)
    return path


def worst_images_figure(images: torch.Tensor, worst: list[dict], path: Path) -> Path:
    """The worst-predicted test images: uint8 (N, C, H, W) of the split, report's `worst`."""
    columns = 4
    rows = max(1, -(-len(worst) // columns))
    figure = new_figure(2.2 * columns, 2.4 * rows)
    axes = figure.subplots(rows, columns, squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, example in zip(axes.flat, worst, strict=False):
        image = images[example["index"]]
        shown = image[0] if image.shape[0] == 1 else image.permute(1, 2, 0)
        axis.imshow(shown.numpy(), cmap="gray" if image.shape[0] == 1 else None)
        axis.set_title(
            f"true {example['true']}\npredicted {example['predicted']} "
            f"({example['probability']:.0%})",
            fontsize=8,
        )
    figure.savefig(path)
    return path


def robustness_figure(report: dict, path: Path) -> Path:
    """Accuracy (%) against eps; the clean accuracy is the point at eps 0."""
    figure = new_figure(5.2, 3.4)
    axis = figure.subplots()
    points = sorted(report["points"], key=lambda p: p["eps"])
    radii = [0.0] + [p["eps"] for p in points if p["eps"] > 0]
    accuracy = [report["clean_accuracy"]] + [p["accuracy"] for p in points if p["eps"] > 0]
    axis.plot(radii, [100 * a for a in accuracy], "o-")
    norm = "L∞" if report["norm"] == "linf" else "L2"
    axis.set(
        xlabel=f"eps ({norm}, pixel units)", ylabel="accuracy (%)", ylim=(0, 100),
        title=f"{report['dataset']}: {points[-1]['attack'].split(' ')[0]} on "
        f"{report['count']} test images",
    )  # fmt: skip
    axis.grid(alpha=0.3)
    figure.savefig(path)
    return path


def embedded(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def robustness_table(entries: dict) -> str:
    """`<run>/robustness.json` (what `neuralab evaluate --attack` recorded) as an HTML table."""
    rows = "".join(
        f"<tr><td>{html.escape(point['attack'])}</td><td>{entry['count']}</td>"
        f"<td>{entry['clean_accuracy']:.2%}</td><td>{point['accuracy']:.2%}</td></tr>"
        for entry in entries.values()
        for point in entry["points"]
    )
    return (
        "<h2>Robustness</h2><p>Accuracy under attack (`neuralab evaluate --attack`), eps in "
        "pixel units.</p><table><tr><th>attack</th><th>examples</th><th>clean</th>"
        f"<th>under attack</th></tr>{rows}</table>"
    )


def report_page(run_dir: Path, report: dict, figures: list[Path], texts: list[str]) -> str:
    """The self-contained HTML page of a run (figures embedded, no external files)."""
    escape = html.escape
    metrics = (
        json.loads((run_dir / "metrics.json").read_text())
        if (run_dir / "metrics.json").exists()
        else {}
    )
    config = (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").exists() else ""
    top = " · ".join(f"top-{k} {v:.2%}" for k, v in report["top_k_accuracy"].items())
    rows = "".join(
        f"<tr><td>{escape(name)}</td><td>{r['precision']:.4f}</td><td>{r['recall']:.4f}</td>"
        f"<td>{r['f1']:.4f}</td><td>{r['support']}</td></tr>"
        for name, r in report["per_class"].items()
    )
    worst = ""
    if texts:
        worst = "".join(
            f"<tr><td>{escape(w['true'])}</td><td>{escape(w['predicted'])} "
            f"({w['probability']:.0%})</td><td>{escape(text[:400])}</td></tr>"
            for w, text in zip(report["worst"], texts, strict=True)
        )
        worst = (
            "<h2>Worst-predicted test texts</h2><table><tr><th>true</th><th>predicted</th>"
            f"<th>text (first 400 characters)</th></tr>{worst}</table>"
        )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>neuralab run {escape(run_dir.name)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font:15px/1.45 system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.25rem .6rem;text-align:left}}
img{{max-width:100%}}pre{{background:#f6f6f6;padding:1rem;overflow:auto}}</style></head><body>
<h1>Run {escape(run_dir.name)}</h1>
<p>Dataset <b>{escape(report["dataset"])}</b>: test accuracy <b>{report["accuracy"]:.2%}</b>,
loss {report["loss"]:.4f}, {top}, macro F1 {report["macro"]["f1"]:.4f}
({report["count"]} examples). Training time: {metrics.get("train_seconds", "?")} s;
engine: {escape(str(metrics.get("engine", "?")))}.</p>
{"".join(f"<h2>{escape(p.stem)}</h2>{embedded(p)}" for p in figures)}
<h2>Per class</h2><table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th>
<th>support</th></tr>{rows}</table>
{worst}
{
        robustness_table(json.loads((run_dir / "robustness.json").read_text()))
        if (run_dir / "robustness.json").exists()
        else ""
    }
<h2>Configuration</h2><pre>{escape(config)}</pre>
</body></html>
"""


def few_shot_page(run_dir: Path, report: dict, figures: list[Path]) -> str:
    """The report page of a few-shot run: accuracy ± 95% interval per episode setting, Lake
    et al.'s runs when evaluated, the curves and the configuration."""
    escape = html.escape
    config = (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").exists() else ""
    rows = "".join(
        f"<tr><td>{escape(setting)}</td><td>{r['accuracy']:.2%} ± {r['ci95']:.2%}</td>"
        f"<td>{r['episodes']}</td></tr>"
        for setting, r in report["episodes"].items()
    )
    lake = report.get("lake_one_shot_runs")
    lake_line = (
        f"<p>Lake et al.'s 20 one-shot runs (20-way 1-shot, alphabets unseen in training): "
        f"<b>{lake['error']:.2%} error</b> ({lake['errors']} of 400).</p>"
        if lake
        else ""
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>neuralab run {escape(run_dir.name)}</title>
<style>body{{font:15px/1.45 system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.25rem .6rem;text-align:left}}
img{{max-width:100%}}pre{{background:#f6f6f6;padding:1rem;overflow:auto}}</style></head><body>
<h1>Run {escape(run_dir.name)} ({escape(report["task"])})</h1>
<p>Test episodes on the {escape(report["dataset"])} classes held out from training:</p>
<table><tr><th>episodes</th><th>accuracy (95% interval)</th><th>count</th></tr>{rows}</table>
{lake_line}
{"".join(f"<h2>{escape(p.stem)}</h2>{embedded(p)}" for p in figures)}
<h2>Configuration</h2><pre>{escape(config)}</pre>
</body></html>
"""
