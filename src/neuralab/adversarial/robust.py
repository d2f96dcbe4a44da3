"""`neuralab evaluate RUN --attack ...`: a run's accuracy under attack, at one eps or a sweep.

The attacked function is exactly what `predict` runs: pixels in [0, 1] → the run's
normalisation → the model in eval mode with the run's test-time augmentation, in float32
(bf16 autocast would round the gradients the attack follows). Examples are the first
`count` of the test split (or of a seeded shuffle, `seed`), attacked in batches.

Writes `<run>/robustness.json` (one entry per attack setting, read by `neuralab report`) and,
with `out`, `curve.png` (accuracy against eps, the clean point included), `examples.png`
(adversarial images with their new predictions) and `robustness.json` there too.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch

from neuralab.adversarial.attacks import AttackError, AttackSettings, Classify, attack
from neuralab.checkpoint.format import write_text_atomic
from neuralab.inference.fewshot import is_few_shot
from neuralab.inference.predict import Predictor, test_subset
from neuralab.models.tta import pixel_forward

ATTACK_BATCH = 250  # images attacked together: bounds memory (activations of one backward)
EXAMPLES_SHOWN = 16  # adversarial images drawn in examples.png (a 2 × 8 grid)
RESULTS_FILE = "robustness.json"


def pixel_classifier(predictor: Predictor) -> Classify:
    """The run's prediction as a function of pixels in [0, 1] (B, C, H, W): normalisation
    and test-time augmentation inside, eval mode, float32. Text runs are refused."""
    if is_few_shot(predictor):
        raise AttackError(f"{predictor.meta.task.name} runs classify by example; attack a "
                          "classifier run")  # fmt: skip
    if predictor.modality.kind != "image":
        raise AttackError(
            f"attacks perturb pixels: {predictor.meta.dataset} is a {predictor.modality.kind} "
            "run (word-substitution attacks are not supported); attack an image run"
        )
    modality = predictor.modality
    return pixel_forward(predictor.model.eval(), modality.mean, modality.std, predictor.task.tta)


def test_pixels(
    predictor: Predictor, count: int, seed: int | None, data: str | None, data_dir: str | None
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """`count` test images as floats in [0, 1] (N, C, H, W), their labels, the dataset name."""
    split, index, dataset = test_subset(predictor, count, seed, data, data_dir)
    images = predictor.modality.split_examples(split, index, dataset)
    return images.float() / 255.0, split.labels[index], dataset


def accuracy_under(
    classify: Classify,
    pixels: torch.Tensor,
    labels: torch.Tensor,
    settings: AttackSettings,
    seed: int,
    keep: int = 0,
) -> tuple[float, torch.Tensor, list[int]]:
    """Accuracy under `settings` over all `pixels`, in batches; the first `keep` adversarial
    images and their predicted classes."""
    generator = torch.Generator(pixels.device).manual_seed(seed)
    correct, kept, predicted = 0, [], []
    for start in range(0, len(pixels), ATTACK_BATCH):
        batch = slice(start, start + ATTACK_BATCH)
        result = attack(classify, pixels[batch], labels[batch], settings, generator)
        correct += int(result.correct.sum())
        if sum(len(k) for k in kept) < keep:
            kept.append(result.adversarial.cpu())
            predicted += result.logits.argmax(1).tolist()
    shown = torch.cat(kept)[:keep] if kept else pixels[:0]
    return correct / len(pixels), shown, predicted[:keep]


def sweep(
    classify: Classify, pixels: torch.Tensor, labels: torch.Tensor, settings: list
) -> tuple[list[dict], torch.Tensor | None, list[int]]:
    """One point per attack setting ({"eps", "accuracy", "seconds", "attack"}), plus the
    last setting's first EXAMPLES_SHOWN adversarial images and their predicted classes."""
    points, shown, predicted = [], None, []
    for setting in settings:
        started = time.perf_counter()
        keep = EXAMPLES_SHOWN if setting is settings[-1] else 0
        accuracy, images, classes = accuracy_under(classify, pixels, labels, setting, 0, keep)
        seconds = time.perf_counter() - started
        points.append({"eps": setting.eps, "accuracy": accuracy, "seconds": round(seconds, 2),
                       "attack": setting.describe()})  # fmt: skip
        if keep:
            shown, predicted = images, classes
    return points, shown, predicted


