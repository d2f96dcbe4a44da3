"""Screenshots of `neuralab serve`'s page for the README: a digit drawn on the canvas of an
MNIST model (with its heat map), a photo given to a colour model and a review typed for a text
model, taken with headless Chromium (Selenium).

    python -m benchmarks.serve_screenshot --image-run /work/demo-runs/mnist-best \\
        --text-run /work/demo-runs/imdb-ngram       # writes docs/serve.png and docs/serve-text.png
    python -m benchmarks.serve_screenshot --heatmap-run /tmp/r/mnist-fast  # serve-heatmap.png
    python -m benchmarks.serve_screenshot --photo-run /tmp/r/cifar10-fast \\
        --photo cat.png                             # serve-photo.png (a CIFAR test image if none)
    python -m benchmarks.serve_screenshot --agent-run runs/CartPole-v1-dqn-…  # serve-agent.png
"""

from __future__ import annotations

import argparse
import contextlib
import math
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from benchmarks.serve_load import server

DOCS = Path(__file__).parent.parent / "docs"
REVIEW = (
    "One of the best films I have seen this year. The acting is superb and the story is "
    "moving, even if the middle drags a little and the score is forgettable."
)


@contextlib.contextmanager
def chromium(width: int = 1000, height: int = 800) -> Iterator:
    """Headless Chromium with a throw-away profile; binary and driver given (no lookups)."""
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    with tempfile.TemporaryDirectory() as profile:
        for flag in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            f"--window-size={width},{height}",
            f"--user-data-dir={profile}",
        ):
            options.add_argument(flag)
        driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
        driver = webdriver.Chrome(service=webdriver.ChromeService(driver_path), options=options)
        try:
            yield driver
        finally:
            driver.quit()


def three() -> list[tuple[float, float]]:
    """A handwritten-looking "3" as one stroke: points as fractions of the canvas, from its
    centre (x right, y down)."""
    upper = [(-150 + 8 * i, (0.0, -0.17), 0.16) for i in range(34)]  # -150° .. 114°
    lower = [(-110 + 9 * i, (0.0, 0.15), 0.19) for i in range(31)]  # -110° .. 160°
    return [
        (centre[0] + radius * math.cos(math.radians(angle)),
         centre[1] + radius * math.sin(math.radians(angle)))
        for angle, centre, radius in upper + lower
    ]  # fmt: skip


def draw(driver, points: list[tuple[float, float]]) -> None:
    canvas = driver.find_element(By.ID, "canvas")
    size = canvas.size["width"]
    actions = ActionChains(driver, duration=10)  # 10 ms per move instead of 250
    x, y = points[0]
    actions.move_to_element_with_offset(canvas, int(x * size), int(y * size)).click_and_hold()
    for x, y in points[1:]:
        actions.move_to_element_with_offset(canvas, int(x * size), int(y * size))
    actions.release().perform()


def wait_for_prediction(driver, expected_input: str | None = None) -> str:
    """The class the page shows once its answer for `expected_input` (or any) is in."""

    def shown(driver) -> str | None:
        result = driver.find_element(By.ID, "result").get_attribute("data-input")
        if result and (expected_input is None or result == expected_input):
            return driver.find_element(By.ID, "prediction").get_attribute("data-class")
        return None

    return WebDriverWait(driver, 60).until(shown)


def open_page(driver, url: str) -> None:
    driver.get(url)
    WebDriverWait(driver, 60).until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready")
    )


def digit_screenshot(run: str, out: Path) -> str:
    with server(run) as url, chromium() as driver:
        open_page(driver, url)
        draw(driver, three())
        predicted = wait_for_prediction(driver)
        driver.save_screenshot(str(out))
    return predicted


def wait_for_heatmap(driver, method: str | None = None) -> str:
    """The method of the heat map the page shows once it is in for the input on show."""

    def shown(driver) -> str | None:
        found = driver.find_element(By.ID, "heatmap")
        sent = driver.find_element(By.ID, "result").get_attribute("data-input")
        if found.get_attribute("src") and found.get_attribute("data-input") == sent:
            shown_method = found.get_attribute("data-method")
            return shown_method if method in (None, shown_method) else None
        return None

    return WebDriverWait(driver, 60).until(shown)


