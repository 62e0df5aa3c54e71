"""The queue (issue 15, ops): GET /v1/tickets' overdue, billing_status, sort=due with its cursor,
items' due_at and remaining_seconds, as_of=now and a client's clock skew, over real HTTP on read
models the real projector filled from the embedded broker (SQLite and PostgreSQL); and the
console's queue page at /ui/ over the same app (order, filters, scoping, the sign-in cookie, the
DOM contract the browser tests rely on).

Every instant is computed by hand from the default policy (projections/default_policy.toml):
business hours Mon-Fri 09:00-17:00 America/New_York (EST, UTC-5, in November 2026); response
targets urgent 1 h (24x7), high 2 h, medium 4 h, low 8 h (business hours); resolution medium
8 h, low 48 h, none for urgent and high. Both the worker and the API are as of NOW, Monday
2026-11-16 20:00 EST.
"""

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import orjson
import pytest
from pydantic import SecretStr

from events import decode_event
from projections.policy import default_policy
from projections.replay import replay
from projections.timeline import Recorded
from services.api.console import pages
from services.api.console.access import cookie_value
from tests.integration.live_api import TOKENS, LiveApi, auth, fresh_settings
from tests.worker_helpers import throwaway_database

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]

NOW = datetime(2026, 11, 17, 1, 0, tzinfo=UTC)  # Monday 2026-11-16 20:00 EST
READER = auth("reader")
SCOPED = "acme-portal-token-" + uuid.uuid4().hex  # a reader limited to the customer acme
TOKENS_JSON = json.dumps(
    [
        {"name": "ops-reader", "token": TOKENS["reader"], "roles": ["reader"]},
        {"name": "helpdesk", "token": TOKENS["publisher"], "roles": ["publisher"]},
        {"name": "everything", "token": TOKENS["all"], "roles": ["reader", "publisher", "admin"]},
        {"name": "acme-portal", "token": SCOPED, "roles": ["reader"], "customers": ["acme"]},
    ]
)


def epoch(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp())


def stamp(instant: datetime) -> str:
    return instant.strftime("%Y-%m-%dT%H:%M:%SZ")


# The overdue example of the issue: a medium ticket opened Monday 13:00 EST reaches its response
# target (4 business hours) Monday 17:00 EST and breaches at the first business second past it,
# Tuesday 09:00:01 EST. At NOW it is overdue, not breached: next_due_at (dues after the
# evaluation instant only) is its resolution's; the queue's due instant is its response's.
OVER_OPENED = "2026-11-16T18:00:00Z"  # Mon 13:00 EST
OVER_DUE = "2026-11-16T22:00:00Z"  # Mon 17:00 EST: 4 business hours
OVER_BREACH = "2026-11-17T14:00:01Z"  # Tue 09:00:01 EST
OVER_RESOLUTION_DUE = "2026-11-17T18:00:00Z"  # 8 business hours: Mon 13-17, Tue 09-13 EST


@dataclass(frozen=True)
class Expected:
    customer: str
    ticket: str
    priority: str
    due: str | None  # the queue's due instant
    clock: str  # the clock due first ("" for none running)
    breach: str | None  # the earliest breach instant of a running clock (the console's order)


# In the queue's order: by due instant, those with no running clock last.
QUEUE = [
    Expected("acme", "T-over", "medium", OVER_DUE, "response", OVER_BREACH),
    # urgent, opened Mon 17:30 EST: response due 1 h later (24x7), breached a second after that.
    Expected("globex", "T-breached", "urgent", "2026-11-16T23:30:00Z", "response", "2026-11-16T23:30:01Z"),
    # urgent, opened Mon 19:30 EST: due 20:30 EST, 30 minutes ahead of NOW.
    Expected("globex", "T urgent/1", "urgent", "2026-11-17T01:30:00Z", "response", "2026-11-17T01:30:01Z"),
    # high, opened Mon 16:00 EST: 1 business hour Monday, the second Tuesday 09:00-10:00 EST.
    Expected("acme", "T-soon", "high", "2026-11-17T15:00:00Z", "response", "2026-11-17T15:00:01Z"),
    # low, responded, then pending_customer: response stopped, resolution paused.
    Expected("acme", "T-paused", "low", None, "", None),
]
ORDER = [e.ticket for e in QUEUE]
# The next breach's order (sort=breach, the console's queue): T-over is overdue since Monday
# 17:00 EST but breaches only at Tuesday's opening, after the urgent 24x7 one due at 20:30 EST.
BY_BREACH = sorted(QUEUE, key=lambda e: (e.breach is None, e.breach or "", e.ticket))
BREACH_ORDER = [e.ticket for e in BY_BREACH]
assert BREACH_ORDER == ["T-breached", "T urgent/1", "T-over", "T-soon", "T-paused"]
PENDING = "pending_customer"  # a resolution pause status of the default policy


