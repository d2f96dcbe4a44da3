"""Device, precision and memory-format choice: picked by probing this machine, and printed."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from neuralab.errors import ConfigError
from neuralab.train.distributed import world_size

CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
TIMING_ROUNDS = 3  # rounds of one timed step per candidate; the minimum counts
THREAD_ROUNDS = 4  # rounds of the thread-count comparison (summed)
BF16_MARGIN = 0.9  # bf16 must take at most 90% of fp32's time to be chosen


@dataclass(frozen=True)
class Engine:
    """How the hot loop runs: device, autocast dtype (None = fp32) and memory format."""

    device: torch.device
    autocast_dtype: torch.dtype | None
    channels_last: bool
    reason: str

    def describe(self) -> str:
        precision = "bf16 autocast" if self.autocast_dtype == torch.bfloat16 else "fp32"
        layout = "channels_last" if self.channels_last else "contiguous"
        return f"{self.device.type} · {precision} · {layout} ({self.reason})"


def pick_device(name: str = "auto") -> torch.device:
    """`auto`: CUDA when present, else CPU. An explicit CUDA request without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"train.device={name!r} but this machine has no CUDA device; "
            "use train.device=auto or cpu"
        )
    return device


def cpu_flags() -> set[str]:
    """The CPU feature flags from /proc/cpuinfo (empty where that file does not exist)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


def has_convolutions(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def choose_engine(
    model: nn.Module,
    sample: torch.Tensor,
    labels: torch.Tensor,
    device: torch.device,
    precision: str = "auto",
    channels_last: str = "auto",
) -> Engine:
    """Pick precision and memory format: fixed choices are kept, `auto` ones are timed.

    On CUDA `auto` means bf16 autocast (when supported) and channels_last for convnets. On CPU
    the candidates (fp32, channels_last, bf16 when the CPU has native bf16) are timed on one
    training batch of a copy of the model, and the fastest is kept: bf16 helps on some CPUs and
    is several times slower on others, so it is measured, never assumed.
    """
    conv = has_convolutions(model)
    layouts = (
        [channels_last == "on"] if channels_last != "auto" else ([False, True] if conv else [False])
    )
    if device.type == "cuda":
        bf16 = precision == "bf16" or (precision == "auto" and torch.cuda.is_bf16_supported())
        layout = layouts[-1]
        return Engine(device, torch.bfloat16 if bf16 else None, layout, "GPU defaults")
    native = bool(CPU_BF16_FLAGS and cpu_flags() & set(CPU_BF16_FLAGS))
    dtypes = {"fp32": [None], "bf16": [torch.bfloat16]}.get(
        precision, [None, torch.bfloat16] if native else [None]
    )
    candidates = [(d, cl) for d in dtypes for cl in layouts]
    if len(candidates) == 1:
        why = "as configured" if precision != "auto" else "no native bf16 on this CPU"
        return Engine(device, candidates[0][0], candidates[0][1], why)
    timings = dict.fromkeys(candidates, float("inf"))
    for _ in range(TIMING_ROUNDS):  # interleaved rounds, so a burst of load hits all alike
        for candidate in candidates:
            seconds = time_step(model, sample, labels, *candidate)
            timings[candidate] = min(timings[candidate], seconds)
    best = pick_fastest(timings)
    fastest = min(timings, key=timings.get)
    summary = ", ".join(f"{label(c)} {timings[c] * 1000:.0f} ms" for c in candidates)
    reason = f"fastest of one-batch timings: {summary}"
    if best != fastest:  # the margin kept fp32
        reason = (
            f"one-batch timings: {summary}; {label(fastest)} is less than "
            f"{1 - BF16_MARGIN:.0%} faster than {label(best)}, so fp32"
        )
    return Engine(device, best[0], best[1], reason)


def pick_fastest(timings: dict[tuple[torch.dtype | None, bool], float]) -> tuple:
    """The fastest candidate, but bf16 only when it beats the best fp32 by BF16_MARGIN:
    a near-tie is noise, and fp32 carries no rounding risk."""
    best = min(timings, key=timings.get)
    fp32 = {c: t for c, t in timings.items() if c[0] is None}
    if best[0] is not None and fp32:
        fastest_fp32 = min(fp32, key=fp32.get)
        if timings[best] > BF16_MARGIN * timings[fastest_fp32]:
            return fastest_fp32
    return best


def label(candidate: tuple[torch.dtype | None, bool]) -> str:
    dtype, layout = candidate
    return ("bf16" if dtype else "fp32") + ("+cl" if layout else "")


def time_step(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    dtype: torch.dtype | None,
    channels_last: bool,
    repeats: int = 1,
) -> float:
    """Best-of-`repeats` seconds of one forward+backward on a throwaway copy of the model."""
    probe = copy.deepcopy(model).train()
    if channels_last:
        probe = probe.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    best = float("inf")
    for _ in range(repeats + 1):  # the first run warms up kernels and allocators
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            outputs = probe(images)
            # several label fields (B, heads): any loss of the outputs costs the same to time
            loss = (
                nn.functional.cross_entropy(outputs, labels)
                if labels.ndim == 1
                else outputs.float().logsumexp(1).mean()
            )
        loss.backward()
        probe.zero_grad(set_to_none=True)
        best = min(best, time.perf_counter() - start) if _ else best
    return best


def choose_threads(
    model: nn.Module, sample: torch.Tensor, labels: torch.Tensor, engine: Engine
) -> tuple[int, str]:
    """Time one training batch with all intra-op threads and with half of them; keep the faster.

    When another busy process shares the cores, a full thread pool spends its time waiting
    for descheduled peers (seen here: LeNet at 470 img/s with 2 threads versus 10,400 with 1),
    while on an idle machine every core helps. Measuring at start-up picks the right one.
    """
    full = torch.get_num_threads()
    if engine.device.type != "cpu" or full < 2:
        return full, f"{full} threads"
    # 32 examples: enough to show stalls, cheap even for slow models (an LSTM on long texts).
    sample, labels = sample[:32], labels[:32]
    timings = dict.fromkeys((full, full // 2), 0.0)
    # Total, not minimum, over interleaved rounds: stalls from a busy neighbour are the point.
    for threads in (full, full // 2) * THREAD_ROUNDS:
        torch.set_num_threads(threads)
        timings[threads] += time_step(
            model, sample, labels, engine.autocast_dtype, engine.channels_last
        )
    best = min(timings, key=timings.get)
    torch.set_num_threads(best)
    summary = ", ".join(f"{t}: {s * 1000:.0f} ms" for t, s in timings.items())
    return best, f"{best} threads (timed: {summary})"


def pick_engine(
    model: nn.Module,
    inputs: Any,
    batch_size: int,
    device: torch.device,
    precision: str,
    channels_last: str,
    threads: int | None,
) -> Engine:
    """Time the thread count (unless `threads` is set, or several processes share the
    machine), then precision and layout, on a training-sized batch that `inputs` (the run's
    ImageInputs or TextInputs) draw with `sample_batch`."""
    batch, labels = inputs.sample_batch(batch_size, device)
    note = ""
    if threads is None and world_size() == 1 and device.type == "cpu":
        # Threads first: a stalled thread pool would distort every other timing.
        _, note = choose_threads(model, batch, labels, Engine(device, None, False, ""))
    engine = choose_engine(model, batch, labels, device, precision, channels_last)
    return dataclasses.replace(engine, reason=f"{engine.reason}; {note}") if note else engine


def engine_choice(engine: Engine) -> dict:
    """What a resumed run needs to run exactly as before (stored in the checkpoint's meta)."""
    return {
        "precision": "bf16" if engine.autocast_dtype == torch.bfloat16 else "fp32",
        "channels_last": engine.channels_last,
        "threads": torch.get_num_threads(),
    }


def resumed_engine(choice: dict, device: torch.device) -> Engine:
    """The interrupted run's engine (`choice`: its checkpoint's `engine_choice`), not a new
    timing: another precision, layout or thread count would change the arithmetic and the
    resumed result."""
    torch.set_num_threads(choice["threads"])
    dtype = torch.bfloat16 if choice["precision"] == "bf16" else None
    return Engine(device, dtype, choice["channels_last"], "as before the interruption")


def fixed_engine(device: torch.device, precision: str, channels_last: str) -> Engine:
    """The engine of a deterministic run: the configured choices, `auto` meaning fp32 and the
    contiguous layout; nothing is timed, so nothing depends on the machine's load."""
    dtype = torch.bfloat16 if precision == "bf16" else None
    return Engine(device, dtype, channels_last == "on", "deterministic: nothing timed")


@contextlib.contextmanager
def deterministic_mode(enabled: bool) -> Iterator[None]:
    """Only deterministic kernels while the block runs (an op without one raises, naming it);
    cuDNN autotuning off. The previous settings come back afterwards."""
    if not enabled:
        yield
        return
    # cuBLAS needs a fixed workspace to be deterministic; it reads this when CUDA starts.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
    )
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before[1:]
