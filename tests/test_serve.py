"""`neuralab serve`: endpoints, limits and dynamic batching on tiny trained runs, in-process
(FastAPI's TestClient, or httpx over the ASGI app when requests must overlap). No sockets."""

from __future__ import annotations

import asyncio
import base64
import io
import re
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import neuralab
from neuralab.cli import main as cli

TEST_EXTRA = "pip install -e '.[test]'"
pytest.importorskip("sklearn", reason=f"the digits dataset needs scikit-learn: {TEST_EXTRA}")
pytest.importorskip("fastapi", reason=f"neuralab serve needs FastAPI: {TEST_EXTRA}")
httpx = pytest.importorskip("httpx", reason=f"the tests drive the app with httpx: {TEST_EXTRA}")
from fastapi.testclient import TestClient  # noqa: E402

from neuralab.data import load_dataset  # noqa: E402
from neuralab.serve.app import ServeSettings, create_app  # noqa: E402

GOOD, BAD = ["wonderful", "superb", "lovely"], ["awful", "dull", "terrible"]
FILLER = ["the", "film", "plot", "was", "and", "a", "it", "of"]


def train_image_run(out: Path) -> Path:
    """A one-epoch MLP on scikit-learn's 8x8 digits (seconds)."""
    neuralab.train(
        data="digits",
        model="mlp",
        epochs=1,
        out=str(out),
        verbose=False,
        overrides=["train.precision=fp32"],  # predictors run fp32 too
    )
    return out


def train_colour_run(folder: Path) -> Path:
    """A small convnet telling red from blue 16x16 colour images (one epoch, seconds)."""
    generator = np.random.default_rng(0)
    for name, colour in (("red", (220, 30, 30)), ("blue", (30, 30, 220))):
        (folder / "colours" / name).mkdir(parents=True)
        for index in range(6):
            noise = generator.integers(-30, 30, (20, 20, 3))
            pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels, "RGB").save(folder / "colours" / name / f"{index}.png")
    neuralab.train(
        data=f"folder:{folder / 'colours'}",
        data_dir=str(folder / "data"),
        model="cnn",
        epochs=1,
        out=str(folder / "run"),
        verbose=False,
        overrides=[
            "train.precision=fp32",
            "model.args.width=4",
            "data.options.image_size=16",
            "train.batch_size=4",
        ],  # fmt: skip
    )
    return folder / "run"


def train_text_run(
    folder: Path, model: str = "ngram", model_args: tuple = ("embed_dim=8", "buckets=512")
) -> Path:
    """A text model (ngram by default) on toy reviews: filler words plus one word that gives
    the label away."""
    lines = ["review,label"]
    for index in range(240):
        label, words = ("pos", GOOD) if index % 2 == 0 else ("neg", BAD)
        filler = [FILLER[(index * 3 + k) % len(FILLER)] for k in range(4 + index % 5)]
        filler.insert(index % len(filler), words[index % 3])
        lines.append(f"{' '.join(filler)},{label}")
    (folder / "reviews.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    neuralab.train(
        data=f"csv:{folder / 'reviews.csv'}",
        model=model,
        epochs=4,
        out=str(folder / model),
        verbose=False,
        overrides=[
            "data.options.text_field=review",
            "train.precision=fp32",
            "optim.name=adam",
            "optim.lr=0.05",
            "train.batch_size=16",
            *(f"model.args.{argument}" for argument in model_args),
        ],
    )
    return folder / model


@pytest.fixture(scope="module")
def image_run(tmp_path_factory) -> Path:
    return train_image_run(tmp_path_factory.mktemp("serve") / "digits-mlp")


@pytest.fixture(scope="module")
def text_run(tmp_path_factory) -> Path:
    return train_text_run(tmp_path_factory.mktemp("serve-text"))


@pytest.fixture(scope="module")
def colour_run(tmp_path_factory) -> Path:
    return train_colour_run(tmp_path_factory.mktemp("serve-colour"))


@pytest.fixture(scope="module")
def embedding_text_run(tmp_path_factory) -> Path:
    """A GRU (it has a token embedding table: integrated gradients fit it)."""
    folder = tmp_path_factory.mktemp("serve-gru")
    return train_text_run(folder, "gru", ("embed_dim=8", "hidden=8"))


