"""The query API over real HTTP, on read models filled by the real projector from
the real (embedded) broker, with SQLite and PostgreSQL: every endpoint, every role,
every filter and the pagination, `as_of` against `projections.replay`, billing."""

import base64
import contextlib
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from pydantic import SecretStr

from events import decode_event
from projections.policy import default_policy
from projections.replay import replay
from projections.timeline import Recorded
from services.api.queries import decode_cursor, encode_cursor
from services.dev.simulator import Helpdesk
from services.worker.histories import decode_stored
from services.worker.ports import TicketQuery
from tests.integration.live_api import AS_OF, TOKENS, LiveApi, LogCapture, auth, fresh_settings, walk
from tests.worker_helpers import throwaway_database

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]

READER = auth("reader")


def simulated(tickets: int = 150, seed: int = 21) -> list[dict]:
    # Up to a day after AS_OF: some tickets are open then, some not opened yet (pending).
    desk = Helpdesk(seed=seed, customers=25, start=datetime(2026, 10, 25, tzinfo=UTC), days=27)
    # And two urgent tickets at risk at AS_OF (75 % of their hour, 24x7, without an answer).
    at_risk = [
        {
            "event_id": f"risk-{n}",
            "type": "ticket.opened",
            "schema_version": 1,
            "occurred_at": (AS_OF - timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "customer_id": "cust-0001",
            "ticket_id": f"T-risk-{n}",
            "data": {"priority": "urgent"},
        }
        for n, minutes in ((1, 50), (2, 47))
    ]
    return list(desk.history(tickets)) + at_risk


class World:
    """The served API, the events it was fed, and the views the worker stored (each as of the
    instant it evaluated it: the time of the log while catching up, then its clock, AS_OF)."""

    def __init__(self, api: LiveApi, events: list[dict], logs: LogCapture):
        self.api = api
        self.client = api.client
        self.events = events
        self.logs = logs
        self.records = [Recorded(i, decode_event(orjson.dumps(e))) for i, e in enumerate(events)]
        store = api.store
        generation = store.active_generation()
        assert generation is not None
        rows = store.list_tickets(generation, TicketQuery(limit=10_000))
        self.views = {row.ticket_id: orjson.loads(row.view) for row in rows}
        self.evaluated = {row.ticket_id: datetime.fromtimestamp(row.evaluated_at, UTC) for row in rows}
        self.customers = {
            c["customer_id"] for c in replay(self.records, default_policy(), AS_OF)["customers"]
        }

    def replayed(self, ticket_id: str, as_of: datetime) -> dict | None:
        mine = [
            r
            for r in self.records
            if getattr(r.event, "ticket_id", None) == ticket_id or r.event.type.startswith("account.")
        ]
        document = replay(mine, default_policy(), as_of)
        return next((v for v in document["tickets"] if v["ticket_id"] == ticket_id), None)

    @property
    def opened(self) -> list[str]:
        """The tickets opened as of their stored view (not pending)."""
        return [t for t, v in self.views.items() if v["state"] != "pending"]

    def stamp(self, ticket_id: str) -> str:
        return self.evaluated[ticket_id].strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def world(request, kafka_bootstrap, tmp_path_factory) -> Iterator[World]:
    overrides: dict[str, Any] = {"data_dir": tmp_path_factory.mktemp("api")}
    with contextlib.ExitStack() as stack:
        if request.param == "postgres":
            database = throwaway_database(request.getfixturevalue("postgres_dsn"), "slatrack_api")
            overrides["database_url"] = SecretStr(stack.enter_context(database))
        settings = fresh_settings(kafka_bootstrap, **overrides)
        events = simulated()
        with LogCapture().installed() as logs:
            api = LiveApi(settings)
            try:
                api.start_worker()
                # Through the intake, as a publisher would (per customer, in order).
                for start in range(0, len(events), 500):
                    response = api.client.post(
                        "/v1/events",
                        content=orjson.dumps(events[start : start + 500]),
                        headers=auth("publisher"),
                    )
                    assert response.status_code == 202, response.text
                api.wait_applied(len(events))
                yield World(api, events, logs)
            finally:
                api.close()


def ticket_ids(items: list[dict]) -> list[str]:
    """The ids of listed tickets, but the one the intake test adds."""
    return [item["view"]["ticket_id"] for item in items if item["view"]["ticket_id"] != "T-role"]


# -- one ticket -------------------------------------------------------------------


def test_ticket_view_is_the_stored_one_and_says_when(world):
    assert len(world.views) == 152
    for ticket_id in world.views:
        response = world.client.get(f"/v1/tickets/{ticket_id}", headers=READER)
        assert response.status_code == 200, response.text
        assert response.headers["x-slatrack-evaluated-at"] == world.stamp(ticket_id)
        assert response.json() == world.views[ticket_id]
        # What the worker stored is what a replay gives as of that instant.
        expected = world.replayed(ticket_id, world.evaluated[ticket_id])
        if expected is None:  # not opened as of then: the placeholder
            assert world.views[ticket_id]["state"] == "pending" and world.views[ticket_id]["opens_at"]
        else:
            assert world.views[ticket_id] == expected
    assert {v["state"] for v in world.views.values()} == {"open", "resolved", "closed", "pending"}


def test_as_of_recomputes_the_view_as_replay_does(world):
    checked = 0
    opened_tickets = world.opened
    for ticket_id in opened_tickets[::7]:
        opened = datetime.fromisoformat(world.views[ticket_id]["opened_at"])
        for instant in (
            opened,
            opened + timedelta(minutes=50),
            opened + timedelta(hours=5, seconds=7),
            opened + timedelta(days=2),
            AS_OF - timedelta(days=1),
        ):
            if not opened <= instant <= AS_OF:
                continue
            stamp = instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            response = world.client.get(f"/v1/tickets/{ticket_id}", params={"as_of": stamp}, headers=READER)
            assert response.status_code == 200, response.text
            assert response.headers["x-slatrack-evaluated-at"] == stamp
            assert response.json() == world.replayed(ticket_id, instant), (ticket_id, stamp)
            checked += 1
    assert checked > 60
    # The same instant written with another offset and a fraction of a second.
    ticket_id = opened_tickets[0]
    opened = datetime.fromisoformat(world.views[ticket_id]["opened_at"]) + timedelta(hours=3)
    local = opened.astimezone(timezone(timedelta(hours=-5, minutes=-30))).replace(microsecond=250_000)
    for text in (opened.strftime("%Y-%m-%dT%H:%M:%SZ"), opened.isoformat(), local.isoformat()):
        response = world.client.get(f"/v1/tickets/{ticket_id}", params={"as_of": text}, headers=READER)
        assert response.json() == world.replayed(ticket_id, opened), text
    # Before it opened: not there yet.
    before = datetime.fromisoformat(world.views[ticket_id]["opened_at"]) - timedelta(seconds=1)
    response = world.client.get(
        f"/v1/tickets/{ticket_id}", params={"as_of": before.isoformat()}, headers=READER
    )
    assert response.status_code == 404 and response.json()["error"] == "not_found"


@pytest.mark.parametrize(
    "as_of",
    [
        "yesterday",
        "2026-11-02T10:00:00",
        "2026-11-02",
        "1700000000",
        "2026-13-02T10:00:00Z",
        "2999-01-01T00:00:00Z",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-23:59",
        "2026-02-30T10:00:00Z",
    ],
)
def test_a_bad_as_of_is_422(world, as_of):
    ticket_id = next(iter(world.views))
    for path in (f"/v1/tickets/{ticket_id}", f"/v1/tickets/{ticket_id}/timeline"):
        response = world.client.get(path, params={"as_of": as_of}, headers=READER)
        assert response.status_code == 422, (path, as_of, response.text)
        body = response.json()
        assert set(body) >= {"error", "detail"}


def test_unknown_ids_are_404_and_bad_ids_422(world):
    for path in (
        "/v1/tickets/T-nope",
        "/v1/tickets/T-nope/timeline",
        "/v1/customers/cust-nope",
        "/v1/customers/cust-nope/billing?month=2026-11",
        "/v1/customers/cust-nope/report?month=2026-11",
        "/v1/tickets/T%00x",
        "/v1/customers/c%00",
    ):
        response = world.client.get(path, headers=READER)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["error"] == "not_found"
    for path in (
        f"/v1/tickets/{'x' * 129}",
        f"/v1/customers/{'c' * 129}",
        f"/v1/tickets/{'x' * 129}/timeline",
    ):
        response = world.client.get(path, headers=READER)
        assert response.status_code == 422, (path, response.text)
        assert response.json()["error"] == "invalid_request"
    assert world.client.get(f"/v1/tickets/{'x' * 128}", headers=READER).status_code == 404


def test_timeline(world):
    """The audit trail is projections.explain over the stored events."""
    ticket_id = world.opened[0]
    response = world.client.get(f"/v1/tickets/{ticket_id}/timeline", headers=READER)
    assert response.status_code == 200, response.text
    assert response.headers["x-slatrack-evaluated-at"] == world.stamp(ticket_id)
    from projections.explain import explain

    # The stored events, numbered by their place in the log as the API numbers them.
    store = world.api.store
    generation = store.active_generation()
    customer = world.views[ticket_id]["customer_id"]
    key = (customer, ticket_id)
    mine = decode_stored(store.events_of_tickets(generation, [key])[key])
    account = decode_stored(store.account_events_of(generation, [customer]).get(customer, []))
    assert len(mine) == sum(getattr(r.event, "ticket_id", None) == ticket_id for r in world.records)
    expected = explain(mine, account, default_policy(), world.evaluated[ticket_id])
    assert orjson.loads(orjson.dumps(expected)) == response.json()
    opened = datetime.fromisoformat(world.views[ticket_id]["opened_at"])
    instant = opened + timedelta(hours=2)
    response = world.client.get(
        f"/v1/tickets/{ticket_id}/timeline", params={"as_of": instant.isoformat()}, headers=READER
    )
    assert response.status_code == 200
    assert response.json() == orjson.loads(orjson.dumps(explain(mine, account, default_policy(), instant)))


# -- lists ------------------------------------------------------------------------


def expected_ids(world: World, keep) -> list[str]:
    """The stored views that match (a filter sees a view as of the instant it was evaluated)."""
    return sorted(t for t, view in world.views.items() if keep({**view, "_at": world.evaluated[t]}))


def clocks(view: dict) -> list[dict]:
    return list(view.get("clocks", {}).values())  # a pending ticket has none (yet)


def level(view: dict) -> int:
    return view.get("escalation", {}).get("level", 0)


def month(view: dict) -> str | None:
    return view.get("billing", {}).get("month")


def due_at(clock: dict) -> datetime | None:
    return None if clock["due_at"] is None else datetime.fromisoformat(clock["due_at"])


FILTERS: list[tuple[dict[str, Any], Any]] = [
    ({}, lambda v: True),
    *[({"state": s}, lambda v, s=s: v["state"] == s) for s in ("open", "resolved", "closed", "pending")],
    *[({"priority": p}, lambda v, p=p: v.get("priority") == p) for p in ("urgent", "high", "medium", "low")],
    *[
        ({"clock_status": s}, lambda v, s=s: any(c["status"] == s for c in clocks(v)))
        for s in ("running", "paused", "stopped")
    ],
    ({"breached": "true"}, lambda v: any(c["breached"] for c in clocks(v))),
    ({"breached": "false"}, lambda v: not any(c["breached"] for c in clocks(v))),
    ({"at_risk": "true"}, lambda v: any(c["at_risk"] for c in clocks(v))),
    ({"at_risk": "false"}, lambda v: not any(c["at_risk"] for c in clocks(v))),
    *[({"min_escalation_level": n}, lambda v, n=n: level(v) >= n) for n in (0, 1, 2, 3)],
    ({"customer_id": "cust-0003"}, lambda v: v["customer_id"] == "cust-0003"),
    ({"customer_id": "cust-none"}, lambda v: False),
    *[
        (
            {"due_before": stamp},
            # Reached already (overdue) or not: a running clock's due instant at or before it.
            lambda v, stamp=stamp: any(
                c["status"] == "running"
                and (due := due_at(c)) is not None
                and due <= datetime.fromisoformat(stamp)
                for c in clocks(v)
            ),
        )
        for stamp in ("2026-11-20T13:00:00Z", "2026-11-23T12:00:00-05:00", "2027-01-01T00:00:00Z")
    ],
    (
        {"state": "open", "breached": "true", "priority": "high"},
        lambda v: (
            v["state"] == "open" and v.get("priority") == "high" and any(c["breached"] for c in clocks(v))
        ),
    ),
    (
        {"clock_status": "running", "at_risk": "false", "min_escalation_level": 1},
        lambda v: (
            any(c["status"] == "running" for c in clocks(v))
            and not any(c["at_risk"] for c in clocks(v))
            and v["escalation"]["level"] >= 1
        ),
    ),
]


def queue_due(view: dict) -> datetime | None:
    """The earliest due instant of a running clock, reached or not (the row's queue_due_at)."""
    return min((d for c in clocks(view) if c["status"] == "running" and (d := due_at(c))), default=None)


def billing_status(view: dict) -> str:
    return view.get("billing", {"status": "none"})["status"]  # pending: no billing, "none"


QUEUE_FILTERS: list[tuple[dict[str, Any], Any]] = [
    *[
        ({"billing_status": s}, lambda v, s=s: billing_status(v) == s)
        for s in ("none", "billable", "pending_review", "waived")
    ],
    # As of the request's now: the wall clock (the worker's is AS_OF).
    ({"overdue": "true"}, lambda v: (d := queue_due(v)) is not None and d <= datetime.now(UTC)),
    ({"overdue": "false"}, lambda v: (d := queue_due(v)) is None or d > datetime.now(UTC)),
    (
        {"overdue": "true", "state": "open", "billing_status": "pending_review"},
        lambda v: (
            (d := queue_due(v)) is not None
            and d <= datetime.now(UTC)
            and v["state"] == "open"
            and billing_status(v) == "pending_review"
        ),
    ),
]


@pytest.mark.parametrize(
    ("params", "keep"),
    FILTERS + QUEUE_FILTERS,
    ids=[orjson.dumps(p).decode() for p, _ in FILTERS + QUEUE_FILTERS],
)
def test_filters(world, params, keep):
    items = walk(world.client, {**params, "limit": 17}, READER)
    assert ticket_ids(items) == expected_ids(world, keep)
    for item in items:
        assert item["evaluated_at"] == world.stamp(item["view"]["ticket_id"])
        assert item["view"] == world.views[item["view"]["ticket_id"]]


def test_every_filter_value_selects_something(world):
    """The filters above are not vacuous on this history."""
    for params, keep in FILTERS:
        if params not in ({"customer_id": "cust-none"}, {"state": "pending"}):
            assert expected_ids(world, keep), params


def test_the_queue_filters_select_something(world):
    for params in ({"billing_status": "none"}, {"billing_status": "pending_review"}, {"overdue": "true"}):
        keep = next(k for p, k in QUEUE_FILTERS if p == params)
        assert expected_ids(world, keep), params


@pytest.mark.parametrize("limit", [1, 7, 150, 500])
@pytest.mark.parametrize("state", [None, "open"])
def test_sort_due_walks_the_queue_once_with_due_at_and_remaining_seconds(world, limit, state):
    before = int(time.time())
    items = walk(world.client, {"sort": "due", "limit": limit, **({"state": state} if state else {})}, READER)
    after = int(time.time()) + 1
    views = [i["view"] for i in items if i["view"]["ticket_id"] != "T-role"]

    def order(view: dict) -> tuple:
        due = queue_due(view)
        return (due is None, due or AS_OF, view["ticket_id"], view["customer_id"])

    expected = sorted((v for v in world.views.values() if state is None or v["state"] == state), key=order)
    assert [v["ticket_id"] for v in views] == [v["ticket_id"] for v in expected]
    for item in items:
        due = queue_due(item["view"])
        assert item["due_at"] == (None if due is None else due.strftime("%Y-%m-%dT%H:%M:%SZ"))
        if due is None:
            assert item["remaining_seconds"] is None
        else:  # wall-clock seconds from the request's now to the due instant
            assert int(due.timestamp()) - after <= item["remaining_seconds"] <= int(due.timestamp()) - before
    assert any(i["due_at"] for i in items) and any(i["due_at"] is None for i in items)


def test_a_cursor_of_one_sort_is_a_400_for_the_other(world):
    by_due = world.client.get("/v1/tickets", params={"sort": "due", "limit": 2}, headers=READER).json()
    by_id = world.client.get("/v1/tickets", params={"limit": 2}, headers=READER).json()
    for sort, cursor in (("ticket", by_due["next_cursor"]), ("due", by_id["next_cursor"])):
        response = world.client.get("/v1/tickets", params={"sort": sort, "cursor": cursor}, headers=READER)
        assert response.status_code == 400 and response.json()["error"] == "bad_cursor", response.text
    response = world.client.get("/v1/tickets", params={"cursor": by_due["next_cursor"]}, headers=READER)
    assert response.status_code == 400  # sort=ticket is the default


@pytest.mark.parametrize("limit", [1, 7, 100, 149, 150, 500])
def test_pagination_walks_everything_once(world, limit):
    items = walk(world.client, {"limit": limit}, READER)
    ids = ticket_ids(items)
    assert ids == sorted(world.views)  # in order, no duplicate, no gap
    pages = -(-len(ids) // limit)
    response = world.client.get("/v1/tickets", params={"limit": limit}, headers=READER).json()
    assert (response["next_cursor"] is None) == (pages == 1)


def test_extreme_instants(world):
    # The event contract's range, 1970 to 2999 (in UTC), holds for parameters too.
    for stamp in ("1970-01-01T00:00:00-00:00", "2999-12-31T23:59:59Z"):
        response = world.client.get("/v1/tickets", params={"due_before": stamp}, headers=READER)
        assert response.status_code == 200, (stamp, response.text)
    for stamp in ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "1970-01-01T00:00:00+14:00"):
        response = world.client.get("/v1/tickets", params={"due_before": stamp}, headers=READER)
        assert response.status_code == 422, (stamp, response.text)
        assert response.json()["detail"] == (
            "due_before: must lie between 1970-01-01T00:00:00Z and 2999-12-31T23:59:59Z"
        )
    ticket_id = world.opened[0]
    for path in (f"/v1/tickets/{ticket_id}", f"/v1/tickets/{ticket_id}/timeline"):
        response = world.client.get(path, params={"as_of": "1970-01-01T00:00:00Z"}, headers=READER)
        assert response.status_code == 404, (path, response.text)  # not opened then
        response = world.client.get(path, params={"as_of": "0001-01-01T00:00:00Z"}, headers=READER)
        assert response.status_code == 422, (path, response.text)


def test_default_page_and_bounds(world):
    body = world.client.get("/v1/tickets", headers=READER).json()
    assert len(body["items"]) == 100 and body["next_cursor"]
    for limit in (0, -1, 501, "ten", 10**30):
        response = world.client.get("/v1/tickets", params={"limit": limit}, headers=READER)
        assert response.status_code == 422, limit
        assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize(
    "params",
    [
        {"state": "lost"},
        {"priority": "p1"},
        {"clock_status": "ticking"},
        {"breached": "maybe"},
        {"at_risk": "2"},
        {"due_before": "tomorrow"},
        {"due_before": "2026-11-20T13:00:00"},
        {"due_before": "9999-12-31T23:59:59-23:59"},
        {"due_before": "0001-01-01T00:00:00+00:01"},
        {"due_before": "2026-02-29T00:00:00Z"},
        {"min_escalation_level": -1},
        {"min_escalation_level": 10**20},
        {"customer_id": ""},
        {"customer_id": "c" * 129},
        {"overdue": "soon"},
        {"billing_status": "pending"},
        {"billing_status": ""},
        {"sort": "soonest"},
    ],
)
def test_bad_filters_are_422(world, params):
    response = world.client.get("/v1/tickets", params=params, headers=READER)
    assert response.status_code == 422, response.text
    assert set(response.json()) >= {"error", "detail"}


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "!!!",
        "not-base64*",
        b64(b"\x00"),
        b64(b"\xff\xfe"),
        b64(b"x" * 129),
        "A",
        b64(b"T-1") + "==",
        "x" * 201,
        b64(b'["T-1", "cust-1"]'),  # the unsigned cursor of before
        b64(b'["T-1", "cust-1"]') + "." + "A" * 22,
        "é.é",
    ],
)
def test_a_bad_cursor_is_400(world, cursor):
    response = world.client.get("/v1/tickets", params={"cursor": cursor}, headers=READER)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "bad_cursor"
    assert response.json()["detail"].startswith("cursor: not a cursor this API gave")