def events() -> list[dict[str, Any]]:
    def opened(n: int, customer: str, ticket: str, at: str, priority: str) -> dict[str, Any]:
        return event(f"e{n}", "ticket.opened", at, customer, ticket, priority=priority)

    return [
        opened(1, "acme", "T-over", OVER_OPENED, "medium"),
        opened(2, "globex", "T-breached", "2026-11-16T22:30:00Z", "urgent"),
        opened(3, "globex", "T urgent/1", "2026-11-17T00:30:00Z", "urgent"),
        opened(4, "acme", "T-soon", "2026-11-16T21:00:00Z", "high"),
        opened(5, "acme", "T-paused", "2026-11-16T15:00:00Z", "low"),
        event("e6", "ticket.responded", "2026-11-16T15:30:00Z", "acme", "T-paused", agent_id="a-1"),
        event("e7", "ticket.status_changed", "2026-11-16T16:00:00Z", "acme", "T-paused", status=PENDING),
    ]


def event(event_id: str, type_: str, at: str, customer: str, ticket: str, **data: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": type_,
        "schema_version": 1,
        "occurred_at": at,
        "customer_id": customer,
        "ticket_id": ticket,
        "data": data,
    }


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def live(request, kafka_bootstrap, tmp_path_factory) -> Iterator[LiveApi]:
    overrides: dict[str, Any] = {
        "data_dir": tmp_path_factory.mktemp("queue"),
        "api_tokens": SecretStr(TOKENS_JSON),
    }
    with contextlib.ExitStack() as stack:
        if request.param == "postgres":
            database = throwaway_database(request.getfixturevalue("postgres_dsn"), "slatrack_queue")
            overrides["database_url"] = SecretStr(stack.enter_context(database))
        settings = fresh_settings(kafka_bootstrap, **overrides)
        api = LiveApi(settings, clock=lambda: NOW, api_clock=lambda: NOW)
        try:
            api.start_worker()
            sent = events()
            response = api.client.post("/v1/events", content=orjson.dumps(sent), headers=auth("publisher"))
            assert response.status_code == 202, response.text
            api.wait_applied(len(sent))
            caught_up(api)
            yield api
        finally:
            api.close()


def caught_up(api: LiveApi, timeout: float = 60) -> None:
    """Timer passes (as `serve` runs them) until every ticket whose view changes by NOW is as of
    NOW: while catching up, a ticket is as of its customer's log time, when T-over was not due."""
    generation = api.store.active_generation()
    assert generation is not None
    deadline = time.monotonic() + timeout
    while api.store.tickets_changing_by(generation, int(NOW.timestamp()), range(64)):
        assert time.monotonic() < deadline, "the timers did not bring the tickets to NOW"
        api.call(api.projector.tick())  # a no-op until the worker counts its partition caught up
        time.sleep(0.1)
    over = api.store.ticket(generation, ("acme", "T-over"))
    assert over is not None and over.evaluated_at == int(NOW.timestamp())