@pytest.fixture(scope="module")
def digit_pngs() -> list[bytes]:
    """Five test digits of scikit-learn's set, as PNG files."""
    pngs = []
    for image in load_dataset("digits").test.images[:5]:  # uint8 (1, 8, 8)
        buffer = io.BytesIO()
        Image.fromarray(image[0].numpy(), "L").save(buffer, "PNG")
        pngs.append(buffer.getvalue())
    return pngs


def client_for(run: Path, **settings) -> TestClient:
    return client_for_predictor(neuralab.load(run), **settings)


def client_for_predictor(predictor: neuralab.Predictor, **settings) -> TestClient:
    return TestClient(create_app(predictor, ServeSettings(**settings)))


def expected_top(predictor: neuralab.Predictor, inputs: list, top_k: int = 3) -> list[list]:
    return [
        [{"class": c, "probability": pytest.approx(p, abs=1e-6)} for c, p in top]
        for top in predictor.predict(inputs, top_k=top_k)
    ]


def run_async(app, scenario):
    """Run `scenario(client)` with an httpx client wired to the ASGI app (no socket)."""

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serve.test") as client:
            return await scenario(client)

    return asyncio.run(main())


class Gate:
    """Wraps a predictor's probabilities(): records each forward pass and, while closed,
    holds it until open() (so tests control when the worker finishes, without sleeping)."""

    def __init__(self, predictor: neuralab.Predictor, closed: bool = False) -> None:
        self.forward, self.batches = predictor.probabilities, []
        self.entered, self.opened = threading.Event(), threading.Event()
        if not closed:
            self.opened.set()
        predictor.probabilities = self

    def __call__(self, inputs):
        self.batches.append(len(inputs))
        self.entered.set()
        self.opened.wait()
        return self.forward(inputs)

    def open(self) -> None:
        self.opened.set()


# ---------------------------------------------------------------------------- endpoints


def test_health_info_and_page(image_run: Path) -> None:
    with client_for(image_run) as client:
        assert client.get("/health").json()["status"] == "ok"
        info = client.get("/info").json()
        assert info["kind"] == "image" and info["model"] == "mlp"
        assert info["classes"] == [str(digit) for digit in range(10)]
        assert info["preprocessing"]["image_size"] == [8, 8]
        assert info["preprocessing"]["channels"] == 1
        page = client.get("/")
        assert page.status_code == 200 and "<canvas" in page.text
        assert 'capture="environment"' in page.text  # the photo panel's camera button
        assert "default-src 'self'" in page.headers["content-security-policy"]
        for asset in ("app.js", "common.js", "draw.js", "images.js", "results.js", "style.css"):
            assert client.get(f"/static/{asset}").status_code == 200


def test_uploads_predict_what_the_predictor_predicts(image_run: Path, digit_pngs) -> None:
    predictor = neuralab.load(image_run)
    expected = expected_top(predictor, [Image.open(io.BytesIO(png)) for png in digit_pngs])
    with client_for(image_run) as client:
        one = client.post("/predict?top_k=3", files={"file": ("d.png", digit_pngs[0])})
        files = [("file", (f"{i}.png", png, "image/png")) for i, png in enumerate(digit_pngs)]
        batch = client.post("/predict?top_k=3", files=files)
        encoded = [base64.b64encode(png).decode() for png in digit_pngs]
        as_json = client.post("/predict?top_k=3", json={"images": encoded})
        data_url = client.post(
            "/predict?top_k=3", json={"image": f"data:image/png;base64,{encoded[1]}"}
        )
    assert one.status_code == batch.status_code == as_json.status_code == 200
    assert [p["top"] for p in one.json()["predictions"]] == expected[:1]
    assert [p["top"] for p in batch.json()["predictions"]] == expected
    assert [p["top"] for p in as_json.json()["predictions"]] == expected
    assert data_url.json()["predictions"][0]["class"] == expected[1][0]["class"]