def test_an_altered_or_foreign_cursor_is_400(world):
    cursor = world.client.get("/v1/tickets", params={"limit": 3}, headers=READER).json()["next_cursor"]
    payload, mac = cursor.split(".")
    ticket, customer = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    # Another position with the genuine MAC; the same position signed with another key.
    altered = b64(orjson.dumps([ticket + "0", customer])) + "." + mac
    foreign = encode_cursor((customer, ticket), b"another deployment's key")
    for bad in (altered, foreign, payload + "." + mac[:-1], cursor + "A"):
        response = world.client.get("/v1/tickets", params={"limit": 3, "cursor": bad}, headers=READER)
        assert response.status_code == 400 and response.json()["error"] == "bad_cursor", (bad, response.text)
    assert world.client.get("/v1/tickets", params={"cursor": cursor}, headers=READER).status_code == 200


def test_a_cursor_holds_ids_of_any_length():
    key = b"k" * 32
    for after in (("c", "t"), ("€" * 128, "😀" * 128), ('"\\' * 42, "\u2028" * 128)):
        cursor = encode_cursor(after, key)
        assert len(cursor) <= 2048 and decode_cursor(cursor, key) == after


def test_a_cursor_continues_after_its_ticket(world):
    first = world.client.get("/v1/tickets", params={"limit": 3}, headers=READER).json()
    cursor = first["next_cursor"]
    second = world.client.get("/v1/tickets", params={"limit": 3, "cursor": cursor}, headers=READER).json()
    assert ticket_ids(first["items"] + second["items"]) == sorted(world.views)[:6]


