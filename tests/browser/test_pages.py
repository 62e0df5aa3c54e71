"""The console's pages in a real browser, on the scripted scenario (tests/browser/scenario.py), read
from the DOM (never pixels): the queue in next-breach order with the overdue and breached tickets at
the top, its filters, a click through to a ticket, the ticket's SVG (clocks, cycles, stretches,
marks), a customer's month whose total is the report API's, what a token limited to one customer
sees, and the screenshots for the docs (docs/images/console-*.png with SLATRACK_TEST_WRITE_SCREENSHOTS=1).

The DOM contract of issue 15 (what these tests read):

- queue ``/ui/``: ``table#queue``, rows ``tr.ticket[data-ticket][data-customer][data-due]``, a link
  ``a.ticket`` to the ticket, ``time.remaining[data-due]`` (the live countdown), ``form#filters``
  with fields ``customer``, ``priority``, ``breached``, ``at_risk``, ``billing_status``;
- ticket ``/ui/customers/{c}/tickets/{t}``: ``svg#clocks`` with ``g.clock[data-clock][data-cycle]``,
  ``rect.stretch[data-kind][data-reason][data-start][data-end]``, ``line.mark[data-kind][data-at]``;
  ``table#events``, ``#billing``, ``#provenance``, ``pre#replay``, ``form#as-of``;
- customers ``/ui/customers``: ``table#customers tr.customer``; a customer's month
  ``/ui/customers/{c}?month=YYYY-MM``: ``dl#standing``, ``table#attainment``, ``table#breaches``,
  ``table#billing``, ``td#total-amount[data-cents]``, ``a#download-csv``, ``a#download-html``,
  ``a[rel=prev]``, ``a[rel=next]``.

Instants in data attributes may be epoch seconds or RFC 3339 (:func:`tests.browser.browser.instant`).
A due is "the earliest due_at of a clock that is not stopped" (scenario.QUEUE_DUE; test_scenario.py
checks it against the stored views).

"""

import itertools
import time

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

from services.api.console.access import COOKIE, cookie_value
from tests.browser import scenario
from tests.browser.browser import (
    attributes,
    console_errors,
    fill,
    instant,
    left,
    no_horizontal_scroll,
    path_of,
    requested_urls,
    sign_in,
    submit,
)

pytestmark = pytest.mark.browser


NOW = int(scenario.NOW.timestamp())
BEARER = {"authorization": f"Bearer {scenario.READER_TOKEN}"}


def ticket_path(ticket: str) -> str:
    return f"/ui/customers/{scenario.CUSTOMER_OF[ticket]}/tickets/{ticket}"


def customer_path(customer: str, month: str = scenario.MONTH) -> str:
    return f"/ui/customers/{customer}?month={month}"


def queue_rows(browser) -> list[dict]:
    """The queue's rows, in the page's order."""
    table = browser.find_element(By.CSS_SELECTOR, "table#queue")
    rows = []
    for row in table.find_elements(By.CSS_SELECTOR, "tr.ticket"):
        found = attributes(row, "data-ticket", "data-customer", "data-due")
        rows.append(
            {
                "ticket": found["data-ticket"],
                "customer": found["data-customer"],
                "due": instant(found["data-due"]),
                "element": row,
            }
        )
    return rows


def open_queue(browser, console, token: str = scenario.READER_TOKEN, query: str = "") -> list[dict]:
    sign_in(browser, console.url, token)
    if query:
        browser.get(f"{console.url}/ui/?{query}")
    return queue_rows(browser)


def clock_group(svg: WebElement, clock: str, cycle: int) -> WebElement:
    groups = svg.find_elements(By.CSS_SELECTOR, f'g.clock[data-clock="{clock}"][data-cycle="{cycle}"]')
    assert len(groups) == 1, (clock, cycle, len(groups))
    return groups[0]


# -- the queue ---------------------------------------------------------------------------------


