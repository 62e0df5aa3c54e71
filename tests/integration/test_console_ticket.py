"""The console's ticket page (/ui/customers/{customer}/tickets/{ticket}) over read models filled by
the real projector (tests.feed, SQLite, no broker): the SVG of its clocks checked from the DOM
against the pure picture of the same events, the tables, the provenance and the replay commands,
as_of (RFC 3339 and a local wall time), and the 404 a token limited to customers gets."""

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from projections.explain import explain
from projections.policy import default_policy
from services.api.app import create_app
from services.api.console.access import COOKIE, cookie_value
from services.api.console.clock_picture import picture
from services.bootstrap import Services
from services.config import Settings
from services.kafka.publisher import EventPublisher
from tests.engine_helpers import Story, ny
from tests.feed import Feed, a_store
from tests.unit.test_explain import everything, split

SVG = "{http://www.w3.org/2000/svg}"
READER, SCOPED = "reader-token-console", "scoped-token-console"
TOKENS = [
    {"name": "ops", "token": READER, "roles": ["reader"]},
    {"name": "other-only", "token": SCOPED, "roles": ["reader"], "customers": ["other"]},
]
PAGE = "/ui/customers/acme/tickets/T-1"


def the_story() -> Story:
    story = everything()  # acme's T-1: a suspension, priority changes, pending, breaches, a close
    story.opened(ny("2026-11-13 08:00"), "low", ticket_id="T-9", customer_id="other")
    return story


@pytest.fixture
async def client(tmp_path) -> AsyncIterator[httpx.AsyncClient]:
    with a_store("sqlite", tmp_path) as store:
        feed = await Feed(store, datetime(2026, 11, 13, 17, 0, tzinfo=UTC)).open()
        await feed.send(*the_story().dicts)
        settings = Settings(data_dir=tmp_path, api_tokens=SecretStr(json.dumps(TOKENS)))
        app = create_app(Services(settings, default_policy(), EventPublisher(settings), store))
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://console") as http:
            yield http


def signed_in(token: str = READER) -> dict[str, str]:
    return {"cookie": f"{COOKIE}={cookie_value(token)}"}


class Ids(HTMLParser):
    """The text inside each element with an id (tables, the pre, the provenance list)."""

    def __init__(self) -> None:
        super().__init__()
        self.open: list[tuple[str, str | None]] = []
        self.text: dict[str, list[str]] = {}
        self.rows: dict[str, int] = {}
        self.forms: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.open.append((tag, found.get("id")))
        if found.get("id"):
            self.text.setdefault(str(found["id"]), [])
        if tag == "tr":
            for _, ident in self.open:
                if ident:
                    self.rows[ident] = self.rows.get(ident, 0) + 1
        if tag == "form":
            self.forms.append(found)

    def handle_endtag(self, tag: str) -> None:
        while self.open:
            if self.open.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        for _, ident in self.open:
            if ident:
                self.text[ident].append(data)


def parsed(html: str) -> Ids:
    ids = Ids()
    ids.feed(html)
    return ids


def svg_of(html: str) -> ET.Element:
    found = re.search(r"<svg id=\"clocks\".*?</svg>", html, re.S)
    assert found is not None
    return ET.fromstring(found.group(0))


def drawn(
    root: ET.Element,
) -> list[tuple[str | None, str | None, list[tuple[Any, ...]], list[tuple[Any, ...]]]]:
    return [
        (
            g.get("data-clock"),
            g.get("data-cycle"),
            [
                (
                    int(r.get("data-start") or 0),
                    int(r.get("data-end") or 0),
                    r.get("data-kind"),
                    r.get("data-reason") or None,
                )
                for r in g.findall(f"{SVG}rect[@class='stretch']")
            ],
            [
                (int(x.get("data-at") or 0), x.get("data-kind"))
                for x in g.findall(f"{SVG}line[@class='mark']")
            ],
        )
        for g in root.findall(f"{SVG}g[@class='clock']")
    ]


def expected(as_of: datetime) -> tuple[dict[str, Any], list[tuple[Any, ...]]]:
    ticket = [r for r in the_story().records if getattr(r.event, "ticket_id", None) != "T-9"]
    document = explain(*split(ticket), default_policy(), as_of)
    assert document is not None
    return document, [
        (
            c.clock,
            str(c.cycle),
            [(s.start, s.end, s.kind, s.reason) for s in c.stretches],
            [(m.at, m.kind) for m in c.marks],
        )
        for c in picture(document).cycles
    ]