# -- customers and billing -------------------------------------------------------


def test_customer_view(world):
    for customer_id in sorted(world.customers):
        response = world.client.get(f"/v1/customers/{customer_id}", headers=READER)
        assert response.status_code == 200, response.text
        instant = datetime.fromisoformat(response.headers["x-slatrack-evaluated-at"])
        body = response.json()
        standing = next(
            c
            for c in replay(world.records, default_policy(), instant)["customers"]
            if c["customer_id"] == customer_id
        )
        assert (body["delinquent"], body["dashboard_suspended"]) == (
            standing["delinquent"],
            standing["dashboard_suspended"],
        )
        months: dict[str, dict[str, int]] = {}
        for view in world.views.values():
            if view["customer_id"] == customer_id and month(view):
                sums = months.setdefault(view["billing"]["month"], {"amount_cents": 0, "billable_seconds": 0})
                sums["amount_cents"] += view["billing"]["amount_cents"]
                sums["billable_seconds"] += view["billing"]["billable_seconds"]
        assert body["billing"] == dict(sorted(months.items()))


def test_billing_lines_sum_to_the_total(world):
    months = {m for v in world.views.values() if (m := month(v))}
    assert months
    checked = 0
    for customer_id in sorted(world.customers):
        for when in [*sorted(months), "2025-01"]:
            response = world.client.get(
                f"/v1/customers/{customer_id}/billing", params={"month": when}, headers=READER
            )
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["customer_id"] == customer_id and body["month"] == when
            expected = {
                t: v["billing"]
                for t, v in world.views.items()
                if v["customer_id"] == customer_id and month(v) == when
            }
            assert [line["ticket_id"] for line in body["lines"]] == sorted(expected)
            for line in body["lines"]:
                billing = expected[line["ticket_id"]]
                assert (line["amount_cents"], line["billable_seconds"], line["rule"], line["status"]) == (
                    billing["amount_cents"],
                    billing["billable_seconds"],
                    billing["rule"],
                    billing["status"],
                )
            assert body["total"] == {
                "tickets": len(body["lines"]),
                "amount_cents": sum(line["amount_cents"] for line in body["lines"]),
                "billable_seconds": sum(line["billable_seconds"] for line in body["lines"]),
            }
            summary = world.client.get(f"/v1/customers/{customer_id}", headers=READER).json()["billing"]
            assert summary.get(when, {"amount_cents": 0, "billable_seconds": 0}) == {
                "amount_cents": body["total"]["amount_cents"],
                "billable_seconds": body["total"]["billable_seconds"],
            }
            checked += bool(body["lines"])
    assert checked >= 5


