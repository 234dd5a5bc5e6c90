"""The web page at / in a real headless browser: Debian's chromium driven by Playwright (never `playwright install`).

Uploads the bundled sample photo, types classes, picks a method, waits for the overlay, checks the legend against
the in-process result, downloads the label PNG and compares it, and saves a screenshot: under $CLIPSAM_TEST_ARTIFACTS
when set, else pytest's tmp dir (the path is printed). Then the API-key flow on the keyed application.
Skipped, saying why, only when no chromium is installed (.ci/setup.sh installs it with apt-get when run as root).
"""

from __future__ import annotations

import base64
import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .helpers import KEY

FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
CLASSES = "cat, grass, wall"


def chromium_path() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.access(path, os.X_OK):
        pytest.skip(
            "no chromium browser installed here: run .ci/setup.sh as root (apt-get install chromium) to run "
            "the web page test"
        )
    return path


@pytest.fixture
def browser(tmp_path):
    from playwright.sync_api import sync_playwright

    exe = chromium_path()
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=exe,
            headless=True,
            args=FLAGS,
            viewport={"width": 1100, "height": 900},
            accept_downloads=True,
        )
        try:
            yield context
        finally:
            context.close()


def artifacts(tmp_path) -> Path:
    out = Path(os.environ.get("CLIPSAM_TEST_ARTIFACTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    return out


def test_web_page_segments_the_sample_photo(server, browser, reference, tmp_path):
    from playwright.sync_api import expect

    import clipsam
    from clipsam.result import _overlay_colours

    sample = Path(clipsam.__file__).parent / "data" / "chelsea.jpg"
    page = browser.new_page()
    problems = []
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    requests_seen = []
    page.on("request", lambda r: requests_seen.append(r.url))
    page.goto(server["main"] + "/")
    expect(page.locator("#about")).to_contain_text("resclip", timeout=30_000)  # described itself
    assert "clipsam-test-vit" in page.inner_text("#about")
    assert page.locator("#method option").all_inner_texts() == ["resclip (server default)", "sclip"]
    assert page.locator("#preset option").all_inner_texts() == ["voc21 (server default)", "context60"]

    page.set_input_files("#image", str(sample))
    page.fill("#classes", CLASSES)
    page.select_option("#method", "sclip")
    page.click("#submit")
    expect(page.locator("#overlay")).to_be_visible(timeout=120_000)
    expect(page.locator("#status")).to_have_text("done")
    assert page.locator("#overlay").evaluate("e => e.complete && e.naturalWidth") == 451
    assert page.inner_text("#error") == ""

    ref = reference(method="sclip").segment(str(sample), classes=CLASSES)
    overlay_src = page.get_attribute("#overlay", "src")
    overlay = np.asarray(Image.open(io.BytesIO(base64.b64decode(overlay_src.split(",", 1)[1]))))
    assert overlay.shape[1] == 451 and overlay.shape[0] > 300 and overlay.std() > 1  # a real, non-blank image
    assert np.array_equal(overlay, np.asarray(ref.overlay()))

    items = page.locator("#legend li")
    legend = {items.nth(i).get_attribute("data-class"): items.nth(i).inner_text() for i in range(items.count())}
    fractions = ref.pixel_fractions()
    assert list(legend) == list(fractions) and legend
    colours = _overlay_colours(len(ref.classes))
    for i, (name, frac) in enumerate(fractions.items()):
        assert f"{100 * frac:.1f} %" in legend[name]
        swatch = items.nth(i).locator(".swatch").evaluate("e => getComputedStyle(e).backgroundColor")
        assert swatch == "rgb({}, {}, {})".format(*colours[ref.classes.index(name)])

    with page.expect_download() as download:
        page.click("#download")
    saved = tmp_path / "labels.png"
    download.value.save_as(saved)
    labels = Image.open(saved)
    assert labels.mode == "P" and np.array_equal(np.asarray(labels), ref.labels)
    assert "sclip" in page.inner_text("#timing")

    shot = artifacts(tmp_path) / "serve_page.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"\nweb page screenshot: {shot}")
    assert shot.stat().st_size > 10_000
    assert not problems, problems
    assert all(u.startswith((server["main"], "data:", "blob:")) for u in requests_seen), requests_seen


def test_web_page_asks_for_the_api_key(server, browser, tmp_path):
    from playwright.sync_api import expect

    import clipsam

    page = browser.new_page()
    page.goto(server["keyed"] + "/")
    expect(page.locator("#about")).to_contain_text("API key", timeout=30_000)
    assert page.is_visible("#apikey")
    page.fill("#apikey", KEY)
    page.dispatch_event("#apikey", "change")
    expect(page.locator("#about")).to_contain_text("resclip", timeout=30_000)
    page.set_input_files("#image", str(Path(clipsam.__file__).parent / "data" / "chelsea.jpg"))
    page.fill("#classes", "cat, grass")
    page.click("#submit")
    expect(page.locator("#status")).to_have_text("done", timeout=120_000)
    assert page.locator("#legend li").count() >= 1 and page.inner_text("#error") == ""
    page.fill("#apikey", "wrong")
    page.click("#submit")
    expect(page.locator("#error")).to_contain_text("unauthorized", timeout=60_000)
    page.screenshot(path=str(artifacts(tmp_path) / "serve_page_keyed.png"), full_page=True)
