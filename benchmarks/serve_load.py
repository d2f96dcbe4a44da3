"""Load test of `neuralab serve`: throughput and latency with and without dynamic batching, and
the status codes of its limits (413, 422, 503, 504), against real uvicorn servers on loopback.

    python -m benchmarks.serve_load /work/demo-runs/mnist-best            # the measurement
    python -m benchmarks.serve_load RUN --workers 2 --modes on            # 2 worker processes
    python -m benchmarks.serve_load RUN --requests 50 --duration-s 5      # a quick smoke run
    python -m benchmarks.serve_load RUN --config "1 worker=--workers 1" \
        --config "2 workers=--workers 2"                                  # side by side
    python -m benchmarks.serve_load RUN --before benchmarks/results/serve_load.json  # vs. before

For each configuration and mode (batching on, off) one server subprocess is started; a client
then keeps 1, 16, 64 and 256 requests in flight (each a multipart upload of one 28x28 PNG)
until `--requests` have completed or `--duration-s` have passed. Requests/s counts completed
requests over the wall time; latencies are client-side, per request. The client shares the
machine with the server, so on a 2-core CPU the figures are a lower bound. The default client
(`--client raw`) writes pre-built HTTP/1.1 requests on keep-alive sockets: httpx's async client
spends ~14 ms of CPU per request at 64 connections (measured on the 2-core machine), more than
the server, and would measure itself (`--client httpx` for the figures taken with it before).
`--before FILE` adds the rows of an earlier results file (e.g. the one committed before a
change, measured by the same script on the same run) as a configuration "before". Writes
benchmarks/results/serve_load.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
from PIL import Image, ImageDraw

from benchmarks.machine import machine_info, machine_line

RESULTS = Path(__file__).parent / "results" / "serve_load.json"
STARTUP_TIMEOUT_S = 120  # loading torch and the model on a busy machine
REQUEST_TIMEOUT_S = 60
JSON_HEADER = {"content-type": "application/json"}


def free_port() -> int:
    """A loopback port free right now (the server binds it a moment later)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def server(run: str, *flags: str) -> Iterator[str]:
    """`neuralab serve RUN FLAGS` in a subprocess on a free loopback port; yields its URL."""
    port = free_port()
    command = [sys.executable, "-m", "neuralab", "serve", run, "--port", str(port)]
    command += ["--log-level", "warning", *flags]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def wait_healthy(url: str, process: subprocess.Popen) -> None:
    """Poll GET /health until the server answers (a benchmark may poll; tests may not)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode}; see above")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer /health within {STARTUP_TIMEOUT_S} s")


def digit_png(seed: int) -> bytes:
    """A white-on-black 28x28 stroke figure, MNIST-like (what a client would upload)."""
    rng = np.random.default_rng(seed)
    image = Image.new("L", (28, 28), 0)
    points = [tuple(int(v) for v in rng.integers(6, 22, size=2)) for _ in range(4)]
    ImageDraw.Draw(image).line(points, fill=255, width=3)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


async def load(
    url: str, pngs: list[bytes], concurrency: int, requests: int, seconds: float
) -> dict:
    """Keep `concurrency` requests in flight until `requests` are done or `seconds` pass."""
    latencies, statuses, issued, retry_after = [], Counter(), 0, set()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=REQUEST_TIMEOUT_S) as client:
        started = time.perf_counter()
        deadline = started + seconds

        async def client_loop() -> None:
            nonlocal issued
            while issued < requests and time.perf_counter() < deadline:
                png = pngs[issued % len(pngs)]
                issued += 1
                sent = time.perf_counter()
                try:
                    answer = await client.post("/predict", files={"file": ("d.png", png)})
                    statuses[answer.status_code] += 1
                    if answer.status_code == 503:
                        retry_after.add(answer.headers.get("retry-after"))
                except httpx.HTTPError as error:
                    statuses[type(error).__name__] += 1
                latencies.append(time.perf_counter() - sent)

        await asyncio.gather(*(client_loop() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return summary(concurrency, statuses, latencies, elapsed, retry_after)


def batch_counters(url: str) -> tuple[float, float]:
    """(forward passes, predicted inputs) so far, from the server's /metrics."""
    values = {}
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        name, _, value = line.partition(" ")
        values[name] = value
    passes = float(values["neuralab_forward_passes_total"])
    return passes, float(values["neuralab_predicted_inputs_total"])


