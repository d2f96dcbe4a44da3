"""`neuralab serve RUN`: an HTTP prediction service (FastAPI + uvicorn) and its web page.

Endpoints: `POST /predict` (image uploads, base64 images or texts; several per request),
`POST /explain` (a heat map of one image, or one weight per word of a text: see explain.py),
`GET /health`, `GET /info`, `GET /metrics` (Prometheus text) and the page at `/`.
The event loop only accepts requests and answers them: bodies are parsed and images decoded
in a thread pool (payloads.py), and concurrent requests are merged into shared forward passes
run by a backend (PyTorch or onnxruntime: backends.py) in the batcher's thread (batching.py).
Launching, with one process or several workers: launch.py. Limits answer with their proper
status: 413 body too large (refused before it is read), 415/422 bad payload,
501 an explanation that needs a missing package, 503 overloaded (with Retry-After), 504
prediction timeout.

Example:
    >>> from fastapi.testclient import TestClient
    >>> app = create_app(neuralab.load("runs/mnist-best"), ServeSettings(max_batch=64))
    >>> TestClient(app).post("/predict", files={"file": open("seven.png", "rb")}).json()
    {'predictions': [{'class': '7', 'probability': 0.998, 'top': [...]}]}
"""

# No `from __future__ import annotations`: FastAPI reads the routes' `request: fastapi.Request`
# annotations at runtime, and fastapi is imported lazily (a local name, not a module global).
import asyncio
import contextlib
import importlib.util
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from neuralab.attribution import texts
from neuralab.attribution.images import AttributionError
from neuralab.data.heads import row_predictions
from neuralab.errors import ConfigError
from neuralab.inference.predict import Predictor
from neuralab.serve.backends import Backend, TorchBackend
from neuralab.serve.batching import Batcher, Overloaded, PredictionTimeout
from neuralab.serve.explain import (
    ExplainUnavailable,
    captum_missing,
    explain_image,
    explain_text_gradients,
    map_json,
    methods_for,
    needs_captum,
    text_to_explain,
)
from neuralab.serve.metrics import Metrics
from neuralab.serve.middleware import BodyLimit, BodyTooLarge, RecordMetrics
from neuralab.serve.payloads import (
    PayloadError,
    is_text_model,
    parse_json,
    read_inputs,
)

SERVE_EXTRA = "pip install 'neuralab[serve]'"
STATIC = Path(__file__).parent / "static"
ROUTES = ("/", "/predict", "/explain", "/health", "/info", "/metrics")
RETRY_AFTER_S = 1  # what a 503 tells clients to wait: about one batch's worth of work
# Threads that parse bodies and decode images, per worker. The GIL runs one at a time in
# Python code; a second overlaps Pillow's decoding, which releases it.
PREPARE_THREADS = 2
# The page's scripts and styles come only from this server (no CDN, no inline code).
PAGE_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data: blob:",
    "x-content-type-options": "nosniff",
}


