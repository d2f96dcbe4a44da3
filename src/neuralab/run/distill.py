"""Distillation, the run builder's part: `train.distill.*` read from the config, the teacher
run loaded and checked against the student's data, and the task wrapped in
`tasks.distillation.Distillation` (run/settings.py: build_task calls `distillation`).

What the teacher and the student must share, checked before any training:
- the classes, in the same order (the soft targets are per class);
- the kind of input: image teachers teach image students, text teachers text students;
- images: channels and size (the teacher sees the student's pixels through its own
  normalisation); texts: the tokenizer (the teacher reads the student's token ids), so a text
  student takes its teacher's (`adopt_teacher_tokenizer`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from neuralab.checkpoint.format import read_json
from neuralab.checkpoint.meta import RunMeta, read_meta
from neuralab.config import RunConfig
from neuralab.data.dataset import DataError
from neuralab.errors import ConfigError
from neuralab.inference.predict import Predictor, checkpoint_folder
from neuralab.modalities import Inputs, modality_from_meta
from neuralab.tasks import Task
from neuralab.tasks.classification import Classification
from neuralab.tasks.distillation import Distillation, TeacherView


def teacher_meta(path: str) -> tuple[Path, RunMeta]:
    """The teacher run's checkpoint folder and metadata (meta.json only: cheap)."""
    folder = checkpoint_folder(path)
    return folder, read_meta(read_json(folder / "meta.json"), folder / "meta.json")


def adopt_teacher_tokenizer(config: RunConfig) -> tuple[RunConfig, list[str]]:
    """A text teacher's tokenizer settings become the student's (the teacher reads the
    student's token ids, so the vocabulary must be one); tokenizer settings set by the
    student's recipe or --set are refused. Image teachers change nothing. Returns the config
    and the notes for the log."""
    path = config.train.distill.teacher
    if path is None:
        return config, []
    folder, meta = teacher_meta(path)
    if meta.kind != "text":
        return config, []
    own = type(config.tokenizer).model_validate(meta.config.get("tokenizer", {}))
    explicit = sorted(config.tokenizer.model_fields_set - {"cache"})
    differ = [k for k in explicit if getattr(config.tokenizer, k) != getattr(own, k)]
    if differ:
        raise ConfigError(
            f"train.distill.teacher: the text teacher {folder.parent.name} reads the student's "
            f"token ids, so the student uses its tokenizer, and "
            f"{', '.join(f'tokenizer.{k}={getattr(config.tokenizer, k)!r}' for k in differ)} "
            f"differ from the teacher's ({', '.join(f'{getattr(own, k)!r}' for k in differ)}); "
            "remove them"
        )
    config = config.model_copy(deep=True)
    config.tokenizer = own.model_copy(update={"cache": config.tokenizer.cache})
    return config, [f"distil tokenizer: the teacher's ({folder.parent.name})"]


def teacher_tokenizer(config: RunConfig, trained: object | None) -> object | None:
    """The tokenizer a text student trains with when a text teacher teaches it: the
    teacher's; `trained` (a fine-tuning source's) must then be the same one. None: no text
    teacher, `trained` stands."""
    path = config.train.distill.teacher
    if path is None:
        return trained
    folder, meta = teacher_meta(path)
    if meta.kind != "text":
        return trained
    tokenizer = modality_from_meta(meta.kind, meta.inputs, folder).tokenizer
    if trained is not None and trained.to_json() != tokenizer.to_json():
        raise ConfigError(
            f"train.init_from and train.distill.teacher ({folder.parent.name}) use different "
            "tokenizers, but the student's token ids must mean the same to both; start from "
            "a run with the teacher's tokenizer, or drop one of them"
        )
    return tokenizer


def distillation(config: RunConfig, inputs: Inputs, task: Task, device: torch.device) -> Task:
    """`task` wrapped in Distillation from the run train.distill.teacher names (the task as
    it is without a teacher). The teacher is checked against the student's data first."""
    settings = config.train.distill
    if settings.teacher is None:
        return task
    if not isinstance(task, Classification):
        raise ConfigError(
            f"train.distill teaches classifiers; task {config.task.name} is not one: drop "
            "train.distill.teacher or set task.name=classification"
        )
    teacher = Predictor.load(settings.teacher, device=str(device))
    check_teacher(teacher, inputs, settings.teacher)
    view = teacher_view(teacher, inputs)
    meta = teacher.meta
    description = (
        f"from {settings.teacher} ({meta.model.name} on {meta.dataset}, epoch "
        f"{meta.epoch}): loss = {1 - settings.weight:g}·hard + {settings.weight:g}·T²·KL, "
        f"T {settings.temperature:g}"
    )
    return Distillation(task, view, settings.temperature, settings.weight, description)


def teacher_view(teacher: Predictor, inputs: Inputs) -> TeacherView:
    """The teacher as a function of the student's model inputs (images renormalised). It
    sees each batch as augmented, in its plain view: test-time augmentation would multiply
    its cost per step by the number of views (6 for cifar10-best) for targets that are
    already augmented."""
    student, own = inputs.modality, teacher.modality
    if own.kind != "image":
        return TeacherView(teacher.model, plain_view)
    return TeacherView(teacher.model, plain_view, (student.mean, student.std), (own.mean, own.std))


def plain_view(model: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """The teacher's logits for the inputs as they are (no test-time augmentation)."""
    return model(inputs)


def check_teacher(teacher: Predictor, inputs: Inputs, path: str) -> None:
    """The teacher fits the student: classes, kind, image shape or tokenizer (DataError
    naming both sides otherwise)."""
    name, classes = Path(path).name, list(inputs.dataset.classes)
    student, own = inputs.modality, teacher.modality
    if own.kind != student.kind:
        raise DataError(
            f"train.distill.teacher {name} learned from {own.kind} data, the student learns "
            f"from {student.kind} data ({inputs.dataset.name}); use a {student.kind} teacher"
        )
    if teacher.classes != classes:
        raise DataError(
            f"train.distill.teacher {name} has classes {teacher.classes[:20]}, the student's "
            f"data {inputs.dataset.name} has {classes[:20]}; a teacher must know the same "
            "classes in the same order (use data.classes to pick them)"
        )
    if own.kind == "image":
        mine, its = (student.channels, *student.image_size), (own.channels, *own.image_size)
        if mine != its:
            raise DataError(
                f"train.distill.teacher {name} takes images {its} (channels, height, width), "
                f"the student's are {mine}; the teacher must see the student's pixels"
            )
    elif own.tokenizer.to_json() != student.tokenizer.to_json():
        raise DataError(
            f"train.distill.teacher {name}'s tokenizer differs from the student's; the "
            "teacher must read the student's token ids (the student takes the teacher's "
            "tokenizer unless train.init_from brings another)"
        )
