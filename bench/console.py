"""Benchmark of the web console's pages (``/ui/``) over a store of 100,000 tickets.

1. Templates: ``--templates`` tickets (default 2,000) of the simulated desk
   (services.dev.simulator, ``--template-customers`` customers, 60 days from 2026-09-01, their
   invoices included), cut at ``--cut`` (default 2026-10-30T00:00:00Z: the tickets opened in the
   last days before it are still open, as a live desk's are), folded by the real projector
   in-process (batches of 20,000 events, one transaction each, as ``slatrack rebuild`` does) into
   a fresh SQLite store, its clock at the cut.
2. Copies: the template's rows (tickets, customers and their events) written again under copies
   of its customers, ``{customer}-{n:03d}``, until the store holds ``--tickets`` tickets (default
   100,000: 50 copies of 2,000, 3,000 customers of about 33 tickets, as bench/projector.py's desk),
   each copy with the store's own ``commit_batch`` (one transaction a copy; events on their
   customer's murmur2 partition, offsets continuing). A copy's rows are the template's byte for
   byte but for the customer id (in the columns, in the views and in the events' bodies): a
   customer's id changes nothing of what the engine computes for its tickets, so these are the
   rows the projector would have written for the copies' events, at a fraction of the time
   (the projector in-process does about 5,000 events/s here: 1,000,000 events would take over
   3 minutes). The rows' ``signals`` and ``marks`` (ids of signals and counters, which name the
   customer) are copied as they are: no page reads them.
3. The real HTTP app (``create_app``, uvicorn on a free port in a thread, as ``slatrack serve
   --role api`` serves it) over that store, one reader token; signed in through ``POST
   /ui/sign-in`` (its cookie), then each page ``--requests`` times (default 20, after 2 not
   timed) with httpx: the queue (default and filtered), the customers, a customer's month (the
   customer of the most tickets, the cut's month) and a ticket (an open one of the most events);
   for comparison in the same run, the API's ``GET /v1/tickets`` (a page of 100) and that
   customer's monthly report (JSON). Pages not built yet answer what they answer: their status
   codes are reported, and only pages that answered 200 count in ``slowest_p95_ms``.

Prints a summary, then one JSON line: slowest_p95_ms (of the console's pages that answered 200),
under_300_ms (whether each of them has a p95 under 300 ms), tickets, customers, events, the
seconds of each phase (phase_seconds), and per page its path, statuses, median_ms, p95_ms and
bytes. ``make bench`` runs it with its defaults (about a minute and a half on our 2-core machines).
"""

import argparse
import asyncio
import contextlib
import dataclasses
import os
import platform
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson
import uvicorn
from pydantic import SecretStr

from events import decode_event
from projections.policy import default_policy
from services.api.app import create_app
from services.api.console.access import COOKIE
from services.bootstrap import Services
from services.config import Settings
from services.dev.simulator import Helpdesk
from services.kafka.publisher import EventPublisher
from services.kafka.routing import expected_partition
from services.runtime import tune_gc
from services.store import open_store
from services.worker.batches import ConsumedBatch, ConsumedEvent
from services.worker.ports import BatchWrite, CustomerRow, ReadModelStore, StoredEvent, TicketRow
from services.worker.projector import Projector

TOPIC = "ticket-events"
PARTITIONS = 6
TOKEN = "console-bench-reader-token-" + "0" * 16
FEED_BATCH = 20_000


def template_events(tickets: int, customers: int, seed: int, cut: datetime) -> list[dict[str, Any]]:
    """The simulated desk's events up to ``cut``, in time order."""
    events = Helpdesk(seed=seed, customers=customers, days=60).history(tickets)
    kept = [e for e in events if datetime.fromisoformat(e["occurred_at"]) <= cut]
    return sorted(kept, key=lambda e: datetime.fromisoformat(e["occurred_at"]))


async def _project(store: ReadModelStore, events: list[dict[str, Any]], cut: datetime) -> None:
    async def no_dead_letters(items: Any) -> None:
        raise RuntimeError(f"the simulated desk's events are valid: {items!r:.300}")

    projector = Projector(
        store, default_policy(), TOPIC, clock=lambda: cut, count_metrics=False, dead_letter=no_dead_letters
    )
    await projector.open()
    await projector.start_offsets(set(range(PARTITIONS)))
    offsets = dict.fromkeys(range(PARTITIONS), 0)
    for start in range(0, len(events), FEED_BATCH):
        valid: list[ConsumedEvent] = []
        ranges: dict[int, list[int]] = {}  # partition -> [first offset, next offset]
        for document in events[start : start + FEED_BATCH]:
            raw = orjson.dumps(document)
            partition = expected_partition(document["customer_id"].encode(), PARTITIONS)
            first = ranges.setdefault(partition, [offsets[partition], offsets[partition]])
            valid.append(ConsumedEvent(decode_event(raw), partition, offsets[partition], raw))
            offsets[partition] += 1
            first[1] = offsets[partition]
        await projector.handle(ConsumedBatch(valid, {p: (a, b) for p, (a, b) in ranges.items()}))


