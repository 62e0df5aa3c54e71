"""Tokens limited to customers (issue 13), over real HTTP, on read models filled by the real
projector from the real (embedded) broker, with SQLite and PostgreSQL.

The store holds tickets of ACME and of GLOBEX (the ticket id SHARED under both). A token
limited to ACME sees ACME's data as if GLOBEX did not exist: every GLOBEX id answers what an id
that never existed answers, byte for byte, and lists, pages and cursors hold only ACME's
tickets. It is refused (403) the operations about every customer (admin, metrics, and health
when it needs a token), and as a publisher it sends only ACME's events.
"""

import asyncio
import base64
import contextlib
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from pydantic import SecretStr

from services.api.intake import PROVIDER_ONLY
from services.config import Settings
from tests.integration.live_api import (
    TOKENS,
    TOKENS_JSON,
    LiveApi,
    LogCapture,
    auth,
    fresh_settings,
    walk,
)
from tests.kafka_helpers import read_all
from tests.samples import sample
from tests.worker_helpers import throwaway_database

SCOPED_TOKENS = {
    "acme": "acme-reader-token-" + uuid.uuid4().hex,
    "acme-publisher": "acme-publisher-token-" + uuid.uuid4().hex,
    # In scope, INITCO has no data: an id of its own that does not exist, reached in the store.
    "portal": "acme-initech-portal-token-" + uuid.uuid4().hex,
}
SCOPED_JSON = json.dumps(
    [
        *json.loads(TOKENS_JSON),
        {"name": "acme-portal", "token": SCOPED_TOKENS["acme"], "roles": ["reader"], "customers": ["ACME"]},
        {
            "name": "acme-intake",
            "token": SCOPED_TOKENS["acme-publisher"],
            "roles": ["publisher"],
            "customers": ["ACME"],
        },
        {
            "name": "two-customers",
            "token": SCOPED_TOKENS["portal"],
            "roles": ["reader", "publisher"],
            "customers": ["ACME", "INITCO"],
        },
    ]
)
ACME = {"authorization": f"Bearer {SCOPED_TOKENS['acme']}"}
ACME_PUBLISHER = {"authorization": f"Bearer {SCOPED_TOKENS['acme-publisher']}"}
PORTAL = {"authorization": f"Bearer {SCOPED_TOKENS['portal']}"}
READER = auth("reader")  # unscoped: sees every customer
AS_OF_PARAM = "as_of=2026-11-19T20:00:00Z"

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]


def opened(customer: str, ticket: str, at: str, priority: str = "medium", n: int = 0) -> dict:
    return sample(
        "ticket.opened",
        event_id=f"{customer}-{ticket}-open-{n}",
        customer_id=customer,
        ticket_id=ticket,
        occurred_at=at,
        data={"priority": priority},
    )


def later(kind: str, customer: str, ticket: str, at: str, **data: Any) -> dict:
    event = sample(kind, event_id=f"{customer}-{ticket}-{kind}", customer_id=customer, ticket_id=ticket)
    event["occurred_at"] = at
    event["data"].update(data)
    return event


def acme_events() -> list[dict]:
    return [
        opened("ACME", "T-01", "2026-11-16T14:00:00Z"),
        opened("ACME", "T-03", "2026-11-17T14:00:00Z", "high"),
        later("ticket.responded", "ACME", "T-03", "2026-11-17T14:30:00Z"),
        opened("ACME", "T-05", "2026-11-18T14:00:00Z", "low"),
        opened("ACME", "T-07", "2026-11-19T14:00:00Z", "urgent"),
        later("ticket.resolved", "ACME", "T-07", "2026-11-19T16:00:00Z"),
        opened("ACME", "SHARED", "2026-11-17T15:00:00Z", "high"),
        # Urgent, dispatched on a Saturday, the customer's fault: the one-hour minimum, November.
        opened("ACME", "BILL-A", "2026-11-07T15:00:00Z", "urgent"),
        later("ticket.fault_determined", "ACME", "BILL-A", "2026-11-07T15:10:00Z", party="customer"),
    ]


def portal(events: list[dict]) -> list[dict]:
    """The events a customer's portal may publish (not the provider's: services.api.intake)."""
    return [e for e in events if e["type"] not in PROVIDER_ONLY]


