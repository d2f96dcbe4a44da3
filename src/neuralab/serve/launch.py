"""Start `neuralab serve RUN`: load the run and its backend, choose the threads, and serve the
app under uvicorn, in this process (`--workers 1`) or in N worker processes behind one port.

With `--workers N` the parent binds the socket, creates the shared /metrics table and hands
both to N processes that uvicorn spawns (its own worker supervisor, which also restarts a
worker that dies). Each worker loads the run itself and shares nothing mutable with the
others but the metrics table (serve/counters.py): its own model, batcher, queue and limits.
So `--max-queue`, `--max-batch` and the other limits hold per worker; the server as a whole
admits up to N × --max-queue waiting inputs. The kernel spreads connections over the workers.

Example:
    >>> serve("runs/mnist-best", settings=ServeSettings(), workers=2)  # until Ctrl+C
"""

from __future__ import annotations

import functools
import importlib.util
import ipaddress
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from neuralab.errors import ConfigError
from neuralab.inference.predict import Predictor
from neuralab.serve.app import ROUTES, SERVE_EXTRA, ServeSettings, create_app, import_serving
from neuralab.serve.backends import load_backend
from neuralab.serve.counters import SharedTable
from neuralab.serve.metrics import Metrics, column_count
from neuralab.serve.threads import choose_threads, sample_inputs


@dataclass
class WorkerSpec:
    """Everything a worker process needs to build its app (pickled to it when spawned)."""

    run_dir: str
    settings: ServeSettings
    device: str
    backend: str
    onnx_path: str | None
    threads: int
    table: SharedTable


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: assume it may be reachable from elsewhere
        return False


def need_uvicorn() -> None:
    try:
        import uvicorn  # noqa: F401
    except ImportError as error:
        raise ImportError(f"neuralab serve needs uvicorn ({error}): {SERVE_EXTRA}") from None


def http_stack() -> str:
    """Which HTTP parser and event loop uvicorn will use ("auto": the fast ones if installed)."""
    found = {name: importlib.util.find_spec(name) is not None for name in ("httptools", "uvloop")}
    if all(found.values()):
        return "HTTP: httptools on uvloop"
    missing = " ".join(name for name, present in found.items() if not present)
    # Measured on 2 cores, 2 workers, 64 clients: ~1.6x the requests/s of h11 + asyncio.
    return f"HTTP: uvicorn's pure-Python fallbacks (`pip install {missing}` serves more requests/s)"


def serve(
    run_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    settings: ServeSettings | None = None,
    device: str = "cpu",
    log_level: str = "info",
    threads: int | None = None,
    workers: int = 1,
    backend: str = "torch",
    onnx_path: str | Path | None = None,
) -> None:
    """Serve the model of `run_dir` over HTTP until interrupted (what `neuralab serve` runs).

    Args:
        threads: intra-op threads per worker (default: timed at startup, see threads.py).
        workers: processes serving requests behind the one port.
        backend: "torch" or "onnx" (onnxruntime on the run's ONNX export).
        onnx_path: the ONNX file (default `<run>/export/<model name>.onnx`).
    """
    need_uvicorn()
    import_serving()  # fail before loading anything when FastAPI is missing
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    settings = settings or ServeSettings()
    predictor = Predictor.load(run_dir, device=device)
    runner = load_backend(predictor, backend, onnx_path, run_dir)
    threads, note = pick_threads(runner, predictor, workers, threads)
    warm_up(runner, predictor, settings.max_batch)
    print(f"forward passes: {backend} backend, {note}; {http_stack()}", flush=True)
    if workers == 1:
        serve_app(create_app(predictor, settings, runner), run_dir, host, port, log_level)
        return
    del predictor, runner  # each worker loads its own
    onnx = str(onnx_path) if onnx_path else None
    table = SharedTable.create(column_count(ROUTES), workers)
    spec = WorkerSpec(str(run_dir), settings, device, backend, onnx, threads, table)
    serve_workers(spec, workers, host, port, log_level)


def pick_threads(runner, predictor: Predictor, workers: int, threads: int | None) -> tuple:
    """(threads, note): `threads` as given, or timed (threads.py); torch's pool gets it too."""
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {threads}")
        runner.set_threads(threads)
        note = f"{threads} threads per worker (--threads)"
    else:
        threads, note = choose_threads(runner, predictor, workers)
    torch.set_num_threads(threads)
    return threads, note


def build_worker_app(spec: WorkerSpec):
    """The app of one worker process (uvicorn calls it as the app factory, in the worker)."""
    torch.set_num_threads(spec.threads)
    predictor = Predictor.load(spec.run_dir, device=spec.device)
    runner = load_backend(predictor, spec.backend, spec.onnx_path, spec.run_dir, spec.threads)
    warm_up(runner, predictor, spec.settings.max_batch)
    metrics = Metrics.shared(ROUTES, spec.table)
    return create_app(predictor, spec.settings, runner, metrics)


def warm_up(runner, predictor: Predictor, max_batch: int) -> None:
    """One forward pass at batch 1 and one at `max_batch` before the first request: the first
    passes of a process allocate and pick kernels (tens of ms), which no client should wait for."""
    for count in sorted({1, max_batch}):
        runner.probabilities(sample_inputs(predictor, count))


def warn_if_reachable(host: str) -> None:
    if not is_loopback(host):
        print(
            f"warning: serving on {host}, reachable from other machines; the server has no "
            "authentication, so anyone who can reach it can use the model",
            file=sys.stderr,
        )


def serve_app(app, run_dir: str | Path, host: str, port: int, log_level: str) -> None:
    """Run `app` under uvicorn until interrupted, warning when it is reachable from elsewhere."""
    import uvicorn

    warn_if_reachable(host)
    print(f"serving {run_dir} on http://{host}:{port}/ (Ctrl+C to stop)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level)


def serve_workers(spec: WorkerSpec, workers: int, host: str, port: int, log_level: str) -> None:
    """`workers` uvicorn worker processes on one socket, each building its app from `spec`."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    warn_if_reachable(host)
    factory = functools.partial(build_worker_app, spec)  # picklable: spawned workers get it
    config = uvicorn.Config(
        factory, host=host, port=port, log_level=log_level, workers=workers, factory=True
    )
    socket = config.bind_socket()
    print(
        f"serving {spec.run_dir} on http://{host}:{port}/ with {workers} worker processes "
        "(Ctrl+C to stop)",
        flush=True,
    )
    Multiprocess(config, sockets=[socket]).run()
