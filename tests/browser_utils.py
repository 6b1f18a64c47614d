"""Headless Chromium for the browser tests (Selenium with Debian's ``chromium`` and
``chromium-driver``); a test without them skips, saying what it needs and why."""

from __future__ import annotations

import shutil

import pytest


def headless_chromium(purpose: str, *, window: str = "1200,900"):
    """A headless Chrome driver; browser console messages are kept for ``get_log("browser")``.
    Skips the calling test naming ``purpose`` when Chromium, its driver or selenium is missing."""
    chrome = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if not chrome or not driver:
        pytest.skip("no Chromium and chromedriver found (Debian: apt-get install chromium "
                    f"chromium-driver); {purpose} needs them")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[dev]')")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              f"--window-size={window}"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=opts)
