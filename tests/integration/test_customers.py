"""The customers (issue 15), over real HTTP, on read models filled by the real projector (SQLite
and PostgreSQL): ``GET /v1/customers`` (pages, cursors, filters, a token limited to customers),
and the console's customer pages: the list, a customer's standing and month (its totals the
report API's), month navigation, the report's downloads (the API's bytes and headers), and a
token limited to customers seeing only its own, with the 404 of a customer that does not exist.
"""

import asyncio
import contextlib
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from pydantic import SecretStr

from services.api.console import customers as console_customers
from services.api.console.access import COOKIE
from services.api.console.customers import current_month
from tests.engine_helpers import Story, ny
from tests.feed import Feed
from tests.integration.live_api import TOKENS, TOKENS_JSON, LiveApi, auth, fresh_settings
from tests.unit.test_report import november
from tests.worker_helpers import throwaway_database

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]

ACME_TOKEN = "acme-only-reader-token-" + uuid.uuid4().hex
TOKENS_WITH_SCOPE = json.dumps(
    [
        *json.loads(TOKENS_JSON),
        {"name": "acme-portal", "token": ACME_TOKEN, "roles": ["reader"], "customers": ["acme", "initco"]},
    ]
)
READER = auth("reader")
ACME = {"authorization": f"Bearer {ACME_TOKEN}"}
LATE = "late & co é"  # a customer id that must be quoted in a URL
FILLERS = [f"c-{i:02d}" for i in range(5)]
EVERYONE = sorted(["acme", "globex", LATE, "slow", *FILLERS])


def desk() -> Story:
    """November's acme and globex (tests.unit.test_report), a customer late with an invoice and
    with an open breached ticket, one whose invoice is not late yet, and a few with one ticket."""
    s = november()
    s.invoice_due(ny("2026-10-20 09:00"), "INV-L", ny("2026-11-01 09:00"), customer_id=LATE)
    s.opened(ny("2026-11-16 10:00"), "urgent", ticket_id="L-1", customer_id=LATE)  # never answered
    s.opened(ny("2026-11-16 11:00"), "low", ticket_id="L-2", customer_id=LATE)
    s.resolved(ny("2026-11-16 12:00"), ticket_id="L-2", customer_id=LATE)
    s.invoice_due(ny("2026-11-20 09:00"), "INV-S", ny("2026-11-28 09:00"), customer_id="slow")
    s.opened(ny("2026-11-20 10:00"), "medium", ticket_id="S-1", customer_id="slow")
    for i, name in enumerate(FILLERS):
        s.opened(ny(f"2026-11-1{i} 10:00"), "high", ticket_id=f"F-{i}", customer_id=name)
    return s


class Served:
    def __init__(self, api: LiveApi):
        self.api = api
        self.client = api.client

    def console(self, token: str) -> httpx.Client:
        """A browser signed in with ``token``: the console's cookie only, no bearer token."""
        browser = httpx.Client(base_url=self.api.url, timeout=60)
        signed = browser.post(
            "/ui/sign-in",
            content=f"token={quote(token)}",
            headers={"content-type": "application/x-www-form-urlencoded", "origin": self.api.url},
        )
        assert signed.status_code == 303, signed.text
        assert COOKIE in browser.cookies
        return browser


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def served(request, kafka_bootstrap, tmp_path_factory) -> Iterator[Served]:
    overrides: dict[str, Any] = {
        "data_dir": tmp_path_factory.mktemp("customers"),
        "api_tokens": SecretStr(TOKENS_WITH_SCOPE),
    }
    with contextlib.ExitStack() as stack:
        if request.param == "postgres":
            url = stack.enter_context(
                throwaway_database(request.getfixturevalue("postgres_dsn"), "slatrack_customers")
            )
            overrides["database_url"] = SecretStr(url)
        settings = fresh_settings(kafka_bootstrap, **overrides)
        api = LiveApi(settings, worker=False)
        stack.callback(api.close)
        feed = asyncio.run(Feed(api.store, datetime(2026, 12, 3, tzinfo=UTC)).open())
        asyncio.run(feed.send(*desk().dicts))
        yield Served(api)


# -- reading the console's HTML ---------------------------------------------------------