def globex_events() -> list[dict]:
    return [
        opened("GLOBEX", "T-02", "2026-11-16T15:00:00Z"),
        opened("GLOBEX", "T-04", "2026-11-17T16:00:00Z", "high"),
        opened("GLOBEX", "T-06", "2026-11-18T16:00:00Z", "low"),
        opened("GLOBEX", "SHARED", "2026-11-18T15:00:00Z", "urgent"),
        opened("GLOBEX", "BILL-G", "2026-11-14T15:00:00Z", "urgent"),
        later("ticket.fault_determined", "GLOBEX", "BILL-G", "2026-11-14T15:10:00Z", party="customer"),
        sample(
            "account.invoice_due",
            event_id="GLOBEX-inv-1",
            customer_id="GLOBEX",
            occurred_at="2026-11-01T12:00:00Z",
            data={"invoice_id": "G-INV-1", "due_at": "2026-11-05T00:00:00Z"},
        ),
    ]


# What ACME's token asks about GLOBEX (each with a counterpart of an id that never existed).
FOREIGN = [
    "/v1/tickets/T-02",
    f"/v1/tickets/T-02?{AS_OF_PARAM}",
    "/v1/tickets/T-02?customer_id=GLOBEX",
    "/v1/tickets/T-02/timeline",
    f"/v1/tickets/T-02/timeline?{AS_OF_PARAM}",
    "/v1/tickets/SHARED?customer_id=GLOBEX",
    f"/v1/tickets/SHARED?customer_id=GLOBEX&{AS_OF_PARAM}",
    "/v1/tickets/SHARED/timeline?customer_id=GLOBEX",
    "/v1/tickets/BILL-G",
    "/v1/customers/GLOBEX",
    "/v1/customers/GLOBEX/billing?month=2026-11",
    "/v1/customers/GLOBEX/report?month=2026-11",
    "/v1/customers/GLOBEX/report?month=2026-11&format=csv",
    "/v1/customers/GLOBEX/report?month=2026-11&format=html",
    "/v1/tickets?customer_id=GLOBEX",
    "/v1/tickets?customer_id=GLOBEX&limit=1",
    "/v1/tickets?customer_id=GLOBEX&state=open&priority=urgent",
]


def never_seen(path: str) -> str:
    """The same request about ids that exist nowhere (of the same lengths)."""
    return path.replace("T-02", "T-98").replace("BILL-G", "BILL-Z").replace("GLOBEX", "NOBODY")


def answer(response: httpx.Response) -> tuple[int, list[tuple[str, str]], bytes]:
    """Everything a client gets but the Date header: status, headers, body bytes."""
    headers = sorted((k, v) for k, v in response.headers.items() if k.lower() != "date")
    return response.status_code, headers, response.content


def log_records(settings: Settings, expected: int) -> int:
    """How many records the events topic holds: ``expected`` were sent, and nothing more comes."""
    return len(asyncio.run(read_all(settings, settings.topic_events, expected)))


class World:
    def __init__(self, api: LiveApi, before: dict[str, Any], accepted: list[str], logs: LogCapture):
        self.api = api
        self.client = api.client
        self.before = before  # ACME's token's answers about GLOBEX's ids, before GLOBEX had any event
        self.accepted = accepted
        self.logs = logs

    def every_ticket(self) -> list[tuple[str, str]]:
        """(customer_id, ticket_id) of every ticket, as an unscoped reader lists them."""
        return [(i["view"]["customer_id"], i["view"]["ticket_id"]) for i in walk(self.client, {}, READER)]


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def world(request, kafka_bootstrap, tmp_path_factory) -> Iterator[World]:
    overrides: dict[str, Any] = {
        "data_dir": tmp_path_factory.mktemp("scope"),
        "api_tokens": SecretStr(SCOPED_JSON),
        "metrics_public": False,
    }
    with contextlib.ExitStack() as stack:
        if request.param == "postgres":
            database = throwaway_database(request.getfixturevalue("postgres_dsn"), "slatrack_scope")
            overrides["database_url"] = SecretStr(stack.enter_context(database))
        settings = fresh_settings(kafka_bootstrap, **overrides)
        logs = stack.enter_context(LogCapture().installed())
        # The API's now, fixed: two listings compare equal, their remaining_seconds too.
        frozen = datetime.now(UTC).replace(microsecond=0)
        api = LiveApi(settings, api_clock=lambda: frozen)
        stack.callback(api.close)
        api.start_worker()
        # ACME's own events through its own token: accepted; whose fault a ticket is, the
        # provider's side says (through its own token).
        mine = acme_events()
        response = api.client.post("/v1/events", content=orjson.dumps(portal(mine)), headers=ACME_PUBLISHER)
        assert response.status_code == 202, response.text
        accepted = response.json()["accepted"]
        provider = [e for e in mine if e not in portal(mine)]
        response = api.client.post("/v1/events", content=orjson.dumps(provider), headers=auth("publisher"))
        assert response.status_code == 202, response.text
        api.wait_applied(len(mine))
        # Before GLOBEX exists: what ACME's token is answered about its ids.
        before = {path: answer(api.client.get(path, headers=ACME)) for path in FOREIGN}
        theirs = globex_events()
        response = api.client.post("/v1/events", content=orjson.dumps(theirs), headers=auth("publisher"))
        assert response.status_code == 202, response.text
        api.wait_applied(len(mine) + len(theirs))
        # (LiveApi runs no timers: the rows stay as the worker wrote them.)
        yield World(api, before, accepted, logs)