def test_texts_predict_what_the_predictor_predicts(text_run: Path) -> None:
    texts = ["the film was wonderful", "a dull plot", "it was superb and lovely"]
    expected = expected_top(neuralab.load(text_run), texts, top_k=2)
    with client_for(text_run) as client:
        one = client.post("/predict", json={"text": texts[0]}).json()
        many = client.post("/predict", json={"texts": texts}).json()
        assert client.get("/info").json()["kind"] == "text"
    assert [p["top"] for p in one["predictions"]] == expected[:1]
    assert [p["top"] for p in many["predictions"]] == expected
    assert [p["class"] for p in many["predictions"]] == ["pos", "neg", "pos"]


def test_explain_weighs_each_word_and_the_sentiment_word_most(text_run: Path) -> None:
    with client_for(text_run) as client:
        answer = client.post("/explain", json={"text": "the plot was awful and the film"}).json()
    assert answer["class"] == "neg" and answer["method"] == "occlusion"
    assert answer["words"] == ["the", "plot", "was", "awful", "and", "the", "film"]
    assert len(answer["weights"]) == len(answer["words"])
    strongest = max(range(len(answer["words"])), key=lambda i: abs(answer["weights"][i]))
    assert answer["words"][strongest] == "awful" and answer["weights"][strongest] > 0


def test_explain_with_integrated_gradients_and_occlusion(embedding_text_run: Path) -> None:
    text = "it was superb"
    with client_for(embedding_text_run) as client:
        info = client.get("/info").json()
        answers = {
            method: client.post("/explain", json={"text": text, "method": method}).json()
            for method in ("integrated-gradients", "occlusion")
        }
        default = client.post("/explain", json={"text": text}).json()
    assert info["explain_methods"] == ["occlusion", "integrated-gradients"]
    assert (
        default["method"] == "occlusion" and default["weights"] == answers["occlusion"]["weights"]
    )
    for method, answer in answers.items():
        assert answer["method"] == method and answer["class"] == "pos"
        assert answer["words"] == text.split() and answer["truncated"] == [False] * 3
        strongest = max(range(3), key=lambda i: abs(answer["weights"][i]))
        assert answer["words"][strongest] == "superb" and answer["weights"][strongest] > 0


def test_text_explain_refuses_unknown_and_unfit_methods(text_run: Path) -> None:
    with client_for(text_run) as client:
        assert client.get("/info").json()["explain_methods"] == ["occlusion"]
        unknown = client.post("/explain", json={"text": "a dull film", "method": "lime"})
        unfit = client.post(
            "/explain", json={"text": "a dull film", "method": "integrated-gradients"}
        )
    assert unknown.status_code == 422
    assert unknown.json()["detail"] == (
        "unknown method 'lime'; text models take: integrated-gradients, occlusion"
    )
    assert unfit.status_code == 422 and "needs a token embedding table" in unfit.json()["detail"]


def decode_png(data_url: str) -> Image.Image:
    assert data_url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(data_url.partition(",")[2])))


def test_explain_image_returns_a_heat_map_of_the_model_size(colour_run: Path) -> None:
    red = Image.new("RGB", (40, 30), (210, 40, 30))
    buffer = io.BytesIO()
    red.save(buffer, "PNG")
    png = buffer.getvalue()
    predictor = neuralab.load(colour_run)
    with client_for(colour_run) as client:
        info = client.get("/info").json()
        default = client.post("/explain?top_k=2", files={"file": ("red.png", png)})
        as_json = client.post(
            "/explain?method=saliency", json={"image": base64.b64encode(png).decode()}
        )
    assert info["explain_methods"][0] == "grad-cam" and info["explain_note"] is None
    assert default.status_code == as_json.status_code == 200
    answer = default.json()
    assert answer["method"] == "grad-cam" and answer["size"] == [16, 16]
    assert [t["class"] for t in answer["top"]] == [c for c, _ in predictor.predict([red], 2)[0]]
    heatmap = decode_png(answer["heatmap"])
    assert heatmap.size == (16, 16) and heatmap.mode == "RGB"
    values = np.array(answer["values"])
    assert values.shape == (16, 16) and np.isfinite(values).all()
    saliency = as_json.json()
    assert saliency["method"] == "saliency" and decode_png(saliency["heatmap"]).size == (16, 16)
    assert np.array(saliency["values"]).min() >= 0  # a magnitude