def test_the_queue_lists_open_tickets_in_next_breach_order(console, browser):
    rows = open_queue(browser, console)
    tickets = [row["ticket"] for row in rows]
    assert set(tickets) == scenario.QUEUE and len(tickets) == len(scenario.QUEUE)
    assert not scenario.NOT_IN_QUEUE & set(tickets)  # resolved and closed ones are not in it
    # Breached first, then overdue, then by due; the tickets with no due last.
    assert tickets[:2] == ["A-BREACHED", "A-OVERDUE"]
    # In the order of the next breach (data-breach), which the queue is sorted by.
    breaches = [instant(row["element"].get_attribute("data-breach") or None) for row in rows]
    dated = [b for b in breaches if b is not None]
    assert breaches[: len(dated)] == sorted(dated) and len(dated) == len([d for d in rows if d["due"]])
    by_ticket = dict(zip(tickets, breaches, strict=True))
    assert by_ticket["A-BREACHED"] == scenario.epoch("2026-11-19T17:00:01Z")  # due + 1 s, Thu 12:00:01 EST
    assert by_ticket["A-OVERDUE"] == scenario.epoch("2026-11-23T14:00:01Z")  # Monday's opening + 1 s
    dues = [row["due"] for row in rows]
    with_due = [due for due in dues if due is not None]
    assert dues[: len(with_due)] == sorted(with_due), "tickets with a due first, by it"
    assert {row["ticket"]: row["due"] for row in rows} == scenario.QUEUE_DUE
    for row in rows:
        assert row["customer"] == scenario.CUSTOMER_OF[row["ticket"]]
        link = row["element"].find_element(By.CSS_SELECTOR, "a.ticket")
        assert link.get_attribute("href") == console.url + ticket_path(row["ticket"])
        countdown = row["element"].find_elements(By.CSS_SELECTOR, "time.remaining[data-due]")
        if row["due"] is None:
            assert countdown == []
        else:
            [remaining] = countdown
            assert instant(remaining.get_attribute("data-due")) == row["due"]
            assert remaining.text.strip()
    assert console_errors(browser) == []


def test_the_countdowns_count_on_from_the_servers_now_not_the_browsers_clock(console, browser):
    """The store and the server are as of scenario.NOW (Friday 2026-11-20 18:30 EST); this
    browser's clock is days later. The script counts on from table#queue's data-now."""
    rows = {row["ticket"]: row for row in open_queue(browser, console)}
    assert instant(browser.find_element(By.CSS_SELECTOR, "table#queue").get_attribute("data-now")) == NOW
    time.sleep(1.5)  # at least one tick of the script

    def shown(ticket: str) -> str:
        return rows[ticket]["element"].find_element(By.CSS_SELECTOR, "time.remaining").text.strip()

    # A-RISK is due Monday 10:00 EST: 2 days 15 h 30 min after NOW, give or take the seconds passed.
    assert shown("A-RISK").startswith("2d 15h 29m") or shown("A-RISK").startswith("2d 15h 30m")
    assert shown("A-RISK").endswith("left")
    assert shown("A-OVERDUE").startswith("overdue 1h 30m")  # due Friday 17:00 EST


def test_the_overdue_ticket_is_in_the_queue(console, browser):
    rows = {row["ticket"]: row for row in open_queue(browser, console)}
    overdue = rows["A-OVERDUE"]
    # Due Friday 17:00 EST, not breached before Monday 09:00:01: overdue as of the store's instant.
    assert overdue["due"] == scenario.epoch("2026-11-20T22:00:00Z") < NOW
    assert overdue["customer"] == scenario.ACME
    assert rows["A-BREACHED"]["due"] is not None and rows["A-BREACHED"]["due"] < overdue["due"]


@pytest.mark.parametrize(
    ("filters", "expected"),
    scenario.FILTERS,
    ids=["&".join(f"{k}={v}" for k, v in f.items()) for f, _ in scenario.FILTERS],
)
def test_each_filter_narrows_the_rows(console, browser, filters, expected):
    open_queue(browser, console)
    form = browser.find_element(By.CSS_SELECTOR, "form#filters")
    fill(form, filters)
    submit(browser, form)
    rows = queue_rows(browser)
    assert {row["ticket"] for row in rows} == expected
    assert len(rows) == len(expected)
    # Still in next-breach order, and the filters are in the URL (bookmarkable), the token not.
    dues = [row["due"] for row in rows if row["due"] is not None]
    assert dues == sorted(dues)
    path = path_of(browser, console.url)
    assert path.startswith("/ui/")
    for name, value in filters.items():
        assert f"{name}={value}" in path, path
    assert scenario.READER_TOKEN not in path and "token" not in path


def test_a_customer_filter_of_no_ticket_shows_an_empty_queue(console, browser):
    assert open_queue(browser, console, query="customer=nobody-at-all") == []
    browser.find_element(By.CSS_SELECTOR, "table#queue")  # the table, empty


