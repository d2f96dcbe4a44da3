"""`neuralab serve RUN` for an agent's run: POST an observation, get the greedy action and the
Q-values of every action; the page shows a recorded greedy episode and takes an observation
as JSON.

Endpoints: `POST /act` (also `/predict`): {"observation": [...]} or {"observations": [[...],
...]}; `GET /episode.gif` (one greedy episode, recorded on first request and kept);
`GET /health`, `GET /info`, `GET /metrics` and the page at `/`. A Q-network's forward pass
takes microseconds, so requests are answered one by one, without the image service's
batching; the body-size limit (413) and the request metrics are the same.
"""

# No `from __future__ import annotations`: FastAPI reads `request: fastapi.Request` at runtime.
import asyncio
import math
import tempfile
from pathlib import Path

import torch

from neuralab.rl.evaluate import FINAL_SEEDS, record_episode
from neuralab.rl.runs import env_from_meta, load_agent_network, result_folder
from neuralab.serve.app import ServeSettings, add_error_handlers, import_serving
from neuralab.serve.launch import need_uvicorn, serve_app
from neuralab.serve.metrics import Metrics
from neuralab.serve.middleware import BodyLimit, RecordMetrics
from neuralab.serve.payloads import PayloadError, parse_json

STATIC = Path(__file__).parent / "static"
ROUTES = ("/", "/act", "/predict", "/episode.gif", "/health", "/info", "/metrics")
PAGE_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data: blob:",
    "x-content-type-options": "nosniff",
}
GIF_SCALE = 0.5  # the page's episode at half the environment's render size: a smaller file
GIF_EVERY = 2  # every second frame (the GIF plays at 25 frames per second)


class AgentService:
    """The loaded network and what the routes need of it."""

    def __init__(self, run_dir: str | Path, max_items: int) -> None:
        self.folder = result_folder(run_dir)
        self.network, self.meta = load_agent_network(self.folder)
        self.obs_shape = tuple(self.meta["env"]["obs_shape"])
        self.max_items = max_items
        self.gif: bytes | None = None
        self.gif_lock = asyncio.Lock()

    def observations(self, payload: dict) -> torch.Tensor:
        """(N, *obs_shape) float32 from {"observation": [...]} or {"observations": [...]}."""
        fields = [name for name in ("observation", "observations") if name in payload]
        if len(fields) != 1 or set(payload) - {"observation", "observations"}:
            raise PayloadError(
                'send exactly one of "observation" (a list of numbers) or "observations" '
                f"(a list of them); got fields {sorted(payload)}"
            )
        values = payload[fields[0]]
        values = [values] if fields[0] == "observation" else values
        if not isinstance(values, list) or not 1 <= len(values) <= self.max_items:
            raise PayloadError(f'"observations" must list 1 to {self.max_items} observations')
        try:
            batch = torch.tensor(values, dtype=torch.float32)
        except (TypeError, ValueError) as error:
            raise PayloadError(f"an observation must be numbers only ({error})") from None
        if tuple(batch.shape[1:]) != self.obs_shape or not torch.isfinite(batch).all():
            raise PayloadError(
                f"{self.meta['env']['id']} observations have shape {list(self.obs_shape)} "
                f"(finite numbers); got shape {list(batch.shape[1:])}"
            )
        return batch

    def act(self, payload: dict) -> dict:
        batch = self.observations(payload)
        with torch.inference_mode():
            values = self.network(batch)
        return {
            "actions": values.argmax(dim=1).tolist(),
            "q_values": [[round(v, 6) for v in row] for row in values.tolist()],
        }

    def record_gif(self) -> bytes:
        """One greedy episode as a GIF (needs the environment's renderer: pygame)."""
        from neuralab.rl.verbs import write_media

        env = env_from_meta(self.meta, render=True)
        try:
            frames, _ = record_episode(self.network, env, FINAL_SEEDS, GIF_EVERY)
        finally:
            env.close()
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "episode.gif"
            write_media(frames, path, 25, GIF_SCALE)
            return path.read_bytes()

    def info(self) -> dict:
        metrics = self.meta.get("metrics", {})
        evaluation = metrics.get("eval", {})
        return {
            "kind": "agent",
            "algo": self.meta["algo"],
            "env": self.meta["env"]["id"],
            "obs_shape": list(self.obs_shape),
            "actions": self.meta["env"]["actions"],
            "network": self.meta["network"],
            "weights": str(self.folder),
            "step": self.meta["step"],
            "eval_return_mean": evaluation.get("return_mean", math.nan),
        }


def create_agent_app(run_dir: str | Path, max_body_bytes: int, max_items: int):
    """The ASGI app serving the agent of `run_dir`; `app.state.service` is the AgentService."""
    fastapi, responses, staticfiles = import_serving()
    service = AgentService(run_dir, max_items)
    metrics = Metrics(ROUTES)
    app = fastapi.FastAPI(title="neuralab agent", docs_url=None, redoc_url=None)
    app.state.service = service

    @app.get("/", include_in_schema=False)
    async def page():
        return responses.FileResponse(STATIC / "agent.html", headers=PAGE_HEADERS)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/info")
    async def info() -> dict:
        return service.info()

    @app.get("/metrics")
    async def metrics_text():
        media = "text/plain; version=0.0.4; charset=utf-8"
        return responses.PlainTextResponse(metrics.render(), media_type=media)

    @app.post("/act")
    @app.post("/predict")
    async def act(request: fastapi.Request) -> dict:
        return service.act(parse_json(await request.body()))

    @app.get("/episode.gif")
    async def episode():
        async with service.gif_lock:  # recorded once, off the event loop
            if service.gif is None:
                service.gif = await asyncio.to_thread(service.record_gif)
        return responses.Response(service.gif, media_type="image/gif")

    add_error_handlers(app, responses)
    app.mount("/static", staticfiles.StaticFiles(directory=STATIC), name="static")
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(RecordMetrics, metrics=metrics)
    return app


def serve_agent(
    run_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    settings: ServeSettings | None = None,
    log_level: str = "info",
    threads: int | None = None,
) -> None:
    """Serve the agent of `run_dir` over HTTP until interrupted (`neuralab serve` on an agent)."""
    need_uvicorn()
    torch.set_num_threads(threads or 1)  # one small forward pass per request
    limits = settings or ServeSettings()
    serve_app(create_agent_app(run_dir, limits.max_body_bytes, limits.max_items), run_dir,
              host, port, log_level)  # fmt: skip
