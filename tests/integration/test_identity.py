"""A ticket is its customer's ticket id, an event its customer's event id (issue 10, items 2 and 3),
over the real broker, intake and HTTP API, on SQLite and PostgreSQL; and two workers on
PostgreSQL, a customer per partition, cannot lose an update to each other."""

import asyncio
import contextlib
import signal
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from pydantic import SecretStr

from events import decode_event
from projections.policy import default_policy
from projections.replay import replay
from projections.timeline import Recorded
from services.api.queries import view_as_of
from services.cli.commands import main
from services.kafka.publisher import H_REASON
from services.store import open_store
from tests.feed import event
from tests.integration.live_api import AS_OF, LiveApi, auth, fresh_settings
from tests.kafka_helpers import produce, read_all
from tests.worker_helpers import applied, assignments, throwaway_database, wait_for, worker

pytestmark = pytest.mark.broker

READER, PUBLISHER = auth("reader"), auth("publisher")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def api(request, kafka_bootstrap, tmp_path) -> Iterator[LiveApi]:
    with contextlib.ExitStack() as stack:
        overrides: dict[str, Any] = {"data_dir": tmp_path}
        if request.param == "postgres":
            dsn = request.getfixturevalue("postgres_dsn")
            overrides["database_url"] = SecretStr(
                stack.enter_context(throwaway_database(dsn, "slatrack_identity"))
            )
        live = LiveApi(fresh_settings(kafka_bootstrap, **overrides))
        stack.callback(live.close)
        live.start_worker()
        yield live


def post(api: LiveApi, *events: dict) -> None:
    response = api.client.post("/v1/events", content=orjson.dumps(list(events)), headers=PUBLISHER)
    assert response.status_code == 202, response.text


def opened(
    event_id: str, customer: str, ticket: str, at: str = "2026-11-16T15:00:00Z", priority="low"
) -> dict:
    return event(event_id, "ticket.opened", at, customer, ticket, priority=priority)


def test_another_customer_cannot_resolve_a_ticket(api):
    log = [
        opened("o-1", "owner", "DT1"),
        event("x-1", "ticket.resolved", "2026-11-16T16:00:00Z", "intruder", "DT1"),
        event("o-2", "ticket.status_changed", "2026-11-16T17:00:00Z", "owner", "DT1", status="in_progress"),
    ]
    for e in log:
        post(api, e)
    api.wait_applied(3)

    mine = api.client.get("/v1/tickets/DT1", params={"customer_id": "owner"}, headers=READER)
    assert (
        mine.status_code == 200 and mine.json()["state"] == "open" and mine.json()["status"] == "in_progress"
    )
    theirs = api.client.get("/v1/tickets/DT1", params={"customer_id": "intruder"}, headers=READER)
    assert theirs.json()["state"] == "pending"  # their DT1 was never opened: it is not the owner's
    # Without a customer: the opened one (a stray event of another customer makes no ambiguity) ...
    plain = api.client.get("/v1/tickets/DT1", headers=READER)
    assert plain.status_code == 200 and plain.json()["customer_id"] == "owner"
    # ... unless two customers have really opened a ticket with that id.
    post(api, opened("x-2", "intruder", "DT1"))
    api.wait_applied(4)
    both = api.client.get("/v1/tickets/DT1", headers=READER)
    assert both.status_code == 409 and both.json()["error"] == "ambiguous_ticket"
    as_of = api.client.get(
        "/v1/tickets/DT1", params={"customer_id": "owner", "as_of": "2026-11-16T18:00:00Z"}, headers=READER
    )
    assert as_of.json()["state"] == "open"
    timeline = api.client.get("/v1/tickets/DT1/timeline", params={"customer_id": "owner"}, headers=READER)
    assert [e["event_id"] for e in timeline.json()["entries"]] == ["o-1", "o-2"]
    log.append(opened("x-2", "intruder", "DT1"))
    # The same in a replay of the log.
    records = [Recorded(i, decode_event(orjson.dumps(e))) for i, e in enumerate(log)]
    views = {
        (v["customer_id"], v["ticket_id"]): v for v in replay(records, default_policy(), AS_OF)["tickets"]
    }
    assert set(views) == {("owner", "DT1"), ("intruder", "DT1")}
    assert views["owner", "DT1"]["state"] == "open" and views["intruder", "DT1"]["state"] == "resolved"