def test_every_customers_report_is_the_pure_report_of_its_logged_events(world):
    """The report from the stored events is the one projections.report computes from the log,
    byte for byte (the store numbers events otherwise, in the same order per customer)."""
    from projections.report import monthly_report
    from projections.report_render import render_json

    months = {"2026-10", "2026-11"}
    for customer_id in sorted(world.customers):
        for when in sorted(months):
            response = world.client.get(
                f"/v1/customers/{customer_id}/report", params={"month": when}, headers=READER
            )
            assert response.status_code == 200, response.text
            expected = monthly_report(world.records, default_policy(), customer_id, when, datetime.now(UTC))
            assert response.content == render_json(expected), (customer_id, when)


def test_a_customer_verifies_its_report_from_its_export(world, tmp_path):
    """docs/audit.md, "Verifying a monthly report": `slatrack export --customer ID`, then
    `slatrack report --events`, gives the API's bytes."""
    import asyncio

    from click.testing import CliRunner

    from services.cli.commands import main
    from tests.integration.test_export_cli import export

    for customer_id in sorted(world.customers)[:3]:
        report = world.client.get(
            f"/v1/customers/{customer_id}/report", params={"month": "2026-11"}, headers=READER
        )
        assert report.status_code == 200, report.text
        code, out, err = asyncio.run(export(world.api.settings, "--customer", customer_id))
        assert code == 0, err
        log = tmp_path / f"{customer_id}.jsonl"
        log.write_bytes(out)
        assert report.json()["reproduce"]["export"] == f"slatrack export --customer {customer_id} > log.jsonl"
        mine = CliRunner().invoke(
            main,
            ["report", "--events", str(log), "--customer", customer_id, "--month", "2026-11"],
            env={"SLATRACK_POLICY_FILE": None},
            catch_exceptions=False,
        )
        assert mine.exit_code == 0, mine.output
        assert mine.stdout_bytes == report.content, customer_id