# -- another customer's data is as if it did not exist ------------------------------


def test_globex_exists_for_an_unscoped_reader(world):
    """The premise of the comparisons below: every GLOBEX id asked about is there."""
    for path in FOREIGN:
        response = world.client.get(path, headers=READER)
        assert response.status_code == 200, (path, response.text)
        if path.startswith("/v1/tickets?"):
            assert response.json()["items"], path
    assert world.client.get("/v1/tickets/SHARED", headers=READER).status_code == 409  # two customers


def test_a_foreign_id_answers_byte_for_byte_what_it_answered_before_it_existed(world):
    for path in FOREIGN:
        assert answer(world.client.get(path, headers=ACME)) == world.before[path], path


def test_a_foreign_id_answers_byte_for_byte_what_an_unknown_id_answers(world):
    for path in FOREIGN:
        foreign = world.client.get(path, headers=ACME)
        unknown = world.client.get(never_seen(path), headers=ACME)
        status, headers, body = answer(foreign)
        assert status == (200 if path.startswith("/v1/tickets?") else 404), (path, foreign.text)
        # The detail names the id asked for, and nothing else differs.
        swapped = body.replace(b"T-02", b"T-98").replace(b"BILL-G", b"BILL-Z").replace(b"GLOBEX", b"NOBODY")
        assert (status, headers, swapped) == answer(unknown), path
        if status == 404:
            assert foreign.json()["error"] == "not_found"
        else:
            assert foreign.json() == {"items": [], "next_cursor": None}
    # The 404s themselves are those of the unscoped paths for an unknown id (one function).
    assert world.client.get("/v1/tickets/T-02", headers=ACME).json() == {
        "error": "not_found",
        "detail": "no ticket 'T-02'",
    }
    assert world.client.get("/v1/customers/GLOBEX", headers=ACME).content == (
        b'{"error":"not_found","detail":"no customer \'GLOBEX\'"}'
    )
    assert answer(world.client.get("/v1/customers/NOBODY", headers=READER)) == answer(
        world.client.get("/v1/customers/NOBODY", headers=ACME)
    )


def test_an_unknown_customer_of_the_tokens_own_is_the_same_404(world):
    """INITCO is one of the portal's customers and has no data: the store is asked, and answers
    what GLOBEX (not the portal's) is answered without asking it."""
    for path in (
        "/v1/customers/{}",
        "/v1/customers/{}/billing?month=2026-11",
        "/v1/tickets/T-02?customer_id={}",
    ):
        own = world.client.get(path.format("INITCO"), headers=PORTAL)
        foreign = world.client.get(path.format("GLOBEX"), headers=PORTAL)
        assert own.status_code == foreign.status_code == 404, (path, own.text, foreign.text)
        assert answer(own)[:2] == answer(foreign)[:2]
        assert own.content.replace(b"INITCO", b"GLOBEX") == foreign.content


# -- what ACME's token sees ------------------------------------------------------------