@pytest.mark.parametrize(
    "query, reason",
    [
        ("?method=lime", "unknown method 'lime'; image runs take: saliency, smoothgrad, "
                         "integrated-gradients, grad-cam, occlusion"),
        ("?method=grad-cam", "grad-cam needs a convolutional layer and"),
    ],
)  # fmt: skip
def test_explain_image_refuses_unknown_and_unfit_methods(image_run, digit_pngs, query, reason):
    with client_for(image_run) as client:
        info = client.get("/info").json()
        answer = client.post(f"/explain{query}", files={"file": ("d.png", digit_pngs[0])})
    assert info["explain_methods"] == [
        "saliency", "smoothgrad", "integrated-gradients", "occlusion"
    ]  # fmt: skip
    assert answer.status_code == 422 and reason in answer.json()["detail"]


def test_explain_takes_one_image(image_run: Path, digit_pngs) -> None:
    with client_for(image_run) as client:
        files = [("file", (f"{i}.png", png)) for i, png in enumerate(digit_pngs[:2])]
        answer = client.post("/explain", files=files)
    assert answer.status_code == 422
    assert answer.json()["detail"] == "/explain explains one image per request, got 2"


def test_without_captum_explain_names_the_extra_and_predict_works(
    image_run: Path, text_run: Path, digit_pngs, monkeypatch
) -> None:
    monkeypatch.setitem(sys.modules, "captum", None)  # makes captum unimportable
    with client_for(image_run) as client:
        info = client.get("/info").json()
        refused = client.post("/explain", files={"file": ("d.png", digit_pngs[0])})
        predicted = client.post("/predict", files={"file": ("d.png", digit_pngs[0])})
    assert (
        info["explain_methods"] == [] and "pip install 'neuralab[explain]'" in info["explain_note"]
    )
    assert refused.status_code == 501
    assert "pip install 'neuralab[explain]'" in refused.json()["detail"]
    assert predicted.status_code == 200
    with client_for(text_run) as client:  # occlusion only runs the model: no Captum needed
        words = client.post("/explain", json={"text": "a dull film"})
    assert words.status_code == 200 and words.json()["method"] == "occlusion"


def test_metrics_count_requests_latencies_and_forward_passes(image_run: Path, digit_pngs) -> None:
    with client_for(image_run) as client:
        client.post("/predict", files={"file": ("d.png", digit_pngs[0])})
        client.post("/predict", json={"image": "not base64!"})
        text = client.get("/metrics").text
    assert 'neuralab_requests_total{route="/predict",method="POST",status="200"} 1' in text
    assert 'neuralab_requests_total{route="/predict",method="POST",status="422"} 1' in text
    assert "# TYPE neuralab_request_duration_seconds histogram" in text
    assert 'neuralab_request_duration_seconds_bucket{route="/predict",le="+Inf"} 2' in text
    assert 'neuralab_request_duration_seconds_count{route="/predict"} 2' in text
    assert "neuralab_forward_passes_total 1" in text


# ---------------------------------------------------------------------------- limits


@pytest.mark.parametrize(
    "request_kwargs, status, reason",
    [
        ({"files": {"file": ("x.png", b"plain text")}}, 422, "x.png' is not an image"),
        (
            {"json": {"text": "a text"}},
            422,
            "this model classifies images.*got fields \\['text'\\]",
        ),
        ({"json": {"images": []}}, 422, "nothing to predict"),
        ({"json": {"images": ["AA=="] * 5}}, 422, "too many inputs in one request: 5, at most 4"),
        ({"json": {"image": 3}}, 422, "field 'image' must hold strings"),
        (
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            422,
            "not valid JSON",
        ),
        (
            {"content": b"hello", "headers": {"content-type": "text/plain"}},
            415,
            "Content-Type 'text/plain'",
        ),
        ({"files": {"note": (None, "a form field")}}, 422, "holds no file \\(fields: \\['note'\\]"),
    ],
)
def test_bad_image_payloads_say_why(image_run: Path, request_kwargs, status, reason) -> None:
    with client_for(image_run, max_items=4) as client:
        answer = client.post("/predict", **request_kwargs)
    assert answer.status_code == status
    assert re.search(reason, answer.json()["detail"])


