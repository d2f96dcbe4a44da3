"""Serving at scale: preparation off the event loop, the ONNX backend, worker processes with
summed /metrics, and the thread choice (src/neuralab/serve/{payloads,backends,launch,
metrics,counters,threads}.py)."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from PIL import Image

import neuralab
from neuralab.cli import main as cli

pytest.importorskip("sklearn", reason="the digits dataset needs scikit-learn")
pytest.importorskip("fastapi", reason="neuralab serve needs FastAPI")
httpx = pytest.importorskip("httpx", reason="the tests drive the app with httpx")

from neuralab.data import load_dataset  # noqa: E402
from neuralab.serve import payloads, threads  # noqa: E402
from neuralab.serve.app import ServeSettings, create_app  # noqa: E402
from neuralab.serve.backends import OnnxFileError, load_backend  # noqa: E402
from neuralab.serve.counters import SharedTable  # noqa: E402
from neuralab.serve.metrics import Metrics, column_count  # noqa: E402
from test_serve import run_async, train_image_run, train_text_run  # noqa: E402

ROUTES = ("/predict", "/health")
WORKER_STARTUP_S = 120  # two workers import torch and load the run: seconds, more when busy


@pytest.fixture(scope="module")
def image_run(tmp_path_factory) -> Path:
    return train_image_run(tmp_path_factory.mktemp("scale") / "digits-mlp")


@pytest.fixture(scope="module")
def text_run(tmp_path_factory) -> Path:
    return train_text_run(tmp_path_factory.mktemp("scale-text"))


@pytest.fixture(scope="module")
def digit_pngs() -> list[bytes]:
    """Five test digits of scikit-learn's set, as PNG files."""
    pngs = []
    for image in load_dataset("digits").test.images[:5]:  # uint8 (1, 8, 8)
        buffer = io.BytesIO()
        Image.fromarray(image[0].numpy(), "L").save(buffer, "PNG")
        pngs.append(buffer.getvalue())
    return pngs


def app_for(run: Path, backend: str = "torch", onnx_path: Path | None = None):
    predictor = neuralab.load(run)
    return create_app(predictor, ServeSettings(), load_backend(predictor, backend, onnx_path, run))


def predictions(app, **request) -> list[dict]:
    async def scenario(client):
        answer = await client.post("/predict", params={"top_k": 3}, **request)
        assert answer.status_code == 200, answer.text
        return answer.json()["predictions"]

    return run_async(app, scenario)


def assert_same_predictions(found: list[dict], expected: list[dict], tolerance: float) -> None:
    assert [row["class"] for row in found] == [row["class"] for row in expected]
    for row, reference in zip(found, expected, strict=True):
        assert [top["class"] for top in row["top"]] == [top["class"] for top in reference["top"]]
        for top, reference_top in zip(row["top"], reference["top"], strict=True):
            assert top["probability"] == pytest.approx(reference_top["probability"], abs=tolerance)


# ---------------------------------------------------------------------------- off the loop


def test_parsing_and_decoding_run_in_the_prepare_pool_while_health_answers(
    image_run: Path, digit_pngs, monkeypatch
) -> None:
    """A decode held up in its thread leaves the event loop free: /health answers meanwhile."""
    entered, release, threads_seen = threading.Event(), threading.Event(), []
    decode = payloads.decode_image

    def held_decode(data, where, predictor):
        threads_seen.append(threading.current_thread().name)
        entered.set()
        release.wait(30)
        return decode(data, where, predictor)

    monkeypatch.setattr(payloads, "decode_image", held_decode)

    async def scenario(client):
        files = {"file": ("d.png", digit_pngs[0])}
        prediction = asyncio.ensure_future(client.post("/predict", files=files))
        await asyncio.get_running_loop().run_in_executor(None, entered.wait, 30)
        health = await client.get("/health")  # answered while the decode is held
        release.set()
        return health, await prediction

    health, prediction = run_async(app_for(image_run), scenario)
    assert health.status_code == 200 and prediction.status_code == 200
    assert threads_seen and threads_seen[0].startswith("neuralab-prepare")


def test_multipart_bodies_are_parsed_off_the_loop(image_run: Path, digit_pngs, monkeypatch):
    seen = []
    parse = payloads.parse_multipart

    def recording(*args, **kwargs):
        seen.append(threading.current_thread() is threading.main_thread())
        return parse(*args, **kwargs)

    monkeypatch.setattr(payloads, "parse_multipart", recording)
    found = predictions(app_for(image_run), files={"a": ("a.png", digit_pngs[0])})
    assert len(found) == 1 and seen == [False]


