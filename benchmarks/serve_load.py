"""Load test of `neuralab serve`: throughput and latency with and without dynamic batching, and
the status codes of its limits (413, 422, 503, 504), against real uvicorn servers on loopback.

    python -m benchmarks.serve_load /work/demo-runs/mnist-best            # the measurement
    python -m benchmarks.serve_load RUN --requests 50 --duration-s 5      # a quick smoke run

For each mode (batching on, off) one server subprocess is started; an async httpx client then
keeps 1, 16 and 64 requests in flight (each a multipart upload of one 28x28 PNG) until
`--requests` have completed or `--duration-s` have passed. Requests/s counts completed requests
over the wall time; latencies are client-side, per request. The client shares the machine with
the server, so on a 2-core CPU the figures are a lower bound. Writes
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
    done = sum(statuses.values())
    milliseconds = np.array(latencies) * 1000
    return {
        "concurrency": concurrency,
        "requests": done,
        "failed": done - statuses[200],
        "statuses": {str(key): count for key, count in statuses.items()},
        "seconds": round(elapsed, 3),
        "requests_per_s": round(done / elapsed, 1),
        "p50_ms": round(float(np.percentile(milliseconds, 50)), 2),
        "p99_ms": round(float(np.percentile(milliseconds, 99)), 2),
        "retry_after": sorted(retry_after),
    }


def batch_counters(url: str) -> tuple[float, float]:
    """(forward passes, predicted inputs) so far, from the server's /metrics."""
    values = {}
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        name, _, value = line.partition(" ")
        values[name] = value
    passes = float(values["neuralab_forward_passes_total"])
    return passes, float(values["neuralab_predicted_inputs_total"])


def measure(run: str, batching: bool, options: argparse.Namespace, pngs: list[bytes]) -> list[dict]:
    """One server, every concurrency level; each row also gets the mean inputs per forward pass."""
    rows = []
    flags = options.serve_args + ([] if batching else ["--no-batching"])
    with server(run, *flags) as url:
        asyncio.run(load(url, pngs, 1, 20, options.duration_s))  # warm-up, not recorded
        for concurrency in options.concurrency:
            before = batch_counters(url)
            row = asyncio.run(load(url, pngs, concurrency, options.requests, options.duration_s))
            passes, inputs = (a - b for a, b in zip(batch_counters(url), before, strict=True))
            row.update(batching=batching, mean_batch=round(inputs / max(passes, 1), 2))
            rows.append(row)
            print(f"batching={batching} concurrency={concurrency}: {row}", flush=True)
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
        "| batching | clients | requests | failed | requests/s | p50 ms | p99 ms | inputs/pass |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {'on' if row['batching'] else 'off'} | {row['concurrency']} | {row['requests']} "
            f"| {row['failed']} | {row['requests_per_s']} | {row['p50_ms']} | {row['p99_ms']} "
            f"| {row['mean_batch']} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="run directory of the model to serve (e.g. mnist-best)")
    parser.add_argument("--requests", type=int, default=2000, help="per configuration")
    parser.add_argument("--duration-s", type=float, default=30.0, help="per configuration")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
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
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    options = parse_args(argv)
    pngs = [digit_png(seed) for seed in range(16)]
    rows = measure(options.run, True, options, pngs) + measure(options.run, False, options, pngs)
    limits = demonstrate_limits(options.run, pngs[0])
    info = machine_info()
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "command": " ".join(["python -m benchmarks.serve_load", *(argv or sys.argv[1:])]),
        "machine": info,
        "run": options.run,
        "serve_args": options.serve_args,
        "rows": rows,
        "limits": limits,
    }
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\n{machine_line(info)}\n\n{markdown(rows)}\n")
    print("limits: " + json.dumps(limits))
    print(f"wrote {options.out}")


if __name__ == "__main__":
    main()
