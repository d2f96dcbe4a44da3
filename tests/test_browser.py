"""The web page of `neuralab serve` in a real browser: headless Chromium (Selenium) against a real
uvicorn server on a free loopback port. Drawing a digit, choosing a photo or typing a text must
show the same prediction the API gives for the same input, with its heat map or word weights;
small grey-scale models get the drawing canvas, colour models the photo panel. Skipped without
Chromium, chromedriver or Selenium (a failure under CI=true: see tests/ci_rules.py)."""

from __future__ import annotations

import base64
import contextlib
import io
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import neuralab

TEST_EXTRA = "pip install -e '.[test]'"
pytest.importorskip("sklearn", reason=f"the digits dataset needs scikit-learn: {TEST_EXTRA}")
pytest.importorskip("fastapi", reason=f"neuralab serve needs FastAPI: {TEST_EXTRA}")
uvicorn = pytest.importorskip("uvicorn", reason=f"neuralab serve needs uvicorn: {TEST_EXTRA}")
httpx = pytest.importorskip("httpx", reason=f"the test asks the API with httpx: {TEST_EXTRA}")
webdriver = pytest.importorskip(
    "selenium.webdriver", reason=f"the browser test drives Chromium with selenium: {TEST_EXTRA}"
)
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from neuralab.serve.app import create_app  # noqa: E402
from test_serve import train_colour_run, train_image_run, train_text_run  # noqa: E402

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None)
CHROMEDRIVER = shutil.which("chromedriver")
# `browser`: under CI=true a skip of these tests fails the run (tests/ci_rules.py).
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None or CHROMEDRIVER is None,
        reason="no chromium or chromedriver on PATH: install chromium and chromium-driver "
        "(Debian: apt-get install chromium chromium-driver)",
    ),
]
PAGE_TIMEOUT_S = 60  # generous: Chromium starts slowly on a busy 2-core machine


@contextlib.contextmanager
def live_server(run: Path) -> Iterator[str]:
    """A uvicorn server for `run` in a thread, on a free loopback port; yields its URL."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()  # connections wait in the backlog until uvicorn accepts: no start-up race
    config = uvicorn.Config(create_app(neuralab.load(run)), log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        listener.close()


@contextlib.contextmanager
def chromium(profile: Path) -> Iterator:
    """Headless Chromium with a fresh profile; no network lookups (driver and binary given)."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1000,800",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def open_page(driver, url: str) -> None:
    driver.get(url)
    wait(driver).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))


def wait(driver) -> WebDriverWait:
    return WebDriverWait(driver, PAGE_TIMEOUT_S)


def shown_input(driver) -> str | None:
    """The input whose prediction the page shows (None before the first one)."""
    return driver.find_element(By.ID, "result").get_attribute("data-input")


def shown_prediction(driver) -> tuple[str, float]:
    """(class, probability) as the page shows them."""
    head = driver.find_element(By.ID, "prediction")
    return head.get_attribute("data-class"), float(head.get_attribute("data-probability"))


def draw_seven(driver) -> None:
    """A "7" as two strokes, with the mouse (pointer events, as a finger would send)."""
    canvas = driver.find_element(By.ID, "canvas")
    size = canvas.size["width"]
    unit = size / 10  # offsets are from the canvas centre, in tenths of its width
    actions = ActionChains(driver)
    actions.move_to_element_with_offset(canvas, int(-2.5 * unit), int(-3 * unit)).click_and_hold()
    for dx, dy in [(1, 0)] * 5 + [(-0.5, 1.2)] * 5:
        actions.move_by_offset(int(dx * unit), int(dy * unit))
    actions.release().perform()


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    return train_image_run(tmp_path_factory.mktemp("browser") / "digits-mlp")


def shown_heatmap(driver) -> str | None:
    """The method of the heat map on show, once it is the one of the input on show."""
    heatmap = driver.find_element(By.ID, "heatmap")
    if heatmap.get_attribute("src") and heatmap.get_attribute("data-input") == shown_input(driver):
        return heatmap.get_attribute("data-method")
    return None


def visible(driver, element_id: str) -> bool:
    return driver.find_element(By.ID, element_id).is_displayed()


