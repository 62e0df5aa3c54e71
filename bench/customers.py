"""Benchmark of the customer pages (issue 15) over a store of ``--tickets`` tickets (default
100,000, about 1,000,000 events, the simulated desk's 300 customers over 60 days from
2026-09-01).

The read models are written straight into a fresh store (SQLite in a temporary directory, or a
fresh database on the PostgreSQL server of ``--postgres``): every simulated event as a worker
stores it, one ticket row per ticket (its priority and dispatch from its ticket.opened; its
state and breached flag drawn at random, a fifth open and a third of those breached: the
counts' queries read these columns only), and one row per customer. Then the app (in-process,
over httpx's ASGI transport: no network, no broker) answers, ``--repeat`` times each (median
and worst reported, in ms):

- ``GET /v1/customers`` (a page of 100) and the console's ``/ui/customers`` (the same page,
  rendered), also for a token limited to 20 customers;
- ``GET /v1/customers/{id}/report?month=2026-10`` and the console's
  ``/ui/customers/{id}?month=2026-10`` (standing and the month's report, rendered), and the
  CSV download, for the customer with the most tickets.

Prints one JSON line.
"""

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
from pydantic import SecretStr

from events import decode_event, encode_event
from projections.policy import default_policy
from services.api.app import create_app
from services.api.console.access import cookie_value
from services.bootstrap import Services
from services.config import Settings
from services.dev.simulator import Helpdesk
from services.store import open_store
from services.worker.ports import BatchWrite, CustomerRow, ReadModelStore, StoredEvent, TicketRow

TOPIC = "ticket-events"
PARTITIONS = 6
SCOPED = "bench-scoped-reader-token-0123456789"
READER = "bench-reader-token-0123456789abcdef"


def _ticket_row(event: dict[str, Any], partition: int, rng: random.Random) -> TicketRow:
    opened = int(decode_event(orjson.dumps(event)).occurred_at.timestamp())
    state = rng.choices(["open", "resolved", "closed"], [2, 3, 5])[0]
    breached = rng.random() < 0.33
    return TicketRow(
        ticket_id=event["ticket_id"],
        customer_id=event["customer_id"],
        partition=partition,
        priority=event["data"]["priority"],
        category=event["data"].get("category", "incident"),
        state=state,
        status="open",
        escalation_level=0,
        response_status="stopped",
        resolution_status="running" if state == "open" else "stopped",
        breached=breached,
        at_risk=False,
        response_due_at=None,
        resolution_due_at=None,
        next_due_at=None,
        queue_due_at=None,
        next_change_at=None,
        billing_rule=None,
        billing_status="none",
        billing_month=None,
        amount_cents=0,
        billable_seconds=0,
        opened_at=opened,
        evaluated_at=opened,
        view=b"{}",
    )


def _partition(customer: str) -> int:
    return sum(customer.encode()) % PARTITIONS


def fill(store: ReadModelStore, tickets: int, batch_events: int = 20_000) -> dict[str, int]:
    """The desk's events, ticket rows and customer rows, committed in batches; tickets per customer."""
    generation = store.create_generation("bench")
    store.activate_generation(generation)
    rng = random.Random(7)  # noqa: S311 - simulated data
    desk = Helpdesk(seed=1, days=60)
    offsets = dict.fromkeys(range(PARTITIONS), 0)
    write = BatchWrite(TOPIC, {})
    per_customer: dict[str, int] = {}
    customers: set[str] = set()

    def commit() -> None:
        nonlocal write
        write.customers = [
            CustomerRow(c, _partition(c), False, False, None, 1_790_000_000, orjson.dumps({"customer_id": c}))
            for c in sorted(customers)
        ]
        store.commit_batch(generation, write)
        write = BatchWrite(TOPIC, {})

    for event in desk.history(tickets):
        customer = event["customer_id"]
        customers.add(customer)
        partition = _partition(customer)
        offset = offsets[partition]
        start, _ = write.offsets.get(partition, (offset, offset))
        write.offsets[partition] = (start, offset + 1)
        offsets[partition] = offset + 1
        decoded = decode_event(orjson.dumps(event))
        write.events.append(
            StoredEvent(
                event_id=event["event_id"],
                ticket_id=event.get("ticket_id"),
                customer_id=customer,
                partition=partition,
                offset=offset,
                occurred_at=int(decoded.occurred_at.timestamp()),
                body=encode_event(decoded),
            )
        )
        if event["type"] == "ticket.opened":
            write.tickets.append(_ticket_row(event, partition, rng))
            per_customer[customer] = per_customer.get(customer, 0) + 1
        if len(write.events) >= batch_events:
            commit()
    commit()
    return per_customer