@pytest.mark.parametrize(
    "path, payload, reason",
    [
        ("/predict", {"text": "   "}, "text is empty"),
        ("/predict", {"texts": ["fine", ""]}, "texts\\[1\\] is empty"),
        ("/predict", {"image": "AA=="}, "this model classifies texts"),
        ("/explain", {"texts": ["a", "b"]}, "/explain takes one text"),
        ("/explain", {"text": "word " * 41}, "41 words is more than /explain takes \\(40:"),
    ],
)
def test_bad_text_payloads_say_why(text_run: Path, path, payload, reason) -> None:
    with client_for(text_run, max_explain_words=40) as client:
        answer = client.post(path, json=payload)
    assert answer.status_code == 422
    assert re.search(reason, answer.json()["detail"])


def test_declared_oversized_body_is_refused_before_it_is_read(image_run: Path) -> None:
    app = create_app(neuralab.load(image_run), ServeSettings(max_body_bytes=1000))
    read = []

    async def body():
        read.append(True)  # never reached: the server answers from the headers alone
        yield b"x" * 5000

    async def scenario(client):
        headers = {"content-type": "application/json", "content-length": "5000"}
        return await client.post("/predict", content=body(), headers=headers)

    answer = run_async(app, scenario)
    assert answer.status_code == 413 and read == []
    assert "5000 bytes is larger than the server's limit of 1000" in answer.json()["detail"]


def test_streamed_body_is_counted_and_cut_off(image_run: Path) -> None:
    app = create_app(neuralab.load(image_run), ServeSettings(max_body_bytes=1000))
    sent = []

    async def body():  # no Content-Length: chunked, 400 bytes at a time
        for _ in range(10):
            sent.append(400)
            yield b" " * 400

    async def scenario(client):
        return await client.post(
            "/predict", content=body(), headers={"content-type": "application/json"}
        )

    answer = run_async(app, scenario)
    assert answer.status_code == 413 and "over 1000 bytes" in answer.json()["detail"]
    assert sum(sent) <= 1200  # stopped at the chunk that crossed the limit


def test_full_queue_answers_503_with_retry_after(text_run: Path) -> None:
    predictor = neuralab.load(text_run)
    gate = Gate(predictor, closed=True)
    app = create_app(predictor, ServeSettings(max_queue=1, max_items=1, max_wait_ms=0))

    async def scenario(client):
        post = lambda text: asyncio.create_task(client.post("/predict", json={"text": text}))  # noqa: E731
        first = post("a superb film")
        await asyncio.to_thread(gate.entered.wait)  # the worker now holds the first request
        second, third = post("a dull film"), post("a lovely plot")
        # One of them fills the queue (1 input); the other is refused at once.
        done, _ = await asyncio.wait({second, third}, return_when=asyncio.FIRST_COMPLETED)
        gate.open()
        return [await task for task in (first, second, third)], done.pop().result()

    answers, refused = run_async(app, scenario)
    assert sorted(answer.status_code for answer in answers) == [200, 200, 503]
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert "--max-queue 1" in refused.json()["detail"]


def test_slow_prediction_answers_504(text_run: Path) -> None:
    predictor = neuralab.load(text_run)
    gate = Gate(predictor, closed=True)  # the forward pass never finishes by itself
    try:
        with client_for_predictor(predictor, timeout_s=0.05) as client:
            answer = client.post("/predict", json={"text": "a superb film"})
            gate.open()
    finally:
        gate.open()
    assert answer.status_code == 504
    assert "no result within 0.05 s (--timeout-s)" in answer.json()["detail"]


def test_settings_refuse_impossible_limits() -> None:
    with pytest.raises(ValueError, match="max_batch must be a positive number, got 0"):
        ServeSettings(max_batch=0)
    with pytest.raises(ValueError, match="max_items \\(64\\) is larger than max_queue \\(8\\)"):
        ServeSettings(max_queue=8)