def test_the_list_holds_only_its_customers_tickets_page_after_page(world):
    everything = world.every_ticket()
    assert {c for c, _ in everything} == {"ACME", "GLOBEX"}
    mine = [key for key in everything if key[0] == "ACME"]
    assert len(mine) == 6 and ("ACME", "SHARED") in mine
    for limit in (1, 2, 3, 100):
        items = walk(world.client, {"limit": limit}, ACME)
        assert [(i["view"]["customer_id"], i["view"]["ticket_id"]) for i in items] == mine, limit
        # Each item as the unscoped reader lists it.
        assert items == [
            i for i in walk(world.client, {"limit": limit}, READER) if i["view"]["customer_id"] == "ACME"
        ]
    for params in ({"customer_id": "ACME"}, {"customer_id": "ACME", "limit": 2}):
        assert walk(world.client, params, ACME) == walk(world.client, params, READER)
    # Other filters: only its customers' matches.
    for params in (
        {"priority": "urgent"},
        {"state": "open"},
        {"state": "resolved"},
        {"clock_status": "running"},
    ):
        got = [i["view"]["ticket_id"] for i in walk(world.client, {**params, "limit": 1}, ACME)]
        expected = [
            i["view"]["ticket_id"]
            for i in walk(world.client, params, READER)
            if i["view"]["customer_id"] == "ACME"
        ]
        assert got == expected, params
        assert "T-02" not in got and "BILL-G" not in got
    # The portal's two customers: ACME's tickets (INITCO has none).
    assert walk(world.client, {"limit": 2}, PORTAL) == walk(world.client, {"limit": 2}, ACME)


def test_a_cursor_never_pages_into_another_customer(world):
    """A cursor only says where a page starts: from a cursor that stands on a GLOBEX ticket (given
    to an unscoped reader), ACME's token gets ACME's tickets after it, nothing of GLOBEX."""
    everything = world.every_ticket()
    order = sorted(everything, key=lambda k: (k[1], k[0]))
    assert order == everything  # (ticket_id, customer_id)
    cursor = None
    checked = 0
    for key in everything:
        page = world.client.get(
            "/v1/tickets", params={"limit": 1, **({"cursor": cursor} if cursor else {})}, headers=READER
        )
        assert page.status_code == 200
        [item] = page.json()["items"]
        assert (item["view"]["customer_id"], item["view"]["ticket_id"]) == key
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
        after = [k for k in everything[everything.index(key) + 1 :] if k[0] == "ACME"]
        items = walk_from(world.client, cursor, ACME)
        assert [(i["view"]["customer_id"], i["view"]["ticket_id"]) for i in items] == after, key
        assert world.client.get(
            "/v1/tickets", params={"cursor": cursor, "customer_id": "GLOBEX"}, headers=ACME
        ).json() == {"items": [], "next_cursor": None}
        checked += key[0] == "GLOBEX"
    assert checked >= 4
    # And ACME's own cursors: only ACME's keys in them (a cursor is readable, if not forgeable).
    cursor = world.client.get("/v1/tickets", params={"limit": 1}, headers=ACME).json()["next_cursor"]
    assert cursor is not None and b"GLOBEX" not in _payload(cursor)


def walk_from(client: httpx.Client, cursor: str, headers: dict[str, str]) -> list[dict]:
    items: list[dict] = []
    next_cursor: str | None = cursor
    while next_cursor is not None:
        body = client.get("/v1/tickets", params={"cursor": next_cursor, "limit": 2}, headers=headers).json()
        items += body["items"]
        next_cursor = body["next_cursor"]
    return items


def _payload(cursor: str) -> bytes:
    payload = cursor.rpartition(".")[0]
    return base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))


def test_get_a_ticket_now_as_of_and_with_its_customer(world):
    for path in (
        "/v1/tickets/T-01",
        "/v1/tickets/T-01?customer_id=ACME",
        f"/v1/tickets/T-03?{AS_OF_PARAM}",
        "/v1/tickets/T-07/timeline",
        f"/v1/tickets/T-03/timeline?{AS_OF_PARAM}",
        "/v1/tickets/SHARED?customer_id=ACME",
        f"/v1/tickets/SHARED?customer_id=ACME&{AS_OF_PARAM}",
        "/v1/tickets/SHARED/timeline?customer_id=ACME",
    ):
        mine = world.client.get(path, headers=ACME)
        assert mine.status_code == 200, (path, mine.text)
        assert answer(mine) == answer(world.client.get(path, headers=READER)), path