async def test_the_ticket_page(client):
    response = await client.get(PAGE, headers=signed_in())
    assert response.status_code == 200, response.text
    assert response.headers["content-security-policy"].startswith("default-src 'none'")
    html = response.text
    root = svg_of(html)
    assert root.get("role") == "img" and "T-1" in (root.get("aria-label") or "")
    # The stored view's instant: the log's time (its latest event), the worker catching up.
    as_of = datetime(2026, 11, 13, 15, 30, tzinfo=UTC)
    assert '<time datetime="2026-11-13T15:30:00Z"' in html
    document, groups = expected(as_of)
    assert drawn(root) == groups
    kinds = {r.get("data-reason") for r in root.iter(f"{SVG}rect") if r.get("data-kind") == "paused"}
    assert {"suspension", "pending_customer", "closed_hours"} <= kinds
    marks = {x.get("data-kind") for x in root.iter(f"{SVG}line") if x.get("class") == "mark"}
    assert marks == {"due", "warning", "breach", "event", "priority-change"}
    page = parsed(html)
    # The header row and one per entry; the store keeps no later copy of an event id (the story's
    # second copy of e-6 has an "ignored" entry in the pure trail only).
    copies = [
        x
        for x in document["entries"]
        if x["effects"][0]["effect"] == "ignored" and x["effects"][0]["reason"].startswith("duplicate")
    ]
    assert len(copies) == 1
    assert page.rows["events"] == 1 + len(document["entries"]) - 1
    assert "exact amount" in "".join(page.text["billing"])
    provenance = "".join(page.text["provenance"])
    assert document["digest"] in provenance and document["policy_version"] in provenance
    replay = "".join(page.text["replay"])
    assert "slatrack export --customer acme --out log.jsonl" in replay
    assert (
        "slatrack explain T-1 --customer acme --events log.jsonl --as-of 2026-11-13T15:30:00Z --format json"
        in replay
    )
    assert "slatrack replay --events log.jsonl --as-of 2026-11-13T15:30:00Z" in replay
    assert any(form.get("id") == "as-of" for form in page.forms)


async def test_as_of_redraws_the_ticket(client):
    earlier = datetime(2026, 11, 9, 15, 0, tzinfo=UTC)  # 10:00 New York
    _, groups = expected(earlier)
    by_instant = await client.get(PAGE, params={"as_of": "2026-11-09T15:00:00Z"}, headers=signed_in())
    by_wall_time = await client.get(PAGE, params={"as_of": "2026-11-09T10:00"}, headers=signed_in())
    for response in (by_instant, by_wall_time):
        assert response.status_code == 200, response.text
        assert drawn(svg_of(response.text)) == groups
    assert [(clock, cycle) for clock, cycle, _, _ in groups] == [
        ("response", "1"),
        ("resolution", "1"),
        ("resolution", "2"),
    ]
    future = await client.get(PAGE, params={"as_of": "2999-01-01T00:00:00Z"}, headers=signed_in())
    assert future.status_code == 422
    before = await client.get(PAGE, params={"as_of": "2026-11-01T00:00:00Z"}, headers=signed_in())
    assert before.status_code == 404 and "not opened" in before.text
    nonsense = await client.get(PAGE, params={"as_of": "soon"}, headers=signed_in())
    assert nonsense.status_code == 422 and "text/html" in nonsense.headers["content-type"]


async def test_another_customers_ticket_is_the_404_of_none(client):
    foreign = await client.get(PAGE, headers=signed_in(SCOPED))
    missing = await client.get("/ui/customers/other/tickets/T-1", headers=signed_in(SCOPED))
    assert foreign.status_code == missing.status_code == 404
    assert foreign.text == missing.text
    assert "text/html" in foreign.headers["content-type"]
    own = await client.get("/ui/customers/other/tickets/T-9", headers=signed_in(SCOPED))
    assert own.status_code == 200
    unknown = await client.get("/ui/customers/acme/tickets/NOPE", headers=signed_in())
    assert unknown.status_code == 404


async def test_signing_in_is_needed(client):
    response = await client.get(PAGE)
    assert response.status_code == 303 and response.headers["location"] == "/ui/sign-in"