def multipart_request(png: bytes, port: int) -> bytes:
    """A complete keep-alive HTTP/1.1 POST /predict uploading `png` as multipart."""
    boundary = "neuralab-load-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="d.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + png
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class RawConnection:
    """One keep-alive connection that sends pre-built requests and reads each answer's status
    and body (Content-Length framed, as uvicorn answers); reconnects after `connection: close`."""

    def __init__(self, port: int) -> None:
        self.port, self.reader, self.writer = port, None, None

    async def send(self, request: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
        await self.reader.readexactly(int(headers.get("content-length", 0)))
        if headers.get("connection") == "close":
            self.close()
        return int(lines[0].split()[1])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def raw_load(
    url: str, pngs: list[bytes], concurrency: int, requests: int, seconds: float
) -> dict:
    """`load`, with RawConnection clients instead of httpx (a cheap load generator)."""
    port = int(url.rsplit(":", 1)[1])
    bodies = [multipart_request(png, port) for png in pngs]
    latencies, statuses, issued = [], Counter(), 0
    started = time.perf_counter()
    deadline = started + seconds

    async def client_loop() -> None:
        nonlocal issued
        connection = RawConnection(port)
        while issued < requests and time.perf_counter() < deadline:
            request, issued = bodies[issued % len(bodies)], issued + 1
            sent = time.perf_counter()
            try:
                statuses[await asyncio.wait_for(connection.send(request), REQUEST_TIMEOUT_S)] += 1
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as error:
                statuses[type(error).__name__] += 1
                connection.close()
            latencies.append(time.perf_counter() - sent)
        connection.close()

    await asyncio.gather(*(client_loop() for _ in range(concurrency)))
    return summary(concurrency, statuses, latencies, time.perf_counter() - started, set())


def summary(concurrency: int, statuses: Counter, latencies: list, elapsed: float, retry: set):
    """A result row: counts, requests/s and latency percentiles (ms)."""
    done = sum(statuses.values())
    milliseconds = np.array(latencies or [0.0]) * 1000
    return {
        "concurrency": concurrency,
        "requests": done,
        "failed": done - statuses[200],
        "statuses": {str(key): count for key, count in statuses.items()},
        "seconds": round(elapsed, 3),
        "requests_per_s": round(done / elapsed, 1),
        "p50_ms": round(float(np.percentile(milliseconds, 50)), 2),
        "p99_ms": round(float(np.percentile(milliseconds, 99)), 2),
        "retry_after": sorted(retry),
    }


def measure(
    run: str, batching: bool, options: argparse.Namespace, pngs: list[bytes], config: str = ""
) -> list[dict]:
    """One server, every concurrency level; each row also gets the mean inputs per forward pass."""
    rows, flags = [], options.serve_args + ([] if batching else ["--no-batching"])
    flags += options.configs.get(config, [])
    loader = raw_load if options.client == "raw" else load
    with server(run, *flags) as url:
        # Warm-up, not recorded: every worker, at the largest batch sizes.
        most = max(options.concurrency)
        asyncio.run(loader(url, pngs, most, 4 * most, options.duration_s))
        for concurrency in options.concurrency:
            before = batch_counters(url)
            row = asyncio.run(loader(url, pngs, concurrency, options.requests, options.duration_s))
            passes, inputs = (a - b for a, b in zip(batch_counters(url), before, strict=True))
            row.update(batching=batching, mean_batch=round(inputs / max(passes, 1), 2))
            row.update(config=config, client=options.client)
            rows.append(row)
            print(f"{config} batching={batching} concurrency={concurrency}: {row}", flush=True)
    return rows


async def raw_status(url: str, head: str) -> int:
    """Send only a request head (no body) on a raw socket; the status code of the answer."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head.encode())
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT_S)
        return int(status_line.split()[1])
    finally:
        writer.close()


def demonstrate_limits(run: str, png: bytes) -> dict:
    """The status codes of each limit, provoked on small-limit servers."""
    found = {}
    with server(run, "--max-body-mb", "0.01") as url:  # 10 KiB
        head = (
            "POST /predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            "Content-Length: 100000000\r\n\r\n"
        )
        found["413_declared_100MB_body_never_sent"] = asyncio.run(raw_status(url, head))
        chunks = (b" " * 4096 for _ in range(8))  # 32 KiB, chunked (no Content-Length)
        answer = httpx.post(f"{url}/predict", content=chunks, headers=JSON_HEADER, timeout=30)
        found["413_chunked_32KiB"] = answer.status_code
        not_image = httpx.post(f"{url}/predict", files={"file": ("x.png", b"not an image")})
        found["422_not_an_image"] = not_image.status_code
        found["422_detail"] = not_image.json()["detail"]
        wrong = httpx.post(f"{url}/predict", json={"text": "a text for an image model"})
        found["422_wrong_field"] = wrong.status_code
    with server(run, "--max-queue", "4", "--max-items", "4", "--no-batching") as url:
        burst = asyncio.run(load(url, [png], 128, 128, 60))
        found["503_burst_of_128_with_max_queue_4"] = burst["statuses"]
        found["503_retry_after"] = burst["retry_after"]
    with server(run, "--timeout-s", "0.0001") as url:  # 0.1 ms: less than any forward pass
        found["504_timeout_0.1ms"] = asyncio.run(load(url, [png], 4, 8, 60))["statuses"]
    return found


def markdown(rows: list[dict]) -> str:
    lines = [
        "| config | batching | clients | requests | failed | requests/s | p50 ms | p99 ms "
        "| inputs/pass |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row.get('config') or '-'} | {'on' if row['batching'] else 'off'} "
            f"| {row['concurrency']} | {row['requests']} | {row['failed']} "
            f"| {row['requests_per_s']} | {row['p50_ms']} | {row['p99_ms']} | {row['mean_batch']} |"
        )
    return "\n".join(lines)


def comparison(rows: list[dict]) -> str:
    """Requests/s and p99 of every configuration side by side, per (batching, clients)."""
    configs = list(dict.fromkeys(row.get("config") or "-" for row in rows))
    keys = list(dict.fromkeys((row["batching"], row["concurrency"]) for row in rows))
    found = {(row.get("config") or "-", row["batching"], row["concurrency"]): row for row in rows}
    header = "| batching | clients | " + " | ".join(f"{c} req/s | {c} p99 ms" for c in configs)
    lines = [header + " |", "| --- | --- |" + " --- | --- |" * len(configs)]
    for batching, clients in keys:
        cells = []
        for config in configs:
            row = found.get((config, batching, clients))
            cells += [str(row["requests_per_s"]), str(row["p99_ms"])] if row else ["", ""]
        lines.append(f"| {'on' if batching else 'off'} | {clients} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_configs(values: list[str]) -> dict[str, list[str]]:
    """ "NAME=FLAGS" → {NAME: FLAGS split on spaces}; none given: one unnamed configuration."""
    configs = {}
    for value in values:
        name, equals, flags = value.partition("=")
        if not equals or not name:
            raise SystemExit(
                f"--config takes NAME=FLAGS, e.g. '2 workers=--workers 2'; got {value!r}"
            )
        configs[name] = flags.split()
    return configs or {"": []}


def before_rows(path: Path | None) -> list[dict]:
    """The rows of an earlier results file, labelled "before"."""
    if path is None:
        return []
    rows = json.loads(path.read_text(encoding="utf-8"))["rows"]
    return [{**row, "config": "before"} for row in rows]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="run directory of the model to serve (e.g. mnist-best)")
    parser.add_argument("--requests", type=int, default=2000, help="per configuration")
    parser.add_argument("--duration-s", type=float, default=30.0, help="per configuration")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument(
        "--modes", nargs="+", choices=["on", "off"], default=["on", "off"], help="batching modes"
    )
    parser.add_argument("--workers", help="`neuralab serve --workers` of the measured servers")
    parser.add_argument("--backend", help="`neuralab serve --backend` (torch, onnx)")
    parser.add_argument(
        "--config",
        dest="config_values",
        action="append",
        default=[],
        metavar="NAME=FLAGS",
        help="a server configuration to measure, e.g. '2 workers=--workers 2'; repeatable: "
        "each is measured in turn and the table compares them",
    )
    parser.add_argument(
        "--before", type=Path, help="an earlier results file whose rows to compare with"
    )
    parser.add_argument(
        "--client", choices=["raw", "httpx"], default="raw", help="load generator (see above)"
    )
    parser.add_argument(
        "--serve-arg",
        dest="serve_args",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for `neuralab serve` in the measured runs, e.g. "
        "--serve-arg=--max-wait-ms --serve-arg=0; repeatable",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--skip-limits", action="store_true", help="no limit demonstrations")
    options = parser.parse_args(argv)
    for flag in ("workers", "backend"):
        if getattr(options, flag):
            options.serve_args += [f"--{flag}", getattr(options, flag)]
    options.configs = parse_configs(options.config_values)
    return options


def main(argv: list[str] | None = None) -> None:
    options = parse_args(argv)
    earlier = before_rows(options.before)  # read first: --out may be the same file
    pngs = [digit_png(seed) for seed in range(16)]
    rows = [
        row
        for config in options.configs
        for mode in options.modes
        for row in measure(options.run, mode == "on", options, pngs, config)
    ]
    limits = {} if options.skip_limits else demonstrate_limits(options.run, pngs[0])
    info = machine_info()
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "command": " ".join(["python -m benchmarks.serve_load", *(argv or sys.argv[1:])]),
        "machine": info,
        "run": options.run,
        "serve_args": options.serve_args,
        "configs": options.configs,
        "client": options.client,
        "rows": rows,
        "limits": limits,
    }
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\n{machine_line(info)}\n\n{markdown(rows)}\n")
    if earlier or len(options.configs) > 1:
        print(f"{comparison(earlier + rows)}\n")
    print("limits: " + json.dumps(limits))
    print(f"wrote {options.out}")


if __name__ == "__main__":
    main()
