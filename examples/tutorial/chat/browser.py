"""A headless Chromium for the tutorial's Selenium tests: Debian's ``chromium`` and
``chromium-driver`` (``tests/run.sh`` installs them), started without a display."""

import shutil

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium_options():
    options = webdriver.ChromeOptions()
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    binary = shutil.which("chromium")
    if binary:
        options.binary_location = binary
    return options


def chromium_service():
    driver = shutil.which("chromedriver")
    return Service(driver) if driver else None


def headless_chromium():
    return webdriver.Chrome(options=chromium_options(), service=chromium_service())