def test_clicking_a_ticket_opens_its_page(console, browser):
    rows = {row["ticket"]: row for row in open_queue(browser, console)}
    link = rows["A-OVERDUE"]["element"].find_element(By.CSS_SELECTOR, "a.ticket")
    link.click()
    left(browser, link)
    assert path_of(browser, console.url) == ticket_path("A-OVERDUE")
    browser.find_element(By.CSS_SELECTOR, "svg#clocks")
    assert "A-OVERDUE" in browser.find_element(By.TAG_NAME, "h1").text
    assert console_errors(browser) == []


# -- a ticket ----------------------------------------------------------------------------------


@pytest.mark.parametrize("ticket", sorted(scenario.CLOCK_CYCLES))
def test_the_ticket_svg_draws_its_clocks_and_cycles(console, browser, ticket):
    sign_in(browser, console.url, scenario.READER_TOKEN)
    browser.get(console.url + ticket_path(ticket))
    svg = browser.find_element(By.CSS_SELECTOR, "svg#clocks")
    groups = svg.find_elements(By.CSS_SELECTOR, "g.clock")
    drawn = {(g.get_attribute("data-clock"), int(g.get_attribute("data-cycle") or 0)) for g in groups}
    assert drawn == scenario.CLOCK_CYCLES[ticket]
    for group in groups:
        stretches = group.find_elements(By.CSS_SELECTOR, "rect.stretch")
        assert stretches, "every cycle drawn has its stretches"
        spans = []
        for stretch in stretches:
            found = attributes(stretch, "data-kind", "data-reason", "data-start", "data-end")
            assert found["data-kind"], found
            start, end = instant(found["data-start"]), instant(found["data-end"])
            assert start is not None and end is not None and start < end, found
            assert end <= NOW or found["data-kind"] != "paused" or ticket == "A-PAUSED", found
            spans.append((start, end))
        spans.sort()
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans)), "stretches do not overlap"
    assert console_errors(browser) == []


@pytest.mark.parametrize("ticket", sorted(scenario.MARKS))
def test_the_ticket_svg_marks_the_thresholds(console, browser, ticket):
    sign_in(browser, console.url, scenario.READER_TOKEN)
    browser.get(console.url + ticket_path(ticket))
    svg = browser.find_element(By.CSS_SELECTOR, "svg#clocks")
    for clock, cycle, kind, at in scenario.MARKS[ticket]:
        marks = clock_group(svg, clock, cycle).find_elements(By.CSS_SELECTOR, "line.mark")
        found = {(m.get_attribute("data-kind"), instant(m.get_attribute("data-at"))) for m in marks}
        assert (kind, at) in found, (clock, cycle, kind, found)
    if ticket == "A-OVERDUE":  # as of the store's instant the breach (Monday 09:00:01) is still ahead
        marks = clock_group(svg, "response", 1).find_elements(
            By.CSS_SELECTOR, 'line.mark[data-kind="breach"]'
        )
        assert all((instant(m.get_attribute("data-at")) or 0) > NOW for m in marks)


@pytest.mark.parametrize("ticket", sorted(scenario.PAUSES))
def test_the_ticket_svg_shows_the_pauses(console, browser, ticket):
    sign_in(browser, console.url, scenario.READER_TOKEN)
    browser.get(console.url + ticket_path(ticket))
    svg = browser.find_element(By.CSS_SELECTOR, "svg#clocks")
    for clock, cycle, start, end in scenario.PAUSES[ticket]:
        paused = clock_group(svg, clock, cycle).find_elements(
            By.CSS_SELECTOR, 'rect.stretch[data-kind="paused"]'
        )
        found = [attributes(p, "data-reason", "data-start", "data-end") for p in paused]
        matching = [
            f
            for f in found
            if instant(f["data-start"]) == start and (end is None or instant(f["data-end"]) == end)
        ]
        assert len(matching) == 1, (clock, cycle, found)
        assert (
            "pending_customer" in (matching[0]["data-reason"] or "") or matching[0]["data-reason"] == "status"
        )


