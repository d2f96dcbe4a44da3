"""`neuralab serve RUN`: an HTTP prediction service (FastAPI + uvicorn) and its web page.

Endpoints: `POST /predict` (image uploads, base64 images or texts; several per request),
`POST /explain` (text models: which words pushed the decision), `GET /health`, `GET /info`,
`GET /metrics` (Prometheus text) and the page at `/`. Concurrent requests are merged into
shared forward passes (batching.py). Limits answer with their proper status: 413 body too
large (refused before it is read), 415/422 bad payload, 503 overloaded (with Retry-After),
504 prediction timeout.

Example:
    >>> from fastapi.testclient import TestClient
    >>> app = create_app(neuralab.load("runs/mnist-best"), ServeSettings(max_batch=64))
    >>> TestClient(app).post("/predict", files={"file": open("seven.png", "rb")}).json()
    {'predictions': [{'class': '7', 'probability': 0.998, 'top': [...]}]}
"""

# No `from __future__ import annotations`: FastAPI reads the routes' `request: fastapi.Request`
# annotations at runtime, and fastapi is imported lazily (a local name, not a module global).
import contextlib
import importlib.util
import ipaddress
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from neuralab.errors import ConfigError
from neuralab.inference.predict import Predictor
from neuralab.serve.batching import Batcher, Overloaded, PredictionTimeout
from neuralab.serve.middleware import BodyLimit, BodyTooLarge, Metrics, RecordMetrics
from neuralab.serve.payloads import (
    PayloadError,
    clean_texts,
    is_text_model,
    json_items,
    parse_json,
    read_inputs,
)

SERVE_EXTRA = "pip install 'neuralab[serve]'"
STATIC = Path(__file__).parent / "static"
ROUTES = ("/", "/predict", "/explain", "/health", "/info", "/metrics")
RETRY_AFTER_S = 1  # what a 503 tells clients to wait: about one batch's worth of work
# (name, Prometheus type, help, key in Service.metrics_text's values) of the batching metrics.
BATCH_METRICS = (
    ("neuralab_queue_inputs", "gauge", "Inputs waiting for a forward pass.", "waiting"),
    ("neuralab_forward_passes_total", "counter", "Forward passes run.", "forward_passes"),
    ("neuralab_predicted_inputs_total", "counter", "Inputs predicted.", "inputs"),
    ("neuralab_forward_seconds_total", "counter", "Seconds in forward passes.", "forward_seconds"),
    ("neuralab_largest_batch", "gauge", "Most inputs in one forward pass.", "largest_batch"),
)
# The page's scripts and styles come only from this server (no CDN, no inline code).
PAGE_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data: blob:",
    "x-content-type-options": "nosniff",
}


@dataclass
class ServeSettings:
    """Batching and limits of the prediction server (`neuralab serve --help` documents each)."""

    max_batch: int = 32
    max_wait_ms: float = 5.0
    batching: bool = True
    max_queue: int = 1024
    timeout_s: float = 10.0
    max_body_bytes: int = 5 * 2**20
    max_items: int = 64
    max_explain_words: int = 400
    top_k: int = 5

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if name == "batching":
                continue
            lowest = 0 if name == "max_wait_ms" else 1e-9  # waiting 0 ms is fine, 0 items is not
            if not isinstance(value, (int, float)) or value < lowest:
                raise ConfigError(f"serve setting {name} must be a positive number, got {value!r}")
        if self.max_items > self.max_queue:
            raise ConfigError(
                f"max_items ({self.max_items}) is larger than max_queue ({self.max_queue}): such a "
                "request could never be admitted; lower --max-items or raise --max-queue"
            )


