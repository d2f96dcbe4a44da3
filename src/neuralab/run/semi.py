"""Semi-supervised runs in stages: word vectors learned from the unlabelled texts
(train.semi.vectors), self-training (train.semi.method=pseudo-label) and the teacher's
labelling of the unlabelled examples between its stages.

    <out>/vectors/word-vectors.safetensors   with train.semi.vectors: word2vec on the training
                            and unlabelled texts (never validation or test), before any stage
    <out>/teacher/          stage 1: the labelled examples alone (the run's own settings)
    <out>/teacher/pseudo-labels.safetensors   its labels for the confident unlabelled examples
    <out>/round-2/ ...      with rounds > 1: a student that teaches the next round
    <out>/                  the last stage: labelled + pseudo-labelled examples (the run itself)

Each stage is an ordinary run (api.train_config trains them); this module decides their
configs and writes the pseudo-labels. The teacher labels only `dataset.unlabelled` (the
remainder of data.labelled_per_class and a dataset's own unlabelled set); the test split is
never read here, and each stage's tokenizer is trained on its own training split (labelled +
pseudo-labelled texts; with vectors, the unlabelled texts too), never on test texts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from neuralab.config import RunConfig
from neuralab.data.dataset import DataError
from neuralab.data.pseudo import write_pseudo_labels
from neuralab.data.tokenizer import TokenizerSettings
from neuralab.data.vectors import learn_word_vectors, write_word_vectors
from neuralab.inference.predict import Predictor
from neuralab.modalities.text import vocabulary_texts, vocabulary_tokenizer
from neuralab.run.inputs import load_data
from neuralab.run.settings import check_settings

Log = Callable[[str], None]
PSEUDO_FILE = "pseudo-labels.safetensors"
VECTORS_FILE = "word-vectors.safetensors"


def run_folder(config: RunConfig) -> Path:
    """The semi-supervised run's directory: `out`, or runs/<data>-<model>-semi-<time>."""
    if config.out:
        return Path(config.out).expanduser()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.data.name.split(':')[0]}-{config.model.name}-semi-{stamp}"


def stage_config(
    config: RunConfig, out: Path, pseudo_labels: Path | None, vectors: Path | None = None
) -> RunConfig:
    """The config of one stage: the run's own, writing to `out`, learning from the
    `pseudo_labels` file (None: the labelled examples alone), its word embeddings starting
    from the `vectors` file (None: none)."""
    stage = config.model_copy(deep=True)
    stage.train.semi.method, stage.train.semi.vectors = "off", "off"
    stage.out = str(out)
    stage.data.pseudo_labels = None if pseudo_labels is None else str(pseudo_labels)
    stage.data.word_vectors = None if vectors is None else str(vectors)
    if pseudo_labels is None and vectors is None:  # then it never reads the unlabelled set
        stage.data.options.pop("unlabelled", None)
    if pseudo_labels is not None and config.train.semi.student_epochs is not None:
        stage.train.epochs = config.train.semi.student_epochs
    return stage


def is_semi(config: RunConfig) -> bool:
    """Whether the run is trained in stages (train.semi.method or train.semi.vectors)."""
    return config.train.semi.method != "off" or config.train.semi.vectors != "off"


def stage_folders(config: RunConfig) -> list[Path]:
    """Where each classifier stage's run goes: the teacher, the intermediate rounds, then the
    run's own directory (`run_folder`); without self-training the run's directory alone."""
    out, rounds = run_folder(config), config.train.semi.rounds
    if config.train.semi.method == "off":
        return [out]
    return [out / "teacher", *(out / f"round-{r}" for r in range(2, rounds + 1)), out]


def self_train(config: RunConfig, train_stage: Callable[[RunConfig, bool], Any], log: Log):
    """Train the stages in order (`train_stage(stage config, is the last)` trains one and
    returns its run), labelling the unlabelled examples with each stage but the last.
    Returns the last stage's run."""
    check_settings(config)  # a typo fails here, before the teacher trains
    folders = stage_folders(config)
    out = folders[-1]
    if (out / "checkpoint").exists() or (out / "metrics.json").exists():
        raise FileExistsError(f"run directory {out} already holds a run; choose another --out")
    vectors = None
    if config.train.semi.vectors != "off":
        vectors = word_vectors(config, out / "vectors", log)
    pseudo_labels, run = None, None
    starts = "" if vectors is None else "; word embeddings from the vectors"
    for number, folder in enumerate(folders, start=1):
        role = (
            "labelled examples only"
            if pseudo_labels is None
            else (f"labelled + pseudo-labelled examples ({pseudo_labels.parent.name}'s labels)")
        )
        if len(folders) > 1 and pseudo_labels is None:
            role = "teacher: " + role
        log(f"semi   stage {number}/{len(folders)} → {folder} ({role}{starts})")
        stage = stage_config(config, folder, pseudo_labels, vectors)
        run = train_stage(stage, folder == out)
        if folder != out:
            pseudo_labels = pseudo_label(folder, config, log)
    return run


