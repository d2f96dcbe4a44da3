"""How many intra-op threads each worker's forward passes get, when `--threads` is not given:
the faster of 1 and (cores // workers), timed on a few forward passes at startup.

Why time it: on an idle machine more threads make a large batch faster, but a thread pool
shared with busy neighbours (the event loop, other workers, a load generator on the same cores)
spends its time waiting for descheduled peers, and small models gain nothing from it. The
trainer's own timing (train/engine.py, `choose_threads`) measures a training step (forward and
backward, PyTorch only); serving needs forward passes through whichever backend serves, so it
is timed here. With several workers no worker gets more than its share of the cores.
"""

from __future__ import annotations

import os
import time

import torch

from neuralab.inference.predict import Predictor
from neuralab.serve.backends import Backend

TIMING_BATCH = 16  # inputs per timed forward pass: a typical batch under load
TIMING_ROUNDS = 3  # interleaved rounds per candidate; the total counts (stalls are the point)
SAMPLE_TEXT = "a short sample review to time the model with"


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. under taskset or a container)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def thread_candidates(workers: int, cores: int) -> list[int]:
    """1 and each worker's share of the cores (cores // workers, at least 1)."""
    return sorted({1, max(1, cores // workers)})


def sample_inputs(predictor: Predictor, count: int = TIMING_BATCH) -> list:
    """`count` inputs as the batcher hands them over: random uint8 (C, H, W) images, or texts."""
    if predictor.modality.kind == "text":
        return [SAMPLE_TEXT] * count
    generator = torch.Generator().manual_seed(0)
    images = predictor.modality.random_examples(count, predictor.meta.spec, generator)
    return list(images)  # (N, C, H, W) uint8 → N tensors (C, H, W)


def choose_threads(
    backend: Backend, predictor: Predictor, workers: int, cores: int | None = None
) -> tuple[int, str]:
    """The faster thread count per worker, set on `backend`, and a line saying how it was found.

    Returns:
        (threads, note), e.g. (1, "1 thread per worker (timed: 1: 12 ms, 2: 31 ms)").
    """
    candidates = thread_candidates(workers, cores or available_cores())
    if len(candidates) == 1:
        backend.set_threads(candidates[0])
        return candidates[0], f"{candidates[0]} threads per worker (cores // workers)"
    inputs = sample_inputs(predictor)
    timings = dict.fromkeys(candidates, 0.0)
    for threads in candidates:  # warm-up: the first pass allocates and picks kernels
        backend.set_threads(threads)
        backend.probabilities(inputs)
    for threads in candidates * TIMING_ROUNDS:
        backend.set_threads(threads)
        started = time.perf_counter()
        backend.probabilities(inputs)
        timings[threads] += time.perf_counter() - started
    best = min(timings, key=timings.get)
    backend.set_threads(best)
    summary = ", ".join(f"{t}: {s * 1000:.1f} ms" for t, s in timings.items())
    return (
        best,
        f"{best} threads per worker (timed {TIMING_ROUNDS} batches of {TIMING_BATCH}: {summary})",
    )