def evaluate_robustness(
    run_dir: str | Path,
    attack: str = "pgd",
    eps: float | Sequence[float] = 0.3,
    *,
    norm: str = "linf",
    steps: int = 10,
    step_size: float | None = None,
    restarts: int = 1,
    count: int = 1000,
    seed: int | None = None,
    out: str | Path | None = None,
    data: str | None = None,
    data_dir: str | None = None,
    save: bool = True,
) -> dict:
    """Accuracy of a saved image run under an L∞ or L2 attack, at one eps or several.

    Args:
        attack: `fgsm`, `pgd` or `apgd-ce` (see adversarial/attacks.py).
        eps: radius in pixel units (0..1), or a list for an accuracy-vs-eps curve.
        steps, step_size, restarts: PGD / APGD iterations, step (None: 2.5·eps/steps) and
            random restarts.
        count: test examples attacked (the first ones, or a seeded shuffle with `seed`).
        out: a folder for curve.png, examples.png and robustness.json.
        save: add the result to `<run>/robustness.json` (read by `neuralab report`).

    Returns:
        {"dataset", "count", "clean_accuracy", "attack", "points": [{"eps", "accuracy",
        "seconds"}], ...}.

    Example:
        >>> neuralab.evaluate("runs/mnist-robust", attack="pgd", eps=0.3, steps=40)
    """
    radii = [float(e) for e in (eps if isinstance(eps, Sequence) else [eps])]
    base = AttackSettings(attack, max(radii), norm, steps, step_size, restarts)
    settings = [replace(base, eps=radius) for radius in radii]  # each checks its own eps
    predictor = Predictor.load(run_dir)
    classify = pixel_classifier(predictor)
    pixels, labels, dataset = test_pixels(predictor, count, seed, data, data_dir)
    pixels, labels = pixels.to(predictor.device), labels.to(predictor.device)
    clean, _, _ = accuracy_under(classify, pixels, labels, replace(base, eps=0.0), 0)
    points, shown, predicted = sweep(classify, pixels, labels, settings)
    report = {
        "dataset": dataset, "count": len(labels), "clean_accuracy": clean, "attack": attack,
        "norm": norm, "steps": steps if attack != "fgsm" else 1, "step_size": step_size,
        "restarts": restarts if attack != "fgsm" else 1, "seed": seed, "points": points,
    }  # fmt: skip
    if save:
        record_result(Path(run_dir), report)
    if out is not None:
        from neuralab.adversarial import figures

        names = [predictor.classes[i] for i in predicted]
        truth = [predictor.classes[i] for i in labels[: len(names)].tolist()]
        report["files"] = figures.write_robustness(Path(out), report, shown, names, truth)
    return report


def record_result(run_dir: Path, report: dict) -> Path:
    """Add `report` to `<run>/robustness.json`, keyed by its attack settings (a rerun of
    the same settings replaces the older entry)."""
    folder = run_dir.parent if run_dir.name == "checkpoint" else run_dir
    path = folder / RESULTS_FILE
    entries = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    key = f"{report['attack']} {report['norm']} steps={report['steps']} " \
          f"restarts={report['restarts']} count={report['count']}"  # fmt: skip
    entries[key] = {k: v for k, v in report.items() if k != "files"}
    write_text_atomic(path, json.dumps(entries, indent=2))
    return path


def parse_eps(text: str) -> list[float]:
    """`--eps 0.3` or `--eps 0,0.05,0.1` or `--eps 8/255` → radii in pixel units."""
    radii = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "/" in part:
                top, bottom = part.split("/")
                radii.append(float(top) / float(bottom))
            else:
                radii.append(float(part))
        except (ValueError, ZeroDivisionError):
            raise AttackError(
                f"--eps {text!r}: expected numbers in pixel units, comma-separated "
                "(e.g. 0.3, 8/255 or 0,0.1,0.2,0.3)"
            ) from None
    return radii
