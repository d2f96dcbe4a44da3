"""What `GET /metrics` reports, in Prometheus' text format (version 0.0.4): requests by route,
method and status, a latency histogram per route, the batching counters, and the number of
worker processes.

Every value lives at a fixed column of a Counters row (serve/counters.py), so that with
`--workers N` each worker writes its own row of shared memory and any worker's /metrics
answers with the totals over all of them (gauges: the sum, except the largest batch: the max).
"""

from __future__ import annotations

from collections.abc import Iterable

from neuralab.serve.counters import Counters, SharedTable

# Upper bounds (seconds) of the latency histogram: Prometheus' default buckets, which span a
# cached reply (1 ms) to a slow batch under load (10 s).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "other")
FIRST_STATUS, LAST_STATUS = 100, 599  # HTTP status codes are three digits, 1xx to 5xx
STATUSES = LAST_STATUS - FIRST_STATUS + 1
# (name, Prometheus type, help) of the batching metrics, in their column order.
BATCH_METRICS = (
    ("neuralab_queue_inputs", "gauge", "Inputs waiting for a forward pass."),
    ("neuralab_forward_passes_total", "counter", "Forward passes run."),
    ("neuralab_predicted_inputs_total", "counter", "Inputs predicted."),
    ("neuralab_forward_seconds_total", "counter", "Seconds in forward passes."),
    ("neuralab_largest_batch", "gauge", "Most inputs in one forward pass."),
)
WAITING, PASSES, INPUTS, SECONDS, LARGEST = range(len(BATCH_METRICS))


def number(value: float) -> str:
    """A sample value as Prometheus text: whole numbers in full (no 1.2e+06), else 6 decimals."""
    value = float(value)
    return str(int(value)) if value.is_integer() else f"{value:.6f}"


def route_labels(routes: Iterable[str]) -> list[str]:
    """The bounded set of route labels: the known routes, "/static" and "other"."""
    return sorted(set(routes)) + ["/static", "other"]


def column_count(routes: Iterable[str]) -> int:
    """How many counters a Metrics over `routes` needs (to size shared memory before use)."""
    count = len(route_labels(routes))
    return count * (len(METHODS) * STATUSES + len(LATENCY_BUCKETS) + 2) + len(BATCH_METRICS)