@pytest.mark.parametrize("month", ["2026-13", "2026-1", "2026-11-01", "", "nov", "2026-00"])
def test_a_bad_month_is_422(world, month):
    customer_id = next(iter(world.customers))
    response = world.client.get(
        f"/v1/customers/{customer_id}/billing", params={"month": month}, headers=READER
    )
    assert response.status_code == 422
    assert world.client.get(f"/v1/customers/{customer_id}/billing", headers=READER).status_code == 422


# -- roles -----------------------------------------------------------------------


def query_paths(world: World) -> list[str]:
    ticket_id, customer_id = world.opened[0], min(world.customers)
    return [
        "/v1/tickets",
        f"/v1/tickets/{ticket_id}",
        f"/v1/tickets/{ticket_id}?as_of=2026-11-19T00:00:00Z",
        f"/v1/tickets/{ticket_id}/timeline",
        f"/v1/customers/{customer_id}",
        f"/v1/customers/{customer_id}/billing?month=2026-11",
        f"/v1/customers/{customer_id}/report?month=2026-11",
    ]


def assert_unauthorized(response, invalid: bool) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert ('error="invalid_token"' in response.headers["www-authenticate"]) == invalid
    assert response.json()["error"] == "unauthorized" and response.json()["detail"]


def assert_forbidden(response) -> None:
    assert response.status_code == 403, response.text
    assert response.json()["error"] == "forbidden" and response.json()["detail"]