def test_a_priority_change_ends_a_cycle_and_starts_the_next(console, browser):
    sign_in(browser, console.url, scenario.READER_TOKEN)
    browser.get(console.url + ticket_path("A-PRIO"))
    svg = browser.find_element(By.CSS_SELECTOR, "svg#clocks")

    def span(cycle: int) -> tuple[int, int]:
        stretches = clock_group(svg, "resolution", cycle).find_elements(By.CSS_SELECTOR, "rect.stretch")
        starts = [instant(s.get_attribute("data-start")) or 0 for s in stretches]
        ends = [instant(s.get_attribute("data-end")) or 0 for s in stretches]
        return min(starts), max(ends)

    assert span(1) == (scenario.epoch("2026-11-17T14:00:00Z"), scenario.PRIORITY_CHANGE_AT)
    assert span(2)[0] == scenario.PRIORITY_CHANGE_AT
    # The response clock had stopped before the change: one cycle only (CLOCK_CYCLES).
    clock_group(svg, "response", 1)
    assert svg.find_elements(By.CSS_SELECTOR, 'g.clock[data-clock="response"][data-cycle="2"]') == []


def test_the_ticket_page_has_its_events_billing_provenance_and_replay(console, browser):
    sign_in(browser, console.url, scenario.READER_TOKEN)
    browser.get(console.url + ticket_path("A-PRIO"))
    events = browser.find_elements(By.CSS_SELECTOR, "table#events tbody tr")
    assert len(events) == len(scenario.TICKETS[(scenario.ACME, "A-PRIO")])
    for part in ("#billing", "#provenance", "form#as-of"):
        browser.find_element(By.CSS_SELECTOR, part)
    replay = browser.find_element(By.CSS_SELECTOR, "pre#replay").text
    assert "slatrack" in replay and "A-PRIO" in replay
    browser.get(console.url + ticket_path("A-REVIEW"))
    assert "pending" in browser.find_element(By.CSS_SELECTOR, "#billing").text.lower()
    assert console_errors(browser) == []


# -- the customers -----------------------------------------------------------------------------


def test_the_customers_page_lists_every_customer(console, browser):
    sign_in(browser, console.url, scenario.READER_TOKEN)
    browser.get(f"{console.url}/ui/customers")
    rows = browser.find_elements(By.CSS_SELECTOR, "table#customers tr.customer")
    assert len(rows) == len(scenario.CUSTOMERS)
    for customer in scenario.CUSTOMERS:
        assert any(customer in row.text for row in rows), customer
    assert console_errors(browser) == []


@pytest.mark.parametrize("customer", scenario.CUSTOMERS)
def test_the_customer_pages_total_is_the_reports(console, browser, customer):
    with console.client() as client:
        report = client.get(
            f"/v1/customers/{customer}/report", params={"month": scenario.MONTH}, headers=BEARER
        )
    assert report.status_code == 200, report.text
    total = report.json()["billing"]["total_cents"]
    assert total == scenario.TOTAL_CENTS[customer]
    sign_in(browser, console.url, scenario.READER_TOKEN)
    browser.get(console.url + customer_path(customer))
    for part in ("dl#standing", "table#attainment", "table#breaches", "table#billing"):
        browser.find_element(By.CSS_SELECTOR, part)
    cell = browser.find_element(By.CSS_SELECTOR, "td#total-amount")
    assert int(cell.get_attribute("data-cents") or "-1") == total
    assert console_errors(browser) == []


def test_the_customer_page_downloads_and_pages_through_months(console, browser):
    sign_in(browser, console.url, scenario.READER_TOKEN)
    browser.get(console.url + customer_path(scenario.ACME))
    cookies = {COOKIE: cookie_value(scenario.READER_TOKEN)}
    with console.client(cookies=cookies) as client:
        for link, kind in (("a#download-csv", "text/csv"), ("a#download-html", "text/html")):
            href = browser.find_element(By.CSS_SELECTOR, link).get_attribute("href") or ""
            assert href.startswith(console.url) and scenario.READER_TOKEN not in href
            answer = client.get(href[len(console.url) :])
            assert answer.status_code == 200 and answer.headers["content-type"].startswith(kind), href
    previous = browser.find_element(By.CSS_SELECTOR, "a[rel=prev]").get_attribute("href") or ""
    following = browser.find_element(By.CSS_SELECTOR, "a[rel=next]").get_attribute("href") or ""
    assert "month=2026-10" in previous and "month=2026-12" in following
    link = browser.find_element(By.CSS_SELECTOR, "a[rel=prev]")
    link.click()
    left(browser, link)
    assert path_of(browser, console.url) == customer_path(scenario.ACME, "2026-10")


# -- a token limited to one customer -------------------------------------------------------------