class Metrics:
    """Request counts by route, method and status, a latency histogram per route and the
    batching counters, at fixed columns of `counters` (a private row, or a shared one).

    Args:
        routes: the app's paths; any other path is counted as "other" (or "/static").
        counters: where the values live; default: plain memory of this process.
    """

    def __init__(self, routes: Iterable[str], counters: Counters | None = None) -> None:
        self.labels = route_labels(routes)
        self.index = {label: i for i, label in enumerate(self.labels)}
        self.counters = counters or Counters.local(column_count(routes))
        expected = column_count(routes)
        if self.counters.values.shape != (expected,):
            raise ValueError(f"Metrics needs {expected} counters, got {self.counters.values.shape}")
        routes_count = len(self.labels)
        self.requests_at = 0  # (route, method, status) counts
        self.buckets_at = routes_count * len(METHODS) * STATUSES  # (route, bucket) counts
        self.seconds_at = self.buckets_at + routes_count * len(LATENCY_BUCKETS)  # per route
        self.counts_at = self.seconds_at + routes_count
        self.batch_at = self.counts_at + routes_count
        self.counters.set(self.batch_at + WAITING, 0)  # a replaced worker's queue is gone

    @classmethod
    def shared(cls, routes: Iterable[str], table: SharedTable) -> Metrics:
        """This worker's Metrics on the server's shared table (see SharedTable.attach)."""
        return cls(routes, table.attach())

    def route(self, path: str) -> str:
        """The label of a request path: a known route, "/static" or "other" (bounded labels)."""
        if path in self.index and path not in ("/static", "other"):
            return path
        return "/static" if path.startswith("/static/") else "other"

    def observe(self, path: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency."""
        route = self.index[self.route(path)]
        method_index = METHODS.index(method) if method in METHODS else len(METHODS) - 1
        status_index = min(max(status, FIRST_STATUS), LAST_STATUS) - FIRST_STATUS
        self.counters.add(self.requests_at + (route * len(METHODS) + method_index) * STATUSES
                          + status_index)  # fmt: skip
        for index, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                self.counters.add(self.buckets_at + route * len(LATENCY_BUCKETS) + index)
        self.counters.add(self.seconds_at + route, seconds)
        self.counters.add(self.counts_at + route)

    # -- batching (called by the Batcher of this worker) ----------------------------------------
    def record_batch(self, inputs: int, seconds: float) -> None:
        """One forward pass over `inputs` inputs that took `seconds`."""
        self.counters.add(self.batch_at + PASSES)
        self.counters.add(self.batch_at + INPUTS, inputs)
        self.counters.add(self.batch_at + SECONDS, seconds)
        largest = self.batch_at + LARGEST
        self.counters.set(largest, max(self.counters.values[largest], inputs))

    def set_waiting(self, inputs: int) -> None:
        """Inputs queued in this worker, not yet in a forward pass."""
        self.counters.set(self.batch_at + WAITING, inputs)

    # -- the text ------------------------------------------------------------------------------
    def render(self, batching: bool = False) -> str:
        """Prometheus text exposition format (version 0.0.4), totals over every worker.

        Args:
            batching: also report the batching metrics (the prediction service does).
        """
        totals = self.counters.totals()
        lines = [
            "# HELP neuralab_workers Worker processes serving requests.",
            "# TYPE neuralab_workers gauge",
            f"neuralab_workers {self.counters.workers}",
        ]
        lines += self.request_lines(totals)
        for route in sorted(self.index, key=self.index.get):
            if totals[self.counts_at + self.index[route]]:
                lines += self.histogram_lines(route, totals)
        if batching:
            lines += self.batch_lines(totals)
        return "\n".join(lines) + "\n"

    def request_lines(self, totals) -> list[str]:
        lines = [
            "# HELP neuralab_requests_total HTTP requests by route, method and status code.",
            "# TYPE neuralab_requests_total counter",
        ]
        block = totals[: self.buckets_at].reshape(len(self.labels), len(METHODS), STATUSES)
        found = []
        for route, method, status in zip(*block.nonzero(), strict=True):
            key = (self.labels[route], METHODS[method], FIRST_STATUS + int(status))
            found.append((key, block[route, method, status]))
        for (route, method, status), count in sorted(found):
            labels = f'route="{route}",method="{method}",status="{status}"'
            lines.append(f"neuralab_requests_total{{{labels}}} {number(count)}")
        lines += [
            "# HELP neuralab_request_duration_seconds Time from request to the last response byte.",
            "# TYPE neuralab_request_duration_seconds histogram",
        ]
        return lines

    def histogram_lines(self, route: str, totals) -> list[str]:
        name, label, at = "neuralab_request_duration_seconds", f'route="{route}"', self.index[route]
        counts = totals[self.buckets_at + at * len(LATENCY_BUCKETS) :][: len(LATENCY_BUCKETS)]
        lines = [
            f'{name}_bucket{{{label},le="{bound:g}"}} {number(count)}'
            for bound, count in zip(LATENCY_BUCKETS, counts, strict=True)
        ]
        total = totals[self.counts_at + at]
        lines.append(f'{name}_bucket{{{label},le="+Inf"}} {number(total)}')
        lines.append(f"{name}_sum{{{label}}} {totals[self.seconds_at + at]:.6f}")
        lines.append(f"{name}_count{{{label}}} {number(total)}")
        return lines

    def batch_lines(self, totals) -> list[str]:
        lines = []
        for column, (name, kind, help_text) in enumerate(BATCH_METRICS):
            value = totals[self.batch_at + column]
            if column == LARGEST:
                value = self.counters.maximum(self.batch_at + column)
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
            lines.append(f"{name} {number(value)}")
        return lines
