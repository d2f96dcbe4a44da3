"""Few-shot runs after training: N-way K-shot accuracy over test episodes with a 95%
confidence interval, Lake et al.'s 20 one-shot runs for Omniglot, and classifying images
against classes given by example (`neuralab predict RUN --support ... --query ...`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from neuralab.checkpoint.format import write_text_atomic
from neuralab.data.dataset import DataError
from neuralab.data.episodes import EpisodeLoader, Episodes, class_disjoint
from neuralab.data.omniglot import one_shot_runs
from neuralab.inference.predict import Predictor
from neuralab.modalities.episodes import TEST_SEED
from neuralab.train.allocator import reused_memory
from neuralab.train.trainer import score_loader

# What `neuralab evaluate` reports when no --ways/--shots are given: the literature's table.
STANDARD_SETTINGS = ((5, 1), (5, 5), (20, 1))
DEFAULT_EPISODES = 1000  # test episodes per setting: a 95% interval of about ±0.3 points
EVAL_META_BATCH = 8  # episodes scored together (memory stays small, throughput good)


def is_few_shot(predictor: Predictor) -> bool:
    return bool(getattr(predictor.task, "episodic", False))


def model_ways(predictor: Predictor) -> int | None:
    """The only N a model can be evaluated at (MAML's head), or None for any N."""
    return predictor.meta.task.args.get("ways")


def evaluate_few_shot(
    predictor: Predictor,
    run_dir: str | Path,
    ways: int | None = None,
    shots: int | None = None,
    queries: int | None = None,
    episodes: int | None = None,
    data_dir: str | None = None,
    save: bool = True,
) -> dict:
    """Accuracy ± 95% interval over `episodes` seeded test episodes for each (ways, shots)
    setting (given, or the standard 5-way 1-shot / 5-shot and 20-way 1-shot the model can
    take), plus Lake et al.'s 20 one-shot runs for an Omniglot run. Saved as the run's
    evaluation.json with `save`. `predictor`: the run, loaded."""
    if not is_few_shot(predictor):
        raise DataError(f"{run_dir} is a {predictor.meta.task.name} run, not a few-shot one")
    dataset = class_disjoint(predictor.meta.data.load(None, data_dir), predictor.meta.data.seed)
    config_task = predictor.meta.config.get("task", {})
    queries = queries or int(config_task.get("queries", 15))
    episodes = episodes or DEFAULT_EPISODES
    fixed = model_ways(predictor)
    if fixed is not None and ways not in (None, fixed):
        raise DataError(
            f"this {predictor.meta.task.name} model is {fixed}-way (its head has {fixed} "
            f"outputs); evaluate it with --ways {fixed}"
        )
    if ways or shots:
        settings = [(ways or fixed or 5, shots or 1)]
    else:
        settings = default_settings(predictor, int(dataset.test.labels.unique().numel()))
    report = {"dataset": dataset.name, "task": predictor.meta.task.name, "episodes": {}}
    with reused_memory("reuse", predictor.device):  # episodes allocate alike: keep the pages
        score_settings(predictor, dataset, settings, queries, episodes, report)
    if dataset.name == "omniglot" and fixed in (None, 20):
        report["lake_one_shot_runs"] = lake_runs(predictor, Path(dataset.info["root"]))
    if save:
        write_text_atomic(Path(run_dir) / "evaluation.json", json.dumps(report, indent=2))
    return report


def default_settings(predictor: Predictor, test_classes: int) -> list[tuple[int, int]]:
    """The standard settings this model and test split can take, else the run's own."""
    fixed = model_ways(predictor)
    fitting = [(n, k) for n, k in STANDARD_SETTINGS if fixed in (None, n) and n <= test_classes]
    if fitting:
        return fitting
    task = predictor.meta.config.get("task", {})
    ways = task.get("eval_ways") or task.get("ways", 5)
    return [(int(ways), int(task.get("eval_shots") or task.get("shots", 1)))]


def score_settings(
    predictor: Predictor, dataset, settings: list, queries: int, episodes: int, report: dict
) -> None:
    """Each (ways, shots) setting's accuracy and interval into report["episodes"]."""
    for n, k in settings:
        loader = EpisodeLoader(
            dataset.test, n, k, queries, episodes, dataset.mean, dataset.std,
            meta_batch=EVAL_META_BATCH, seed=predictor.meta.data.seed + TEST_SEED, fixed=True,
            device=predictor.device, where=f"{dataset.name} test split",
        )  # fmt: skip
        metrics = score_loader(predictor.model, loader, predictor.task)
        report["episodes"][f"{n}-way {k}-shot"] = {
            "accuracy": metrics["accuracy"], "ci95": metrics["accuracy_ci95"],
            "episodes": metrics["count"], "queries_per_class": queries,
        }  # fmt: skip


def lake_runs(predictor: Predictor, root: Path) -> dict:
    """Error rate on Lake et al.'s 20 runs (20-way 1-shot, 400 test images in all)."""
    image_size = predictor.modality.image_size[0]
    errors, per_run = 0, {}
    for run in one_shot_runs(root, download=False, image_size=image_size):
        logits = episode_logits(predictor, run.support, torch.arange(20), run.query)
        wrong = int((logits.argmax(1) != run.answers).sum())
        errors += wrong
        per_run[run.name] = wrong / len(run.answers)
    return {"error": errors / (20 * 20), "errors": errors, "runs": per_run}


def episode_logits(
    predictor: Predictor, support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor
) -> torch.Tensor:
    """Query logits (Q, N) of one episode given as uint8 images (S and Q, C, H, W)."""
    modality, device = predictor.modality, predictor.device
    batch = Episodes(
        modality.model_inputs(support.to(device)).unsqueeze(0),
        labels.to(device).unsqueeze(0),
        modality.model_inputs(query.to(device)).unsqueeze(0),
        torch.zeros(1, len(query), dtype=torch.long, device=device),
    )
    model = predictor.model.eval()
    grad_mode = torch.no_grad() if predictor.task.scores_with_gradients else torch.inference_mode()
    with grad_mode:
        return predictor.task.logits(model, batch, training=False)[0].float().cpu()


def classify_by_example(
    predictor: Predictor, support: dict[str, Sequence], queries: Sequence, top_k: int = 3
) -> list[list[tuple[str, float]]]:
    """Each query's top-k classes among those given by example.

    Args:
        support: {class name: its example images (paths, PIL images, arrays)}.
        queries: images to classify.

    Example:
        >>> classify_by_example(neuralab.load(run), {"a": ["a1.png"], "b": ["b1.png"]}, ["q.png"])
        [[('a', 0.93), ('b', 0.07)]]
    """
    if not is_few_shot(predictor):
        raise DataError(
            "--support classifies against classes given by example, which only few-shot runs "
            f"(protonet, maml, fomaml) do; this run is {predictor.meta.task.name}"
        )
    names = list(support)
    if len(names) < 2 or any(not support[name] for name in names):
        raise DataError("give at least two classes with one example each (--support)")
    fixed = model_ways(predictor)
    if fixed is not None and len(names) != fixed:
        raise DataError(
            f"this {predictor.meta.task.name} model is {fixed}-way; give examples of exactly "
            f"{fixed} classes, not {len(names)} ({', '.join(names)})"
        )
    if predictor.task.scores_with_gradients and len(queries) < 2:
        raise DataError(
            "MAML normalises the queries with their own batch statistics (transductive batch "
            "norm, as Finn et al.), so it needs at least 2 query images at once; give more"
        )
    modality = predictor.modality
    images = torch.stack(modality.prepare_all([item for name in names for item in support[name]]))
    labels = torch.tensor([i for i, name in enumerate(names) for _ in support[name]])
    logits = episode_logits(predictor, images, labels, torch.stack(modality.prepare_all(queries)))
    probabilities = logits.softmax(1)
    values, indices = probabilities.topk(min(top_k, len(names)), dim=1)
    return [
        [(names[i], round(v, 6)) for v, i in zip(row_v, row_i, strict=True)]
        for row_v, row_i in zip(values.tolist(), indices.tolist(), strict=True)
    ]


def support_by_folder(paths: Sequence[str]) -> dict[str, list[str]]:
    """Support images grouped into classes by their parent folder's name (`a/1.png` → a)."""
    grouped: dict[str, list[str]] = {}
    for path in paths:
        file = Path(path)
        if not file.is_file():
            raise DataError(f"--support {file}: no such file")
        grouped.setdefault(file.parent.name or str(file.parent), []).append(str(file))
    return grouped
