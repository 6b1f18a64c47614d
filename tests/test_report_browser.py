"""The demo report in headless Chromium (Selenium): the page renders, every image loads, the
console holds no error, and a screenshot is saved. Skips, saying why, without Chromium."""

from __future__ import annotations

import shutil

import pytest

from test_report import _demo_folder

from reasonlab.report import write_report


@pytest.fixture
def browser():
    chrome = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver_bin = shutil.which("chromedriver")
    if not chrome or not driver_bin:
        pytest.skip("no Chromium and chromedriver found (Debian: apt-get install chromium "
                    "chromium-driver); the report's browser test needs them")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[dev]')")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1200,900"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(driver_bin), options=opts)
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
