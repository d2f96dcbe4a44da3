"""Dynamic batching for the prediction server: concurrent requests share one forward pass.

Requests put their inputs on an asyncio queue; one worker task takes the first waiting request,
gathers more until it holds `max_batch` inputs or `max_wait_ms` have passed, runs one forward
pass in a thread (so the event loop keeps accepting requests) and hands each request its rows.
A forward pass over 32 inputs costs little more than over one on a CPU, so under load this
multiplies throughput; when idle a request waits at most `max_wait_ms` extra.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

Forward = Callable[[list], torch.Tensor]  # inputs → probabilities (N, classes)


class BatchMetrics(Protocol):
    """Where a Batcher reports its forward passes and queue (serve/metrics.py's Metrics)."""

    def record_batch(self, inputs: int, seconds: float) -> None: ...

    def set_waiting(self, inputs: int) -> None: ...


class Overloaded(Exception):
    """More inputs are waiting than the queue admits; the client should retry later."""


class PredictionTimeout(Exception):
    """A request's inputs were not predicted within the time limit."""


@dataclass
class Job:
    """One request's inputs and the future its probabilities (len(inputs), classes) go to."""

    inputs: list
    future: asyncio.Future
    queued_at: float = field(default_factory=time.perf_counter)


@dataclass
class BatchStats:
    """Counters for /metrics: forward passes, the inputs they held, and their seconds."""

    forward_passes: int = 0
    inputs: int = 0
    forward_seconds: float = 0.0
    largest_batch: int = 0


class Batcher:
    """Queue + worker that merges concurrent requests into shared forward passes.

    Args:
        forward: runs the model on a list of inputs; called in a worker thread, one call at a time.
        max_batch: most inputs per forward pass (1 with `batching=False`).
        max_wait_ms: how long the first request of a batch waits for company.
        max_queue: most inputs waiting (not yet in a forward pass); beyond it submit() raises
            Overloaded.
        timeout_s: most seconds from submit() to the result; beyond it PredictionTimeout.
        batching: False runs every request in a forward pass of its own (for comparison).
        metrics: also report forward passes and the queue length there (for /metrics).

    Example:
        >>> batcher = Batcher(predictor.probabilities, max_batch=32, max_wait_ms=5)
        >>> probabilities = await batcher.submit([image_a, image_b])  # (2, classes)
    """

    def __init__(
        self,
        forward: Forward,
        max_batch: int = 32,
        max_wait_ms: float = 5.0,
        max_queue: int = 256,
        timeout_s: float = 10.0,
        batching: bool = True,
        metrics: BatchMetrics | None = None,
    ) -> None:
        self.forward, self.metrics = forward, metrics
        self.max_batch = max_batch if batching else 1
        self.max_wait_s = max_wait_ms / 1000 if batching else 0.0
        self.max_queue, self.timeout_s = max_queue, timeout_s
        self.stats = BatchStats()
        self._waiting = 0  # inputs queued, not yet taken into a forward pass
        self.queue: asyncio.Queue[Job] | None = None
        self.worker: asyncio.Task | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def waiting(self) -> int:
        """Inputs queued, not yet taken into a forward pass."""
        return self._waiting

    @waiting.setter
    def waiting(self, inputs: int) -> None:
        self._waiting = inputs
        if self.metrics is not None:
            self.metrics.set_waiting(inputs)

    async def submit(self, inputs: Sequence) -> torch.Tensor:
        """Probabilities (len(inputs), classes) of `inputs`, predicted in a shared forward pass.

        Raises:
            Overloaded: when the queue already holds `max_queue` inputs.
            PredictionTimeout: when the result takes longer than `timeout_s`.
        """
        self.start()
        if self.waiting + len(inputs) > self.max_queue:
            raise Overloaded(
                f"{self.waiting} inputs already waiting (--max-queue {self.max_queue})"
            )
        job = Job(list(inputs), asyncio.get_running_loop().create_future())
        self.waiting += len(job.inputs)
        self.queue.put_nowait(job)
        try:
            # wait_for cancels the future on timeout; the worker then skips or ignores the job.
            return await asyncio.wait_for(job.future, self.timeout_s)
        except asyncio.TimeoutError:
            raise PredictionTimeout(
                f"no result within {self.timeout_s:g} s (--timeout-s)"
            ) from None

    def start(self) -> None:
        """Start the worker in the running event loop (idempotent; submit() calls it).

        A queue belongs to one event loop, so a new loop (a test client's) gets a fresh one.
        """
        loop = asyncio.get_running_loop()
        if loop is not self.loop:
            self.loop, self.queue, self.waiting = loop, asyncio.Queue(), 0
            self.worker = None
        if self.worker is None or self.worker.done():
            self.worker = loop.create_task(self.run())

    async def stop(self) -> None:
        """Cancel the worker (at server shutdown)."""
        if self.worker is not None:
            self.worker.cancel()
            await asyncio.gather(self.worker, return_exceptions=True)
            self.worker = None

    async def run(self) -> None:
        """The worker loop: gather a batch, predict it, repeat."""
        while True:
            jobs = await self.gather()
            self.waiting -= sum(len(job.inputs) for job in jobs)
            live = [job for job in jobs if not job.future.done()]  # timed-out jobs are cancelled
            if live:
                await self.predict(live)

    async def gather(self) -> list[Job]:
        """The next batch: the first waiting job plus whatever arrives within max_wait."""
        jobs = [await self.queue.get()]
        count = len(jobs[0].inputs)
        deadline = time.perf_counter() + self.max_wait_s
        while count < self.max_batch:
            if not self.queue.empty():
                jobs.append(self.queue.get_nowait())
            else:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    jobs.append(await asyncio.wait_for(self.queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
            count += len(jobs[-1].inputs)
        return jobs

    async def predict(self, jobs: list[Job]) -> None:
        """One forward pass over all inputs of `jobs`; each future gets its own rows."""
        inputs = [item for job in jobs for item in job.inputs]
        started = time.perf_counter()
        try:
            probabilities = await asyncio.to_thread(self.forward, inputs)
        except Exception as error:  # the requests answer 500 with it; the worker carries on
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(error)
            return
        self.record(len(inputs), time.perf_counter() - started)
        start = 0
        for job in jobs:
            rows = probabilities[start : start + len(job.inputs)]
            start += len(job.inputs)
            if not job.future.done():  # it may have timed out during the forward pass
                job.future.set_result(rows)

    def record(self, inputs: int, seconds: float) -> None:
        self.stats.forward_passes += 1
        self.stats.inputs += inputs
        self.stats.forward_seconds += seconds
        self.stats.largest_batch = max(self.stats.largest_batch, inputs)
        if self.metrics is not None:
            self.metrics.record_batch(inputs, seconds)
