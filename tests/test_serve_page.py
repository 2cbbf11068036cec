"""The page at GET /, in a real browser: Debian's chromium + chromium-driver, driven by selenium, headless.

Upload a rendered image, wait for the boxes to be drawn, check the count equals the library's, move
the box_thresh slider and see the count follow, and save a screenshot (output/serve-page.png; the
one README shows is docs/serve-page.png).
"""

from __future__ import annotations

import shutil
import tempfile

import pytest

from detector import TextDetection
from tests.conftest import REPO_ROOT
from tests.serving import running_server
from tools.dev.sample_image import SAMPLE_LINES, render_text_image

pytest.importorskip("fastapi", reason="the [serve] extra is not installed (make test installs it)")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the [test] extra has it)")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
SCREENSHOT = REPO_ROOT / "output" / "serve-page.png"
WAIT_S = 120

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="no browser: install Debian's chromium and chromium-driver (.ci/run does) to test the page",
)


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="serve-page-chromium-")
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
        "--window-size=1400,900",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for_drawing(driver) -> int:
    """The box count shown, once the page says it finished drawing."""
    WebDriverWait(driver, WAIT_S).until(
        lambda d: d.find_element(By.ID, "count").get_attribute("data-state") in ("done", "error")
    )
    count = driver.find_element(By.ID, "count")
    assert count.get_attribute("data-state") == "done", driver.find_element(By.ID, "status").text
    return int(count.text)


def test_page_draws_the_library_boxes_and_follows_the_slider(browser, default_onnx, tmp_path):
    import cv2

    image, lines = render_text_image(list(SAMPLE_LINES), width=1000)
    path = tmp_path / "sample.png"
    cv2.imwrite(str(path), image)
    library = TextDetection(model_dir=default_onnx, device="cpu")
    default_count = len(library.predict(path)[0]["dt_polys"])
    strict_count = len(library.predict(path, box_thresh=0.95)[0]["dt_polys"])
    assert default_count == len(lines) and strict_count < default_count  # the slider must change something

    with running_server(default_onnx, tmp_path) as server:
        browser.get(server.url + "/")
        WebDriverWait(browser, WAIT_S).until(lambda d: "PP-OCRv4_mobile_det" in d.find_element(By.ID, "model").text)
        assert browser.find_element(By.ID, "box_thresh").get_attribute("value") == str(library.settings.box_thresh)
        browser.find_element(By.ID, "file").send_keys(str(path))
        assert wait_for_drawing(browser) == default_count
        canvas_size = browser.execute_script("const c = document.getElementById('canvas'); return [c.width, c.height];")
        assert canvas_size == [image.shape[1], image.shape[0]]
        assert not browser.find_element(By.ID, "download").get_attribute("disabled")
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(SCREENSHOT))

        # box_thresh to 0.95: the page asks again and redraws with the library's stricter count
        browser.execute_script(
            "const s = document.getElementById('box_thresh'); s.value = '0.95';s.dispatchEvent(new Event('input'));"
        )
        WebDriverWait(browser, WAIT_S).until(
            lambda d: (
                d.find_element(By.ID, "count").get_attribute("data-state") == "done"
                and d.find_element(By.ID, "count").text == str(strict_count)
            )
        )
    assert SCREENSHOT.stat().st_size > 10_000
