"""The one on-disk checkpoint format: a folder holding

    model.safetensors     weights (the bare model: no `module.` / `_orig_mod.` prefixes)
    tokenizer.json        text runs: the trained tokenizer (the `tokenizers` library's JSON)
    meta.json             model name + constructor arguments, input spec, classes,
                          preprocessing, resolved config, epoch/step, metrics
    training.safetensors  optimizer / scheduler / RNG tensors   (optional, for resume)
    training.json         the non-tensor rest of that state      (optional)

Loading reads only safetensors and JSON, so it never executes code from the files. A folder is
written beside its destination and renamed into place, so a crash never leaves half a checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from neuralab.distributed import unwrap

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint folder is missing, incomplete or not in neuralab's format."""


def save_checkpoint(
    directory: str | Path,
    model: nn.Module,
    meta: dict,
    training_state: dict | None = None,
    files: dict[str, str] | None = None,
) -> Path:
    """Write a checkpoint folder atomically (replacing an existing one only once complete).

    `files` maps extra file names to their text (e.g. {"tokenizer.json": ...}).
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        weights = {k: v.detach().contiguous().cpu() for k, v in unwrap(model).state_dict().items()}
        save_file(weights, str(staging / "model.safetensors"))
        write_json(staging / "meta.json", {"format": FORMAT_VERSION, **meta})
        for name, text in (files or {}).items():
            (staging / name).write_text(text, encoding="utf-8")
        if training_state is not None:
            tensors: dict[str, torch.Tensor] = {}
            plain = encode(training_state, "training", tensors)
            save_file(tensors, str(staging / "training.safetensors"))
            write_json(staging / "training.json", plain)
        fsync_folder(staging)
        share_like_umask(staging)
        replace_folder(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def replace_folder(staging: Path, directory: Path) -> None:
    """Swap `staging` into `directory`; the old copy is removed only after the new one is in."""
    if directory.exists():
        old = directory.with_name(f".{directory.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(directory, old)
        os.replace(staging, directory)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, directory)


def share_like_umask(folder: Path) -> None:
    """mkdtemp and safetensors create owner-only files; give them the user's usual modes."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.iterdir():
        path.chmod(0o666 & ~umask)


def fsync_folder(folder: Path) -> None:
    for path in folder.iterdir():
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def encode(value: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Turn nested state (dicts with int keys, tuples, tensors) into JSON plus named tensors."""
    if isinstance(value, torch.Tensor):
        tensors[key] = value.detach().contiguous().cpu()
        return {"__tensor__": key}
    if isinstance(value, dict):
        return {"__map__": [[k, encode(v, f"{key}.{k}", tensors)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return {
            "__list__": [encode(v, f"{key}.{i}", tensors) for i, v in enumerate(value)],
            "tuple": isinstance(value, tuple),
        }
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store {type(value).__name__} at {key} in a checkpoint")


def decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of `encode`; only plain JSON types and tensors come back out."""
    if isinstance(value, dict):
        if "__tensor__" in value:
            return tensors[value["__tensor__"]]
        if "__map__" in value:
            return {k: decode(v, tensors) for k, v in value["__map__"]}
        if "__list__" in value:
            items = [decode(v, tensors) for v in value["__list__"]]
            return tuple(items) if value.get("tuple") else items
        raise CheckpointError(f"unexpected object in training state: keys {sorted(value)}")
    return value


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(
            f"{path} is missing: {path.parent} is not a complete neuralab "
            "checkpoint (was the run interrupted before its first save?)"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(
            f"{path} is not valid JSON ({error}); the checkpoint is damaged"
        ) from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object, found {type(data).__name__}")
    return data


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(
            f"{path} is missing: the checkpoint folder {path.parent} is incomplete"
        )
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({error}); it may be "
            "truncated or not a neuralab checkpoint"
        ) from None


def load_checkpoint(directory: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(weights, meta) of a checkpoint folder."""
    directory = Path(directory)
    meta = read_json(directory / "meta.json")
    if meta.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"{directory / 'meta.json'}: format {meta.get('format')!r}, "
            f"this neuralab reads format {FORMAT_VERSION}"
        )
    return read_tensors(directory / "model.safetensors"), meta


def load_training_state(directory: str | Path) -> dict | None:
    """The optimizer/scheduler/RNG state saved for resume, or None when the folder has none."""
    directory = Path(directory)
    if not (directory / "training.json").exists():
        return None
    return decode(
        read_json(directory / "training.json"), read_tensors(directory / "training.safetensors")
    )