def test_queries_need_the_reader_role(world):
    for path in query_paths(world):
        assert_unauthorized(world.client.get(path), invalid=False)
        assert_unauthorized(world.client.get(path, headers={"authorization": "Bearer wrong-token-123"}), True)
        assert_unauthorized(
            world.client.get(path, headers={"authorization": f"Basic {TOKENS['reader']}"}), False
        )
        assert_unauthorized(world.client.get(path, headers={"authorization": TOKENS["reader"]}), False)
        assert_forbidden(world.client.get(path, headers=auth("publisher")))
        assert_forbidden(world.client.get(path, headers=auth("admin")))
        for role in ("reader", "all"):
            response = world.client.get(path, headers=auth(role))
            assert response.status_code == 200, (path, response.text)
        # A token is a token: a prefix or a longer one is not.
        assert_unauthorized(
            world.client.get(path, headers={"authorization": f"Bearer {TOKENS['reader'][:-1]}"}), True
        )
        assert_unauthorized(
            world.client.get(path, headers={"authorization": f"Bearer {TOKENS['reader']}x"}), True
        )


def test_the_intake_needs_the_publisher_role(world):
    from tests.samples import sample

    event = sample(
        "ticket.opened", event_id=f"role-{uuid.uuid4().hex}", customer_id="cust-role", ticket_id="T-role"
    )
    body = orjson.dumps(event)
    headers = {"content-type": "application/json"}
    assert_unauthorized(world.client.post("/v1/events", content=body, headers=headers), False)
    assert_forbidden(world.client.post("/v1/events", content=body, headers=headers | auth("reader")))
    assert_forbidden(world.client.post("/v1/events", content=body, headers=headers | auth("admin")))
    response = world.client.post("/v1/events", content=body, headers=headers | auth("publisher"))
    assert response.status_code == 202 and response.json() == {"accepted": [event["event_id"]]}
    # Refused requests sent nothing; the accepted one reaches the read models.
    deadline = time.monotonic() + 30
    while world.client.get("/v1/tickets/T-role", headers=READER).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    listed = world.client.get("/v1/tickets", params={"customer_id": "cust-role"}, headers=READER).json()
    assert [item["view"]["ticket_id"] for item in listed["items"]] == ["T-role"]