def test_drawn_digit_shows_what_the_api_predicts(digits_run: Path, tmp_path: Path) -> None:
    with live_server(digits_run) as url, chromium(tmp_path / "profile") as driver:
        open_page(driver, url)
        assert driver.find_element(By.ID, "text-input").get_attribute("hidden") is not None
        assert driver.find_element(By.TAG_NAME, "body").get_attribute("data-input") == "draw"
        assert visible(driver, "canvas") and not visible(driver, "photo")
        assert driver.find_element(By.ID, "image-title").text == "Draw a digit"
        draw_seven(driver)
        sent = wait(driver).until(shown_input)
        method = wait(driver).until(shown_heatmap)  # the MLP has no convolution: saliency
        shown, probability = shown_prediction(driver)
        answer = httpx.post(f"{url}/predict?top_k=10", json={"image": sent}, timeout=30).json()
        bars = driver.find_elements(By.CSS_SELECTOR, "#bars .bar-row")
        assert [bar.get_attribute("data-class") for bar in bars][:1] == [shown]
    best = answer["predictions"][0]
    assert shown == best["class"] and probability == pytest.approx(best["probability"])
    assert len(bars) == 10  # every digit's bar
    assert method == "saliency"
    picture = Image.open(io.BytesIO(base64.b64decode(sent.partition(",")[2]))).convert("L")
    assert picture.size == (8, 8)  # prepared at the model's own size, as MNIST-style digits
    ink = np.asarray(picture, dtype=np.float64) / 255  # (8, 8), 1 = white stroke
    assert 0 < ink.mean() < 0.8  # a digit on a mostly black background


def test_colour_model_gets_the_photo_panel_and_a_heat_map(tmp_path: Path) -> None:
    run = train_colour_run(tmp_path / "colours")
    photo = tmp_path / "red.jpg"
    Image.new("RGB", (300, 200), (215, 35, 30)).save(photo)  # a 'photo' larger than the model's
    with live_server(run) as url, chromium(tmp_path / "profile") as driver:
        open_page(driver, url)
        assert driver.find_element(By.TAG_NAME, "body").get_attribute("data-input") == "photo"
        assert visible(driver, "photo") and not visible(driver, "canvas")
        assert visible(driver, "camera-button")
        assert driver.find_element(By.ID, "camera").get_attribute("capture") == "environment"
        driver.find_element(By.ID, "file").send_keys(str(photo))
        sent = wait(driver).until(shown_input)
        method = wait(driver).until(shown_heatmap)
        shown, probability = shown_prediction(driver)
        answer = httpx.post(f"{url}/predict?top_k=2", json={"image": sent}, timeout=30).json()
    assert method == "grad-cam"  # the convnet's default
    best = answer["predictions"][0]
    assert shown == best["class"] and probability == pytest.approx(best["probability"])
    picture = Image.open(io.BytesIO(base64.b64decode(sent.partition(",")[2])))
    assert picture.size == (16, 16)  # resized in the page to the model's size before sending


def test_typed_text_shows_prediction_and_word_weights(tmp_path: Path) -> None:
    run = train_text_run(tmp_path)
    text = "the plot was awful and the film"
    with live_server(run) as url, chromium(tmp_path / "profile") as driver:
        open_page(driver, url)
        driver.find_element(By.ID, "text").send_keys(text)
        wait(driver).until(lambda d: shown_input(d) == text)
        wait(driver).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#highlights .word")))
        methods = [
            o.get_attribute("value")
            for o in driver.find_elements(By.CSS_SELECTOR, "#text-method option")
        ]
        shown, probability = shown_prediction(driver)
        words = driver.find_elements(By.CSS_SELECTOR, "#highlights .word")
        weights = {w.text: float(w.get_attribute("data-weight")) for w in words}
        answer = httpx.post(f"{url}/predict", json={"text": text}, timeout=30).json()
    best = answer["predictions"][0]
    assert shown == best["class"] == "neg" and probability == pytest.approx(best["probability"])
    assert len(words) == len(text.split())
    assert methods == ["occlusion"]  # the n-gram model has no token embedding
    assert max(weights, key=lambda word: abs(weights[word])) == "awful"