def test_texts_are_tokenised_off_the_loop(text_run: Path, monkeypatch) -> None:
    predictor, seen = neuralab.load(text_run), []
    modality = type(predictor.modality)  # a frozen dataclass: patch its class
    prepare = modality.prepare_all

    def recording(self, texts):
        seen.append(threading.current_thread() is threading.main_thread())
        return prepare(self, texts)

    monkeypatch.setattr(modality, "prepare_all", recording)
    app = create_app(predictor, ServeSettings())
    found = predictions(app, json={"texts": ["a wonderful film", "dull"]})
    assert len(found) == 2 and seen == [False]  # one call: the whole batch, in the forward thread


# ---------------------------------------------------------------------------- onnx backend


@pytest.fixture(scope="module")
def exported_image_run(image_run: Path) -> Path:
    pytest.importorskip("onnxruntime", reason="the onnx backend needs onnxruntime")
    neuralab.export(image_run, "onnx", check_examples=16, check_data="random")
    return image_run


def test_onnx_backend_answers_as_torch_for_images(exported_image_run: Path, digit_pngs) -> None:
    files = [("file", (f"{i}.png", png)) for i, png in enumerate(digit_pngs)]
    torch_rows = predictions(app_for(exported_image_run), files=files)
    onnx_rows = predictions(app_for(exported_image_run, "onnx"), files=files)
    assert_same_predictions(onnx_rows, torch_rows, tolerance=1e-5)
    app = app_for(exported_image_run, "onnx")

    async def info(client):
        return (await client.get("/info")).json()

    assert run_async(app, info)["backend"] == "onnx"


def test_onnx_backend_answers_as_torch_for_texts(text_run: Path) -> None:
    pytest.importorskip("onnxruntime", reason="the onnx backend needs onnxruntime")
    neuralab.export(text_run, "onnx", check_examples=16, check_data="random")
    texts = ["the film was wonderful", "a dull plot and awful", "it was", "superb " * 30]
    torch_rows = predictions(app_for(text_run), json={"texts": texts})
    onnx_rows = predictions(app_for(text_run, "onnx"), json={"texts": texts})
    assert_same_predictions(onnx_rows, torch_rows, tolerance=1e-5)


def test_an_int8_export_is_served_through_onnx(exported_image_run: Path, digit_pngs, tmp_path):
    """A quantized `<model>.int8.onnx` with its sidecar (same contract + "quantization")."""
    quantization = pytest.importorskip("onnxruntime.quantization")
    export = exported_image_run / "export"
    source, target = export / "mlp.onnx", tmp_path / "mlp.int8.onnx"
    quantization.quantize_dynamic(
        str(source), str(target), weight_type=quantization.QuantType.QInt8
    )
    sidecar = json.loads((export / "mlp.onnx.json").read_text(encoding="utf-8"))
    sidecar.update(file=target.name, quantization={"method": "dynamic", "weights": "int8"})
    (tmp_path / "mlp.int8.onnx.json").write_text(json.dumps(sidecar), encoding="utf-8")
    files = [("file", (f"{i}.png", png)) for i, png in enumerate(digit_pngs)]
    torch_rows = predictions(app_for(exported_image_run), files=files)
    int8_rows = predictions(app_for(exported_image_run, "onnx", target), files=files)
    for row, reference in zip(int8_rows, torch_rows, strict=True):  # int8: close, not equal
        assert row["probability"] == pytest.approx(reference["probability"], abs=0.1)


def test_missing_onnx_file_says_to_export(image_run: Path, tmp_path: Path, capsys) -> None:
    copy = shutil.copytree(image_run / "checkpoint", tmp_path / "run" / "checkpoint")
    predictor = neuralab.load(copy.parent)
    with pytest.raises(OnnxFileError, match="neuralab export .* --format onnx"):
        load_backend(predictor, "onnx", None, copy.parent)
    assert cli.main(["serve", str(copy.parent), "--backend", "onnx"]) == 2
    error = capsys.readouterr().err
    assert "no ONNX file at" in error and str(tmp_path / "run" / "export" / "mlp.onnx") in error


def test_an_export_of_another_run_is_refused(exported_image_run: Path, text_run: Path) -> None:
    pytest.importorskip("onnxruntime", reason="the onnx backend needs onnxruntime")
    other = exported_image_run / "export" / "mlp.onnx"
    with pytest.raises(OnnxFileError, match="does not fit this run .*kind: 'image'"):
        load_backend(neuralab.load(text_run), "onnx", other, text_run)


# ---------------------------------------------------------------------------- metrics, workers