async def measure(
    app: Any, path: str, repeat: int, cookies: dict[str, str] | None = None
) -> dict[str, float]:
    transport = httpx.ASGITransport(app=app)
    times = []
    async with httpx.AsyncClient(transport=transport, base_url="http://bench", cookies=cookies) as client:
        for _ in range(repeat):
            started = time.perf_counter()
            response = await client.get(path, headers={"authorization": f"Bearer {READER}"})
            times.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, (path, response.status_code, response.text[:300])
    # The first request decodes the customer's history (the API keeps it decoded for the next).
    return {
        "first_ms": round(times[0], 1),
        "median_ms": round(statistics.median(times), 1),
        "max_ms": round(max(times), 1),
    }


@contextlib.contextmanager
def a_store(
    postgres: str | None, tickets: int, data_dir: str | None = None
) -> Iterator[tuple[Settings, ReadModelStore]]:
    with contextlib.ExitStack() as stack:
        directory = data_dir or stack.enter_context(tempfile.TemporaryDirectory())
        tokens = [
            {"name": "bench", "token": READER, "roles": ["reader"]},
            {
                "name": "portal",
                "token": SCOPED,
                "roles": ["reader"],
                "customers": [f"cust-{i:04d}" for i in range(0, 300, 15)],
            },
        ]
        values: dict[str, Any] = {"data_dir": Path(directory), "api_tokens": SecretStr(json.dumps(tokens))}
        if postgres is None:
            settings = Settings(**values)
            store = open_store(settings)
            try:
                yield settings, store
            finally:
                store.close()
            return
        from tests.worker_helpers import throwaway_database

        with throwaway_database(postgres, "slatrack_bench_customers") as url:
            settings = Settings(**values, database_url=SecretStr(url))
            store = open_store(settings)
            try:
                yield settings, store
            finally:
                store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--postgres", default=None, help="a PostgreSQL DSN (default: SQLite)")
    parser.add_argument("--data-dir", default=None, help="SQLite: keep the store there (filled once)")
    args = parser.parse_args()
    with a_store(args.postgres, args.tickets, args.data_dir) as (settings, store):
        started = time.perf_counter()
        if store.active_generation() is None:
            per_customer = fill(store, args.tickets)
        else:  # kept from an earlier run (--data-dir)
            generation = store.active_generation() or 0
            keys = store.ticket_keys(generation)
            per_customer = {}
            for customer, _ in keys:
                per_customer[customer] = per_customer.get(customer, 0) + 1
        filled = time.perf_counter() - started
        app = create_app(Services(settings, default_policy(), None, store))  # type: ignore[arg-type]
        biggest = max(per_customer, key=lambda c: per_customer[c])
        pages = {
            "api_customers": "/v1/customers?limit=100",
            "api_customers_last_page": "/v1/customers?limit=100&delinquent=false",
            "api_report": f"/v1/customers/{biggest}/report?month=2026-10",
            "ui_customers": "/ui/customers",
            "ui_customer": f"/ui/customers/{biggest}?month=2026-10",
            "ui_report_csv": f"/ui/customers/{biggest}/report.csv?month=2026-10",
        }
        figures: dict[str, Any] = {}
        for name, path in pages.items():
            cookie = {"slatrack_console": cookie_value(READER)} if path.startswith("/ui") else None
            figures[name] = asyncio.run(measure(app, path, args.repeat, cookie))
        figures["ui_customers_scoped"] = asyncio.run(
            measure(app, "/ui/customers", args.repeat, {"slatrack_console": cookie_value(SCOPED)})
        )
        counts = store.counts(store.active_generation() or 0)
    print(
        json.dumps(
            {
                "backend": "postgres" if args.postgres else "sqlite",
                "tickets": counts["tickets"],
                "events": counts["events"],
                "customers": counts["customers"],
                "biggest_customer_tickets": per_customer[biggest],
                "fill_seconds": round(filled, 1),
                **figures,
            }
        )
    )


if __name__ == "__main__":
    main()
