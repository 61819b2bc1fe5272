"""The report page rendered offline in headless Chromium: every figure drawn, no network
request, no console error."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from browser import CHROMIUM, CHROMIUM_ARGS, sync_playwright_or_fail
from studyfiles import TARGETS

if TYPE_CHECKING:
    from playwright.sync_api import Route

ARTIFACTS = Path(__file__).parent / "artifacts"
# Traces per figure for the two helper studies: the front has feasible, infeasible, stopped and
# front per study; per met target, one curve per verifier stage and PGD (acert-mnist: two
# stages and PGD; ibp-mnist, an older study: its one radius); progress has all trials plus one
# line per met target; one importance series per study; one parallel-coordinates trace per
# study.
EXPECTED_TRACES = {
    "fig-front": 8,
    "fig-curves": 4,
    "fig-progress": 4,
    "fig-importance": 2,
    "fig-parallel-0": 1,
    "fig-parallel-1": 1,
}


@pytest.mark.slow
def test_the_page_renders_offline_in_chromium(page: Path):
    """Every non-file request is recorded and aborted (the context is offline too)."""
    sync_playwright = sync_playwright_or_fail()
    attempted: list[str] = []
    problems: list[str] = []

    def only_files(route: Route) -> None:
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            route.abort()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(offline=True, viewport={"width": 1400, "height": 1000})
            context.route("**/*", only_files)
            tab = context.new_page()
            tab.on(
                "request", lambda r: None if r.url.startswith("file:") else attempted.append(r.url)
            )
            tab.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            tab.on("pageerror", lambda e: problems.append(str(e)))
            tab.goto(page.as_uri(), wait_until="load")
            tab.wait_for_function(
                f"document.querySelectorAll('.js-plotly-plot').length === {len(EXPECTED_TRACES)}",
                timeout=30_000,
            )
            rendered = tab.evaluate(
                "Object.fromEntries([...document.querySelectorAll('.js-plotly-plot')]"
                ".map(d => [d.id, d.data.length]))"
            )
            drawn = tab.evaluate("document.querySelectorAll('.js-plotly-plot .main-svg').length")
            rows = tab.locator("table.targets tbody tr").count()
            ARTIFACTS.mkdir(exist_ok=True)
            screenshot = ARTIFACTS / "report.png"
            tab.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    print(f"report screenshot: {screenshot}")
    assert attempted == [], f"the page tried the network: {attempted}"
    assert problems == [], f"console errors: {problems}"
    assert rendered == EXPECTED_TRACES
    assert drawn >= len(EXPECTED_TRACES)
    assert rows == 2 * len(TARGETS)
