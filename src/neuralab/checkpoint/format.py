"""The one on-disk checkpoint format: a folder holding

    model.safetensors     weights (the bare model: no `module.` / `_orig_mod.` prefixes)
    tokenizer.json        text runs: the trained tokenizer (the `tokenizers` library's JSON)
    meta.json             model name + constructor arguments, input spec, classes,
                          preprocessing, resolved config, epoch/step, metrics
    training.safetensors  optimizer / scheduler / RNG tensors   (optional, for resume)
    training.json         the non-tensor rest of that state      (optional)
    manifest.json         SHA-256 digest and size of every file above, written last

Loading reads only safetensors and JSON, so it never executes code from the files; it checks
every file against the manifest first and refuses a pickle, a metadata field that names code
(a class, a callable, an import path) and a model name that is not registered. A folder is
written beside its destination, fsynced and renamed into place, by the main process only, so
a crash never leaves half a checkpoint; an error while writing (a full disk) leaves the previous
checkpoint as it was and says so.
"""

from __future__ import annotations

import errno
import hashlib
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
from torch.nn.parallel import DistributedDataParallel

from neuralab.errors import UserError

FORMAT_VERSION = 2  # 2: manifest.json with SHA-256 digests
MANIFEST = "manifest.json"
HASH_CHUNK = 1 << 20  # bytes read at a time while hashing
# Keys that serialisation libraries use to name code to import or call (Hydra, pickle,
# jsonpickle, PyYAML, Lightning): a neuralab checkpoint never needs them, so they are refused.
CODE_KEYS = {
    "_target_",
    "__class__",
    "__reduce__",
    "__callable__",
    "py/object",
    "py/reduce",
    "py/function",
    "class_path",
    "callable",
    "__import__",
}
# First bytes of pickles (protocol 2-5 opcode) and of torch.save's zip container.
PICKLE_SIGNATURES = {
    **{b"\x80" + bytes([protocol]): "a Python pickle" for protocol in range(2, 6)},
    b"PK\x03\x04": "a zip archive (torch.save)",
}


def unwrap(model: nn.Module) -> nn.Module:
    """Strip DistributedDataParallel (`.module`) and torch.compile (`._orig_mod`) wrappers, so
    that saved weights never carry `module.` / `_orig_mod.` prefixes."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, DistributedDataParallel):
            model = model.module
        else:
            return model


class CheckpointError(UserError, ValueError):
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
        write_manifest(staging)
        fsync_folder(staging)
        share_like_umask(staging)
        replace_folder(staging, directory)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise save_failed(directory, error) from error
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def save_failed(directory: Path, error: OSError) -> OSError:
    """The same OSError kind, with a message that says what happened to the user's files."""
    kept = (
        f"the previous checkpoint in {directory} is intact"
        if (directory / MANIFEST).exists()
        else f"no earlier checkpoint existed in {directory}"
    )
    cause = "the disk is full" if error.errno == errno.ENOSPC else str(error)
    fix = "free some space" if error.errno == errno.ENOSPC else "check the folder"
    message = f"could not write the checkpoint {directory} ({cause}); {kept}. Fix: {fix} and resume"
    return type(error)(error.errno, message) if error.errno else OSError(message)


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(folder: Path) -> None:
    """manifest.json: digest and size of every file in `folder` (written last, so a folder
    with a manifest is complete)."""
    files = {
        path.name: {"sha256": file_digest(path), "bytes": path.stat().st_size}
        for path in sorted(folder.iterdir())
    }
    write_json(folder / MANIFEST, {"format": FORMAT_VERSION, "files": files})


def verify_manifest(folder: Path) -> None:
    """Every file the manifest lists is present with its size and SHA-256 digest."""
    manifest = read_json(folder / MANIFEST)
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise CheckpointError(f"{folder / MANIFEST} lists no files; the checkpoint is damaged")
    for name, expected in files.items():
        path = folder / str(name)
        if Path(str(name)).name != name or not path.is_file():
            raise CheckpointError(
                f"{path} is missing, but {MANIFEST} lists it: {folder} is not a complete "
                "neuralab checkpoint; use the whole folder"
            )
        actual = file_digest(path)
        if not isinstance(expected, dict) or actual != expected.get("sha256"):
            raise CheckpointError(
                f"{path} does not match {folder / MANIFEST}: expected SHA-256 "
                f"{expected.get('sha256') if isinstance(expected, dict) else expected}, "
                f"found {actual}. The file was changed or damaged after it was saved; "
                "use an intact copy of the checkpoint (nothing was loaded)"
            )


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


