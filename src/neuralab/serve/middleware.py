"""ASGI middleware of the prediction server: a request-body size limit that refuses oversized
bodies before reading them, and request counts and latencies in Prometheus' text format.

Both are plain ASGI callables (no framework types), so they sit in front of any ASGI app.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable

Scope = dict
Message = dict
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Upper bounds (seconds) of the latency histogram: Prometheus' default buckets, which span a
# cached reply (1 ms) to a slow batch under load (10 s).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class BodyTooLarge(Exception):
    """A request body grew past the limit while it streamed in (chunked, no Content-Length)."""

    def __init__(self, limit: int) -> None:
        super().__init__(too_large_message(f"over {limit}", limit))


def too_large_message(size: str, limit: int) -> str:
    return (
        f"request body of {size} bytes is larger than the server's limit of {limit} bytes "
        "(neuralab serve --max-body-mb); send fewer or smaller inputs per request"
    )


async def send_json(send: Send, status: int, detail: str) -> None:
    """A complete JSON response `{"detail": ...}` (the shape FastAPI errors have)."""
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    # The unread body makes the connection unusable for another request: say we close it.
    headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Refuse request bodies over `max_bytes` with 413.

    A declared Content-Length over the limit is refused before a single body byte is read; a
    body without one (chunked) is counted as it streams and refused once it passes the limit
    (the endpoint raises BodyTooLarge, which the app turns into 413).
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = header(scope, b"content-length")
        if declared is not None and not declared.isdigit():
            await send_json(
                send, 400, f"Content-Length must be a number of bytes, got {declared!r}"
            )
            return
        if declared is not None and int(declared) > self.max_bytes:
            await send_json(send, 413, too_large_message(declared, self.max_bytes))
            return
        await self.app(scope, self.counting(receive), send)

    def counting(self, receive: Receive) -> Receive:
        """`receive` that raises BodyTooLarge once the body read so far passes the limit."""
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        return limited


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of header `name` (lower-case bytes) in an ASGI scope, or None."""
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1").strip()
    return None


class Metrics:
    """Request counts by route, method and status, and a latency histogram per route."""

    def __init__(self, routes: Iterable[str]) -> None:
        self.routes = set(routes)
        self.requests: Counter[tuple[str, str, int]] = Counter()
        self.buckets: dict[str, list[int]] = {}  # route → cumulative counts per LATENCY_BUCKETS
        self.seconds: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()

    def route(self, path: str) -> str:
        """The label of a request path: a known route, "/static" or "other" (bounded labels)."""
        if path in self.routes:
            return path
        return "/static" if path.startswith("/static/") else "other"

    def observe(self, path: str, method: str, status: int, seconds: float) -> None:
        route = self.route(path)
        self.requests[route, method, status] += 1
        counts = self.buckets.setdefault(route, [0] * len(LATENCY_BUCKETS))
        for index, bound in enumerate(LATENCY_BUCKETS):
            counts[index] += seconds <= bound
        self.seconds[route] += seconds
        self.counts[route] += 1

    def render(self, extra: Iterable[tuple[str, str, str, float]] = ()) -> str:
        """Prometheus text exposition format (version 0.0.4).

        Args:
            extra: (name, type, help, value) samples appended as they are (gauges, counters).
        """
        lines = [
            "# HELP neuralab_requests_total HTTP requests by route, method and status code.",
            "# TYPE neuralab_requests_total counter",
        ]
        for (route, method, status), count in sorted(self.requests.items()):
            labels = f'route="{route}",method="{method}",status="{status}"'
            lines.append(f"neuralab_requests_total{{{labels}}} {count}")
        lines += [
            "# HELP neuralab_request_duration_seconds Time from request to the last response byte.",
            "# TYPE neuralab_request_duration_seconds histogram",
        ]
        for route in sorted(self.buckets):
            lines += self.histogram_lines(route)
        for name, kind, help_text, value in extra:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value:g}"]
        return "\n".join(lines) + "\n"

    def histogram_lines(self, route: str) -> list[str]:
        name, label = "neuralab_request_duration_seconds", f'route="{route}"'
        lines = [
            f'{name}_bucket{{{label},le="{bound:g}"}} {count}'
            for bound, count in zip(LATENCY_BUCKETS, self.buckets[route], strict=True)
        ]
        lines.append(f'{name}_bucket{{{label},le="+Inf"}} {self.counts[route]}')
        lines.append(f"{name}_sum{{{label}}} {self.seconds[route]:.6f}")
        lines.append(f"{name}_count{{{label}}} {self.counts[route]}")
        return lines


class RecordMetrics:
    """Time every HTTP request and record its route, method and status in `metrics`."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500  # 500 if the app fails before responding

        async def recording(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording)
        finally:
            seconds = time.perf_counter() - started
            self.metrics.observe(scope["path"], scope["method"], status, seconds)