class Service:
    """What the endpoints do, on one predictor; `create_app` routes requests here."""

    def __init__(self, predictor: Predictor, settings: ServeSettings) -> None:
        self.predictor, self.settings = predictor, settings
        self.text = is_text_model(predictor)
        self.batcher = Batcher(
            self.forward,
            max_batch=settings.max_batch,
            max_wait_ms=settings.max_wait_ms,
            max_queue=settings.max_queue,
            timeout_s=settings.timeout_s,
            batching=settings.batching,
        )
        self.metrics = Metrics(ROUTES)

    def forward(self, inputs: list) -> torch.Tensor:
        """Probabilities (N, classes); runs in the batcher's thread."""
        with torch.inference_mode():  # no autograd graph: faster and less memory
            return self.predictor.probabilities(inputs)

    async def predict(self, request) -> dict:
        """`POST /predict`: top classes of every input in the request."""
        top_k = self.top_k(request)
        inputs = await read_inputs(request, self.predictor, self.settings.max_items)
        probabilities = await self.batcher.submit(inputs)
        return {"predictions": [self.top_classes(row, top_k) for row in probabilities]}

    def top_k(self, request) -> int:
        value = request.query_params.get("top_k", str(self.settings.top_k))
        if not value.isdigit() or int(value) < 1:
            raise PayloadError(f"query parameter top_k must be a positive integer, got {value!r}")
        return min(int(value), len(self.predictor.classes))

    def top_classes(self, row: torch.Tensor, top_k: int) -> dict:
        """One input's `top_k` most likely classes, rounded as Predictor.predict rounds them."""
        values, indices = row.topk(min(top_k, len(self.predictor.classes)))
        top = [
            {"class": self.predictor.classes[i], "probability": round(v, 6)}
            for v, i in zip(values.tolist(), indices.tolist(), strict=True)
        ]
        return {"class": top[0]["class"], "probability": top[0]["probability"], "top": top}

    async def explain(self, request) -> dict:
        """`POST /explain` (text models): occlusion weights, one per whitespace-separated word.

        A word's weight is how much the predicted class's log-odds, log(p / (1 - p)), drop
        when the word is removed: positive words pushed towards the prediction, negative ones
        against it. Log-odds rather than probabilities, because a confident prediction's
        probability barely moves (0.9995 → 0.999) while its log-odds still do (7.6 → 6.9).
        The text and all its one-word-less variants go through one forward pass.
        """
        words = self.words_to_explain(parse_json(await request.body()))
        variants = [" ".join(words)]
        variants += [" ".join(words[:i] + words[i + 1 :]) for i in range(len(words))]
        probabilities = await self.batcher.submit(variants)  # (1 + words, classes)
        best = int(probabilities[0].argmax())
        odds = log_odds(probabilities[:, best])
        # A model may give NaN for an empty variant (a one-word text): count that word as 0.
        weights = torch.nan_to_num(odds[0] - odds[1:])
        result = self.top_classes(probabilities[0], self.settings.top_k)
        return {**result, "words": words, "weights": [round(w, 6) for w in weights.tolist()]}

    def words_to_explain(self, payload: dict) -> list[str]:
        """The words of an /explain payload `{"text": ...}`, within the server's limits."""
        if not self.text:
            raise PayloadError("/explain explains text models; this one classifies images")
        if set(payload) != {"text"}:
            found = sorted(payload)
            raise PayloadError(f'/explain takes one text: send {{"text": "..."}}, got {found}')
        field, values = json_items(payload, True, 1)
        words = clean_texts(values, field)[0].split()
        limit = min(self.settings.max_explain_words, self.settings.max_queue - 1)
        if len(words) > limit:
            raise PayloadError(
                f"{len(words)} words is more than /explain takes ({limit}: the text and one "
                "variant per word must fit --max-queue); explain a shorter passage"
            )
        return words

    def info(self) -> dict:
        """`GET /info`: the model, its classes and preprocessing, and the server's limits."""
        meta = self.predictor.meta
        return {
            "model": meta.model.name,
            "model_args": meta.model.args,
            "dataset": meta.dataset,
            "kind": self.predictor.modality.kind,
            "classes": self.predictor.classes,
            "preprocessing": self.predictor.modality.describe(),
            "settings": asdict(self.settings),
        }

    def metrics_text(self) -> str:
        """`GET /metrics`: request counts, latencies and batching counters (Prometheus)."""
        values = {"waiting": self.batcher.waiting, **asdict(self.batcher.stats)}
        extra = [(name, kind, text, values[key]) for name, kind, text, key in BATCH_METRICS]
        return self.metrics.render(extra)


def log_odds(probabilities: torch.Tensor) -> torch.Tensor:
    """log(p / (1 - p)) in float64, with p kept 1e-7 (float32's resolution near 1) from 0 and 1."""
    p = probabilities.double().clamp(1e-7, 1 - 1e-7)
    return p.log() - (1 - p).log()


