"""``slatrack rebuild``: replay the whole log into a fresh generation, check it,
then switch to it atomically while the current one keeps serving.

1. Create a new generation, bound to the configured policy, and read
   ``ticket-events`` from its earliest offset (all partitions, no consumer
   group) with the same projector code the workers run, until the end of the
   log. It records no signals: a generation that is never switched to must
   send nothing.
2. Check it against the live generation: for every partition, both must hold
   the same events below the offsets both have reached; every rebuilt ticket
   whose events all lie there must have the view its events give, and so must
   the live row (with the same policy): a live row that does not is reported
   (``live_rows_wrong``), and the switch repairs it.
3. Switch. Workers notice at their next write (the store says the generation
   changed), take the generation's policy and continue from its offsets. The
   switch carries the live workers' metric marks and signal ledgers over, so
   nothing is counted or sent twice; where the new policy changes what a
   ticket asserts, the next timer pass sends the difference. The previous
   generation is kept (for a look back); older ones are dropped. A rebuild
   that finds a difference, or fails, drops its generation (a failed attempt
   once left 181 MB behind); ``--no-switch`` keeps it for a look, until the
   next rebuild that switches.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from projections.contracts import Contracts, PolicySource, contracts_of
from projections.policy import Policy, parse_policy
from projections.quarantine import view_at
from projections.timeline import Recorded, TicketKey
from services.config import Settings
from services.worker.batches import ConsumedBatch, PolicyLog, WholeLog
from services.worker.generations import keep_only, policy_text
from services.worker.histories import decode_stored, stored_versions
from services.worker.ports import GenerationBehind, ReadModelStore, TicketQuery, TicketRow
from services.worker.projector import POLICY_TOPIC, Projector

log = logging.getLogger(__name__)


@dataclass
class RebuildReport:
    generation: int
    previous: int | None
    events: int = 0
    invalid: int = 0
    tickets: int = 0
    customers: int = 0
    seconds: float = 0.0
    checked_partitions: int = 0
    checked_tickets: int = 0
    mismatches: list[str] = field(default_factory=list)
    # Live rows that differ from the view their own events give: the switch repairs them.
    live_rows_wrong: list[str] = field(default_factory=list)
    switched: bool = False
    dropped: bool = False
    policy_version: str | None = None
    policy_digest: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items()}


async def rebuild(
    settings: Settings,
    store: ReadModelStore,
    policy: Policy,
    progress: Callable[[int, int], None] = lambda done, total: None,
    switch: bool = True,
    *,
    log_source: WholeLog,
    policy_log: PolicyLog | None = None,
    policy_topic: str = POLICY_TOPIC,
) -> RebuildReport:
    """``log_source``: the whole of ``ticket-events`` (services.kafka.log_reader.WholeLogReader);
    ``policy_log``: the policy topic, read in full before the first batch (None: no contracts)."""
    started = time.monotonic()
    await asyncio.to_thread(store.migrate)
    previous = await asyncio.to_thread(store.active_generation)
    generation = await asyncio.to_thread(store.create_generation, "rebuild", policy_text(policy))
    report = RebuildReport(generation, previous, policy_version=policy.version, policy_digest=policy.digest)
    try:
        projector = Projector(
            store,
            policy,
            settings.topic_events,
            generation=generation,
            must_be_active=False,
            count_metrics=False,
            record_signals=False,
            policy_log=policy_log,
            policy_topic=policy_topic,
        )
        await projector.open()
        # A worker that cannot read the policy topic reads it again later and recomputes; a rebuild
        # cannot: it reads it in full now, or fails (a generation measured without its versions
        # would pass its own check and be switched to).
        await projector.read_policies()

        async def project(batch: ConsumedBatch) -> None:
            # Invalid messages were dead-lettered when they first came; here they are only counted.
            await projector.handle(batch)
            report.events += len(batch.valid)
            report.invalid += batch.rejected

        async with log_source as reader:
            projector.partitions = set(reader.partitions)
            await reader.read_to_end(project, progress)
            if previous is not None:
                await asyncio.to_thread(
                    _check, store, projector.contracts, previous, generation, settings.topic_events, report
                )
            if switch and not report.mismatches:
                await _switch(store, reader, project, progress, report, settings.topic_events)
        counts = await asyncio.to_thread(store.counts, generation)
        report.tickets, report.customers = counts["tickets"], counts["customers"]
        if report.switched:
            await asyncio.to_thread(keep_only, store, {generation, previous})
            log.info("switched to generation %d (previous %s kept)", generation, previous)
        elif report.mismatches:
            await _drop(store, report)
    except BaseException:
        if not report.switched:
            await _drop(store, report)
        raise
    report.seconds = round(time.monotonic() - started, 3)
    return report


SWITCH_ATTEMPTS = 10


async def _switch(
    store: ReadModelStore,
    reader: WholeLog,
    project: Callable[[ConsumedBatch], Awaitable[None]],
    progress: Callable[[int, int], None],
    report: RebuildReport,
    topic: str,
) -> None:
    """Switch once the new generation has read as far as the live one: the live workers go on
    committing meanwhile, and the marks and ledgers the switch takes over from them must
    describe nothing the new generation has not read. Read on until then."""
    for _ in range(SWITCH_ATTEMPTS):
        try:
            await asyncio.to_thread(store.activate_generation, report.generation, covering=topic)
        except GenerationBehind as exc:
            log.info("the live workers have read further (%s); reading on before switching", exc)
            await reader.read_to_end(project, progress)
            continue
        report.switched = True
        return
    report.mismatches.append(
        f"not switched: the live generation stayed ahead after {SWITCH_ATTEMPTS} attempts to catch up"
    )


async def _drop(store: ReadModelStore, report: RebuildReport) -> None:
    await asyncio.to_thread(store.drop_generation, report.generation)
    report.dropped = True
    log.info("generation %d dropped: it will not be switched to", report.generation)


def _check(
    store: ReadModelStore, source: PolicySource, live: int, new: int, topic: str, report: RebuildReport
) -> None:
    """The new generation must hold what the live one holds for the same offsets, and each of its
    rows the view its events give; live rows that do not are reported (the switch repairs them)."""
    contracts = contracts_of(source)
    live_offsets = store.stored_offsets(live, topic)
    new_offsets = store.stored_offsets(new, topic)
    below: dict[int, int] = {}
    for partition in sorted(set(live_offsets) | set(new_offsets)):
        upto = min(live_offsets.get(partition, 0), new_offsets.get(partition, 0))
        below[partition] = upto
        live_events = set(store.event_positions(live, partition, upto))
        new_events = set(store.event_positions(new, partition, upto))
        if live_events - new_events:  # the log no longer holds what the live workers read
            report.mismatches.append(
                f"partition {partition}: events below offset {upto} differ "
                f"({len(live_events)} live, {len(new_events)} rebuilt)"
            )
        elif new_events - live_events:  # the live generation lost some (an older slatrack did)
            report.live_rows_wrong.append(
                f"partition {partition}: the live generation lacks {len(new_events - live_events)} of the "
                f"log's events below offset {upto}"
            )
        report.checked_partitions += 1

    live_text = store.generation_policy(live)
    live_policy = parse_policy(live_text, f"generation {live}") if live_text is not None else None
    same_policy = (
        live_policy is not None
        and Contracts(live_policy, stored_versions(store, live)).digest == contracts.digest
    )
    policy = contracts

    def comparable(key: TicketKey, histories: dict, accounts: dict) -> bool:
        events = histories.get(key, []) + accounts.get(key[0], [])
        return bool(events) and all(e.offset < below.get(e.partition, 0) for e in events)

    def story_of(generation: int, keys: list[TicketKey]) -> tuple[dict, dict]:
        return store.events_of_tickets(generation, keys), store.account_events_of(
            generation, {c for c, _ in keys}
        )

    after: TicketKey | None = None
    while rows := store.list_tickets(new, TicketQuery(after=after, limit=1000)):
        after = rows[-1].key
        keys = [row.key for row in rows]
        (new_stories, new_accounts), (old_stories, old_accounts) = story_of(new, keys), story_of(live, keys)
        live_rows = store.ticket_rows(live, keys)
        for row in rows:
            if not comparable(row.key, new_stories, new_accounts):
                continue  # the live generation holds more of it than was compared
            ours = _inputs(row.key, new_stories, new_accounts)
            if _view_at(row.key, *ours, policy, row.evaluated_at) != _stored_view(row):
                report.mismatches.append(f"ticket {row.key}: the rebuilt row is not the view its events give")
            live_row = live_rows.get(row.key)
            if live_row is None:
                report.live_rows_wrong.append(f"ticket {row.key}: no row in the live generation")
                continue
            theirs = _inputs(row.key, old_stories, old_accounts)
            same = live_row.evaluated_at == row.evaluated_at and theirs == ours
            if same_policy and _stored_view(live_row) != (
                _stored_view(row) if same else _view_at(row.key, *theirs, policy, live_row.evaluated_at)
            ):
                report.live_rows_wrong.append(
                    f"ticket {row.key}: the live row (as of {live_row.evaluated_at}) is not the view its "
                    "events give"
                )
            report.checked_tickets += 1
    for key in store.tickets_missing_from(live, new):
        histories = store.events_of_tickets(live, [key])
        if comparable(key, histories, store.account_events_of(live, [key[0]])):
            report.mismatches.append(f"ticket {key}: in the live generation, not in the rebuilt one")
    if report.live_rows_wrong:
        log.warning(
            "%d live rows were not the view their events give; the switch repairs them: %s",
            len(report.live_rows_wrong),
            "; ".join(report.live_rows_wrong[:10]),
        )


def _inputs(key: TicketKey, events: dict, accounts: dict) -> tuple[list[Recorded], list[Recorded]]:
    """A ticket's stored events and its customer's account events, decoded."""
    return decode_stored(events.get(key, [])), decode_stored(accounts.get(key[0], []))


def _stored_view(row: TicketRow) -> dict[str, Any] | None:
    """A row's view; None for the placeholder of a ticket not opened as of then."""
    return None if row.state == "pending" else orjson.loads(row.view)


def _view_at(
    key: TicketKey, records: list[Recorded], account: list[Recorded], policy: Contracts, epoch_seconds: int
) -> dict[str, Any] | None:
    return view_at(key, records, account, policy, datetime.fromtimestamp(epoch_seconds, UTC))
