"""`neuralab serve RUN`: the HTTP prediction service of serve/app.py, from the command line."""

from __future__ import annotations

import argparse

from neuralab.errors import ConfigError
from neuralab.rl.runs import is_agent_run
from neuralab.serve.agent import serve_agent
from neuralab.serve.app import ServeSettings
from neuralab.serve.backends import BACKENDS
from neuralab.serve.launch import serve

MEBIBYTE = 2**20  # --max-body-mb is in MiB; ServeSettings counts bytes


def add_serve(commands) -> None:
    """Add `neuralab serve` to the CLI's subcommands."""
    parser = commands.add_parser(
        "serve",
        help="serve a trained run over HTTP, with a web page to try it",
        description="Serve RUN over HTTP: POST /predict, POST /explain (text), GET /health, "
        "/info, /metrics, and a web page at /. An agent's run (neuralab rl) answers POST /act "
        "with the action and Q-values of an observation, and its page plays an episode. "
        "Binds to 127.0.0.1 unless --host says otherwise.",
    )
    parser.add_argument("run_dir", metavar="RUN", help="run directory (or its checkpoint folder)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="default 8000")
    parser.add_argument("--device", default="cpu", help="torch device for the model (default cpu)")
    add_limits(parser)
    add_scaling(parser)
    parser.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    parser.set_defaults(handler=run_serve)


def add_limits(parser: argparse.ArgumentParser) -> None:
    """Batching and the limits (ServeSettings)."""
    defaults = ServeSettings()
    parser.add_argument(
        "--max-batch", type=int, default=defaults.max_batch, help="most inputs per forward pass"
    )
    parser.add_argument(
        "--max-wait-ms",
        type=float,
        default=defaults.max_wait_ms,
        help="how long a batch waits for more requests (milliseconds)",
    )
    parser.add_argument(
        "--no-batching", action="store_true", help="one forward pass per request (to compare)"
    )
    parser.add_argument(
        "--max-queue",
        type=int,
        default=defaults.max_queue,
        help="most inputs waiting; beyond it requests get 503 with Retry-After",
    )
    parser.add_argument(
        "--timeout-s",
        type=float,
        default=defaults.timeout_s,
        help="most seconds a prediction may take, queueing included; beyond it 504",
    )
    parser.add_argument(
        "--max-body-mb",
        type=float,
        default=defaults.max_body_bytes / MEBIBYTE,
        help="largest request body in MiB; larger ones get 413 before they are read",
    )
    parser.add_argument(
        "--max-items", type=int, default=defaults.max_items, help="most inputs in one request"
    )


def add_scaling(parser: argparse.ArgumentParser) -> None:
    """Threads, worker processes and the backend."""
    parser.add_argument(
        "--threads",
        type=int,
        help="intra-op threads for each worker's forward passes (default: the faster of 1 and "
        "cores // workers, timed at startup and printed)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes behind the one port, each with its own model, batcher and "
        "limits (--max-queue and --max-batch hold per worker); /metrics sums them (default 1)",
    )
    parser.add_argument(
        "--backend",
        default="torch",
        choices=BACKENDS,
        help="what runs the forward passes: torch, or onnx (onnxruntime on the run's export; "
        "/explain still uses torch) (default torch)",
    )
    parser.add_argument(
        "--onnx",
        metavar="PATH",
        help="the ONNX file for --backend onnx (default <run>/export/<model name>.onnx, as "
        "`neuralab export RUN --format onnx` writes it; an int8 .int8.onnx works the same)",
    )


def run_serve(args: argparse.Namespace) -> int:
    """`neuralab serve ...`: serves until interrupted; returns the exit status."""
    settings = ServeSettings(
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        batching=not args.no_batching,
        max_queue=args.max_queue,
        timeout_s=args.timeout_s,
        max_body_bytes=int(args.max_body_mb * MEBIBYTE),
        max_items=args.max_items,
    )
    if is_agent_run(args.run_dir):  # an agent: POST an observation, get its action
        if args.workers != 1 or args.backend != "torch" or args.onnx:
            raise ConfigError(
                "an agent's run is served by one process with PyTorch: drop --workers, "
                "--backend and --onnx"
            )
        serve_agent(args.run_dir, args.host, args.port, settings, args.log_level, args.threads)
    else:
        serve(
            args.run_dir, args.host, args.port, settings, args.device, args.log_level,
            args.threads, args.workers, args.backend, args.onnx,
        )  # fmt: skip
    return 0