def test_metrics_of_several_workers_are_summed() -> None:
    table = SharedTable.create(column_count(ROUTES), workers=2)
    first, second = Metrics.shared(ROUTES, table), Metrics.shared(ROUTES, table)
    assert first.counters.row != second.counters.row
    first.observe("/predict", "POST", 200, 0.01)
    second.observe("/predict", "POST", 200, 0.02)
    second.observe("/predict", "POST", 503, 0.001)
    first.record_batch(3, 0.5)
    second.record_batch(7, 0.25)
    text = first.render(batching=True)
    assert "neuralab_workers 2" in text
    assert 'neuralab_requests_total{route="/predict",method="POST",status="200"} 2' in text
    assert 'neuralab_requests_total{route="/predict",method="POST",status="503"} 1' in text
    assert 'neuralab_request_duration_seconds_count{route="/predict"} 3' in text
    assert "neuralab_forward_passes_total 2\n" in text
    assert "neuralab_predicted_inputs_total 10\n" in text
    assert "neuralab_largest_batch 7\n" in text  # the largest of any worker, not a sum
    assert text == second.render(batching=True)


def test_two_workers_answer_and_report_summed_metrics(image_run: Path, digit_pngs) -> None:
    """A real `neuralab serve --workers 2` on a free port: predictions, /metrics totals."""
    port = free_port()
    command = [sys.executable, "-m", "neuralab", "serve", str(image_run), "--port", str(port),
               "--workers", "2", "--threads", "1", "--log-level", "info"]  # fmt: skip
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    timer = threading.Timer(WORKER_STARTUP_S, server.kill)  # a hung start fails, never hangs
    timer.start()
    try:
        wait_for_workers(server, 2)
        url = f"http://127.0.0.1:{port}"
        workers = {httpx.get(f"{url}/health").json()["worker"] for _ in range(40)}
        for png in digit_pngs:
            answer = httpx.post(f"{url}/predict", files={"file": ("d.png", png)})
            assert answer.status_code == 200 and answer.json()["predictions"][0]["class"]
        text = httpx.get(f"{url}/metrics").text
    finally:
        timer.cancel()
        server.terminate()
        server.wait(30)
    assert "neuralab_workers 2" in text
    count = len(digit_pngs)
    assert f'neuralab_requests_total{{route="/predict",method="POST",status="200"}} {count}' in text
    assert 'neuralab_requests_total{route="/health",method="GET",status="200"} 40' in text
    assert f"neuralab_predicted_inputs_total {count}\n" in text
    assert len(workers) == 2  # 40 fresh connections reached both workers: the totals are sums


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_workers(server: subprocess.Popen, count: int) -> None:
    """Read the server's log until `count` workers said their app started (no polling)."""
    started = 0
    for line in server.stderr:
        started += "Application startup complete" in line
        if started == count:
            return
    raise AssertionError(f"the server exited (status {server.wait()}) before {count} workers ran")


def test_cli_passes_workers_backend_and_the_threads_share(image_run: Path, monkeypatch) -> None:
    from neuralab.serve import launch

    launched = {}
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    monkeypatch.setattr(launch, "serve_workers", lambda spec, *rest: launched.update(spec=spec))
    assert cli.main(["serve", str(image_run), "--workers", "2", "--max-queue", "99"]) == 0
    spec = launched["spec"]
    assert spec.threads == 1 and spec.backend == "torch" and spec.settings.max_queue == 99
    assert spec.table.workers == 2
    assert cli.main(["serve", str(image_run), "--workers", "0"]) == 2


# ---------------------------------------------------------------------------- threads


class FakeBackend:
    """Advances a fake clock by 10 ms per pass with 1 thread, by 2 ms with more."""

    name = "fake"

    def __init__(self, clock: list[float]) -> None:
        self.clock, self.threads, self.calls = clock, 1, []

    def set_threads(self, threads: int) -> None:
        self.threads = threads
        self.calls.append(threads)

    def probabilities(self, inputs: list):
        self.clock[0] += 0.010 if self.threads == 1 else 0.002


def test_threads_are_timed_and_capped_at_each_workers_share(image_run: Path, monkeypatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(threads.time, "perf_counter", lambda: clock[0])
    predictor = neuralab.load(image_run)
    backend = FakeBackend(clock)
    best, note = threads.choose_threads(backend, predictor, workers=1, cores=4)
    assert best == 4 and backend.threads == 4 and "timed" in note and "1: 30.0 ms" in note
    backend = FakeBackend(clock)
    best, note = threads.choose_threads(backend, predictor, workers=4, cores=4)
    assert best == 1 and backend.calls == [1] and "cores // workers" in note
    assert threads.thread_candidates(workers=3, cores=8) == [1, 2]