@dataclass
class ServeSettings:
    """Batching and limits of the prediction server (`neuralab serve --help` documents each).
    With `--workers N` every worker applies them to its own requests: N × max_queue inputs may
    wait in the whole server, each worker's queue holding at most max_queue."""

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
    """What the endpoints do, on one predictor; `create_app` routes requests here.

    Args:
        predictor: the run (model, modality, classes).
        settings: batching and limits.
        backend: what runs the forward passes (default: the predictor's PyTorch model).
        metrics: where /metrics counts (default: this process's memory; a worker of several
            gets a row of the server's shared table).
    """

    def __init__(
        self,
        predictor: Predictor,
        settings: ServeSettings,
        backend: Backend | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.predictor, self.settings = predictor, settings
        self.backend = backend or TorchBackend(predictor)
        self.text = is_text_model(predictor)
        self.metrics = metrics or Metrics(ROUTES)
        self.batcher = Batcher(
            self.forward,
            max_batch=settings.max_batch,
            max_wait_ms=settings.max_wait_ms,
            max_queue=settings.max_queue,
            timeout_s=settings.timeout_s,
            batching=settings.batching,
            metrics=self.metrics,
        )
        self.preparer = ThreadPoolExecutor(PREPARE_THREADS, thread_name_prefix="neuralab-prepare")
        # Gradient explanations hook into the model's layers: they and the forward passes of
        # predictions take turns (model_lock); explanations run one at a time in their thread.
        self.model_lock = threading.Lock()
        self.explainer = ThreadPoolExecutor(1, thread_name_prefix="neuralab-explain")
        self.explain_methods = methods_for(predictor)  # the default first
        self.captum_note = captum_missing()

    def forward(self, inputs: list) -> torch.Tensor:
        """Probabilities (N, classes); runs in the batcher's thread."""
        with self.model_lock:
            return self.backend.probabilities(inputs)

    async def close(self) -> None:
        await self.batcher.stop()
        self.explainer.shutdown(wait=False, cancel_futures=True)
        self.preparer.shutdown(wait=False, cancel_futures=True)

    async def predict(self, request) -> dict:
        """`POST /predict`: top classes of every input in the request."""
        top_k = self.top_k(request)
        inputs = await read_inputs(request, self.predictor, self.settings.max_items, self.preparer)
        probabilities = await self.batcher.submit(inputs)
        return {"predictions": [self.top_classes(row, top_k) for row in probabilities]}

    def top_k(self, request) -> int:
        value = request.query_params.get("top_k", str(self.settings.top_k))
        if not value.isdigit() or int(value) < 1:
            raise PayloadError(f"query parameter top_k must be a positive integer, got {value!r}")
        return min(int(value), len(self.predictor.classes))

    def top_classes(self, row: torch.Tensor, top_k: int) -> dict:
        """One input's `top_k` most likely classes, rounded as Predictor.predict rounds them;
        with several label fields, `{"heads": {name: classes or value}}` instead."""
        if self.predictor.heads:
            return {"heads": row_predictions(self.predictor.heads, row, top_k)}
        values, indices = row.topk(min(top_k, len(self.predictor.classes)))
        top = [
            {"class": self.predictor.classes[i], "probability": round(v, 6)}
            for v, i in zip(values.tolist(), indices.tolist(), strict=True)
        ]
        return {"class": top[0]["class"], "probability": top[0]["probability"], "top": top}

    async def explain(self, request) -> dict:
        """`POST /explain`: a heat map of one image, or one weight per word of a text."""
        if self.predictor.heads:
            raise PayloadError(
                "this run learned several label fields; /explain explains the classes of one "
                "label (train a run on one label field to explain it)"
            )
        if self.text:
            return await self.explain_text(request)
        return await self.explain_image(request)

    async def explain_image(self, request) -> dict:
        """One image's top classes and the attribution map of its predicted class
        (`?method=`, default: explain_methods[0]), as a PNG and as values (explain.py)."""
        method = request.query_params.get("method", self.explain_methods[0])
        self.check_available(method)
        top_k = self.top_k(request)
        inputs = await read_inputs(request, self.predictor, self.settings.max_items, self.preparer)
        if len(inputs) != 1:
            raise PayloadError(f"/explain explains one image per request, got {len(inputs)}")

        def explain() -> dict:
            probabilities, values = explain_image(self.predictor, inputs[0], method)
            return {**self.top_classes(probabilities, top_k), **map_json(method, values)}

        return await self.with_model(explain)

    async def explain_text(self, request) -> dict:
        """`{"text": ..., "method": ...}` → the top classes and one weight per word for the
        predicted class (positive: pushed towards it); occlusion's variants use the batcher."""
        limit = min(self.settings.max_explain_words, self.settings.max_queue - 1)
        payload = parse_json(await request.body())
        text, method = text_to_explain(payload, self.explain_methods[0], limit)
        self.check_available(method)
        probabilities = (await self.batcher.submit([text]))[0]  # (classes,)
        target = int(probabilities.argmax())
        if method == "occlusion":
            loop = asyncio.get_running_loop()

            def probabilities_of(variants: list[str]) -> torch.Tensor:  # in a worker thread
                submitted = asyncio.run_coroutine_threadsafe(self.batcher.submit(variants), loop)
                return submitted.result()

            found = await asyncio.to_thread(texts.occlusion, probabilities_of, text, target)
        else:
            found = await self.with_model(explain_text_gradients, self.predictor, text, target)
        return {
            **self.top_classes(probabilities, self.settings.top_k),
            "method": method,
            "words": found.words,
            "weights": [round(weight, 6) for weight in found.weights],
            "truncated": found.truncated,
        }

    def check_available(self, method: str) -> None:
        if not self.runs_here(method):
            raise ExplainUnavailable(self.captum_note)

    async def with_model(self, function, *args):
        """`function(*args)` in the explanation thread, while no prediction runs the model."""

        def locked():
            with self.model_lock:
                return function(*args)

        return await asyncio.get_running_loop().run_in_executor(self.explainer, locked)

    def info(self) -> dict:
        """`GET /info`: the model, its classes and preprocessing, and the server's limits."""
        meta = self.predictor.meta
        return {
            "model": meta.model.name,
            "model_args": meta.model.args,
            "dataset": meta.dataset,
            "kind": self.predictor.modality.kind,
            "classes": self.predictor.classes,
            # several label fields: each head's name, kind and classes (or mean and std)
            "heads": [h.to_dict() for h in self.predictor.heads or []] or None,
            "preprocessing": self.predictor.modality.describe(),
            "explain_methods": [m for m in self.explain_methods if self.runs_here(m)],
            "explain_note": self.captum_note,  # null, or why some methods cannot run here
            "settings": asdict(self.settings),
            "backend": self.backend.name,
            "workers": self.metrics.counters.workers,
        }

    def runs_here(self, method: str) -> bool:
        return not (self.captum_note and needs_captum(self.predictor.modality.kind, method))

    def metrics_text(self) -> str:
        """`GET /metrics`: request counts, latencies and batching counters (Prometheus),
        summed over every worker process."""
        return self.metrics.render(batching=True)


def create_app(
    predictor: Predictor,
    settings: ServeSettings | None = None,
    backend: Backend | None = None,
    metrics: Metrics | None = None,
):
    """The ASGI app serving `predictor` (a FastAPI app wrapped in the size/metrics middleware).

    Args:
        predictor: a loaded model, e.g. `neuralab.load(run_dir)`.
        settings: batching and limits; defaults as `neuralab serve`.
        backend: what runs the forward passes (backends.py); default PyTorch.
        metrics: where /metrics counts; default this process's memory (launch.py gives each
            worker of several its row of shared memory).

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
    service = Service(predictor, settings or ServeSettings(), backend, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        await service.close()

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
        # The worker's process id: with --workers N, which of them answered.
        return {"status": "ok", "queue_inputs": service.batcher.waiting, "worker": os.getpid()}

    @app.get("/info")
    async def info() -> dict:
        return service.info()

    @app.get("/metrics")
    async def metrics():
        media = "text/plain; version=0.0.4; charset=utf-8"
        return responses.PlainTextResponse(service.metrics_text(), media_type=media)

    @app.post("/predict")
    async def predict(request: fastapi.Request):
        # A JSONResponse as it is: FastAPI would first walk the dict through jsonable_encoder
        # and its return annotation (~0.15 ms of the ~1.5 ms a request costs the server).
        return responses.JSONResponse(await service.predict(request))

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

    async def unfit(request, error: AttributionError):  # unknown method, grad-cam on an MLP
        return reply(422, str(error))

    async def unavailable(request, error: ExplainUnavailable):
        return reply(501, str(error))

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
    app.add_exception_handler(AttributionError, unfit)
    app.add_exception_handler(ExplainUnavailable, unavailable)


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
