"""Benchmark of the queue (issue 15): GET /v1/tickets?sort=due and the console's /ui/ over a store
of ``--tickets`` tickets (default 100,000), in process (httpx over ASGI: no network, the app's own
work and the store's), on SQLite and, with ``--postgres DSN``, on a fresh PostgreSQL database.

The rows are synthetic (no engine run: the queries read columns, and the views are as large as
the engine's, about 1 KB): ``--open`` of them open (default 30 %), of which most have a running
clock (some overdue, some breached), a tenth both clocks paused; the rest resolved or closed. 500
customers; a tenth of the open tickets ``pending_review``.

The tables are analyzed after the load (a store that has been running has statistics). Each case
is requested ``--runs`` times (default 20) after one warm-up; prints one JSON line with
the median and the largest time of each case, in milliseconds, per backend. The issue's aim: a
page under 300 ms at 100,000 tickets.
"""

import argparse
import asyncio
import contextlib
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson

# The bench's own throwaway PostgreSQL database, as bench/projector.py makes one (this directory is
# on the path of a script run from it).
from projector import throwaway_database
from pydantic import SecretStr

from projections.policy import default_policy
from services.api.app import create_app
from services.bootstrap import Services
from services.config import Settings
from services.kafka.publisher import EventPublisher
from services.store import open_store
from services.worker.ports import BatchWrite, ReadModelStore, TicketRow

NOW = 1_794_877_200  # 2026-11-17T01:00:00Z
PRIORITIES = ("urgent", "high", "medium", "low")


def rows(count: int, open_share: float, seed: int = 15) -> Iterator[TicketRow]:
    rng = random.Random(seed)  # noqa: S311 - synthetic data, not secrets
    for n in range(count):
        customer = f"cust-{rng.randrange(500):04d}"
        is_open = rng.random() < open_share
        paused = is_open and rng.random() < 0.1
        running = is_open and not paused
        response_due = NOW + rng.randrange(-3 * 86400, 3 * 86400) if is_open else None
        resolution_due = (response_due or NOW) + rng.randrange(3600, 86400) if is_open else None
        status = "running" if running else ("paused" if paused else "stopped")
        due = min(d for d in (response_due, resolution_due) if d is not None) if running else None
        breached = bool(due is not None and due < NOW - 3600 and rng.random() < 0.7)
        view = {
            "ticket_id": f"T-{n:07d}",
            "customer_id": customer,
            "priority": rng.choice(PRIORITIES),
            "padding": "x" * 900,  # an engine view is about this large
        }
        yield TicketRow(
            ticket_id=f"T-{n:07d}",
            customer_id=customer,
            partition=n % 6,
            priority=view["priority"],
            category="incident",
            state="open" if is_open else rng.choice(("resolved", "closed", "closed")),
            status="open",
            escalation_level=1 if breached else 0,
            response_status=status,
            resolution_status=status,
            breached=breached,
            at_risk=bool(running and not breached and due is not None and due - NOW < 3600),
            response_due_at=response_due,
            resolution_due_at=resolution_due,
            next_due_at=due if due is not None and due > NOW else None,
            queue_due_at=due,
            next_change_at=None,
            billing_rule=None,
            billing_status="pending_review" if is_open and rng.random() < 0.1 else "none",
            billing_month=None,
            amount_cents=0,
            billable_seconds=0,
            opened_at=NOW - 86400,
            evaluated_at=NOW,
            view=orjson.dumps(view),
        )


def fill(store: ReadModelStore, count: int, open_share: float) -> None:
    store.migrate()
    generation = store.create_generation("bench")
    store.activate_generation(generation)
    batch: list[TicketRow] = []
    offset = 0
    for row in rows(count, open_share):
        batch.append(row)
        if len(batch) == 5000:
            store.commit_batch(generation, BatchWrite("bench", {0: (offset, offset + 1)}, tickets=batch))
            offset, batch = offset + 1, []
    if batch:
        store.commit_batch(generation, BatchWrite("bench", {0: (offset, offset + 1)}, tickets=batch))
    # Fresh statistics, as autovacuum (PostgreSQL) and PRAGMA optimize (SQLite, every 10 minutes)
    # have them for a store that has been running: a just-loaded table has none.
    store._write(lambda tx: tx.run("ANALYZE tickets"))  # type: ignore[attr-defined]


CASES: list[tuple[str, str, dict[str, str]]] = [
    ("api_queue_first_page", "/v1/tickets", {"sort": "due", "state": "open", "limit": "100"}),
    ("api_queue_overdue", "/v1/tickets", {"sort": "due", "state": "open", "overdue": "true"}),
    (
        "api_queue_pending_review",
        "/v1/tickets",
        {"sort": "due", "state": "open", "billing_status": "pending_review"},
    ),
    ("api_queue_customer", "/v1/tickets", {"sort": "due", "state": "open", "customer_id": "cust-0042"}),
    ("api_queue_page_20", "/v1/tickets", {"sort": "due", "state": "open", "limit": "100"}),  # 20 pages in
    ("api_due_before", "/v1/tickets", {"due_before": "2026-11-17T09:00:00-05:00", "limit": "100"}),
    ("console_queue", "/ui/", {}),
    ("console_queue_pending_review", "/ui/", {"billing_status": "pending_review"}),
    ("console_queue_urgent_breached", "/ui/", {"priority": "urgent", "breached": "true"}),
]


async def measure(store: ReadModelStore, settings: Settings, runs: int) -> dict[str, dict[str, float]]:
    wired = Services(settings, default_policy(), EventPublisher(settings), store)
    app = create_app(wired)
    transport = httpx.ASGITransport(app)
    results: dict[str, dict[str, float]] = {}
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        for name, path, params in CASES:
            query = dict(params)
            if name == "api_queue_page_20":
                for _ in range(20):
                    page = (await client.get(path, params=query)).json()
                    query["cursor"] = page["next_cursor"]
            times = []
            for i in range(runs + 1):
                started = time.perf_counter()
                response = await client.get(path, params=query)
                elapsed = (time.perf_counter() - started) * 1000
                assert response.status_code == 200, (name, response.status_code, response.text[:300])
                if i:
                    times.append(elapsed)
            results[name] = {"median_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1)}
            print(f"  {name}: {results[name]}", file=sys.stderr)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--open", type=float, default=0.3, dest="open_share")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--postgres", default="", help="a PostgreSQL DSN: also measure there")
    args = parser.parse_args()
    report: dict[str, Any] = {"tickets": args.tickets, "open_share": args.open_share}
    with tempfile.TemporaryDirectory() as data:
        backends: list[tuple[str, Settings]] = [
            ("sqlite", Settings(data_dir=Path(data), kafka_bootstrap="127.0.0.1:1"))
        ]
        with contextlib.ExitStack() as stack:
            if args.postgres:
                url = stack.enter_context(throwaway_database(args.postgres))
                backends.append(
                    (
                        "postgres",
                        Settings(
                            data_dir=Path(data), kafka_bootstrap="127.0.0.1:1", database_url=SecretStr(url)
                        ),
                    )
                )
            for name, settings in backends:
                store = open_store(settings)
                try:
                    started = time.perf_counter()
                    fill(store, args.tickets, args.open_share)
                    print(
                        f"{name}: {args.tickets} tickets in {time.perf_counter() - started:.1f} s",
                        file=sys.stderr,
                    )
                    report[name] = asyncio.run(measure(store, settings, args.runs))
                finally:
                    store.close()
    print(orjson.dumps(report).decode())


if __name__ == "__main__":
    main()
