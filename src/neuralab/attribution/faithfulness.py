"""Is an attribution faithful to the model? Scores to compare methods on your own model.

deletion   remove the pixels (or words) in attribution order, most important first; the
           target's probability should fall fast: the area under the probability-vs-fraction
           curve (AUC) is low for a faithful map (Petsiuk et al. 2018, RISE)
insertion  start from nothing and insert in attribution order: a faithful map's AUC is high
sanity     Adebayo et al. 2018's model-randomisation check: the same method on the same
           inputs with every layer re-initialised; a map that explains the model (not the
           image) changes, so the rank correlation between the two is low

Deletion and insertion are reported beside the same curve for a random order (seeded), so a
score reads as "x times the random order's". Removed pixels take the training set's mean
colour (what the normalised model sees as 0), removed words are dropped from the text.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

FRACTIONS = 20  # the curve's points: 0, 5%, ..., 100% of the pixels or words removed
METRICS = ("deletion", "insertion", "sanity")


def auc(curve: torch.Tensor) -> torch.Tensor:
    """Trapezoid area of curves (N, F+1) sampled at evenly spaced fractions of [0, 1]."""
    return torch.trapezoid(curve, dx=1.0 / (curve.shape[1] - 1), dim=1)


def pixel_orders(maps: torch.Tensor) -> torch.Tensor:
    """Pixel indices (N, H*W), most important (largest attribution) first."""
    return maps.flatten(1).argsort(dim=1, descending=True)


def image_curves(
    probability_of: Callable[[torch.Tensor], torch.Tensor],
    pixels: torch.Tensor,
    orders: torch.Tensor,
    baseline: torch.Tensor,
    insertion: bool,
) -> torch.Tensor:
    """The target probability (N, F+1) as pixels are deleted (or inserted) in `orders`.

    Args:
        probability_of: pixels (B, C, H, W) → each image's target probability (B,).
        pixels: (N, C, H, W) in [0, 1]; baseline: (1, C, 1, 1), the colour of a removed pixel.
    """
    count, channels, height, width = pixels.shape
    area = height * width
    ranks = torch.empty_like(orders)
    ranks.scatter_(1, orders, torch.arange(area).expand(count, -1))  # pixel → its rank
    points = []
    for step in range(FRACTIONS + 1):
        shown = ranks < round(step * area / FRACTIONS)  # (N, H*W): the first k in order
        mask = shown.view(count, 1, height, width).to(pixels.dtype)
        if insertion:
            degraded = baseline + mask * (pixels - baseline)
        else:
            degraded = pixels + mask * (baseline - pixels)
        points.append(probability_of(degraded))
    return torch.stack(points, dim=1)


def word_curves(
    probability_of: Callable[[list[str], list[int]], torch.Tensor],
    words: list[list[str]],
    orders: list[list[int]],
    targets: list[int],
    insertion: bool,
) -> torch.Tensor:
    """The target probability (N, F+1) as words are deleted (or inserted) in `orders`;
    `probability_of(texts, targets)` → (len(texts),)."""
    texts, owners = [], []
    for index, (text, order) in enumerate(zip(words, orders, strict=True)):
        for step in range(FRACTIONS + 1):
            chosen = set(order[: round(step * len(text) / FRACTIONS)])
            kept = [w for i, w in enumerate(text) if (i in chosen) == insertion]
            texts.append(" ".join(kept))
            owners.append(targets[index])
    return probability_of(texts, owners).view(len(words), FRACTIONS + 1)


def summary(curves: torch.Tensor, random_curves: torch.Tensor, metric: str) -> dict:
    """AUC of the attribution order against the random order's, with the mean curves."""
    ours, chance = auc(curves), auc(random_curves)
    return {
        "metric": metric,
        "auc": float(ours.mean()),
        "random_auc": float(chance.mean()),
        "ratio": float(ours.mean() / chance.mean().clamp_min(1e-12)),
        "better": "lower" if metric == "deletion" else "higher",
        "curve": [round(float(v), 4) for v in curves.mean(0)],
        "random_curve": [round(float(v), 4) for v in random_curves.mean(0)],
    }


def randomised_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of `model` with every layer re-initialised (Adebayo et al.'s cascading
    randomisation, carried to the end): same architecture, no learned weights."""
    torch.manual_seed(seed)
    copied = copy.deepcopy(model)
    for module in copied.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
        if hasattr(module, "reset_running_stats"):
            module.reset_running_stats()
    return copied.eval()


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks of one row's values (D,), tied values sharing their average rank (as Spearman's
    coefficient needs: a map that is zero over half the image must not be ranked by position)."""
    unique, inverse, counts = values.unique(return_inverse=True, return_counts=True)
    last = counts.cumsum(0).double()  # 1-based rank of each distinct value's last copy
    average = last - (counts.double() - 1) / 2
    return average[inverse]


def spearman(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation per row of (N, D) tensors, ties averaged; NaN for a row
    where either map is constant (no order to compare)."""
    a = torch.stack([average_ranks(row) for row in first.double()])
    b = torch.stack([average_ranks(row) for row in second.double()])
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    scale = a.norm(dim=1) * b.norm(dim=1)
    return torch.where(scale > 0, (a * b).sum(1) / scale.clamp_min(1e-300), torch.nan)


def sanity(trained_maps: torch.Tensor, random_maps: torch.Tensor) -> dict:
    """Rank correlation between the trained and the randomised model's maps, of their
    absolute values (Adebayo et al.'s main measure) and of the signed maps: near 1 means the
    map ignores the weights. Maps that are constant (e.g. an all-zero Grad-CAM of the
    randomised model) have no order and are counted apart."""
    absolute = spearman(trained_maps.abs().flatten(1), random_maps.abs().flatten(1))
    signed = spearman(trained_maps.flatten(1), random_maps.flatten(1))
    defined = ~absolute.isnan()
    mean = float(absolute[defined].mean()) if defined.any() else float("nan")
    return {
        "metric": "sanity",
        "rank_correlation": mean,
        "rank_correlation_signed": float(signed[~signed.isnan()].mean()) if defined.any() else None,
        "constant_maps": int((~defined).sum()),
        "better": "lower",
        "passes": bool(defined.any() and mean < 0.2),  # the threshold issue 21 asks for
    }
