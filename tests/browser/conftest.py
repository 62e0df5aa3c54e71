"""Fixtures of the console's browser tests: the scenario's console on a real socket (once per
session), one headless Chromium (once per session, a fresh visitor for each test), at desktop or
phone width.

Chromium and chromedriver missing: the tests marked ``browser`` are skipped, or fail with CI=true
(as the broker's and PostgreSQL's are: tests/conftest.py)."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver

from tests.browser import scenario
from tests.browser.browser import PHONE, Chromium, find_chromium, fresh, start_chromium, viewport
from tests.browser.console_app import ServedApp, projected, served_console
from tests.conftest import unavailable

REPOSITORY = Path(__file__).parents[2]


@pytest.fixture(scope="session")
def console(tmp_path_factory) -> Iterator[ServedApp]:
    """The console over the scenario's store (as of ``scenario.NOW``, the API's now too), with its
    tokens."""
    with served_console(
        tmp_path_factory.mktemp("console"),
        scenario.TOKENS,
        lambda store: projected(store, scenario.NOW, scenario.events()),
        lambda: scenario.NOW,
    ) as served:
        yield served


@pytest.fixture(scope="session")
def chromium() -> Chromium:
    found = find_chromium()
    if isinstance(found, str):
        unavailable("Chromium", found)
    assert isinstance(found, Chromium)
    return found


@pytest.fixture(scope="session")
def chromium_session(chromium: Chromium) -> Iterator[webdriver.Chrome]:
    driver = start_chromium(chromium)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def browser(chromium_session: webdriver.Chrome) -> webdriver.Chrome:
    """The session's Chromium as a new visitor's (no cookie, empty logs), desktop width."""
    return fresh(chromium_session)


@pytest.fixture
def phone(browser: webdriver.Chrome) -> webdriver.Chrome:
    """The same, at a phone's width (390 x 844 CSS pixels, mobile)."""
    viewport(browser, PHONE)
    return browser


@pytest.fixture
def screenshots(tmp_path) -> Path:
    """Where screenshots go: docs/images/ with SLATRACK_TEST_WRITE_SCREENSHOTS=1 (to refresh the
    docs' images), else this test's tmp directory (a test run never changes the checkout)."""
    if os.environ.get("SLATRACK_TEST_WRITE_SCREENSHOTS", "") in {"1", "true", "yes"}:
        return REPOSITORY / "docs" / "images"
    return tmp_path