def heatmap_screenshot(run: str, out: Path, method: str | None) -> str:
    """A drawn 3 with the heat map of `method` (the model's default when None)."""
    with server(run) as url, chromium() as driver:
        open_page(driver, url)
        if method:
            Select(driver.find_element(By.ID, "method")).select_by_value(method)
        draw(driver, three())
        predicted = wait_for_prediction(driver)
        shown = wait_for_heatmap(driver, method)
        driver.save_screenshot(str(out))
    return f"{predicted} ({shown})"


def photo_screenshot(run: str, out: Path, photo: Path | None) -> str:
    """A photo chosen with the file button (a CIFAR-10 test image when `photo` is None)."""
    with tempfile.TemporaryDirectory() as folder:
        photo = photo or cifar_test_photo(Path(folder))
        with server(run) as url, chromium(1000, 760) as driver:
            open_page(driver, url)
            driver.find_element(By.ID, "file").send_keys(str(photo.resolve()))
            predicted = wait_for_prediction(driver)
            shown = wait_for_heatmap(driver)
            driver.save_screenshot(str(out))
    return f"{predicted} ({shown})"


def cifar_test_photo(folder: Path, index: int = 11) -> Path:
    """A CIFAR-10 test image (index 11: a truck), enlarged 4x as a photo would come."""
    from PIL import Image

    from neuralab.data import load_dataset

    image = load_dataset("cifar10").test.images[index]  # uint8 (3, 32, 32)
    path = folder / "photo.png"
    picture = Image.fromarray(image.permute(1, 2, 0).numpy(), "RGB")
    picture.resize((128, 128), Image.Resampling.BICUBIC).save(path)
    return path


def text_screenshot(run: str, out: Path) -> str:
    with server(run) as url, chromium() as driver:
        open_page(driver, url)
        driver.find_element(By.ID, "text").send_keys(REVIEW)
        predicted = wait_for_prediction(driver, REVIEW)
        WebDriverWait(driver, 60).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "#highlights .word")
        )
        driver.save_screenshot(str(out))
    return predicted


def agent_screenshot(run: str, out: Path) -> str:
    """The agent page: the recorded episode loaded, an observation's Q-values asked for."""
    with server(run) as url, chromium(1000, 900) as driver:
        driver.get(url)
        WebDriverWait(driver, 120).until(
            lambda d: d.execute_script(
                "const i = document.getElementById('episode'); return i.complete && "
                "i.naturalWidth > 0"
            )
        )
        box = driver.find_element(By.ID, "observation")
        box.clear()
        box.send_keys("[0.02, 0.3, -0.04, -0.5]")
        driver.find_element(By.ID, "act").click()
        WebDriverWait(driver, 30).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "#q-values tr.chosen")
        )
        chosen = driver.find_element(By.CSS_SELECTOR, "#q-values tr.chosen td").text
        driver.save_screenshot(str(out))
    return chosen


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="screenshots of neuralab serve's page")
    parser.add_argument("--image-run", help="an MNIST run: draws a 3 → docs/serve.png")
    parser.add_argument("--text-run", help="a sentiment run: types a review → docs/serve-text.png")
    parser.add_argument("--heatmap-run", help="an MNIST run: draws a 3 → docs/serve-heatmap.png")
    parser.add_argument("--method", help="the heat map method of --heatmap-run (its default)")
    parser.add_argument("--photo-run", help="a colour-image run: a photo → docs/serve-photo.png")
    parser.add_argument("--photo", type=Path, help="the photo of --photo-run (a CIFAR image)")
    parser.add_argument("--agent-run", help="an agent's run (neuralab rl) → docs/serve-agent.png")
    parser.add_argument("--out-dir", type=Path, default=DOCS)
    options = parser.parse_args(argv)
    if options.image_run:
        out = options.out_dir / "serve.png"
        print(f"drew a 3, the page shows {digit_screenshot(options.image_run, out)!r}: {out}")
    if options.text_run:
        out = options.out_dir / "serve-text.png"
        print(f"typed a review, the page shows {text_screenshot(options.text_run, out)!r}: {out}")
    if options.heatmap_run:
        out = options.out_dir / "serve-heatmap.png"
        shown = heatmap_screenshot(options.heatmap_run, out, options.method)
        print(f"drew a 3, the page shows {shown}: {out}")
    if options.photo_run:
        out = options.out_dir / "serve-photo.png"
        shown = photo_screenshot(options.photo_run, out, options.photo)
        print(f"chose a photo, the page shows {shown}: {out}")
    if options.agent_run:
        out = options.out_dir / "serve-agent.png"
        print(f"asked for an action, the page chose {agent_screenshot(options.agent_run, out)}")


if __name__ == "__main__":
    main()
