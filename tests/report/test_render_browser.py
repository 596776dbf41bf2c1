"""Reports opened in headless Chromium: they load without console errors and every image decodes.

The browser is found by :func:`robustscope.report.browser.find_chromium`
(``$ROBUSTSCOPE_CHROMIUM`` or ``chromium`` and similar names on PATH). Without
one, every test here is skipped.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from robustscope.report.browser import HeadlessChromium, find_chromium
from robustscope.report.compare import compare
from robustscope.report.render import write_report

from fake_fits import fake_fit

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_REPORT = ROOT / "reports" / "multi-prompt-eval" / "report.html"

pytestmark = pytest.mark.skipif(
    find_chromium() is None,
    reason="no Chromium or Chrome found: install the chromium package or set ROBUSTSCOPE_CHROMIUM to the browser's path",
)


@pytest.fixture(scope="module")
def browser():
    with HeadlessChromium() as chromium:
        yield chromium


def _assert_clean(check, expected_images: int) -> None:
    assert check.errors == []
    assert len(check.images) == expected_images
    assert check.broken_images == []
    for image in check.images:
        assert image["naturalWidth"] > 0, image["alt"]


def test_single_fit_report_loads(browser, tmp_path):
    write_report(fake_fit(12, 6, 3, seed=1), tmp_path)
    check = browser.open(tmp_path / "report.html")
    # Competence and robustness, variance shares, model effects, predictive check, traces.
    _assert_clean(check, expected_images=5)


def test_comparison_report_loads(browser, tmp_path):
    compare([fake_fit(12, 6, 3, seed=1), fake_fit(12, 6, 3, seed=2)], tmp_path, labels=["first", "second"])
    check = browser.open(tmp_path / "compare.html")
    # Competence curves, variance shares, shared model effects, predictive check, one trace figure per fit.
    _assert_clean(check, expected_images=6)


@pytest.mark.skipif(not SHIPPED_REPORT.is_file(), reason="the shipped report is written by `make report`")
def test_shipped_report_loads(browser):
    check = browser.open(SHIPPED_REPORT)
    assert check.errors == []
    assert check.images
    assert check.broken_images == []


def test_broken_page_detected(browser, tmp_path):
    # A control: the same checks fail on a page with a script error and an image that cannot decode.
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><body><img alt='truncated' src='data:image/png;base64,iVBORw0KGgo='>"
        "<script>console.error('report script failed')</script></body></html>"
    )
    check = browser.open(page)
    assert any("report script failed" in error for error in check.errors)
    assert len(check.broken_images) == 1
    assert check.broken_images[0]["alt"] == "truncated"