def word_vectors(config: RunConfig, folder: Path, log: Log) -> Path:
    """Learn word vectors (train.semi.vectors) from the run's training and unlabelled texts,
    never its validation or test texts, and write them to `<folder>/word-vectors.safetensors`.
    Returns the file's path."""
    semi = config.train.semi
    dataset = load_data(config)  # with its unlabelled examples, without pseudo-labels
    if dataset.kind != "text":
        raise DataError(
            f"train.semi.vectors learns word vectors from texts; {dataset.name} is "
            f"{dataset.kind} data (set train.semi.vectors=off)"
        )
    texts = vocabulary_texts(dataset)
    settings = TokenizerSettings.from_dict(config.tokenizer.model_dump())
    tokenizer = vocabulary_tokenizer(dataset, settings, config.tokenizer.cache)
    words = learn_word_vectors(
        texts, tokenizer, int(config.model.args["embed_dim"]), semi.vectors,
        semi.vector_epochs, semi.vector_window, config.train.seed,
    )  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    path = write_word_vectors(folder / VECTORS_FILE, words)
    dropped = dataset.info.get("unlabelled_dropped")
    copies = f"; {dropped:,} unlabelled copies of test texts left out" if dropped else ""
    unlabelled = len(texts) - len(dataset.train)
    log(f"vectors {semi.vectors} word2vec, {words.vectors.shape[1]}-d, {semi.vector_epochs} "
        f"epochs: {len(words.tokens):,} words from {len(dataset.train):,} training + "
        f"{unlabelled:,} unlabelled texts (no validation or test text{copies}) in "
        f"{words.info['seconds']:.1f}s → {path}")  # fmt: skip
    return path


def pseudo_label(teacher: Path, config: RunConfig, log: Log) -> Path:
    """Label the run's unlabelled examples with the `teacher` run, keep those whose top
    probability reaches train.semi.threshold, and write them to `<teacher>/pseudo-labels`.
    Returns the file's path."""
    threshold = config.train.semi.threshold
    dataset = load_data(config)  # with its unlabelled examples, without pseudo-labels
    unlabelled = dataset.unlabelled
    if unlabelled is None:
        raise DataError(
            f"train.semi needs unlabelled examples and {dataset.name} has none with these "
            "settings. Fix: set data.labelled_per_class (the rest of the training split is "
            "unlabelled) or the dataset's unlabelled option (imdb: data.options.unlabelled=true)"
        )
    predictor = Predictor.load(teacher)
    if predictor.heads:
        raise DataError(f"{teacher} learned several label fields; train.semi labels one class")
    examples = unlabelled.texts if dataset.kind == "text" else list(unlabelled.images)
    start = time.perf_counter()
    probabilities = teacher_probabilities(predictor, examples)
    confidence, labels = probabilities.max(1)
    index = chosen(confidence, labels, threshold, config.train.semi.keep, len(dataset.classes))
    if not len(index):
        raise DataError(
            f"no unlabelled example reached train.semi.threshold={threshold} (the teacher's "
            f"highest confidence was {float(confidence.max()):.3f}); lower the threshold"
        )
    path = write_pseudo_labels(
        teacher / PSEUDO_FILE, unlabelled, index, labels[index], confidence[index]
    )
    semi = config.train.semi
    log(describe_labels(dataset, unlabelled.labels, index, labels, threshold, semi.keep, start))
    return path


def chosen(
    confidence: torch.Tensor,
    labels: torch.Tensor,
    threshold: float,
    keep: float | None,
    classes: int,
) -> torch.Tensor:
    """Indices (sorted) of the examples to pseudo-label: confidence ≥ `threshold`; with
    `keep`, also at most keep·N/classes per predicted class, the most confident first (class-
    balanced, and independent of how calibrated the teacher is: label smoothing caps its
    confidence)."""
    passed = confidence >= threshold
    if keep is None:
        return torch.nonzero(passed).flatten()
    quota = max(1, round(keep * len(labels) / classes))
    picked = []
    for label in range(classes):
        members = torch.nonzero(passed & (labels == label)).flatten()
        order = confidence[members].argsort(descending=True, stable=True)
        picked.append(members[order[:quota]])
    return torch.cat(picked).sort().values


def teacher_probabilities(predictor: Predictor, examples: list) -> torch.Tensor:
    """The teacher's class probabilities (N, classes) with its task's test-time augmentation,
    run as it was trained (its checkpoint's engine: bf16 autocast, channels_last): labelling
    tens of thousands of examples is a training-sized job, not a handful of predictions."""
    choice = predictor.meta.engine_choice or {}
    autocast = torch.bfloat16 if choice.get("precision") == "bf16" else None
    layout = bool(choice.get("channels_last")) and predictor.modality.kind == "image"
    with torch.inference_mode():
        return predictor.to_probabilities(predictor.logits(examples, autocast, layout))


def describe_labels(dataset, truth, index, labels, threshold, keep, start) -> str:
    """The `pseudo` log line: how many were kept, per class, and (when the unlabelled
    examples' true labels are known: data.labelled_per_class's remainder) how many are right."""
    counts = torch.bincount(labels[index], minlength=len(dataset.classes)).tolist()
    keep_note = "" if keep is None else f", the most confident {keep:.0%} per class at most"
    per_class = ", ".join(f"{name} {n:,}" for name, n in zip(dataset.classes, counts, strict=True))
    dropped = dataset.info.get("unlabelled_dropped")
    copies = f" ({dropped:,} left out: verbatim copies of test texts)" if dropped else ""
    line = (
        f"pseudo {len(index):,} of {len(labels):,} unlabelled examples{copies} labelled by the "
        f"teacher with confidence ≥ {threshold}{keep_note} ({per_class}) in "
        f"{time.perf_counter() - start:.1f}s"
    )
    known = truth[index]
    if truth.ndim == 1 and bool((known >= 0).any()):  # labelled_per_class's remainder
        kept = known >= 0
        right = float((known[kept] == labels[index][kept]).double().mean())
        line += (f"; {right:.2%} right among the {int(kept.sum()):,} whose true labels were "
                 "set aside")  # fmt: skip
    return line