def test_admin_needs_the_admin_role(world):
    for method in ("GET", "POST"):
        assert_unauthorized(world.client.request(method, "/v1/admin/rebuild"), False)
        assert_forbidden(world.client.request(method, "/v1/admin/rebuild", headers=auth("reader")))
        assert_forbidden(world.client.request(method, "/v1/admin/rebuild", headers=auth("publisher")))
    status = world.client.get("/v1/admin/rebuild", headers=auth("admin"))
    assert status.status_code == 200 and status.json()["status"] in ("idle", "done")


def test_health_and_metrics_are_open_by_default(world):
    assert world.client.get("/healthz").json() == {"status": "ok"}
    ready = world.client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready" and ready.json()["lag"] is not None
    assert "slatrack_intake_requests_total" in world.client.get("/metrics").text


def test_errors_are_json(world):
    for method, path, status in [
        ("GET", "/nowhere", 404),
        ("DELETE", "/v1/tickets", 405),
        ("PUT", "/v1/events", 405),
        ("GET", "/v1/tickets?limit=x", 422),
    ]:
        response = world.client.request(method, path, headers=READER)
        assert response.status_code == status
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert isinstance(body["error"], str) and isinstance(body["detail"], str)


def test_openapi_describes_the_security_and_the_responses(world):
    spec = world.client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": spec["components"]["securitySchemes"]["bearerAuth"]["description"],
    }
    expected = {
        ("/v1/events", "post"),
        ("/v1/tickets", "get"),
        ("/v1/tickets/{ticket_id}", "get"),
        ("/v1/tickets/{ticket_id}/timeline", "get"),
        ("/v1/customers/{customer_id}", "get"),
        ("/v1/customers/{customer_id}/billing", "get"),
        ("/v1/customers/{customer_id}/report", "get"),
        ("/v1/admin/rebuild", "get"),
        ("/v1/admin/rebuild", "post"),
    }
    operations = {(path, method): op for path, ops in spec["paths"].items() for method, op in ops.items()}
    assert expected <= set(operations)
    for key in expected:
        operation = operations[key]
        assert operation["security"] == [{"bearerAuth": []}], key
        assert {"401", "403"} <= set(operation["responses"]), key
        assert operation["responses"]["401"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorBody"
        }
    for key in (("/healthz", "get"), ("/readyz", "get"), ("/metrics", "get")):
        assert "security" not in operations[key]  # open by default
    assert "503" in operations[("/readyz", "get")]["responses"]
    assert "409" in operations[("/v1/admin/rebuild", "post")]["responses"]
    assert "x-slatrack-evaluated-at" in {
        h.lower() for h in operations[("/v1/tickets/{ticket_id}", "get")]["responses"]["200"]["headers"]
    }
    parameters = {p["name"] for p in operations[("/v1/tickets", "get")]["parameters"]}
    assert parameters == {
        "state",
        "priority",
        "clock_status",
        "breached",
        "at_risk",
        "due_before",
        "customer_id",
        "min_escalation_level",
        "overdue",
        "billing_status",
        "sort",
        "cursor",
        "limit",
    }
    assert world.client.get("/docs").status_code == 200