class Page(HTMLParser):
    """Every element of a page: its tag, attributes, text, and the id of the table it is in."""

    def __init__(self, text: str):
        super().__init__()
        self.elements: list[dict[str, Any]] = []
        self._open: list[dict[str, Any]] = []
        self._tables: list[str | None] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element: dict[str, Any] = {
            "tag": tag,
            "attrs": dict(attrs),
            "text": "",
            "table": self._tables[-1] if self._tables else None,
        }
        if tag == "table":
            self._tables.append(element["attrs"].get("id"))
        self.elements.append(element)
        if tag not in ("meta", "link", "input", "br", "img"):
            self._open.append(element)

    def handle_endtag(self, tag: str) -> None:
        if tag == "table" and self._tables:
            self._tables.pop()
        while self._open:
            if self._open.pop()["tag"] == tag:
                break

    def handle_data(self, data: str) -> None:
        for element in self._open:
            element["text"] += data

    def find(self, tag: str | None = None, table: str | None = None, **attrs: str) -> list[dict[str, Any]]:
        return [
            e
            for e in self.elements
            if (tag is None or e["tag"] == tag)
            and (table is None or e["table"] == table)
            and all(e["attrs"].get(k.rstrip("_").replace("_", "-")) == v for k, v in attrs.items())
        ]

    def one(self, tag: str | None = None, table: str | None = None, **attrs: str) -> dict[str, Any]:
        [found] = self.find(tag, table, **attrs)
        return found


def rows(page: Page, table: str) -> list[dict[str, Any]]:
    """The attributes of the rows of a table's body that carry data attributes."""
    return [e["attrs"] for e in page.find("tr", table) if any(k.startswith("data-") for k in e["attrs"])]


def report_of(served: Served, customer: str, month: str, **params: str) -> httpx.Response:
    path = f"/v1/customers/{quote(customer, safe='')}/report"
    response = served.client.get(path, params={"month": month, **params}, headers=READER)
    assert response.status_code == 200, response.text
    return response


# -- GET /v1/customers ------------------------------------------------------------------


def walk_customers(client: httpx.Client, headers: dict[str, str], **params: Any) -> list[list[dict]]:
    pages, cursor = [], None
    for _ in range(1000):
        response = client.get(
            "/v1/customers", params={**params, **({"cursor": cursor} if cursor else {})}, headers=headers
        )
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert body["items"], "a page that promises more must not be empty"
    raise AssertionError("no end to the pages")


def test_the_customer_list(served):
    [items] = walk_customers(served.client, READER)
    assert [i["customer_id"] for i in items] == EVERYONE
    for item in items:
        assert set(item) >= {
            "customer_id",
            "delinquent",
            "dashboard_suspended",
            "evaluated_at",
            "open_tickets",
            "breached_open_tickets",
        }
        # The standing is the customer's own endpoint's; the counts are its tickets'.
        path = f"/v1/customers/{quote(item['customer_id'], safe='')}"
        one = served.client.get(path, headers=READER)
        assert one.status_code == 200, one.text
        assert (item["delinquent"], item["dashboard_suspended"]) == (
            one.json()["delinquent"],
            one.json()["dashboard_suspended"],
        )
        assert item["evaluated_at"] == one.headers["x-slatrack-evaluated-at"]
        tickets = served.client.get(
            "/v1/tickets", params={"customer_id": item["customer_id"], "state": "open"}, headers=READER
        ).json()["items"]
        assert item["open_tickets"] == len(tickets)
        breached = served.client.get(
            "/v1/tickets",
            params={"customer_id": item["customer_id"], "state": "open", "breached": "true"},
            headers=READER,
        ).json()["items"]
        assert item["breached_open_tickets"] == len(breached)
    by_id = {i["customer_id"]: i for i in items}
    assert by_id[LATE]["delinquent"] and by_id[LATE]["dashboard_suspended"]
    assert by_id[LATE]["open_tickets"] == 1 and by_id[LATE]["breached_open_tickets"] == 1
    assert not by_id["slow"]["delinquent"]


def test_pages_and_cursors(served):
    for limit in (1, 2, 3):
        pages = walk_customers(served.client, READER, limit=limit)
        assert [i["customer_id"] for page in pages for i in page] == EVERYONE
        assert all(len(page) == limit for page in pages[:-1])
    first = served.client.get("/v1/customers", params={"limit": 2}, headers=READER).json()
    cursor = first["next_cursor"]
    payload, _, mac = cursor.rpartition(".")
    for bad in (
        cursor[:-2] + ("AA" if not cursor.endswith("AA") else "BB"),
        payload + ".",
        "x",
        f"{payload}x.{mac}",
    ):
        response = served.client.get("/v1/customers", params={"cursor": bad}, headers=READER)
        assert response.status_code == 400, bad
        assert response.json()["error"] == "bad_cursor"
    # Neither list takes the other's cursor.
    tickets = served.client.get("/v1/tickets", params={"limit": 1}, headers=READER).json()
    response = served.client.get("/v1/customers", params={"cursor": tickets["next_cursor"]}, headers=READER)
    assert response.status_code == 400 and response.json()["error"] == "bad_cursor"
    response = served.client.get("/v1/tickets", params={"cursor": cursor}, headers=READER)
    assert response.status_code == 400 and response.json()["error"] == "bad_cursor"
    for bad_limit in ("0", "501", "x"):
        response = served.client.get("/v1/customers", params={"limit": bad_limit}, headers=READER)
        assert response.status_code == 422, bad_limit


