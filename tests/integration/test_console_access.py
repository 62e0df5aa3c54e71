"""Signing in to the console and out of it (services/api/console/access.py), over the real app
(fastapi's TestClient): the cookie holds any token (base64url), a form of more fields than the
sign-in has is refused, not a 500, a post from another site cannot sign anyone in or out, and one
through a reverse proxy (X-Forwarded-Host) can; the ticket page's as_of out of the calendar's range
is a 422, not a 500. Found by the review of issue 15."""

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import quote

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from projections.policy import default_policy
from services.api.app import create_app
from services.api.console.access import COOKIE, cookie_token, cookie_value
from services.api.console.ticket_page import BadInstant, parse_as_of
from services.bootstrap import Services
from services.config import Settings
from services.kafka.publisher import EventPublisher
from services.store import open_store
from tests.feed import Feed

UNICODE_TOKEN = "console-token-é€-漢字-0123456789"
READER_TOKEN = "console-reader-token-0123456789"
TOKENS = [
    {"name": "unicode", "token": UNICODE_TOKEN, "roles": ["reader"]},
    {"name": "reader", "token": READER_TOKEN, "roles": ["reader"]},
]
FORM = {"content-type": "application/x-www-form-urlencoded"}


@pytest.fixture
def client(tmp_path) -> Iterator[TestClient]:
    settings = Settings(
        kafka_bootstrap="127.0.0.1:1",  # never contacted
        data_dir=tmp_path,
        api_tokens=SecretStr(json.dumps(TOKENS)),
    )
    store = open_store(settings)
    try:
        asyncio.run(Feed(store, datetime(2026, 11, 20, tzinfo=UTC)).open())  # an active generation
        app = create_app(Services(settings, default_policy(), EventPublisher(settings), store))
        with TestClient(app, base_url="http://console.test") as test_client:
            yield test_client
    finally:
        store.close()


def sign_in(client: TestClient, token: str, **headers: str) -> httpx.Response:
    body = "token=" + quote(token)
    return client.post("/ui/sign-in", content=body, headers={**FORM, **headers}, follow_redirects=False)


@pytest.mark.parametrize("token", [UNICODE_TOKEN, READER_TOKEN])
def test_any_token_round_trips_through_the_cookie(client, token):
    response = sign_in(client, token, origin="http://console.test")
    assert response.status_code == 303, response.text
    value = response.cookies[COOKIE]
    assert value == cookie_value(token) and cookie_token(value) == token
    assert token not in response.headers["set-cookie"]
    assert client.get("/ui/", follow_redirects=False).status_code == 200


def test_a_cookie_that_is_not_ours_is_a_sign_in():
    assert cookie_token("!!not base64!!") is None
    assert cookie_token(cookie_value("x" * 20)) == "x" * 20


def test_a_form_of_many_fields_is_refused_not_a_500(client):
    body = "a=1&b=2&c=3&d=4&e=5&token=" + READER_TOKEN
    response = client.post("/ui/sign-in", content=body, headers=FORM, follow_redirects=False)
    assert response.status_code == 401


def test_another_site_cannot_sign_in_or_out(client):
    assert sign_in(client, READER_TOKEN, origin="https://evil.example").status_code == 403
    assert sign_in(client, READER_TOKEN, origin="http://console.test").status_code == 303
    out = client.post("/ui/sign-out", headers={"origin": "https://evil.example"}, follow_redirects=False)
    assert out.status_code == 403 and "set-cookie" not in out.headers
    assert client.get("/ui/", follow_redirects=False).status_code == 200  # still signed in
    out = client.post("/ui/sign-out", headers={"origin": "http://console.test"}, follow_redirects=False)
    assert out.status_code == 303 and f"{COOKIE}=" in out.headers["set-cookie"]


def test_a_sign_in_through_a_reverse_proxy(client):
    # The proxy passes its upstream's address as Host, and the browser's host in X-Forwarded-Host.
    proxied = {"origin": "https://sla.example.com", "x-forwarded-host": "sla.example.com"}
    assert sign_in(client, READER_TOKEN, **proxied).status_code == 303
    # Another site's page posting through the same proxy still carries its own Origin.
    spoofed = {"origin": "https://evil.example", "x-forwarded-host": "sla.example.com"}
    assert sign_in(client, READER_TOKEN, **spoofed).status_code == 403


@pytest.mark.parametrize(
    ("as_of", "zone"), [("9999-12-31T23:59", "America/New_York"), ("0001-01-01T00:00", "Asia/Tokyo")]
)
def test_an_as_of_out_of_range_is_refused_not_a_500(as_of, zone):
    with pytest.raises(BadInstant):
        parse_as_of(as_of, zone, datetime.now(UTC), 30)
