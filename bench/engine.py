"""Benchmark of the pure engine: ticket views computed per second.

100,000 simulated tickets of about ten events each (plus their customers'
invoices). In the same run, for comparison: how fast the same events are
decoded from JSON (the cost every consumer pays anyway), in batches of 2,000 as a worker
decodes them (``decode_events_per_s``), and all kept alive at once, as the engine's part of
the bench needs them (``decode_keep_events_per_s``: the collector's passes over the growing
heap weigh on it). Prints a summary and one JSON line.

Incremental folds (projections.checkpoints), on the same history: every event in time order,
applied to its ticket's checkpoint, each deriving the ticket's state as of that event's instant
(with its customer's account standing then), as a live worker does; once without building the
view, once with it, and the full recompute of the same sequence (the whole history replayed at
every event) for the ratio: ``incremental_events_per_s``, ``incremental_view_events_per_s``,
``full_recompute_events_per_s``.
"""

import argparse
import gc
import os
import platform
import resource
import time
from collections import OrderedDict
from datetime import UTC

import orjson

from events import AccountEvent, decode_event
from projections.account import AccountStanding, account_standing
from projections.checkpoints import Checkpoint, evaluate_from
from projections.policy import Policy, default_policy
from projections.replay import latest_instant
from projections.ticket import evaluate
from projections.timeline import Recorded, TicketKey, history, ticket_key
from services.dev.simulator import Helpdesk
from services.runtime import tune_gc
from services.worker.history_cache import bound
from services.worker.projector import CHECKPOINT_TICKETS

DECODE_BATCH = 2000  # a worker's batch (SLATRACK_CONSUMER_MAX_RECORDS)


def main() -> None:
    tune_gc()  # the collector as every slatrack process sets it (services.runtime)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--one-at-a-time-tickets",
        type=int,
        default=20_000,
        help="tickets whose events are applied one at a time (the full recompute is quadratic)",
    )
    args = parser.parse_args()

    policy = default_policy()
    raw = [orjson.dumps(e) for e in Helpdesk(seed=args.seed).history(args.tickets)]

    # Decoding as a worker decodes: a batch at a time, each dropped after it (the figure of the
    # issue's aim); then all of it kept, as the engine's part below needs (the collector walks a
    # growing heap then: the earlier figure, kept for comparison).
    started = time.perf_counter()
    for start in range(0, len(raw), DECODE_BATCH):
        batch = [decode_event(line) for line in raw[start : start + DECODE_BATCH]]
        batch.clear()
    decode_seconds = time.perf_counter() - started
    started = time.perf_counter()
    records = [Recorded(seq, decode_event(line)) for seq, line in enumerate(raw)]
    decode_keep_seconds = time.perf_counter() - started

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
    sample = set(list(tickets)[: args.one_at_a_time_tickets])
    sequence = [r for r in records if isinstance(r.event, AccountEvent) or r.event.ticket_id in sample]
    # The bench's own input (every decoded event of the run, which no worker holds at once) out
    # of the collector's way: its full collections would otherwise scan it again and again while
    # the checkpoints grow (as a worker's do, still collected), and measure the bench, not the engine.
    gc.collect()
    gc.freeze()
    incremental = one_at_a_time(sequence, policy, "incremental")
    with_views = one_at_a_time(sequence, policy, "incremental", views=True)
    full = one_at_a_time(sequence, policy, "full")
    gc.unfreeze()
    result = {
        "tickets": views,
        "events": len(records),
        "events_per_ticket": round(ticket_events / max(views, 1), 2),
        "views_per_s": round(views / engine_seconds),
        "engine_events_per_s": round(len(records) / engine_seconds),
        "decode_events_per_s": round(len(records) / decode_seconds),
        "decode_keep_events_per_s": round(len(records) / decode_keep_seconds),
        "engine_seconds": round(engine_seconds, 2),
        "incremental_events_per_s": round(incremental),
        "incremental_view_events_per_s": round(with_views),
        "full_recompute_events_per_s": round(full),
        "incremental_ratio": round(incremental / full, 1),
        "one_at_a_time_events": sum(not isinstance(r.event, AccountEvent) for r in sequence),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "as_of": as_of.astimezone(UTC).isoformat(),
    }
    print(
        f"engine: {views} ticket views in {engine_seconds:.1f} s = {result['views_per_s']} views/s "
        f"({result['engine_events_per_s']} events/s); decoding the same events: "
        f"{result['decode_events_per_s']} events/s in batches of {DECODE_BATCH} "
        f"({result['decode_keep_events_per_s']} events/s keeping all of them)"
    )
    print(
        f"one event at a time, in time order: incremental {result['incremental_events_per_s']} events/s "
        f"({result['incremental_view_events_per_s']} with the view built), full recompute "
        f"{result['full_recompute_events_per_s']} events/s ({result['incremental_ratio']}x)"
    )
    print(orjson.dumps(result).decode())


def one_at_a_time(records: list[Recorded], policy: Policy, how: str, *, views: bool = False) -> float:
    """Ticket events per second, each applied in time order to its ticket and the ticket's state
    derived as of the event's instant: from the ticket's checkpoint (``incremental``, one cache
    bounded as the worker's) or by replaying its history so far (``full``). The customer's
    standing is computed when an account event of its comes (its cost is not the engine's)."""
    ordered = sorted(records, key=lambda r: (r.at, r.seq))
    standings: dict[str, AccountStanding] = {}
    accounts: dict[str, list[Recorded]] = {}
    so_far: dict[TicketKey, list[Recorded]] = {}
    checkpoints: OrderedDict[TicketKey, Checkpoint] = OrderedDict()
    events, seconds = 0, 0.0
    for record in ordered:
        customer = record.event.customer_id
        key = ticket_key(record.event)
        if key is None:
            accounts.setdefault(customer, []).append(record)
            standings[customer] = account_standing(accounts[customer], policy, record.at)
            continue
        mine = so_far.setdefault(key, [])
        mine.append(record)
        standing = standings.get(customer)
        started = time.perf_counter()
        if how == "incremental":
            state = evaluate_from(key, mine, policy, record.at, standing, checkpoints)
            bound(checkpoints, CHECKPOINT_TICKETS)
        else:
            state = evaluate(mine, policy, record.at, standing)
        if views and state is not None:
            state.view()
        seconds += time.perf_counter() - started
        events += 1
    return events / seconds


if __name__ == "__main__":
    main()