def test_a_ticket_id_of_two_customers_is_its_customers_ticket(world):
    """SHARED is ACME's and GLOBEX's: ambiguous (409) for an unscoped reader, ACME's for ACME."""
    assert world.client.get("/v1/tickets/SHARED", headers=READER).json()["error"] == "ambiguous_ticket"
    for suffix in ("", f"?{AS_OF_PARAM}", "/timeline", f"/timeline?{AS_OF_PARAM}"):
        path = "/v1/tickets/SHARED" + suffix
        mine = world.client.get(path, headers=ACME)
        assert mine.status_code == 200, (path, mine.text)
        separator = "&" if "?" in path else "?"
        explicit = world.client.get(f"{path}{separator}customer_id=ACME", headers=READER)
        assert answer(mine) == answer(explicit), path
    assert world.client.get("/v1/tickets/SHARED", headers=ACME).json()["customer_id"] == "ACME"
    # as of before ACME's SHARED opened (GLOBEX's had not either): not opened then, as for anyone.
    early = world.client.get("/v1/tickets/SHARED?as_of=2026-11-17T14:00:00Z", headers=ACME)
    assert early.status_code == 404 and "was not opened as of" in early.json()["detail"]


def test_its_customer_and_its_billing(world):
    for path in (
        "/v1/customers/ACME",
        "/v1/customers/ACME/billing?month=2026-11",
        "/v1/customers/ACME/billing?month=2026-10",
    ):
        mine = world.client.get(path, headers=ACME)
        assert mine.status_code == 200, (path, mine.text)
        assert answer(mine) == answer(world.client.get(path, headers=READER)), path
    billing = world.client.get("/v1/customers/ACME/billing?month=2026-11", headers=ACME).json()
    assert [line["ticket_id"] for line in billing["lines"]] == ["BILL-A"]
    assert billing["total"]["amount_cents"] == 12_500  # the one-hour minimum
    standing = world.client.get("/v1/customers/ACME", headers=ACME).json()
    assert standing["billing"]["2026-11"] == {"amount_cents": 12_500, "billable_seconds": 3600}


# -- what it cannot do -----------------------------------------------------------------


def test_admin_metrics_and_health_are_refused(world):
    for headers in (ACME, PORTAL, ACME_PUBLISHER):
        for method, path in (
            ("GET", "/v1/admin/rebuild"),
            ("POST", "/v1/admin/rebuild"),
            ("GET", "/metrics"),
            ("GET", "/healthz"),
            ("GET", "/readyz"),
        ):
            response = world.client.request(method, path, headers=headers)
            assert response.status_code == 403, (method, path, response.text)
            assert response.json()["error"] == "forbidden"
    # Limited to customers is said where it is the reason (a role that is there).
    detail = world.client.get("/metrics", headers=ACME).json()["detail"]
    assert detail == (
        "the token 'acme-portal' is limited to customers; this operation is for tokens that see "
        "every customer"
    )
    assert "lacks the role 'admin'" in world.client.get("/v1/admin/rebuild", headers=ACME).json()["detail"]
    # Unscoped tokens as before.
    assert world.client.get("/metrics", headers=READER).status_code == 200
    assert world.client.get("/healthz", headers=READER).status_code == 200
    assert world.client.get("/v1/admin/rebuild", headers=auth("admin")).status_code == 200
    # A reader limited to customers cannot publish, a publisher cannot read.
    assert world.client.post("/v1/events", content=b"{}", headers=ACME).status_code == 403
    assert world.client.get("/v1/tickets", headers=ACME_PUBLISHER).status_code == 403