def test_an_event_id_names_one_event(api):
    post(api, opened("D1", "desk", "DT1"))
    post(api, opened("D1", "desk", "DT3"))  # the same event id, another body: not an event
    post(api, opened("D1", "desk", "DT1"))  # the same event again: a duplicate
    post(api, opened("D1", "other-desk", "DT4"))  # another customer's D1: another event
    api.wait_applied(4)

    assert api.client.get("/v1/tickets/DT3", headers=READER).status_code == 404
    assert api.client.get("/v1/tickets/DT3/timeline", headers=READER).status_code == 404
    assert api.client.get("/v1/tickets/DT1", headers=READER).json()["state"] == "open"
    assert api.client.get("/v1/tickets/DT4", headers=READER).json()["state"] == "open"
    dead = asyncio.run(read_all(api.settings, api.settings.topic_dlq, 1))
    assert len(dead) == 1
    headers = {k: v.decode() for k, v in dead[0].headers}
    assert headers[H_REASON] == "duplicate_event_id_conflict"
    assert orjson.loads(dead[0].value)["ticket_id"] == "DT3"
    # explain and replay say the same: DT3 is not a ticket.
    env = {"SLATRACK_DATA_DIR": str(api.settings.data_dir)}
    if api.settings.database_url is not None:
        env["SLATRACK_DATABASE_URL"] = api.settings.database_url.get_secret_value()
    result = CliRunner().invoke(main, ["explain", "DT3"], env=env)
    assert result.exit_code == 1 and "unknown ticket 'DT3'" in result.output


def test_the_intake_refuses_two_bodies_of_one_event_id(api):
    one, other = opened("SZ-6000", "desk", "T1"), opened("SZ-6000", "desk", "T2")
    response = api.client.post("/v1/events", content=orjson.dumps([one, other]), headers=PUBLISHER)
    assert response.status_code == 422
    assert [(e["index"], e["kind"]) for e in response.json()["errors"]] == [
        (1, "duplicate_event_id_conflict")
    ]
    again = api.client.post("/v1/events", content=orjson.dumps([one, dict(one)]), headers=PUBLISHER)
    assert again.status_code == 202  # the same event twice: a duplicate, harmless
    api.wait_applied(2)
    assert api.client.get("/v1/tickets/T2", headers=READER).status_code == 404


@pytest.mark.postgres
async def test_two_workers_one_ticket_id_under_two_customers(postgres_settings, tmp_path):
    """race-a is on partition 4, race-b on 3: each worker's history of RACE-1 is its customer's."""
    settings = postgres_settings
    logs = [tmp_path / "w1.log", tmp_path / "w2.log"]
    workers = [worker(settings, logs[0]), worker(settings, logs[1])]
    try:
        await wait_for(
            lambda: (
                assignments(logs[0])
                and assignments(logs[1])
                and (assignments(logs[0]) | assignments(logs[1])) == set(range(6))
            ),
            60,
            "both workers to get partitions",
        )
        owners = {p: n for n, log in enumerate(logs) for p in assignments(log)}
        messages = [
            opened("ra-1", "race-a", "RACE-1", "2026-11-30T15:00:00Z", "medium"),
            event("rb-1", "ticket.resolved", "2026-11-30T15:10:00Z", "race-b", "RACE-1"),
            event(
                "ra-2",
                "ticket.status_changed",
                "2026-11-30T15:20:00Z",
                "race-a",
                "RACE-1",
                status="in_progress",
            ),
        ]
        for message in messages:  # one at a time, as the reproduction sent them
            await produce(settings, [(message["customer_id"].encode(), orjson.dumps(message))])
            await asyncio.sleep(0.5)
        await wait_for(lambda: applied(settings) == 3, 60, "the three events")
    finally:
        for process in workers:
            process.send_signal(signal.SIGTERM)
        for process in workers:
            process.wait(30)
    store = open_store(settings)
    try:
        generation = store.active_generation()
        assert generation is not None
        a, b = store.ticket(generation, ("race-a", "RACE-1")), store.ticket(generation, ("race-b", "RACE-1"))
        assert a is not None and b is not None
        assert (a.partition, b.partition) == (4, 3) and owners[4] != owners[3], "two workers, one each"
        view = orjson.loads(a.view)
        assert (view["state"], view["status"]) == ("open", "in_progress")
        assert b.state == "pending"
        as_of = datetime.fromtimestamp(a.evaluated_at, UTC)
        assert view == view_as_of(store, generation, default_policy(), ("race-a", "RACE-1"), as_of)
    finally:
        store.close()