def create_app(predictor: Predictor, settings: ServeSettings | None = None):
    """The ASGI app serving `predictor` (a FastAPI app wrapped in the size/metrics middleware).

    Args:
        predictor: a loaded model, e.g. `neuralab.load(run_dir)`.
        settings: batching and limits; defaults as `neuralab serve`.

    Returns:
        A FastAPI app; `app.state.service` holds the Service (batcher, metrics).
    """
    if getattr(predictor.task, "episodic", False):
        raise ConfigError(
            f"this is a few-shot ({predictor.meta.task.name}) run: it classifies against classes "
            "given by example, which the service does not take yet; use `neuralab predict RUN "
            "--support a/1.png b/1.png --query q.png` or neuralab.classify_by_example"
        )
    fastapi, responses, staticfiles = import_serving()
    service = Service(predictor, settings or ServeSettings())

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        await service.batcher.stop()

    app = fastapi.FastAPI(title="neuralab", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.service = service
    add_routes(app, service, fastapi, responses)
    add_error_handlers(app, responses)
    app.mount("/static", staticfiles.StaticFiles(directory=STATIC), name="static")
    # Added last = outermost: metrics see every response, the 413s of BodyLimit included.
    app.add_middleware(BodyLimit, max_bytes=service.settings.max_body_bytes)
    app.add_middleware(RecordMetrics, metrics=service.metrics)
    return app


def add_routes(app, service: Service, fastapi, responses) -> None:
    @app.get("/", include_in_schema=False)
    async def page():
        return responses.FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "queue_inputs": service.batcher.waiting}

    @app.get("/info")
    async def info() -> dict:
        return service.info()

    @app.get("/metrics")
    async def metrics():
        media = "text/plain; version=0.0.4; charset=utf-8"
        return responses.PlainTextResponse(service.metrics_text(), media_type=media)

    @app.post("/predict")
    async def predict(request: fastapi.Request) -> dict:
        return await service.predict(request)

    @app.post("/explain")
    async def explain(request: fastapi.Request) -> dict:
        return await service.explain(request)


def add_error_handlers(app, responses) -> None:
    def reply(status: int, detail: str, headers: dict | None = None):
        return responses.JSONResponse({"detail": detail}, status_code=status, headers=headers)

    async def payload(request, error: PayloadError):
        return reply(error.status, str(error))

    async def too_large(request, error: BodyTooLarge):
        return reply(413, str(error), {"connection": "close"})

    async def overloaded(request, error: Overloaded):
        detail = f"server overloaded: {error}; retry in {RETRY_AFTER_S} s"
        return reply(503, detail, {"retry-after": str(RETRY_AFTER_S)})

    async def timeout(request, error: PredictionTimeout):
        return reply(504, f"prediction timed out: {error}; retry later with fewer inputs")

    async def failed(request, error: Exception):
        # Anything else is a bug (a model whose forward pass raises, ...): a JSON 500 naming
        # it; Starlette still re-raises it afterwards, so the server logs its traceback.
        return reply(500, f"internal error: {type(error).__name__}: {error}")

    app.add_exception_handler(Exception, failed)
    app.add_exception_handler(PayloadError, payload)
    app.add_exception_handler(BodyTooLarge, too_large)
    app.add_exception_handler(Overloaded, overloaded)
    app.add_exception_handler(PredictionTimeout, timeout)


def import_serving():
    """fastapi.{responses, staticfiles} and fastapi itself, or an ImportError naming the extra."""
    try:
        import fastapi
        import fastapi.responses
        import fastapi.staticfiles

        # Starlette parses uploads with python-multipart (module `multipart` before 0.0.13).
        if not any(map(importlib.util.find_spec, ("python_multipart", "multipart"))):
            raise ImportError("python-multipart is missing", name="python-multipart")
    except ImportError as error:
        raise ImportError(
            f"neuralab serve needs FastAPI and python-multipart ({error.name} is missing): "
            f"{SERVE_EXTRA}"
        ) from None
    return fastapi, fastapi.responses, fastapi.staticfiles


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


def serve(
    run_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    settings: ServeSettings | None = None,
    device: str = "cpu",
    log_level: str = "info",
    threads: int | None = None,
) -> None:
    """Serve the model of `run_dir` over HTTP until interrupted (what `neuralab serve` runs).

    `threads` sets torch's intra-op threads (default: torch's choice, one per core).
    """
    need_uvicorn()
    if threads is not None:
        torch.set_num_threads(threads)
    app = create_app(Predictor.load(run_dir, device=device), settings)
    serve_app(app, run_dir, host, port, log_level)


def serve_app(app, run_dir: str | Path, host: str, port: int, log_level: str) -> None:
    """Run `app` under uvicorn until interrupted, warning when it is reachable from elsewhere."""
    import uvicorn

    if not is_loopback(host):
        print(
            f"warning: serving on {host}, reachable from other machines; the server has no "
            "authentication, so anyone who can reach it can use the model",
            file=sys.stderr,
        )
    print(f"serving {run_dir} on http://{host}:{port}/ (Ctrl+C to stop)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