def listed(live: LiveApi, **params: Any) -> list[dict[str, Any]]:
    """Every item of GET /v1/tickets with these parameters, page after page."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = live.client.get("/v1/tickets", params=query, headers=READER)
        assert response.status_code == 200, response.text
        body = response.json()
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items


def tickets(items: list[dict[str, Any]]) -> list[str]:
    return [item["view"]["ticket_id"] for item in items]


# -- the API ----------------------------------------------------------------------


def test_the_overdue_example_by_hand():
    """The instants above are the engine's: the ticket is overdue at NOW, breaches Tuesday
    09:00:01 EST and not a second earlier."""
    records = [Recorded(i, decode_event(orjson.dumps(e))) for i, e in enumerate(events()[:1])]

    def view(at: str) -> dict[str, Any]:
        [found] = replay(records, default_policy(), datetime.fromisoformat(at))["tickets"]
        return found

    at_now = view(stamp(NOW))["clocks"]
    assert at_now["response"]["due_at"] == OVER_DUE and at_now["response"]["status"] == "running"
    assert at_now["resolution"]["due_at"] == OVER_RESOLUTION_DUE
    assert not at_now["response"]["breached"]
    assert not view("2026-11-17T14:00:00Z")["clocks"]["response"]["breached"]  # Tue 09:00:00 EST
    assert view(OVER_BREACH)["clocks"]["response"]["breached"]


def test_the_worker_stores_the_queue_due_instant(live):
    store = live.store
    generation = store.active_generation()
    for expected in QUEUE:
        row = store.ticket(generation, (expected.customer, expected.ticket))
        assert row is not None
        assert row.queue_due_at == (epoch(expected.due) if expected.due else None), expected
        assert row.queue_breach_at == (epoch(expected.breach) if expected.breach else None), expected
    over = store.ticket(generation, ("acme", "T-over"))
    assert over is not None and over.next_due_at == epoch(OVER_RESOLUTION_DUE)  # reached dues left out


def test_sort_due_is_the_queue_order_with_due_at_and_remaining_seconds(live):
    items = listed(live, sort="due", state="open")
    assert tickets(items) == ORDER
    for item, expected in zip(items, QUEUE, strict=True):
        assert item["due_at"] == expected.due
        remaining = None if expected.due is None else epoch(expected.due) - int(NOW.timestamp())
        assert item["remaining_seconds"] == remaining, expected.ticket
    assert [item["remaining_seconds"] for item in items] == [-10800, -5400, 1800, 50400, None]
    # The default order is still by ticket id (then customer), with the same new fields.
    by_id = listed(live)
    assert tickets(by_id) == sorted(ORDER)
    assert {i["view"]["ticket_id"]: i["due_at"] for i in by_id} == {e.ticket: e.due for e in QUEUE}


@pytest.mark.parametrize("limit", [1, 2, 3, 5])
def test_sort_due_pages_with_its_cursor(live, limit):
    assert tickets(listed(live, sort="due", limit=limit)) == ORDER


def test_sort_breach_is_the_next_breach_order_with_breach_at(live):
    items = listed(live, sort="breach", state="open")
    assert tickets(items) == BREACH_ORDER
    assert [item["breach_at"] for item in items] == [e.breach for e in BY_BREACH]
    assert [item["due_at"] for item in items] == [e.due for e in BY_BREACH]
    for limit in (1, 2, 3):
        assert tickets(listed(live, sort="breach", limit=limit)) == BREACH_ORDER


def test_a_cursor_of_one_sort_is_refused_by_the_other(live):
    due = live.client.get("/v1/tickets", params={"sort": "due", "limit": 1}, headers=READER).json()
    by_id = live.client.get("/v1/tickets", params={"limit": 1}, headers=READER).json()
    breach = live.client.get("/v1/tickets", params={"sort": "breach", "limit": 1}, headers=READER).json()
    for sort, cursor in (
        ("ticket", due["next_cursor"]),
        ("due", by_id["next_cursor"]),
        ("breach", due["next_cursor"]),
        ("due", breach["next_cursor"]),
        ("ticket", breach["next_cursor"]),
        ("breach", by_id["next_cursor"]),
    ):
        response = live.client.get("/v1/tickets", params={"sort": sort, "cursor": cursor}, headers=READER)
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "bad_cursor"
    response = live.client.get("/v1/tickets", params={"sort": "soonest"}, headers=READER)
    assert response.status_code == 422


def test_overdue_and_due_before_include_the_overdue_ticket(live):
    """Today's due_before missed a ticket past its due instant and not breached yet; it matches
    now, and overdue=true finds it as of now."""
    assert tickets(listed(live, overdue="true")) == ["T-breached", "T-over"]
    assert tickets(listed(live, overdue="true", breached="false")) == ["T-over"]
    assert tickets(listed(live, overdue="false")) == ["T urgent/1", "T-paused", "T-soon"]
    tuesday_9 = "2026-11-17T09:00:00-05:00"
    assert tickets(listed(live, due_before=tuesday_9)) == ["T urgent/1", "T-breached", "T-over"]
    assert tickets(listed(live, due_before=tuesday_9, sort="due")) == ["T-over", "T-breached", "T urgent/1"]
    assert tickets(listed(live, due_before=OVER_DUE)) == ["T-over"]  # at or before
    assert tickets(listed(live, due_before="2026-11-16T21:59:59Z")) == []
    assert live.client.get("/v1/tickets", params={"overdue": "maybe"}, headers=READER).status_code == 422


def test_the_billing_status_filter(live):
    views = {i["view"]["ticket_id"]: i["view"] for i in listed(live)}
    assert views["T urgent/1"]["billing"]["status"] == "pending_review"  # urgent outside hours
    assert views["T-over"]["billing"]["status"] == "none"
    for status in ("none", "billable", "pending_review", "waived"):
        expected = sorted(t for t, v in views.items() if v["billing"]["status"] == status)
        assert tickets(listed(live, billing_status=status)) == expected, status
    queue = tickets(listed(live, billing_status="pending_review", sort="due"))
    assert queue == [t for t in ORDER if views[t]["billing"]["status"] == "pending_review"]
    response = live.client.get("/v1/tickets", params={"billing_status": "pending"}, headers=READER)
    assert response.status_code == 422


def test_a_scoped_token_lists_only_its_customers_queue(live):
    response = live.client.get(
        "/v1/tickets", params={"sort": "due"}, headers={"authorization": f"Bearer {SCOPED}"}
    )
    assert response.status_code == 200
    assert tickets(response.json()["items"]) == [e.ticket for e in QUEUE if e.customer == "acme"]


def test_as_of_now_and_a_clock_ahead_by_less_than_the_skew(live):
    for path in ("/v1/tickets/T-over", "/v1/tickets/T-over/timeline"):
        for as_of in ("now", stamp(NOW + timedelta(seconds=30)), stamp(NOW + timedelta(seconds=1))):
            response = live.client.get(path, params={"as_of": as_of}, headers=READER)
            assert response.status_code == 200, (path, as_of, response.text)
            assert response.headers["x-slatrack-evaluated-at"] == stamp(NOW)  # clamped to now
        at_now = live.client.get(path, params={"as_of": "now"}, headers=READER).json()
        assert live.client.get(path, params={"as_of": stamp(NOW)}, headers=READER).json() == at_now
        for as_of in (stamp(NOW + timedelta(seconds=31)), "2999-01-01T00:00:00Z", "NOW", "now "):
            response = live.client.get(path, params={"as_of": as_of}, headers=READER)
            assert response.status_code == 422, (path, as_of, response.text)
    view = live.client.get("/v1/tickets/T-over", params={"as_of": "now"}, headers=READER).json()
    assert view["clocks"]["response"]["due_at"] == OVER_DUE and not view["clocks"]["response"]["breached"]


def test_the_openapi_document_has_the_new_parameters(live):
    spec = live.client.get("/openapi.json").json()
    operation = spec["paths"]["/v1/tickets"]["get"]
    parameters = {p["name"]: p for p in operation["parameters"]}
    assert {"overdue", "billing_status", "sort"} <= set(parameters)
    item = spec["components"]["schemas"]["TicketItem"]["properties"]
    assert {"due_at", "remaining_seconds"} <= set(item)
    as_of = {p["name"]: p for p in spec["paths"]["/v1/tickets/{ticket_id}"]["get"]["parameters"]}["as_of"]
    assert "now" in as_of["description"]


# -- the console's queue page ----------------------------------------------------------------


class QueuePage(HTMLParser):
    """What the browser tests read of the queue page: the rows' attributes, links, countdowns and
    markers, the filter form's fields, the next-page link, and any inline script or style."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.rows: list[dict[str, Any]] = []
        self.fields: set[str] = set()
        self.options: dict[str, list[str]] = {}
        self.next_page: str | None = None
        self.inline: list[str] = []
        self.in_table = self.in_form = False
        self.wrapped = False
        self._select: str | None = None
        self._marker: dict[str, Any] | None = None
        self._stack: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "style" in a or any(k.startswith("on") for k in a):
            self.inline.append(tag)
        if tag == "script" and "src" not in a:
            self.inline.append("script")
        if tag == "style":
            self.inline.append("style")
        if tag == "div" and "table-wrap" in a.get("class", "").split():
            self.wrapped = True
        if tag == "table" and a.get("id") == "queue":
            self.in_table = True
            assert self.wrapped, "the table is in .table-wrap"
        if tag == "form" and a.get("id") == "filters":
            self.in_form = True
            assert a.get("method") == "get"
        if self.in_form and tag in ("input", "select"):
            self.fields.add(a["name"])
            if tag == "select":
                self._select = a["name"]
                self.options[a["name"]] = []
        if self.in_form and tag == "option" and self._select:
            self.options[self._select].append(a.get("value", ""))
        if self.in_table and tag == "tr" and "ticket" in a.get("class", "").split():
            self.rows.append({"attrs": a, "links": [], "times": [], "markers": []})
        if self.rows and self.in_table:
            row = self.rows[-1]
            if tag == "a" and "ticket" in a.get("class", "").split():
                row["links"].append(a["href"])
            if tag == "time" and "remaining" in a.get("class", "").split():
                row["times"].append({**a, "text": ""})
                self._stack.append("time")
            if tag == "span" and "marker" in a.get("class", "").split():
                self._marker = {"class": a["class"], "text": ""}
                row["markers"].append(self._marker)
        if tag == "a" and "next-page" in a.get("class", "").split():
            self.next_page = a["href"]

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.in_table = False
        if tag == "form":
            self.in_form = False
        if tag == "select":
            self._select = None
        if tag == "span":
            self._marker = None
        if tag == "time" and self._stack:
            self._stack.pop()

    def handle_data(self, data: str) -> None:
        if self._stack and self.rows:
            self.rows[-1]["times"][-1]["text"] += data
        if self._marker is not None:
            self._marker["text"] += data

    @property
    def order(self) -> list[str]:
        return [row["attrs"]["data-ticket"] for row in self.rows]


