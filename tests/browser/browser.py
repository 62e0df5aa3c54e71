"""Headless Chromium driven by Selenium through Debian's chromedriver, and what the console's tests
do with it: sign in through the page, read what the browser logged and requested, set the
viewport, fill a form, read instants from data attributes.

The driver is given by path (``Service(path)``), so Selenium Manager never runs: it would try to
download a driver, and these machines have no network. ``SLATRACK_TEST_CHROMIUM`` and
``SLATRACK_TEST_CHROMEDRIVER`` name other binaries; else ``chromium`` and ``chromedriver`` on PATH.
"""

import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urljoin

import orjson
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.wait import WebDriverWait

DESKTOP = (1280, 900)
PHONE = (390, 844)  # a phone's CSS viewport (iPhone 12-15)
WAIT_S = 15


@dataclass(frozen=True)
class Chromium:
    browser: str
    driver: str


def find_chromium() -> Chromium | str:
    """The browser and its driver, or why not (a sentence saying how to get them)."""
    browser = os.environ.get("SLATRACK_TEST_CHROMIUM") or shutil.which("chromium")
    driver = os.environ.get("SLATRACK_TEST_CHROMEDRIVER") or shutil.which("chromedriver")
    if browser and driver and os.access(browser, os.X_OK) and os.access(driver, os.X_OK):
        return Chromium(browser, driver)
    missing = [
        name
        for name, path in (("chromium", browser), ("chromedriver", driver))
        if not path or not os.access(path, os.X_OK)
    ]
    return (
        f"{' and '.join(missing)} not found: apt-get install chromium chromium-driver (.ci/run does), "
        "or set SLATRACK_TEST_CHROMIUM and SLATRACK_TEST_CHROMEDRIVER"
    )


def start_chromium(chromium: Chromium) -> webdriver.Chrome:
    """A headless Chromium of its own (a fresh profile), logging its console and its network."""
    options = webdriver.ChromeOptions()
    options.binary_location = chromium.browser
    for argument in (
        "--headless=new",
        "--no-sandbox",  # as root in a container
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
        "--lang=en-US",
        "--no-first-run",
        "--no-default-browser-check",
        # Nothing but the page under test on the network.
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-extensions",
        "--disable-sync",
        "--metrics-recording-only",
    ):
        options.add_argument(argument)
    # The console (errors, CSP violations) and every request (to look for the token in a URL).
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=chromium.driver), options=options)
    driver.set_page_load_timeout(60)
    return driver


def viewport(driver: webdriver.Chrome, size: tuple[int, int]) -> None:
    """The page's CSS viewport exactly ``size`` (a phone's is also ``mobile``: its meta viewport
    applies)."""
    width, height = size
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": size == PHONE},
    )


def fresh(driver: webdriver.Chrome) -> webdriver.Chrome:
    """``driver`` as a new visitor's: no cookie, nothing logged yet, the desktop viewport."""
    driver.execute_cdp_cmd("Network.clearBrowserCookies", {})
    driver.get("about:blank")
    driver.get_log("browser")
    driver.get_log("performance")
    viewport(driver, DESKTOP)
    return driver


def sign_in(driver: webdriver.Chrome, base_url: str, token: str) -> webdriver.Chrome:
    """Sign in as a person does: open the sign-in page, type the token, press the button; returns
    once the answer is loaded (the queue, or the sign-in page with its error)."""
    driver.get(f"{base_url}/ui/sign-in")
    field = driver.find_element(By.CSS_SELECTOR, "form.sign-in input[name=token]")
    field.clear()
    field.send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "form.sign-in button[type=submit]").click()
    left(driver, field)
    return driver


def left(driver: webdriver.Chrome, element: WebElement) -> None:
    """Wait until the browser has left the page of ``element`` (it is stale) and loaded the next.

    While the page is being replaced chromedriver may answer a question about the element with
    an "unhandled inspector error" (Node ... does not belong to the document) rather than a stale
    element: that is asked again, not taken for an answer."""
    WebDriverWait(driver, WAIT_S, ignored_exceptions=[WebDriverException]).until(
        expected_conditions.staleness_of(element)
    )
    loaded(driver)


def loaded(driver: webdriver.Chrome) -> None:
    WebDriverWait(driver, WAIT_S).until(
        lambda d: d.execute_script("return document.readyState") == "complete"
    )


def path_of(driver: webdriver.Chrome, base_url: str) -> str:
    """The current URL without the base (``/ui/?priority=low``)."""
    url: str = driver.current_url
    assert url.startswith(base_url), url
    return url[len(base_url) :]


def console_errors(driver: webdriver.Chrome, allowed: Iterable[str] = ()) -> list[str]:
    """What the browser logged as errors since the last call (CSP violations, script errors,
    failed loads), but those containing one of ``allowed``."""
    entries = driver.get_log("browser")
    return [
        entry["message"]
        for entry in entries
        if entry["level"] == "SEVERE" and not any(text in entry["message"] for text in allowed)
    ]


def requested_urls(driver: webdriver.Chrome) -> list[str]:
    """Every URL the browser requested since the last call (documents, redirects, assets), from
    its performance log (the DevTools protocol's Network.requestWillBeSent)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = orjson.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            params = message["params"]
            urls.append(params["request"]["url"])
            redirect = params.get("redirectResponse")
            if redirect is not None:  # where it was sent from, and the Location it was given
                urls.append(redirect["url"])
                headers = {name.lower(): value for name, value in redirect.get("headers", {}).items()}
                if "location" in headers:
                    urls.append(urljoin(redirect["url"], headers["location"]))
    return urls


def fill(form: WebElement, values: dict[str, str]) -> None:
    """Set each named field of ``form``, whatever its kind: a select (by value), a checkbox
    (checked for a true value), radio buttons (the one with that value), or a text input."""
    for name, value in values.items():
        fields = form.find_elements(By.NAME, name)
        assert fields, f"form has no field {name!r}"
        first = fields[0]
        kind = (first.get_attribute("type") or "").lower()
        if first.tag_name == "select":
            # By the option's value, given or implied by its text (select_by_value needs the attribute).
            options = Select(first).options
            [option] = [o for o in options if o.get_attribute("value") == value]
            if not option.is_selected():
                option.click()
        elif kind == "checkbox":
            if first.is_selected() != (value in ("true", "1", "on", "yes")):
                first.click()
        elif kind == "radio":
            [choice] = [f for f in fields if f.get_attribute("value") == value]
            choice.click()
        else:
            first.clear()
            first.send_keys(value)


def submit(driver: webdriver.Chrome, form: WebElement) -> None:
    """Submit ``form`` with its own button (or the form itself without one) and wait for the page."""
    buttons = form.find_elements(
        By.CSS_SELECTOR, "button[type=submit], input[type=submit], button:not([type])"
    )
    if buttons:
        buttons[0].click()
    else:
        form.submit()
    left(driver, form)


def instant(value: str | None) -> int | None:
    """A data attribute's instant as epoch seconds, written either as epoch seconds or in RFC 3339
    (``2026-11-20T22:00:00Z``); None when absent or empty."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


def attributes(element: WebElement, *names: str) -> dict[str, Any]:
    return {name: element.get_attribute(name) for name in names}


def no_horizontal_scroll(driver: webdriver.Chrome) -> tuple[int, int]:
    """The page's scroll width and its viewport width (equal when nothing sticks out)."""
    widths: list[int] = driver.execute_script(
        "return [document.documentElement.scrollWidth, window.innerWidth]"
    )
    return widths[0], widths[1]