def test_filters(served):
    def listed(**params: str) -> list[str]:
        return [i["customer_id"] for page in walk_customers(served.client, READER, **params) for i in page]

    assert listed(delinquent="true") == [LATE]
    assert listed(dashboard_suspended="true") == [LATE]
    assert listed(delinquent="false") == [c for c in EVERYONE if c != LATE]
    assert listed(delinquent="false", dashboard_suspended="true") == []
    response = served.client.get("/v1/customers", params={"delinquent": "maybe"}, headers=READER)
    assert response.status_code == 422


def test_a_token_limited_to_customers_lists_only_theirs(served):
    pages = walk_customers(served.client, ACME, limit=1)
    assert [[i["customer_id"] for i in page] for page in pages] == [["acme"]]
    # A cursor an unscoped reader got, standing before other customers: still only its own.
    everyone = served.client.get("/v1/customers", params={"limit": 1}, headers=READER).json()
    after = served.client.get("/v1/customers", params={"cursor": everyone["next_cursor"]}, headers=ACME)
    assert after.status_code == 200 and after.json() == {"items": [], "next_cursor": None}
    assert (
        served.client.get("/v1/customers", params={"delinquent": "true"}, headers=ACME).json()["items"] == []
    )


def test_the_roles(served):
    assert served.client.get("/v1/customers").status_code == 401
    assert served.client.get("/v1/customers", headers=auth("publisher")).status_code == 403
    assert served.client.get("/v1/customers", headers=auth("all")).status_code == 200


# -- the console: the list ----------------------------------------------------------------


def test_the_console_lists_the_customers(served, monkeypatch):
    browser = served.console(TOKENS["reader"])
    response = browser.get("/ui/customers")
    assert response.status_code == 200, response.text
    page = Page(response.text)
    assert page.find("table", id="customers")
    listed = page.find("tr", "customers", class_="customer")
    assert [row["attrs"]["data-customer"] for row in listed] == EVERYONE
    links = page.find("a", "customers", class_="customer")
    assert [link["attrs"]["href"] for link in links] == [
        f"/ui/customers/{quote(c, safe='')}" for c in EVERYONE
    ]
    assert f"/ui/customers/{quote(LATE, safe='')}" == "/ui/customers/late%20%26%20co%20%C3%A9"
    late = next(row for row in listed if row["attrs"]["data-customer"] == LATE)
    assert "Delinquent" in late["text"] and "Dashboard suspended" in late["text"]  # words, not colours
    # Each link leads to the customer's page.
    assert browser.get(links[EVERYONE.index(LATE)]["attrs"]["href"]).status_code == 200
    # Filtered.
    page = Page(browser.get("/ui/customers", params={"delinquent": "true"}).text)
    assert [row["attrs"]["data-customer"] for row in page.find("tr", "customers", class_="customer")] == [
        LATE
    ]
    assert browser.get("/ui/customers", params={"delinquent": "perhaps"}).status_code == 422
    # A page at a time, following the next links.
    monkeypatch.setattr(console_customers, "CUSTOMERS_PER_PAGE", 3)
    seen: list[str] = []
    url: str | None = "/ui/customers"
    while url is not None:
        page = Page(browser.get(url).text)
        seen += [row["attrs"]["data-customer"] for row in page.find("tr", "customers", class_="customer")]
        following = page.find("a", rel="next")
        url = following[0]["attrs"]["href"] if following else None
    assert seen == EVERYONE
    assert browser.get("/ui/customers", params={"cursor": "forged.cursor"}).status_code == 400


def test_the_console_needs_a_sign_in(served):
    anonymous = httpx.Client(base_url=served.api.url, timeout=60)
    for path in ("/ui/customers", "/ui/customers/acme", "/ui/customers/acme/report.csv?month=2026-11"):
        response = anonymous.get(path)
        assert response.status_code == 303 and response.headers["location"] == "/ui/sign-in", path
    # A bearer token is not the console's way in.
    assert anonymous.get("/ui/customers", headers=READER).status_code == 303