class FailOnce:
    """Wraps a predictor's probabilities(): the first forward pass raises, later ones run."""

    def __init__(self, predictor: neuralab.Predictor) -> None:
        self.forward, self.calls = predictor.probabilities, 0
        predictor.probabilities = self

    def __call__(self, inputs):
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (a broken model)")
        return self.forward(inputs)


def test_a_failing_forward_pass_answers_500_and_the_next_request_is_served(
    text_run: Path,
) -> None:
    """A model whose forward pass raises: that request gets a JSON 500 naming the error, the
    batcher's worker survives it, and the next request is predicted as usual."""
    predictor = neuralab.load(text_run)
    expected = expected_top(neuralab.load(text_run), ["a superb film"], top_k=2)
    failing = FailOnce(predictor)
    # raise_server_exceptions=False: answer as a real server does instead of re-raising here.
    app = create_app(predictor, ServeSettings(max_wait_ms=0))
    with TestClient(app, raise_server_exceptions=False) as client:
        failed = client.post("/predict?top_k=2", json={"text": "a superb film"})
        served = client.post("/predict?top_k=2", json={"text": "a superb film"})
        metrics = client.get("/metrics").text
    assert failed.status_code == 500 and failed.headers["content-type"] == "application/json"
    assert "RuntimeError" in failed.json()["detail"]
    assert served.status_code == 200 and failing.calls == 2
    assert [p["top"] for p in served.json()["predictions"]] == expected
    assert 'neuralab_requests_total{route="/predict",method="POST",status="500"} 1' in metrics
    assert 'neuralab_requests_total{route="/predict",method="POST",status="200"} 1' in metrics


# ---------------------------------------------------------------------------- batching


@pytest.mark.parametrize("batching", [True, False])
def test_concurrent_requests_share_forward_passes(image_run: Path, digit_pngs, batching) -> None:
    predictor = neuralab.load(image_run)
    expected = expected_top(
        neuralab.load(image_run), [Image.open(io.BytesIO(p)) for p in digit_pngs]
    )
    gate = Gate(predictor)
    # A long max_wait: the batch goes as soon as all five inputs are in, never by the clock.
    settings = ServeSettings(max_batch=len(digit_pngs), max_wait_ms=60_000, batching=batching)
    app = create_app(predictor, settings)

    async def scenario(client):
        posts = [
            client.post("/predict?top_k=3", files={"file": ("d.png", png)}) for png in digit_pngs
        ]
        return await asyncio.gather(*posts)

    answers = run_async(app, scenario)
    assert [a.json()["predictions"][0]["top"] for a in answers] == expected
    assert gate.batches == ([5] if batching else [1] * 5)


# ---------------------------------------------------------------------------- command line


def test_cli_serves_the_run_on_loopback(image_run: Path, monkeypatch, capsys) -> None:
    uvicorn = pytest.importorskip("uvicorn", reason=f"serve runs on uvicorn: {TEST_EXTRA}")
    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: served.update(app=app, **options))
    monkeypatch.setattr(torch, "set_num_threads", lambda count: served.update(threads=count))
    argv = ["serve", str(image_run), "--port", "8123", "--max-batch", "16", "--threads", "1"]
    assert cli.main(argv) == 0
    assert served["host"] == "127.0.0.1" and served["port"] == 8123 and served["threads"] == 1
    assert served["app"].state.service.batcher.max_batch == 16
    assert "warning" not in capsys.readouterr().err
    assert cli.main(["serve", str(image_run), "--host", "0.0.0.0", "--no-batching"]) == 0
    assert "warning: serving on 0.0.0.0" in capsys.readouterr().err
    assert served["app"].state.service.batcher.max_batch == 1


def test_cli_names_the_extra_when_fastapi_is_missing(image_run: Path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(__import__("sys").modules, "fastapi", None)  # makes `import fastapi` fail
    assert cli.main(["serve", str(image_run)]) == 2
    assert "pip install 'neuralab[serve]'" in capsys.readouterr().err
