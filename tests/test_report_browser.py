"""report.html in a real headless Chromium: it loads on its own, and every figure and table is
drawn at a readable size."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.test_report import check_image, write_full_report

#: Playwright's own browser download is not always reachable; a system build works the same.
SYSTEM_BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        try:
            found = p.chromium.launch()
        except sync_api.Error:
            path = next(filter(None, map(shutil.which, SYSTEM_BROWSERS)), None)
            if path is None:
                message = ("no headless Chromium: `python -m playwright install chromium` or the "
                           "system package chromium-headless-shell")
                if os.environ.get("CI"):
                    pytest.fail(message)
                pytest.skip(message)
            found = p.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield found
        found.close()


def test_report_page_renders_every_figure_and_table(browser, tmp_path):
    tables = write_full_report(tmp_path)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    failures = []
    page.on("console", lambda m: failures.append(m.text) if m.type == "error" else None)
    page.on("requestfailed", lambda r: failures.append(r.url))
    page.goto((tmp_path / "report.html").as_uri())
    assert page.title() == "w2s-ray report: s"
    for name in ("accuracy_vs_size", "pgr", "consistency", "selection"):
        box = page.locator(f"#fig-{name} svg").bounding_box()
        assert box and box["width"] > 500 and box["height"] > 250, (name, box)
        # The series the SVG file holds are drawn in the page too.
        assert page.locator(f"#fig-{name} [id*='series-']").count() > 0
    assert page.locator("table").count() == len(tables) + 2  # + the run summary and the stage counts
    rows = page.locator("#table-intervals").locator("xpath=following-sibling::div[1]//tr")
    assert rows.count() == 1 + len(tables["intervals"])
    page.screenshot(path=tmp_path / "report.png", full_page=True)
    check_image(tmp_path / "report.png", min_size=(1200, 3000))
    assert not failures, failures