# -- the console: a customer's month --------------------------------------------------------


def test_the_customer_page_is_the_report_api(served):
    browser = served.console(TOKENS["reader"])
    response = browser.get("/ui/customers/acme", params={"month": "2026-11"})
    assert response.status_code == 200, response.text
    assert "script-src 'self'" in response.headers["content-security-policy"]
    page = Page(response.text)
    report = report_of(served, "acme", "2026-11").json()
    total = page.one("td", id="total-amount")["attrs"]
    assert int(total["data-cents"]) == report["billing"]["total_cents"] == 43_750
    assert int(total["data-seconds"]) == report["billing"]["total_billable_seconds"]
    assert [
        (r["data-ticket"], int(r["data-cents"]), int(r["data-seconds"])) for r in rows(page, "billing")
    ] == [
        (line["ticket_id"], line["amount_cents"], line["billable_seconds"])
        for line in report["billing"]["lines"]
    ]
    assert [
        (r["data-clock"], r["data-priority"], int(r["data-evaluated"]), int(r["data-met"]))
        for r in rows(page, "attainment")
    ] == [(a["clock"], a["priority"], a["evaluated"], a["met"]) for a in report["attainment"]]
    percents = [e["text"].strip() for e in page.find("td", "attainment", class_="percent")]
    for shown, a in zip(percents, report["attainment"], strict=True):
        assert (a["attainment_percent"] or "none") in shown
    breaches = rows(page, "breaches")
    assert [(r["data-ticket"], r["data-clock"], int(r["data-overrun"])) for r in breaches] == [
        (b["ticket_id"], b["clock"], b["overrun_seconds"]) for b in report["breaches"]
    ]
    assert breaches, "November has a breach (T-2's response)"
    links = [e["attrs"]["href"] for e in page.find("a", "breaches")]
    assert links == [
        f"/ui/customers/acme/tickets/{quote(b['ticket_id'], safe='')}" for b in report["breaches"]
    ]
    assert page.one(id="report")["attrs"]["data-month"] == "2026-11"
    assert page.one("dd", id="report-as-of")["attrs"]["data-basis"] == report["as_of_basis"]


def test_the_standing_and_why(served):
    browser = served.console(TOKENS["reader"])
    api = served.client.get(f"/v1/customers/{quote(LATE, safe='')}", headers=READER).json()
    page = Page(browser.get(f"/ui/customers/{quote(LATE, safe='')}", params={"month": "2026-11"}).text)
    standing = page.one("dl", id="standing")
    assert (
        page.one("dd", class_="delinquent")["attrs"]["data-value"] == "true" == str(api["delinquent"]).lower()
    )
    assert page.one("dd", class_="dashboard-suspended")["attrs"]["data-value"] == "true"
    assert "Yes" in page.one("dd", class_="delinquent")["text"]
    [invoice] = page.find("li", class_="invoice")
    assert invoice["attrs"]["data-invoice"] == "INV-L"
    assert "past due" in invoice["text"] and "suspends the dashboard" in invoice["text"]
    assert "15 days" in standing["text"] and "10 days" in standing["text"]
    assert page.one("dd", class_="open-tickets")["attrs"]["data-count"] == "1"
    # An invoice not late yet: no flag, and the page says why not.
    page = Page(browser.get("/ui/customers/slow", params={"month": "2026-11"}).text)
    assert page.one("dd", class_="delinquent")["attrs"]["data-value"] == "false"
    [invoice] = page.find("li", class_="invoice")
    assert invoice["attrs"]["data-invoice"] == "INV-S" and "makes the customer" not in invoice["text"]
    # No invoice at all.
    page = Page(browser.get("/ui/customers/c-00", params={"month": "2026-11"}).text)
    assert (
        not page.find("li", class_="invoice")
        and "No invoice is unpaid" in page.one("dd", class_="why")["text"]
    )