def signed_in(live: LiveApi, token: str) -> dict[str, str]:
    """The Cookie header of a sign-in from the console's own page."""
    response = live.client.post(
        "/ui/sign-in",
        content=f"token={token}",
        headers={"content-type": "application/x-www-form-urlencoded", "origin": live.url},
    )
    assert response.status_code == 303 and response.headers["location"] == "/ui/"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
    live.client.cookies.clear()  # sent by hand below, as set
    return {"cookie": cookie.split(";")[0]}


def queue_page(live: LiveApi, cookie: dict[str, str], url: str = "/ui/", **params: str) -> QueuePage:
    response = live.client.get(url, params=params or None, headers=cookie)
    assert response.status_code == 200, response.text
    assert response.headers["content-security-policy"].startswith("default-src 'none'; script-src 'self'")
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["content-type"].startswith("text/html")
    found = QueuePage(response.text)
    assert found.inline == []  # the CSP would refuse it
    return found


def test_the_queue_page_needs_a_sign_in(live):
    live.client.cookies.clear()
    response = live.client.get("/ui/")
    assert response.status_code == 303 and response.headers["location"] == "/ui/sign-in"
    response = live.client.get("/ui/", headers={"cookie": "slatrack_console=not-a-token-at-all"})
    assert response.status_code == 303
    publisher = cookie_value(TOKENS["publisher"])
    response = live.client.get("/ui/", headers={"cookie": f"slatrack_console={publisher}"})
    assert response.status_code == 403 and "reader role" in response.text


