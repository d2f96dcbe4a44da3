"""The machine line recorded with every benchmark figure."""

from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path

import torch

from neuralab.train.engine import cpu_flags, cpu_model

# The flags that decide which kernels and precisions are fast.
INTERESTING_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx_vnni")
# Set, these make oneDNN, ATen and MKL run an older CPU's kernels (e.g. AVX2 on an AVX-512 CPU).
KERNEL_LIMITS = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")


def machine_info() -> dict:
    """CPU model and relevant flags, core count, torch version and thread count."""
    flags = cpu_flags()
    limits = {name: os.environ[name] for name in KERNEL_LIMITS if name in os.environ}
    return {
        "cpu": cpu_model(),
        "flags": [f for f in INTERESTING_FLAGS if f in flags],
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        **({"kernel_limits": limits} if limits else {}),
    }


def machine_line(info: dict) -> str:
    gpu = f", GPU {info['gpu']}" if info.get("gpu") else ", no GPU"
    limits = " ".join(f"{k}={v}" for k, v in info.get("kernel_limits", {}).items())
    return (
        f"{info['cpu']} ({', '.join(info['flags']) or 'no AVX2'}), {info['cores']} cores, "
        f"torch {info['torch']}, {info['threads']} threads{gpu}"
        + (f", kernels held back by {limits}" if limits else "")
    )


def append_record(path: Path, row: dict) -> dict:
    """Append `row`, dated and with the machine, as one JSON line of `path`; returns it."""
    row = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), **row,
           "machine": machine_info()}  # fmt: skip
    path.parent.mkdir(exist_ok=True)
    with path.open("a", encoding="utf-8") as file:
        file.write(json.dumps(row) + "\n")
    return row