def test_month_navigation(served):
    browser = served.console(TOKENS["reader"])
    page = Page(browser.get("/ui/customers/acme", params={"month": "2026-11"}).text)
    assert page.one("a", rel="prev")["attrs"]["href"] == "/ui/customers/acme?month=2026-10"
    assert page.one("a", rel="next")["attrs"]["href"] == "/ui/customers/acme?month=2026-12"
    assert page.one("a", id="download-csv")["attrs"]["href"] == "/ui/customers/acme/report.csv?month=2026-11"
    assert (
        page.one("a", id="download-html")["attrs"]["href"] == "/ui/customers/acme/report.html?month=2026-11"
    )
    october = Page(browser.get(page.one("a", rel="prev")["attrs"]["href"]).text)
    assert october.one(id="report")["attrs"]["data-month"] == "2026-10"
    assert (
        int(october.one("td", id="total-amount")["attrs"]["data-cents"])
        == (report_of(served, "acme", "2026-10").json()["billing"]["total_cents"])
    )
    # Across a year, and at the ends.
    january = Page(browser.get("/ui/customers/acme", params={"month": "2026-01"}).text)
    assert january.one("a", rel="prev")["attrs"]["href"] == "/ui/customers/acme?month=2025-12"
    first = Page(browser.get("/ui/customers/acme", params={"month": "1970-01"}).text)
    assert not first.find("a", rel="prev") and first.find("a", rel="next")
    # The default month is the current one (UTC), the last with a next link.
    now = Page(browser.get("/ui/customers/acme").text)
    assert now.one(id="report")["attrs"]["data-month"] == current_month()
    assert not now.find("a", rel="next")
    for bad in ("2026-13", "nov", "1969-12", "2026-1"):
        response = browser.get("/ui/customers/acme", params={"month": bad})
        assert response.status_code == 422 and response.headers["content-type"].startswith("text/html"), bad


@pytest.mark.parametrize("form", ["csv", "html"])
def test_the_downloads_are_the_api_report(served, form):
    browser = served.console(TOKENS["reader"])
    for customer in ("acme", LATE):
        mine = browser.get(
            f"/ui/customers/{quote(customer, safe='')}/report.{form}", params={"month": "2026-11"}
        )
        assert mine.status_code == 200, mine.text
        api = report_of(served, customer, "2026-11", format=form)
        assert mine.content == api.content
        for header in (
            "content-type",
            "content-disposition",
            "content-security-policy",
            "x-slatrack-evaluated-at",
        ):
            assert mine.headers.get(header) == api.headers.get(header), header
    if form == "csv":
        assert mine.headers["content-disposition"] == 'attachment; filename="slatrack-report-2026-11.csv"'
    else:
        assert mine.headers["content-security-policy"] == "default-src 'none'; style-src 'unsafe-inline'"


# -- the console: a token limited to customers ------------------------------------------------


def test_a_scoped_token_sees_only_its_customers(served):
    browser = served.console(ACME_TOKEN)
    page = Page(browser.get("/ui/customers").text)
    assert [row["attrs"]["data-customer"] for row in page.find("tr", "customers", class_="customer")] == [
        "acme"
    ]
    assert browser.get("/ui/customers/acme", params={"month": "2026-11"}).status_code == 200
    foreign = browser.get("/ui/customers/globex", params={"month": "2026-11"})
    unknown = browser.get("/ui/customers/nobody", params={"month": "2026-11"})
    # In scope but with no data: reached in the store, the same answer.
    empty = browser.get("/ui/customers/initco", params={"month": "2026-11"})
    assert foreign.status_code == unknown.status_code == empty.status_code == 404
    assert foreign.headers["content-type"].startswith("text/html")
    assert foreign.text.replace("globex", "ID") == unknown.text.replace("nobody", "ID")
    assert foreign.text.replace("globex", "ID") == empty.text.replace("initco", "ID")
    for form in ("csv", "html"):
        response = browser.get(f"/ui/customers/globex/report.{form}", params={"month": "2026-11"})
        assert response.status_code == 404 and response.text == foreign.text
    # An unscoped reader sees globex.
    assert served.console(TOKENS["reader"]).get("/ui/customers/globex").status_code == 200


def test_a_foreign_customer_is_answered_before_the_store_is_read(served, monkeypatch):
    """Scope first (services.api.scope): nothing about globex is asked of the store."""
    asked: list[tuple[str, tuple]] = []
    store = served.api.store
    for name in ("customer", "list_customers", "account_events_of", "list_tickets", "active_generation"):
        original = getattr(store, name)

        def spy(*args: Any, _name: str = name, _original: Any = original) -> Any:
            asked.append((_name, args))
            return _original(*args)

        monkeypatch.setattr(store, name, spy)
    browser = served.console(ACME_TOKEN)
    for path in (
        "/ui/customers/globex",
        "/ui/customers/globex/report.csv",
        "/ui/customers/globex/report.html",
    ):
        assert browser.get(path, params={"month": "2026-11"}).status_code == 404
    assert asked == []
    assert browser.get("/ui/customers/acme", params={"month": "2026-11"}).status_code == 200
    assert asked  # the spies do see the store's calls