def recover_interrupted_save(directory: str | Path) -> list[str]:
    """Tidy up after a process killed while saving `directory`; returns what was done.

    `replace_folder` moves the old checkpoint aside before renaming the new one in: killed
    between the two renames, only the old copy (complete) exists, and it is put back. Staging
    folders of killed saves are incomplete by definition (a complete one is renamed in) and
    are removed.
    """
    directory, notes = Path(directory), []
    old = directory.with_name(f".{directory.name}.old")
    if not directory.exists() and (old / MANIFEST).is_file():
        os.replace(old, directory)
        notes.append(f"{directory}: put back the previous checkpoint (a save was interrupted)")
    for staging in directory.parent.glob(f".{directory.name}.*"):
        if staging.is_dir():
            shutil.rmtree(staging, ignore_errors=True)
            notes.append(f"removed {staging}: an interrupted save's unfinished folder")
    return notes


def share_like_umask(folder: Path) -> None:
    """mkdtemp and safetensors create owner-only files; give them the user's usual modes."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.iterdir():
        path.chmod(0o666 & ~umask)


def fsync_folder(folder: Path) -> None:
    """Flush every file and the folder's own entry list to the disk."""
    for path in folder.iterdir():
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_text_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


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
    refuse_pickle(path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({error}); it may be "
            "truncated or not a neuralab checkpoint"
        ) from None


def refuse_pickle(path: Path) -> None:
    """A pickle renamed .safetensors is named as such; it is never unpickled."""
    with open(path, "rb") as handle:
        head = handle.read(9)
    if head[8:9] == b"{":  # safetensors: an 8-byte header length, then the JSON header
        return
    for signature, kind in PICKLE_SIGNATURES.items():
        if head.startswith(signature):
            raise CheckpointError(
                f"{path} is {kind}, not a safetensors file: neuralab never loads pickles, "
                "because loading one can run any code. Re-save the weights with "
                "safetensors.torch.save_file in a trusted environment"
            )


def refuse_code_references(value: Any, where: str) -> None:
    """Metadata is plain data: a key that names code to import or call is refused."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in CODE_KEYS:
                raise CheckpointError(
                    f"{where}: field {key!r} names code to import or call; neuralab "
                    "checkpoints never do, so this file is refused (nothing was run)"
                )
            refuse_code_references(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            refuse_code_references(item, f"{where}[{index}]")


def check_meta(directory: Path, meta: dict) -> None:
    """The format version, no code references, and a registered model name."""
    if meta.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"{directory / 'meta.json'}: format {meta.get('format')!r}, "
            f"this neuralab reads format {FORMAT_VERSION}"
        )
    refuse_code_references(meta, str(directory / "meta.json"))
    name = meta.get("model", {}).get("name") if isinstance(meta.get("model"), dict) else None
    from neuralab.models import MODELS  # here: models import nothing from checkpoints

    if name is not None and name not in MODELS.names():
        raise CheckpointError(
            f"{directory / 'meta.json'}: model {name!r} is not a registered model "
            f"(valid: {', '.join(MODELS.names())}); the checkpoint cannot be rebuilt"
        )


def load_checkpoint(directory: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(weights, meta) of a checkpoint folder, after checking it against its manifest."""
    directory = Path(directory)
    if not (directory / MANIFEST).is_file():
        read_json(directory / "meta.json")  # a missing meta.json says more than the manifest
        raise CheckpointError(
            f"{directory / MANIFEST} is missing: {directory} is not a complete neuralab "
            "checkpoint (it may have been copied in part); use the whole folder"
        )
    verify_manifest(directory)
    meta = read_json(directory / "meta.json")
    check_meta(directory, meta)
    return read_tensors(directory / "model.safetensors"), meta


def load_training_state(directory: str | Path, verified: bool = False) -> dict | None:
    """The optimizer/scheduler/RNG state saved for resume, or None when the folder has none.

    verified: the caller has just loaded this folder with `load_checkpoint`, which checked
    every file against the manifest; hashing them all again would only repeat that.
    """
    directory = Path(directory)
    if not (directory / "training.json").exists():
        return None
    if not verified:
        verify_manifest(directory)
    return decode(
        read_json(directory / "training.json"), read_tensors(directory / "training.safetensors")
    )
