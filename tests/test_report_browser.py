"""The demo report in headless Chromium (Selenium): the page renders, every image loads, the
console holds no error, and a screenshot is saved. Skips, saying why, without Chromium."""

from __future__ import annotations

import pytest

from browser_utils import headless_chromium
from test_report import _demo_folder

from reasonlab.report import write_report


@pytest.fixture
def browser():
    drv = headless_chromium("the report's browser test")
    try:
        yield drv
    finally:
        drv.quit()


def test_demo_report_renders_in_chromium(browser, tmp_path):
    from selenium.webdriver.common.by import By

    page = write_report([_demo_folder(tmp_path / "demo")], tmp_path / "report.html")
    browser.get(page.resolve().as_uri())
    assert browser.title == "reasonlab demo"
    rows = browser.find_elements(By.CSS_SELECTOR, "table.summary tr")
    assert len(rows) == 4  # header + three stages
    assert rows[1].text.split("\n")[0].startswith("Method solver")
    images = browser.find_elements(By.TAG_NAME, "img")
    assert len(images) == 2
    loaded = browser.execute_script(
        "return Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)")
    assert loaded == [True, True]
    assert browser.execute_script("return document.body.scrollHeight") > 600
    details = browser.find_elements(By.TAG_NAME, "details")
    assert details and not details[0].get_attribute("open")  # the config is folded away
    errors = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
    assert errors == []
    shot = tmp_path / "report.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