def test_the_queue_page_lists_open_tickets_in_the_queue_order(live):
    found = queue_page(live, signed_in(live, TOKENS["reader"]))
    assert found.order == BREACH_ORDER
    for row, expected in zip(found.rows, BY_BREACH, strict=True):
        attrs = row["attrs"]
        assert attrs["data-customer"] == expected.customer
        assert attrs["data-due"] == (str(epoch(expected.due)) if expected.due else "")
        assert attrs["data-breach"] == (str(epoch(expected.breach)) if expected.breach else "")
        [link] = row["links"]
        assert link.startswith(f"/ui/customers/{expected.customer}/tickets/")
        if expected.due is None:
            assert row["times"] == []
        else:
            [time_] = row["times"]
            assert time_["datetime"] == expected.due and time_["data-due"] == str(epoch(expected.due))
    by_ticket = {row["attrs"]["data-ticket"]: row for row in found.rows}
    assert by_ticket["T urgent/1"]["links"] == ["/ui/customers/globex/tickets/T%20urgent%2F1"]
    assert by_ticket["T-over"]["times"][0]["text"] == "overdue 3h 00m"
    assert by_ticket["T urgent/1"]["times"][0]["text"] == "30m 00s left"
    assert by_ticket["T-soon"]["times"][0]["text"] == "14h 00m left"

    def markers(ticket: str) -> list[tuple[str, str]]:
        return [(m["class"], m["text"]) for m in by_ticket[ticket]["markers"]]

    assert markers("T-breached") == [("marker breached", "breached")]
    assert markers("T-over") == [("marker at-risk", "at risk")]  # past its warning, not breached
    assert markers("T-paused") == [("marker paused", "paused")]
    assert markers("T-soon") == []
    assert found.fields == {"customer", "priority", "breached", "at_risk", "billing_status"}
    assert "pending_review" in found.options["billing_status"]
    assert found.next_page is None


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"customer": "acme"}, ["T-over", "T-soon", "T-paused"]),
        ({"customer": "nobody"}, []),
        ({"priority": "urgent"}, ["T-breached", "T urgent/1"]),
        ({"breached": "true"}, ["T-breached"]),
        ({"breached": "false"}, ["T urgent/1", "T-over", "T-soon", "T-paused"]),
        ({"at_risk": "true"}, ["T-over"]),
        ({"billing_status": "pending_review"}, ["T-breached", "T urgent/1"]),
        ({"billing_status": "none", "customer": "acme"}, ["T-over", "T-soon", "T-paused"]),
        ({"priority": "bogus"}, BREACH_ORDER),  # not a choice: any
    ],
)
def test_the_queue_page_filters(live, params, expected):
    assert queue_page(live, signed_in(live, TOKENS["reader"]), **params).order == expected