def test_no_token_is_ever_logged(world):
    # A request of its own: with pytest-xdist, the module's other tests may run in other workers.
    assert world.client.get("/v1/tickets", headers=READER).status_code == 200
    assert world.logs.lines  # the access log at least
    assert any("GET /v1/tickets" in line for line in world.logs.lines)
    for token in TOKENS.values():
        assert token not in world.logs.text
        assert token[-20:] not in world.logs.text


# -- admin: the rebuild (last: it switches the generation) -------------------------


def test_rebuild_through_the_api(world):
    store = world.api.store
    before = store.active_generation()
    admin = auth("admin")
    started = world.client.post("/v1/admin/rebuild", headers=admin)
    assert started.status_code == 202, started.text
    assert started.json()["status"] == "running"
    again = world.client.post("/v1/admin/rebuild", headers=admin)
    assert again.status_code == 409 and again.json()["error"] == "rebuild_running"
    deadline = time.monotonic() + 120
    while (status := world.client.get("/v1/admin/rebuild", headers=admin).json())["status"] == "running":
        assert 0 <= status["progress"] <= 1
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert status["status"] == "done", status
    assert status["report"]["switched"] and status["report"]["mismatches"] == []
    assert status["report"]["previous"] == before and status["progress"] == 1.0
    assert store.active_generation() == status["report"]["generation"] != before
    assert "slatrack_rebuild_progress_ratio 1.0" in world.client.get("/metrics").text
    # The queries answer from the new generation (its views as of the rebuild's clock).
    for ticket_id in list(world.views)[::15]:
        response = world.client.get(f"/v1/tickets/{ticket_id}", headers=READER)
        instant = datetime.fromisoformat(response.headers["x-slatrack-evaluated-at"])
        assert response.json() == world.replayed(ticket_id, instant)
    assert ticket_ids(walk(world.client, {"limit": 500}, READER)) == sorted(world.views)
