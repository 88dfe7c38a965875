"""The real app in headless Chromium: `evalsvc dashboard` serves it, Playwright drives Debian's chromium.

The Overview, Compare and Trends screenshots are kept as test artifacts (test-artifacts/, or $EVALSVC_TEST_ARTIFACTS).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT
from tests.dashboard_store import seeded_project

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("EVALSVC_TEST_ARTIFACTS", ROOT / "test-artifacts"))
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(proc: subprocess.Popen, base: str, output: Callable[[], str], within_s: float = 60) -> None:
    """Wait for a started `evalsvc dashboard` to answer its health check; fail with its output if it exits or hangs."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/_stcore/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            pytest.fail(f"evalsvc dashboard exited {proc.returncode}: {output()}")
        time.sleep(0.3)
    proc.kill()
    pytest.fail(f"evalsvc dashboard did not answer its health check within {within_s:g} s: {output()}")


def serve_dashboard(config: Path, folder: Path) -> Iterator[str]:
    """`evalsvc dashboard` on a free port of 127.0.0.1 for this config, until the generator is closed: its base URL."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "evalsvc.cli", "dashboard", "-c", str(config), "--port", str(port)],
                            cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    wait_healthy(proc, base, lambda: proc.stdout.read() if proc.stdout else "")
    yield base
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("browser")
    yield from serve_dashboard(seeded_project(folder, f"sqlite:///{folder / 'store.db'}"), folder)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        if os.environ.get("CI") or os.environ.get("EVALSVC_REQUIRE_MODELS"):
            pytest.fail("chromium is required here: apt-get install chromium (scripts/setup.sh --test does)")
        pytest.skip("no /usr/bin/chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield b
        b.close()


def _red_share(png: Path) -> float:
    """Share of pixels in the regression red (#d62728, the callout's and the matrix's colour family)."""
    from PIL import Image

    img = Image.open(png).convert("RGB")
    pixels = list(img.getdata())
    return sum(1 for r, g, b in pixels if r > 180 and g < 90 and b < 90) / len(pixels)


def test_overview_screenshot_shows_the_regression(app: str, browser) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(f"{app}/")
    page.get_by_text("Regression: smollm2-q2_k vs smollm2-f16").wait_for(timeout=60_000)
    page.locator("canvas, svg.marks").first.wait_for(timeout=60_000)  # the Vega matrix has rendered
    page.wait_for_timeout(1000)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "overview.png"
    page.screenshot(path=str(shot), full_page=True)
    body = page.inner_text("body")
    page.close()
    assert "Page not found" not in body
    assert "Failed run: api-upstream" in body and "Upstream change: smollm2-q8_0 on records" in body
    assert shot.stat().st_size > 20_000
    assert _red_share(shot) > 0.002  # the regression is visibly red, not just present in the DOM


def test_a_link_from_an_alert_opens_the_comparison(app: str, browser) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(f"{app}/compare?baseline=smollm2-f16&candidate=smollm2-q2_k")
    page.get_by_text("smollm2-q2_k vs smollm2-f16: regression").wait_for(timeout=60_000)
    page.get_by_text("Case by case").wait_for(timeout=30_000)
    page.get_by_text("(wrong)").first.wait_for(timeout=30_000)  # the side-by-side outputs, diff highlighted
    page.locator("canvas, svg.marks").first.wait_for(timeout=30_000)
    page.wait_for_timeout(1000)
    page.screenshot(path=str(ARTIFACTS / "compare.png"), full_page=True)
    body = page.inner_text("body")
    page.close()
    assert "Page not found" not in body and "Flips (" in body


def _trend_texts(browser, app: str, timezone: str, shot: Path | None = None) -> list[str]:
    """The Trends chart's text in a browser set to ``timezone`` (Streamlit renders Vega as SVG: labels are DOM text)."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, timezone_id=timezone)
    page.goto(f"{app}/trends?suite=records&metric=pass&days=all")
    page.locator("svg.marks").first.wait_for(timeout=60_000)
    page.get_by_text("baseline", exact=True).first.wait_for(timeout=30_000)
    page.wait_for_timeout(1000)
    if shot:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)
    texts = [t.strip() for t in page.locator("svg.marks text").all_text_contents()]
    page.close()
    return texts


def test_trends_read_the_same_utc_24_hour_axis_in_any_browser_time_zone(app: str, browser) -> None:
    """The seeded runs are daily at this hour (UTC). A browser 12 hours away puts them on other local dates, so a
    local-time axis would tick and label differently; the UTC axis reads the same, 24-hour with the date, and the
    labelled baseline and the variants are drawn. The shifted browser's screenshot is kept."""
    away = "Etc/GMT+12" if datetime.now(UTC).hour < 12 else "Etc/GMT-12"  # UTC-12 or UTC+12
    here = _trend_texts(browser, app, "UTC")
    there = _trend_texts(browser, app, away, ARTIFACTS / "trends.png")
    ticks = [t for t in here if re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}", t)]
    assert len(ticks) >= 3, here
    assert [t for t in there if re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}", t)] == ticks
    assert "run time (UTC)" in there and "baseline" in there and "smollm2-q2_k" in there, repr(there)
