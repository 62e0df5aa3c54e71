"""Signing in to the console in a real browser (headless Chromium): the token typed into the page
ends in an HttpOnly, SameSite=Strict cookie and in no URL; bad tokens get the page's error; every
page carries its CSP, and the browser reports no error (a CSP violation would be one)."""

import httpx
import pytest
from selenium.webdriver.common.by import By

from services.api.console.access import COOKIE, cookie_value
from services.api.console.render import CSP
from tests.browser import scenario
from tests.browser.browser import (
    console_errors,
    left,
    no_horizontal_scroll,
    path_of,
    requested_urls,
    sign_in,
)

pytestmark = pytest.mark.browser

TOKENS = (scenario.READER_TOKEN, scenario.GLOBEX_TOKEN, scenario.PUBLISHER_TOKEN)


def the_cookie(browser) -> dict | None:
    cookies = [c for c in browser.get_cookies() if c["name"] == COOKIE]
    assert len(cookies) <= 1, cookies
    return cookies[0] if cookies else None


def test_a_page_without_sign_in_sends_to_the_sign_in_page(console, browser):
    browser.get(f"{console.url}/ui/")
    assert path_of(browser, console.url) == "/ui/sign-in"
    assert browser.find_element(By.CSS_SELECTOR, "form.sign-in input[name=token]").get_attribute("type") == (
        "password"
    )
    assert console_errors(browser) == []


@pytest.mark.parametrize("token", [scenario.READER_TOKEN, scenario.GLOBEX_TOKEN], ids=["reader", "scoped"])
def test_a_good_token_lands_on_the_queue_with_an_http_only_strict_cookie(console, browser, token):
    sign_in(browser, console.url, token)
    assert path_of(browser, console.url) == "/ui/"
    assert browser.find_element(By.TAG_NAME, "h1").text == "Queue"
    cookie = the_cookie(browser)
    assert cookie is not None
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/ui"
    assert cookie["secure"] is False  # plain HTTP here; Secure over HTTPS
    assert cookie["value"] == cookie_value(token)
    # No script of the page can read it.
    assert COOKIE not in browser.execute_script("return document.cookie")
    assert console_errors(browser) == []


def test_the_signed_in_token_names_its_holder_and_signs_out(console, browser):
    sign_in(browser, console.url, scenario.READER_TOKEN)
    assert browser.find_element(By.CSS_SELECTOR, "form.sign-out .who").text == "ops-reader"
    button = browser.find_element(By.CSS_SELECTOR, "form.sign-out button[type=submit]")
    button.click()
    left(browser, button)
    browser.find_element(By.CSS_SELECTOR, "form.sign-in")  # back on the sign-in page
    assert path_of(browser, console.url) == "/ui/sign-in"
    assert the_cookie(browser) is None
    browser.get(f"{console.url}/ui/")
    assert path_of(browser, console.url) == "/ui/sign-in"


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("not-a-token-of-this-console-at-all", "That token is not known."),
        (scenario.PUBLISHER_TOKEN, "The token 'helpdesk' lacks the reader role the console needs."),
    ],
    ids=["unknown", "no-reader-role"],
)
def test_a_bad_token_shows_the_error_and_sets_no_cookie(console, browser, token, message):
    sign_in(browser, console.url, token)
    assert path_of(browser, console.url) == "/ui/sign-in"
    assert browser.find_element(By.CSS_SELECTOR, "p.error[role=alert]").text == message
    assert the_cookie(browser) is None
    # The page answered 401 / 403, which the browser logs as a failed load of the document: that
    # is the one error allowed.
    assert console_errors(browser, allowed=["/ui/sign-in - Failed to load resource"]) == []
    browser.get(f"{console.url}/ui/")
    assert path_of(browser, console.url) == "/ui/sign-in"


def test_no_token_is_ever_in_a_url(console, browser):
    sign_in(browser, console.url, "not-a-token-of-this-console-at-all")
    sign_in(browser, console.url, scenario.PUBLISHER_TOKEN)
    sign_in(browser, console.url, scenario.READER_TOKEN)
    for path in (
        "/ui/",
        "/ui/customers",
        "/ui/customers/acme?month=2026-11",
        "/ui/customers/acme/tickets/A-PRIO",
    ):
        browser.get(f"{console.url}{path}")
    urls = requested_urls(browser)
    assert any(url.endswith("/ui/sign-in") for url in urls)
    assert any(url.endswith("/ui/static/console.js") for url in urls)
    leaked = [url for url in urls for token in (*TOKENS, "not-a-token") if token in url]
    assert leaked == []
    assert "token" not in browser.current_url


@pytest.mark.parametrize("path", ["/ui/sign-in", "/ui/"])
def test_every_page_carries_its_security_headers(console, path):
    with console.client(cookies={COOKIE: cookie_value(scenario.READER_TOKEN)}) as client:
        response = client.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["content-security-policy"] == CSP
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "same-origin"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    # The pages' own script and style only, nothing inline (the CSP would refuse it).
    assert "<script>" not in response.text and "style=" not in response.text


def test_the_sign_in_cookie_is_set_only_for_a_good_token(console):
    with httpx.Client(base_url=console.url, follow_redirects=False) as client:
        refused = client.post("/ui/sign-in", data={"token": "not-a-token-of-this-console-at-all"})
        assert refused.status_code == 401 and "set-cookie" not in refused.headers
        accepted = client.post("/ui/sign-in", data={"token": scenario.READER_TOKEN})
    assert accepted.status_code == 303 and accepted.headers["location"] == "/ui/"
    cookie = accepted.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/ui" in cookie


def test_the_sign_in_page_fits_a_phone(console, phone):
    phone.get(f"{console.url}/ui/sign-in")
    assert phone.execute_script("return window.innerWidth") == 390
    scroll, width = no_horizontal_scroll(phone)
    assert scroll <= width
    field = phone.find_element(By.CSS_SELECTOR, "form.sign-in input[name=token]")
    assert field.is_displayed() and field.size["width"] <= width
    sign_in(phone, console.url, scenario.READER_TOKEN)
    assert path_of(phone, console.url) == "/ui/"
    scroll, width = no_horizontal_scroll(phone)
    assert scroll <= width
    assert console_errors(phone) == []


def test_a_csp_violation_would_be_seen(console, browser):
    """The check of the other tests sees what it is for: an inline script (which the pages' CSP
    refuses) is reported in the browser's log as an error."""
    browser.get(f"{console.url}/ui/sign-in")
    assert console_errors(browser) == []
    browser.execute_script(
        "const s = document.createElement('script'); s.textContent = 'window.ran = 1';"
        "document.body.appendChild(s);"
    )
    assert browser.execute_script("return window.ran === undefined")  # refused
    errors = console_errors(browser)
    assert any("Content Security Policy" in error for error in errors), errors


def test_a_sign_in_posted_from_another_origin_is_refused(console, browser):
    """Login CSRF: a form of another origin (here a data: page, whose origin is opaque) posting a
    valid token does not sign the browser in."""
    form = (
        f'<form method="post" action="{console.url}/ui/sign-in">'
        f'<input name="token" value="{scenario.READER_TOKEN}"><button type="submit">go</button></form>'
    )
    browser.get("data:text/html," + form)
    button = browser.find_element(By.TAG_NAME, "button")
    button.click()
    left(browser, button)
    assert path_of(browser, console.url) == "/ui/sign-in"
    assert browser.find_element(By.CSS_SELECTOR, "p.error[role=alert]").text == (
        "Sign in from this console's own page."
    )
    assert the_cookie(browser) is None
