"""``cinet serve`` in a real browser: headless Chromium (Debian package ``chromium``) driven by Playwright.

Marker ``browser`` (excluded by default; ``make test-browser``). Skipped when Gradio, Playwright or Chromium
is missing. Uploads a photo, waits for the outputs, clicks two pixels of the input and checks that the
attention image changed, then saves a screenshot of the page.

Environment: ``CINET_SERVE_CHECKPOINT`` — a checkpoint to serve instead of the tiny random one (e.g. the
demo's ``runs/demo/last.ckpt``, for a screenshot worth showing); ``CINET_SERVE_SCREENSHOT`` — where to save the
screenshot (default: the test's temporary folder); ``CINET_CHROMIUM`` — the browser (default
``/usr/bin/chromium``).
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from inference_fixtures import save_tiny_checkpoint

pytestmark = pytest.mark.browser

NYU_SAMPLES = Path(__file__).parents[2] / "shared" / "data" / "nyu_samples"
CHROMIUM = os.environ.get("CINET_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def page_url(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("gradio")
    from cinet.cli import build_parser
    from cinet.commands import serve

    ckpt = os.environ.get("CINET_SERVE_CHECKPOINT") or str(
        save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt")
    )
    args = build_parser().parse_args(["serve", "--checkpoint", ckpt, "--port", "0", "--max-side", "320"])
    page, server, url = serve.start(args)
    yield url
    page.close()
    server.close()


def _photo() -> Path:
    photo = NYU_SAMPLES / "000464.png"
    if not photo.is_file():
        pytest.skip("shared/data/nyu_samples not present")
    return photo


def _img_pixels(page, selector: str) -> np.ndarray:
    from PIL import Image

    src = page.locator(f"{selector} img").first.get_attribute("src")
    body = page.request.get(src).body()
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))


def test_upload_click_attention_screenshot(page_url: str, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
    photo = _photo()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--use-angle=swiftshader"]
        )
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.goto(page_url, wait_until="domcontentloaded")
            page.locator("#photo input[type=file]").set_input_files(str(photo))
            sync_api.expect(page.locator("#status")).to_contain_text("640×480 px", timeout=120_000)
            for sel in ("#input-image", "#depth", "#overlay"):
                sync_api.expect(page.locator(f"{sel} img").first).to_be_visible(timeout=60_000)
            sync_api.expect(page.locator("#downloads")).to_contain_text("000464_depth")

            image = page.locator("#input-image img").first
            box = image.bounding_box()
            assert box is not None
            image.click(position={"x": box["width"] * 0.25, "y": box["height"] * 0.3})
            sync_api.expect(page.locator("#attention-text")).to_contain_text(
                "attention of pixel", timeout=60_000
            )
            first_text = page.locator("#attention-text").inner_text()
            first = _img_pixels(page, "#attention")
            first_src = page.locator("#attention img").first.get_attribute("src")
            image.click(position={"x": box["width"] * 0.8, "y": box["height"] * 0.75})
            sync_api.expect(page.locator("#attention-text")).not_to_have_text(first_text, timeout=60_000)
            page.wait_for_function(
                "s => document.querySelector('#attention img')?.getAttribute('src') !== s",
                arg=first_src,
                timeout=60_000,
            )
            second = _img_pixels(page, "#attention")
            assert first.shape == second.shape == (480, 640, 3)
            assert np.abs(first.astype(int) - second.astype(int)).mean() > 1.0  # the map moved with the click

            page.wait_for_timeout(1500)  # let the 3D viewer draw
            out = Path(os.environ.get("CINET_SERVE_SCREENSHOT") or tmp_path / "serve.png")
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), full_page=True)
            assert out.stat().st_size > 10_000
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            raise
        finally:
            browser.close()