def test_a_token_limited_to_customers_sees_only_theirs(live):
    cookies = signed_in(live, SCOPED)
    assert queue_page(live, cookies).order == ["T-over", "T-soon", "T-paused"]
    assert queue_page(live, cookies, customer="globex").order == []


def test_the_queue_page_pages_by_cursor_keeping_the_filters(live, monkeypatch):
    monkeypatch.setattr(pages, "QUEUE_PAGE", 2)
    cookies = signed_in(live, TOKENS["reader"])
    seen, url, params = [], "/ui/", {"billing_status": "none"}
    while True:
        found = queue_page(live, cookies, url, **params)
        seen += found.order
        if found.next_page is None:
            break
        assert "billing_status=none" in found.next_page and "cursor=" in found.next_page
        url, params = found.next_page, {}
    assert seen == ["T-over", "T-soon", "T-paused"]
    response = live.client.get("/ui/", params={"cursor": "forged.cursor"}, headers=cookies)
    assert response.status_code == 400 and "cursor" in response.text


def test_a_ticket_id_with_a_slash_reaches_its_page(live):
    """The queue's link to "T urgent/1" (%2F in its path) opens that ticket's page, and a ticket
    page of an id cut at the slash is no page of it (the review of issue 15 found the link led
    nowhere: the server routed on the decoded path)."""
    cookies = signed_in(live, TOKENS["reader"])
    link = "/ui/customers/globex/tickets/T%20urgent%2F1"
    response = live.client.get(link, headers=cookies)
    assert response.status_code == 200, response.text[:300]
    assert "Ticket T urgent/1" in response.text and "svg" in response.text
    cut = live.client.get("/ui/customers/globex/tickets/T%20urgent/1", headers=cookies)
    assert cut.status_code == 404
    customer = live.client.get("/ui/customers/globex", headers=cookies)
    assert customer.status_code == 200
