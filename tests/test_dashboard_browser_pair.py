"""A team's first store in headless Chromium: the baseline and one candidate on two suites (tests/dashboard_store.PAIR).

Charts sized for eight variants must still read with two: every chart keeps room for its axes and its whole legend,
labels do not sit on each other, and Compare says which side passed and what the checks expected. The screenshots
are kept as test artifacts (pair-*.png in test-artifacts/, or $EVALSVC_TEST_ARTIFACTS).
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import pairwise

import pytest

from tests.dashboard_store import seeded_pair_project
from tests.test_dashboard_browser import ARTIFACTS, browser, serve_dashboard  # noqa: F401 (browser: a fixture)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("pair")
    yield from serve_dashboard(seeded_pair_project(folder, f"sqlite:///{folder / 'store.db'}"), folder)


def _open(browser, url: str, ready: str, shot: str, charts: int = 1):  # noqa: F811
    """The page at ``url`` once ``ready`` shows and its charts have drawn; its full-page screenshot is kept."""
    page = browser.new_page(viewport={"width": 1440, "height": 2600})  # the whole page in one screenshot
    page.goto(url)
    page.get_by_text(ready).first.wait_for(timeout=60_000)
    for i in range(charts):
        page.locator("svg.marks").nth(i).wait_for(timeout=60_000)
    page.wait_for_timeout(1500)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / shot), full_page=True)
    return page


def _chart_texts(page, index: int) -> list[dict]:
    """Each text of the index-th chart with its box, and whether the chart's visible area holds all of it."""
    return page.locator("svg.marks").nth(index).evaluate("""svg => {
        const frame = svg.closest('[data-testid="stVegaLiteChart"]') || svg.parentElement;
        const area = frame.getBoundingClientRect();
        return [...svg.querySelectorAll('text')].filter(t => t.textContent.trim()).map(t => {
            const b = t.getBoundingClientRect();
            return {text: t.textContent.trim(), x: b.x, y: b.y, w: b.width, h: b.height,
                    inside: b.top >= area.top - 1 && b.bottom <= area.bottom + 1 && b.left >= area.left - 1
                            && b.right <= area.right + 1};
        });
    }""")


def _plot_height(page, index: int) -> float:
    """Height of the index-th chart's cells or marks (the data rectangle, not its axes)."""
    return page.locator("svg.marks").nth(index).evaluate("""svg => {
        const marks = [...svg.querySelectorAll('g.mark-rect path, g.mark-rule line, g.mark-symbol path')];
        if (!marks.length) return 0;
        const boxes = marks.map(m => m.getBoundingClientRect());
        return Math.max(...boxes.map(b => b.bottom)) - Math.min(...boxes.map(b => b.top));
    }""")


def _disjoint(boxes: list[dict]) -> bool:
    ordered = sorted(boxes, key=lambda b: b["y"])
    return all(a["y"] + a["h"] <= b["y"] + 0.5 for a, b in pairwise(ordered))


def test_overview_heat_map_labels_every_suite_and_keys_every_status(app: str, browser) -> None:  # noqa: F811
    page = _open(browser, f"{app}/", "Every variant x suite", "pair-overview.png")
    texts = _chart_texts(page, 0)
    page.close()
    shown = {t["text"] for t in texts if t["inside"]}
    assert {"echo", "numbers", "smollm2-f16", "smollm2-q4_0"} <= shown, texts
    assert {"baseline", "regression", "inconclusive", "pass", "improvement", "failed run", "upstream change",
            "no verdict"} <= shown, texts


def test_compare_labels_every_forest_row_and_marks_each_side_pass_or_fail(app: str, browser) -> None:  # noqa: F811
    page = _open(browser, f"{app}/compare?baseline=smollm2-f16&candidate=smollm2-q4_0", "Case by case",
                 "pair-compare.png")
    page.get_by_text("✗ fail").first.wait_for(timeout=30_000)
    texts = _chart_texts(page, 0)
    body = page.inner_text("body")
    changed = page.locator(".evalsvc-output span").evaluate_all("spans => spans.map(s => getComputedStyle(s).backgroundColor)")
    page.close()
    rows = [t for t in texts if t["text"].endswith(" / pass")]
    assert {t["text"] for t in rows if t["inside"]} == {"echo / pass", "numbers / pass", "all suites / pass"}, texts
    assert _disjoint(rows)
    shown = {t["text"] for t in texts if t["inside"]}
    assert {"regression", "inconclusive", "pass", "improvement"} <= shown, texts
    assert "✓ pass" in body and "✗ fail" in body and "idea" in body  # both sides marked
    assert "{'" not in body  # no raw Python dict of scores
    assert changed and not any(c in ("rgb(204, 255, 216)", "rgb(255, 215, 213)") for c in changed)  # no green/red diff


def test_arena_win_matrix_keeps_its_cells_and_apart_labels_with_two_models(app: str, browser) -> None:  # noqa: F811
    page = _open(browser, f"{app}/arena", "Win rate of the row model", "pair-arena.png", charts=2)
    texts = _chart_texts(page, 1)
    height = _plot_height(page, 1)
    page.close()
    labels = [t for t in texts if t["text"] in ("smollm2-f16", "smollm2-q4_0") and t["inside"]]
    assert len(labels) == 4, texts  # each model on both axes
    rows = [t for t in labels if t["w"] > t["h"]]  # the row labels (the column labels may be turned)
    assert height >= 60, height
    assert _disjoint(sorted(labels, key=lambda t: t["x"])[:2]) or _disjoint(rows)


def test_trends_read_with_two_variants(app: str, browser) -> None:  # noqa: F811
    page = _open(browser, f"{app}/trends?suite=echo&metric=pass&days=all", "baseline", "pair-trends.png")
    texts = _chart_texts(page, 0)
    page.close()
    assert {"smollm2-f16", "smollm2-q4_0"} <= {t["text"] for t in texts if t["inside"]}, texts


def test_drift_charts_share_one_time_axis_with_the_series_across_it(app: str, browser) -> None:  # noqa: F811
    """The series and its CUSUM statistic are drawn on one time axis: the same tick labels in both charts, and the
    ten nightly points spread across the width (an explicit domain in another time unit once piled them at one edge)."""
    page = _open(browser, f"{app}/drift?suite=echo&variant=smollm2-q4_0&metric=pass", "The detector's statistic",
                 "pair-drift.png", charts=2)
    texts = [[t for t in _chart_texts(page, i) if t["text"].startswith("20")] for i in (0, 1)]
    ticks = [[t["text"] for t in chart] for chart in texts]
    lefts = [chart[0]["x"] for chart in texts if chart]
    spread = page.locator("svg.marks").first.evaluate("""svg => {
        const xs = [...svg.querySelectorAll('g.mark-symbol path')].map(p => p.getBoundingClientRect().x);
        return [Math.max(...xs) - Math.min(...xs), svg.getBoundingClientRect().width];
    }""")
    page.close()
    assert ticks[0] and ticks[0] == ticks[1], ticks
    assert abs(lefts[0] - lefts[1]) <= 1, lefts  # one above the other: the y-axes take the same width
    assert spread[0] > spread[1] / 2, spread