Row = TypeVar("Row", TicketRow, CustomerRow)


def _copied(row: Row, names: dict[str, str], partitions: dict[str, int]) -> Row:
    """A template's row under its customer's copy (id, partition, and the id in its view)."""
    name = names[row.customer_id]
    return dataclasses.replace(
        row, customer_id=name, partition=partitions[row.customer_id], view=_renamed(row.view, name)
    )


def _renamed(view: bytes, customer: str) -> bytes:
    document = orjson.loads(view)
    if "customer_id" in document:
        document["customer_id"] = customer
    return orjson.dumps(document)


def copy_rows(store: ReadModelStore, copies: int) -> None:
    """The template's rows written again under ``copies - 1`` copies of its customers."""
    generation = store.active_generation()
    assert generation is not None
    keys = store.ticket_keys(generation)
    customers = sorted({customer for customer, _ in keys})
    tickets = store.ticket_rows(generation, keys)
    events = store.events_of_tickets(generation, keys)
    accounts = store.account_events_of(generation, customers)
    standing = store.customer_rows(generation, customers)
    template_events_ = [e for stored in events.values() for e in stored]
    template_events_ += [e for stored in accounts.values() for e in stored]
    for n in range(1, copies):
        names = {customer: f"{customer}-{n:03d}" for customer in customers}
        partitions = {c: expected_partition(name.encode(), PARTITIONS) for c, name in names.items()}
        next_offsets = store.stored_offsets(generation, TOPIC)
        starts = {p: next_offsets.get(p, 0) for p in range(PARTITIONS)}
        offsets = dict(starts)
        write = BatchWrite(TOPIC, {})
        for event in template_events_:
            name, partition = names[event.customer_id], partitions[event.customer_id]
            body = orjson.dumps({**orjson.loads(event.body), "customer_id": name})
            write.events.append(
                StoredEvent(
                    event.event_id,
                    event.ticket_id,
                    name,
                    partition,
                    offsets[partition],
                    event.occurred_at,
                    body,
                )
            )
            offsets[partition] += 1
        write.tickets = [_copied(row, names, partitions) for row in tickets.values()]
        write.customers = [_copied(row, names, partitions) for row in standing.values()]
        write.offsets = {p: (starts[p], offsets[p]) for p in range(PARTITIONS) if offsets[p] > starts[p]}
        store.commit_batch(generation, write)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.contextmanager
