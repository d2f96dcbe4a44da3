"""ASGI middleware of the prediction server: a request-body size limit that refuses oversized
bodies before reading them, and the timing of every request for /metrics (serve/metrics.py).

Both are plain ASGI callables (no framework types), so they sit in front of any ASGI app.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable

from neuralab.serve.metrics import Metrics

Scope = dict
Message = dict
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


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
