"""Small safetensors files the data layer writes between a run's stages (pseudo-labels, word
vectors): written atomically, read back with an error that names the file."""

from __future__ import annotations

from pathlib import Path

import torch

from neuralab.data.dataset import DataError


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """Write `tensors` and `metadata` to `path` through a temp file and a rename, so a
    crash never leaves half a file under the name."""
    from safetensors.torch import save_file

    staging = path.with_name(f".{path.name}.tmp")
    tensors = {name: tensor.contiguous() for name, tensor in tensors.items()}
    save_file(tensors, str(staging), metadata=metadata)
    staging.replace(path)
    return path


def load_tensors(
    path: Path, names: tuple[str, ...], what: str
) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """The metadata and the `names` tensors of the file at `path`; DataError naming the file
    and `what` it should hold when it is missing or is not such a file."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            return metadata, {name: handle.get_tensor(name) for name in names}
    except (OSError, SafetensorError, KeyError) as error:
        raise DataError(f"{path}: cannot read {what} ({error})") from None
