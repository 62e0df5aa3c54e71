"""Benchmark of the pure engine: ticket views computed per second.

100,000 simulated tickets of about ten events each (plus their customers'
invoices). In the same run, for comparison: how fast the same events are
decoded from JSON (the cost every consumer pays anyway). Prints a summary and
one JSON line.
"""

import argparse
import os
import platform
import resource
import time
from datetime import UTC

import orjson

from events import AccountEvent, decode_event
from projections.account import account_standing
from projections.policy import default_policy
from projections.replay import latest_instant
from projections.ticket import evaluate
from projections.timeline import Recorded, history
from services.dev.simulator import Helpdesk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    policy = default_policy()
    raw = [orjson.dumps(e) for e in Helpdesk(seed=args.seed).history(args.tickets)]

    started = time.perf_counter()
    records = [Recorded(seq, decode_event(line)) for seq, line in enumerate(raw)]
    decode_seconds = time.perf_counter() - started

    tickets: dict[str, list[Recorded]] = {}
    accounts: dict[str, list[Recorded]] = {}
    for record in records:
        event = record.event
        if isinstance(event, AccountEvent):
            accounts.setdefault(event.customer_id, []).append(record)
        else:
            tickets.setdefault(event.ticket_id, []).append(record)
    as_of = latest_instant(records)
    assert as_of is not None

    started = time.perf_counter()
    standings = {c: account_standing(history(r, as_of), policy, as_of) for c, r in accounts.items()}
    views = 0
    for ticket_records in tickets.values():
        customer = ticket_records[0].event.customer_id
        state = evaluate(ticket_records, policy, as_of, standings.get(customer))
        if state is not None:
            state.view()
            views += 1
    engine_seconds = time.perf_counter() - started

    ticket_events = sum(len(r) for r in tickets.values())
    result = {
        "tickets": views,
        "events": len(records),
        "events_per_ticket": round(ticket_events / max(views, 1), 2),
        "views_per_s": round(views / engine_seconds),
        "engine_events_per_s": round(len(records) / engine_seconds),
        "decode_events_per_s": round(len(records) / decode_seconds),
        "engine_seconds": round(engine_seconds, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "as_of": as_of.astimezone(UTC).isoformat(),
    }
    print(
        f"engine: {views} ticket views in {engine_seconds:.1f} s = {result['views_per_s']} views/s "
        f"({result['engine_events_per_s']} events/s); decoding the same events: "
        f"{result['decode_events_per_s']} events/s"
    )
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