def serving(settings: Settings, store: ReadModelStore) -> Iterator[str]:
    """The app over ``store`` on a free port, in a thread with its own event loop; its base URL."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="console-bench", daemon=True)
    thread.start()
    app = create_app(Services(settings, default_policy(), EventPublisher(settings), store))
    # IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted connections only for a socket that says it
    # is TCP (else each answer on a kept-alive connection waits ~40 ms: Nagle against delayed ACK).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    server = _Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off"))
    task = asyncio.run_coroutine_threadsafe(server.serve(sockets=[sock]), loop)
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if task.done() or time.monotonic() > deadline:
                raise RuntimeError(f"the app did not start: {task.exception() if task.done() else 'timeout'}")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            task.result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile (p95 of 20 values: the 19th smallest)."""
    ranked = sorted(values)
    return ranked[max(0, -(-int(fraction * 100) * len(ranked) // 100) - 1)]


def timed(
    client: httpx.Client, path: str, requests: int, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    for _ in range(2):  # not timed: the first request of a path fills caches (templates, the policy)
        client.get(path, headers=headers)
    statuses: Counter[int] = Counter()
    millis: list[float] = []
    size = 0
    for _ in range(requests):
        started = time.perf_counter()
        response = client.get(path, headers=headers)
        millis.append((time.perf_counter() - started) * 1000)
        statuses[response.status_code] += 1
        size = len(response.content)
    return {
        "path": path,
        "statuses": {str(code): count for code, count in sorted(statuses.items())},
        "median_ms": round(statistics.median(millis), 1),
        "p95_ms": round(percentile(millis, 0.95), 1),
        "bytes": size,
    }


def pick(store: ReadModelStore, month: str, copies: int) -> tuple[str, str, str]:
    """Among the last copy's customers (the pages must not be faster for the template's): the
    customer with the most tickets dispatched in ``month``, and an open ticket of the most events
    (its customer, its id)."""
    generation = store.active_generation()
    assert generation is not None
    keys = store.ticket_keys(generation)
    suffix = f"-{copies - 1:03d}"
    mine = [key for key in keys if key[0].endswith(suffix)] if copies > 1 else keys
    rows = store.ticket_rows(generation, mine)
    per_customer = Counter(
        row.customer_id
        for row in rows.values()
        if datetime.fromtimestamp(row.opened_at, UTC).strftime("%Y-%m") == month
    )
    customer = per_customer.most_common(1)[0][0] if per_customer else mine[0][0]
    open_rows = [key for key, row in rows.items() if row.state == "open"] or list(rows)
    counts = {key: len(events) for key, events in store.events_of_tickets(generation, open_rows).items()}
    ticket = max(open_rows, key=lambda key: (counts.get(key, 0), key))
    return customer, ticket[0], ticket[1]


def main() -> None:
    tune_gc()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tickets", type=int, default=100_000, help="tickets in the store (about)")
    parser.add_argument("--templates", type=int, default=2_000, help="tickets projected for real")
    parser.add_argument("--template-customers", type=int, default=60)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--cut", default="2026-10-30T00:00:00Z", help="the store's instant (the projector's clock)"
    )
    parser.add_argument("--requests", type=int, default=20, help="timed requests per page")
    args = parser.parse_args()
    cut = datetime.fromisoformat(args.cut.replace("Z", "+00:00"))
    month = (cut - timedelta(seconds=1)).strftime("%Y-%m")
    copies = max(1, round(args.tickets / args.templates))
    phases: dict[str, float] = {}

    def phase(name: str, started: float) -> None:
        phases[name] = round(time.perf_counter() - started, 1)
        print(f"  {name}: {phases[name]} s", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="slatrack-console-bench-") as tmp:
        tokens = [{"name": "bench-reader", "token": TOKEN, "roles": ["reader"]}]
        settings = Settings(
            kafka_bootstrap="127.0.0.1:1",  # never contacted: nothing is published
            data_dir=Path(tmp),
            api_tokens=SecretStr(orjson.dumps(tokens).decode()),
        )
        store = open_store(settings)
        try:
            started = time.perf_counter()
            events = template_events(args.templates, args.template_customers, args.seed, cut)
            asyncio.run(_project(store, events, cut))
            phase("templates", started)
            started = time.perf_counter()
            copy_rows(store, copies)
            phase("copies", started)
            generation = store.active_generation()
            assert generation is not None
            counts = store.counts(generation)
            customer, ticket_customer, ticket = pick(store, month, copies)
            pages = {
                "queue": "/ui/",
                "queue_filtered": "/ui/?priority=high&breached=true",
                "queue_customer": f"/ui/?customer={customer}",
                "customers": "/ui/customers",
                "customer": f"/ui/customers/{customer}?month={month}",
                "ticket": f"/ui/customers/{ticket_customer}/tickets/{ticket}",
            }
            api = {
                "api_tickets": "/v1/tickets?limit=100",
                "api_report": f"/v1/customers/{customer}/report?month={month}",
            }
            started = time.perf_counter()
            with serving(settings, store) as url, httpx.Client(base_url=url, timeout=120) as client:
                signed = client.post("/ui/sign-in", data={"token": TOKEN})
                if signed.status_code != 303 or COOKIE not in client.cookies:
                    raise RuntimeError(f"sign-in answered {signed.status_code}: {signed.text[:300]}")
                measured = {name: timed(client, path, args.requests) for name, path in pages.items()}
                bearer = {"authorization": f"Bearer {TOKEN}"}
                measured |= {name: timed(client, path, args.requests, bearer) for name, path in api.items()}
            phase("requests", started)
        finally:
            store.close()

    served = [m["p95_ms"] for name, m in measured.items() if name in pages and set(m["statuses"]) == {"200"}]
    result: dict[str, Any] = {
        "slowest_p95_ms": max(served) if served else None,
        "under_300_ms": bool(served) and max(served) < 300,
        "tickets": counts.get("tickets"),
        "customers": counts.get("customers"),
        "events": counts.get("events"),
        "copies": copies,
        "templates": args.templates,
        "requests": args.requests,
        "pages": measured,
        "phase_seconds": phases,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    lines = [
        f"console: {result['tickets']} tickets of {result['customers']} customers "
        f"({result['events']} events; "
        f"{args.templates} projected, {copies} copies), {args.requests} requests a page:"
    ]
    for name, m in measured.items():
        statuses = ", ".join(f"{count}x {code}" for code, count in m["statuses"].items())
        lines.append(
            f"  {name:15} median {m['median_ms']:7.1f} ms, p95 {m['p95_ms']:7.1f} ms, {m['bytes']:>8} bytes "
            f"({statuses})  {m['path']}"
        )
    print("\n".join(lines), file=sys.stderr)
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