def test_the_intake_refuses_another_customers_event_and_sends_nothing(world):
    settings = world.api.settings
    records = len(acme_events()) + len(globex_events())
    new_acme = opened("ACME", "T-09", "2026-11-19T18:00:00Z", n=9)
    foreign = opened("GLOBEX", "T-02", "2026-11-19T18:00:00Z", "urgent", n=9)
    account = sample(
        "account.invoice_paid", event_id="GLOBEX-paid", customer_id="GLOBEX", data={"invoice_id": "G-INV-1"}
    )
    initech = opened("INITCO", "T-11", "2026-11-19T18:00:00Z", n=9)
    for headers, batch, refused in (
        (ACME_PUBLISHER, [new_acme, foreign], [1]),
        (ACME_PUBLISHER, [foreign], [0]),
        (ACME_PUBLISHER, foreign, [0]),  # one event, not an array
        (ACME_PUBLISHER, [account, new_acme, foreign, new_acme], [0, 2]),
        (ACME_PUBLISHER, [initech, new_acme], [0]),
        (PORTAL, [initech, new_acme, foreign], [2]),
    ):
        response = world.client.post("/v1/events", content=orjson.dumps(batch), headers=headers)
        assert response.status_code == 403, response.text
        body = response.json()
        assert body["error"] == "forbidden"
        assert [e["index"] for e in body["errors"]] == refused
        assert {e["kind"] for e in body["errors"]} == {"customer_not_allowed"}
        assert "nothing was sent" in body["detail"]
        items = f"items {', '.join(map(str, refused))}"
        assert items in body["detail"], body["detail"]
        # Nothing of the refused items is echoed: not their customer, ticket or event ids.
        for word in (b"GLOBEX", b"INITCO", b"T-02", b"T-09", b"T-11", b"G-INV", b"-open-9", b"paid"):
            assert word not in response.content, (word, response.content)
    # Its own customer's events of the types only the provider publishes are refused too (a portal
    # could put its customer on a better contract, backdated, settle its invoices, waive charges).
    for kind, data in (
        ("account.contract_changed", {"contract": "premium", "effective_from": "1970-01-01T00:00:00Z"}),
        ("account.invoice_paid", {"invoice_id": "A-INV-1"}),
        ("ticket.fault_determined", {"party": "provider"}),
    ):
        own = sample(kind, event_id=f"ACME-{kind}", customer_id="ACME", data=data)
        if kind.startswith("ticket."):
            own["ticket_id"] = "T-01"
        response = world.client.post(
            "/v1/events", content=orjson.dumps([new_acme, own]), headers=ACME_PUBLISHER
        )
        assert response.status_code == 403, (kind, response.text)
        assert response.json()["errors"] == [{"index": 1, "kind": "type_not_allowed"}]
    # An invalid item is a 422 as before (validation first; it says nothing of scope).
    invalid = {**new_acme, "occurred_at": "yesterday"}
    response = world.client.post(
        "/v1/events", content=orjson.dumps([invalid, foreign]), headers=ACME_PUBLISHER
    )
    assert response.status_code == 422 and [e["index"] for e in response.json()["errors"]] == [0]
    assert log_records(settings, records) == records  # nothing was sent
    assert world.client.get("/v1/tickets/T-09", headers=READER).status_code == 404
    assert "intake: 403, " in world.logs.text and SCOPED_TOKENS["acme-publisher"] not in world.logs.text


def test_own_events_are_accepted(world):
    """The fixture's first request: ACME's token sent ACME's events (202), and they were projected."""
    assert world.accepted == [e["event_id"] for e in portal(acme_events())]
    assert world.client.get("/v1/tickets/BILL-A", headers=ACME).json()["customer_id"] == "ACME"


def test_no_token_is_logged(world):
    for token in (*TOKENS.values(), *SCOPED_TOKENS.values()):
        assert token not in world.logs.text


# -- /metrics public: anyone but a token limited to customers ------------------------


def test_public_metrics_refuse_a_token_limited_to_customers(kafka_bootstrap, tmp_path):
    settings = fresh_settings(kafka_bootstrap, data_dir=tmp_path, api_tokens=SecretStr(SCOPED_JSON))
    assert settings.metrics_public
    api = LiveApi(settings, worker=False)
    try:
        for headers in ({}, READER, auth("publisher"), {"authorization": "Bearer not-a-known-token"}):
            assert api.client.get("/metrics", headers=headers).status_code == 200
        for headers in (ACME, PORTAL, ACME_PUBLISHER):
            response = api.client.get("/metrics", headers=headers)
            assert response.status_code == 403 and response.json()["error"] == "forbidden"
            # Health says nothing of any customer: public, it answers anyone.
            assert api.client.get("/healthz", headers=headers).status_code == 200
        spec = api.client.get("/openapi.json").json()
        assert "security" not in spec["paths"]["/metrics"]["get"]  # still public in the document
    finally:
        api.close()