def test_a_scoped_tokens_queue_holds_only_its_customer(console, browser):
    rows = open_queue(browser, console, token=scenario.GLOBEX_TOKEN)
    assert {row["ticket"] for row in rows} == {"G-HIGH", "G-URGENT", "G-LOW"}
    assert {row["customer"] for row in rows} == {scenario.GLOBEX}
    # Asking for another customer's tickets: none, as for a customer that does not exist.
    browser.get(f"{console.url}/ui/?customer={scenario.ACME}")
    assert queue_rows(browser) == []


def test_a_scoped_token_lists_only_its_customer(console, browser):
    sign_in(browser, console.url, scenario.GLOBEX_TOKEN)
    browser.get(f"{console.url}/ui/customers")
    rows = browser.find_elements(By.CSS_SELECTOR, "table#customers tr.customer")
    assert len(rows) == 1 and scenario.GLOBEX in rows[0].text


@pytest.mark.parametrize(
    ("mine", "theirs", "unknown"),
    [
        pytest.param(
            ticket_path("G-LOW"),
            ticket_path("A-OVERDUE"),
            "/ui/customers/nobody-at-all/tickets/A-OVERDUE",
            id="ticket",
        ),
        pytest.param(
            customer_path(scenario.GLOBEX),
            customer_path(scenario.ACME),
            customer_path("nobody-at-all"),
            id="customer",
        ),
    ],
)
def test_a_scoped_token_gets_the_not_found_page_for_another_customer(console, browser, mine, theirs, unknown):
    with console.client(cookies={COOKIE: cookie_value(scenario.READER_TOKEN)}) as client:
        assert client.get(theirs).status_code == 200  # the page exists, for an unscoped reader
    with console.client(cookies={COOKIE: cookie_value(scenario.GLOBEX_TOKEN)}) as client:
        assert client.get(mine).status_code == 200
        refused, missing = client.get(theirs), client.get(unknown)
    assert refused.status_code == missing.status_code == 404
    # Exactly the page of a customer that does not exist (but for the id in it).
    assert refused.text.replace(scenario.ACME, "ID") == missing.text.replace("nobody-at-all", "ID")
    assert refused.headers["content-type"].startswith("text/html")
    sign_in(browser, console.url, scenario.GLOBEX_TOKEN)
    browser.get(console.url + theirs)
    assert browser.find_elements(By.CSS_SELECTOR, "svg#clocks, table#events, td#total-amount") == []


# -- every page ----------------------------------------------------------------------------------

PAGES = [
    pytest.param("/ui/", "table#queue", id="queue"),
    pytest.param(ticket_path("A-PRIO"), "svg#clocks", id="ticket"),
    pytest.param("/ui/customers", "table#customers", id="customers"),
    pytest.param(customer_path(scenario.ACME), "td#total-amount", id="customer"),
]


@pytest.mark.parametrize(("path", "part"), PAGES)
def test_every_page_loads_without_a_browser_error(console, browser, path, part):
    sign_in(browser, console.url, scenario.READER_TOKEN)
    browser.get(console.url + path)
    browser.find_element(By.CSS_SELECTOR, part)
    assert console_errors(browser) == []  # a CSP violation (inline script or style) would be one
    urls = requested_urls(browser)
    assert all(url.startswith((console.url, "data:", "about:")) or not url for url in urls), urls


@pytest.mark.parametrize(("path", "part"), PAGES)
def test_every_page_fits_a_phone(console, phone, path, part):
    sign_in(phone, console.url, scenario.READER_TOKEN)
    phone.get(console.url + path)
    assert phone.find_element(By.CSS_SELECTOR, part).is_displayed()
    scroll, width = no_horizontal_scroll(phone)
    assert scroll <= width, "wide tables scroll in their own box (.table-wrap), not the page"


# -- the docs' screenshots -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "part", "name"),
    [
        pytest.param(ticket_path("A-PRIO"), "svg#clocks", "console-ticket.png", id="ticket"),
        pytest.param("/ui/", "table#queue", "console-queue.png", id="queue"),
    ],
)
def test_a_screenshot_for_the_docs(console, browser, screenshots, path, part, name):
    sign_in(browser, console.url, scenario.READER_TOKEN)
    browser.get(console.url + path)
    browser.find_element(By.CSS_SELECTOR, part)
    target = screenshots / name
    assert browser.save_screenshot(str(target))
    data = target.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
