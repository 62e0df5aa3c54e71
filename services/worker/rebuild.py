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

Both cores (``SLATRACK_REBUILD_PROCESSES``; default as many as cores, never more than the
partitions): partitions are independent (a customer's events share one), so step 1 runs in child
processes, each with its own store connection and its own reader of its share of the
partitions, all writing the one new generation (SQLite serializes their commits on its write
lock, PostgreSQL does not need to). The policy topic is read once, here, in full (or the rebuild
fails), and handed to each child. The rows are those one process writes: a ticket's rows are a
function of its customer's events, whatever the batches. Step 2's tickets are checked in the
same processes, each a range of them in key order, their findings put back in that order; the
reading on before the switch, and the switch, are this process's. A child that fails fails the
rebuild, naming its partitions and why, and the generation is dropped.
"""

import asyncio
import atexit
import logging
import multiprocessing
import os
import queue
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from projections.contracts import Contracts, PolicySource, PolicyVersion, contracts_of
from projections.policy import Policy, parse_policy
from projections.quarantine import view_at
from projections.timeline import Recorded, TicketKey
from services.config import Settings
from services.worker.batches import ConsumedBatch, PartitionedLog, PolicyLog, PolicyRead, WholeLog
from services.worker.generations import keep_only, policy_text
from services.worker.histories import decode_stored, stored_versions
from services.worker.ports import (
    GenerationBehind,
    ReadModelStore,
    StoredEvent,
    TicketQuery,
    TicketRow,
)
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
    # How many processes read, projected and checked the log (1: this one alone).
    processes: int = 1
    # Seconds per phase: "policies" (the new generation and the policy topic read), "project"
    # (the log read and projected), "check", "switch" (reading on before it included), "finish".
    phases: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items()}


def rebuild_processes(settings: Settings, partitions: int) -> int:
    """How many processes a rebuild of ``partitions`` partitions uses: the setting (0: as many
    as cores), never more than the partitions, at least one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    wanted = settings.rebuild_processes or cores or 1
    return max(1, min(wanted, partitions))


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
    processes: int | None = None,
    open_store: "Callable[..., ReadModelStore] | None" = None,
) -> RebuildReport:
    """``log_source``: the whole of ``ticket-events`` (services.kafka.log_reader.WholeLogReader);
    ``policy_log``: the policy topic, read in full before the first batch (None: no contracts).
    ``processes``: how many (None: :func:`rebuild_processes`); more than one only with a log that
    can be read in parts (:class:`PartitionedLog`) and ``open_store`` (services.store.open_store,
    given by the caller: the worker imports no store), with which each child opens the store
    ``settings`` name (the one ``store`` is)."""
    started = time.monotonic()
    clock = _Phases()
    await asyncio.to_thread(store.migrate)
    previous = await asyncio.to_thread(store.active_generation)
    generation = await asyncio.to_thread(store.create_generation, "rebuild", policy_text(policy))
    report = RebuildReport(generation, previous, policy_version=policy.version, policy_digest=policy.digest)
    pool: _Pool | None = None
    try:
        policies = None if policy_log is None else _Recorded(policy_log)
        projector = Projector(
            store,
            policy,
            settings.topic_events,
            generation=generation,
            must_be_active=False,
            count_metrics=False,
            record_signals=False,
            policy_log=policies,
            policy_topic=policy_topic,
        )
        await projector.open()
        # A worker that cannot read the policy topic reads it again later and recomputes; a rebuild
        # cannot: it reads it in full now, or fails (a generation measured without its versions
        # would pass its own check and be switched to). Read in full by open already: done.
        if policies is None or not policies.whole:
            await projector.read_policies()
        report.phases["policies"] = clock.lap()

        async def project(batch: ConsumedBatch) -> None:
            # Invalid messages were dead-lettered when they first came; here they are only counted.
            await projector.handle(batch)
            report.events += len(batch.valid)
            report.invalid += batch.rejected

        async with log_source as reader:
            partitions = sorted(reader.partitions)
            count = 1
            if isinstance(reader, PartitionedLog) and open_store is not None:
                count = processes if processes is not None else rebuild_processes(settings, len(partitions))
                count = max(1, min(count, len(partitions)))
            report.processes = count
            if count > 1:
                assert isinstance(reader, PartitionedLog) and open_store is not None
                pool = _Pool(count, settings, open_store)
                shares = [partitions[i::count] for i in range(count)]
                parts = [
                    _Part(
                        settings,
                        policy,
                        generation,
                        reader.part(share),
                        None if policies is None else policies.read_once(),
                        policy_topic,
                    )
                    for share in shares
                ]
                for events, invalid in await pool.run(_project_part, parts, progress, what=_partitions):
                    report.events += events
                    report.invalid += invalid
                # Reading on (before the switch) goes on from where the children stopped.
                await reader.seek(await projector.start_offsets(set(partitions)))
            else:
                projector.partitions = set(partitions)
                await reader.read_to_end(project, progress)
            report.phases["project"] = clock.lap()
            if previous is not None:
                await asyncio.to_thread(
                    _check,
                    store,
                    projector.contracts,
                    previous,
                    generation,
                    settings.topic_events,
                    report,
                    pool,
                )
            report.phases["check"] = clock.lap()
            if pool is not None:
                pool.close()
                pool = None
            if switch and not report.mismatches:
                await _switch(store, reader, project, progress, report, settings.topic_events)
            report.phases["switch"] = clock.lap()
        counts = await asyncio.to_thread(store.counts, generation)
        report.tickets, report.customers = counts["tickets"], counts["customers"]
        if report.switched:
            await asyncio.to_thread(keep_only, store, {generation, previous})
            log.info("switched to generation %d (previous %s kept)", generation, previous)
        elif report.mismatches:
            await _drop(store, report)
        report.phases["finish"] = clock.lap()
    except BaseException:
        if pool is not None:
            pool.kill()
        if not report.switched:
            await _drop(store, report)
        raise
    report.seconds = round(time.monotonic() - started, 3)
    return report


class _Phases:
    def __init__(self) -> None:
        self.at = time.monotonic()

    def lap(self) -> float:
        now = time.monotonic()
        seconds, self.at = now - self.at, now
        return round(seconds, 3)


class _Recorded:
    """The policy log the rebuild reads, and what it read: the children get that, not the topic
    again (one read for the whole rebuild, as with one process)."""

    def __init__(self, inner: PolicyLog):
        self.inner = inner
        self.versions: dict[int, PolicyVersion] = {}
        self.end = 0
        self.whole = False  # read from its beginning to its end

    async def read(self, start: int) -> PolicyRead:
        read = await self.inner.read(start)
        self.versions |= {v.position: v for v in read.versions}
        self.end = max(self.end, read.end)
        self.whole = self.whole or start == 0
        return read

    def read_once(self) -> "_ReadOnce":
        return _ReadOnce(sorted(self.versions.values(), key=lambda v: v.position), self.end)


@dataclass(frozen=True)
class _ReadOnce:
    """A policy log that is what the rebuild read (its rejections were logged there)."""

    versions: list[PolicyVersion]
    end: int

    async def read(self, start: int) -> PolicyRead:
        return PolicyRead([v for v in self.versions if v.position >= start], [], max(self.end, start))


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
    store: ReadModelStore,
    source: PolicySource,
    live: int,
    new: int,
    topic: str,
    report: RebuildReport,
    pool: "_Pool | None" = None,
) -> None:
    """The new generation must hold what the live one holds for the same offsets, and each of its
    rows the view its events give; live rows that do not are reported (the switch repairs them).
    ``pool``: the tickets are checked in its processes, a range of them each."""
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
    if pool is None:
        found = [_check_tickets(store, contracts, live, new, below, same_policy, None, None)]
    else:
        keys = store.ticket_keys(new)
        size = -(-len(keys) // pool.size) or 1
        ranges = [(keys[i - 1] if i else None, len(keys[i : i + size])) for i in range(0, len(keys), size)]
        found = pool.run_sync(
            _check_range,
            [_Range(contracts, live, new, below, same_policy, after, count) for after, count in ranges],
        )
    for tickets in found:
        report.mismatches += tickets.mismatches
        report.live_rows_wrong += tickets.live_rows_wrong
        report.checked_tickets += tickets.checked
    for key in store.tickets_missing_from(live, new):
        histories = store.events_of_tickets(live, [key])
        if _comparable(key, below, histories, store.account_events_of(live, [key[0]])):
            report.mismatches.append(f"ticket {key}: in the live generation, not in the rebuilt one")
    if report.live_rows_wrong:
        log.warning(
            "%d live rows were not the view their events give; the switch repairs them: %s",
            len(report.live_rows_wrong),
            "; ".join(report.live_rows_wrong[:10]),
        )


@dataclass
class _Tickets:
    """What the check of some tickets found."""

    mismatches: list[str] = field(default_factory=list)
    live_rows_wrong: list[str] = field(default_factory=list)
    checked: int = 0


def _comparable(key: TicketKey, below: dict[int, int], histories: dict, accounts: dict) -> bool:
    events = histories.get(key, []) + accounts.get(key[0], [])
    return bool(events) and all(e.offset < below.get(e.partition, 0) for e in events)


def _check_tickets(
    store: ReadModelStore,
    policy: Contracts,
    live: int,
    new: int,
    below: dict[int, int],
    same_policy: bool,
    after: TicketKey | None,
    count: int | None,
) -> _Tickets:
    """Check the rebuilt tickets after ``after`` (None: from the first), ``count`` of them (None:
    all), in key order."""
    found = _Tickets()

    def story_of(generation: int, keys: list[TicketKey]) -> tuple[dict, dict]:
        return store.events_of_tickets(generation, keys), store.account_events_of(
            generation, {c for c, _ in keys}
        )

    decoded: dict[str, list[Recorded]] = {}  # the rebuilt account histories, decoded once each

    def account(customer: str, stored: list[StoredEvent]) -> list[Recorded]:
        if customer not in decoded:
            decoded[customer] = decode_stored(stored)
        return decoded[customer]

    left = count
    while left is None or left > 0:
        rows = store.list_tickets(
            new, TicketQuery(after=after, limit=1000 if left is None else min(left, 1000))
        )
        if not rows:
            break
        if left is not None:
            left -= len(rows)
        after = rows[-1].key
        keys = [row.key for row in rows]
        (new_stories, new_accounts), (old_stories, old_accounts) = story_of(new, keys), story_of(live, keys)
        live_rows = store.ticket_rows(live, keys)
        for row in rows:
            if not _comparable(row.key, below, new_stories, new_accounts):
                continue  # the live generation holds more of it than was compared
            customer = row.key[0]
            ours_stored = (new_stories.get(row.key, []), new_accounts.get(customer, []))
            ours = decode_stored(ours_stored[0]), account(customer, ours_stored[1])
            if _view_at(row.key, *ours, policy, row.evaluated_at) != _stored_view(row):
                found.mismatches.append(f"ticket {row.key}: the rebuilt row is not the view its events give")
            live_row = live_rows.get(row.key)
            if live_row is None:
                found.live_rows_wrong.append(f"ticket {row.key}: no row in the live generation")
                continue
            theirs_stored = (old_stories.get(row.key, []), old_accounts.get(customer, []))
            # The same stored events decode to the same records: decoded only if they differ.
            theirs = ours if theirs_stored == ours_stored else _inputs(row.key, old_stories, old_accounts)
            same = live_row.evaluated_at == row.evaluated_at and theirs == ours
            if same_policy and _stored_view(live_row) != (
                _stored_view(row) if same else _view_at(row.key, *theirs, policy, live_row.evaluated_at)
            ):
                found.live_rows_wrong.append(
                    f"ticket {row.key}: the live row (as of {live_row.evaluated_at}) is not the view its "
                    "events give"
                )
            found.checked += 1
    return found


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


# --- the child processes ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Part:
    """What a child projects: its partitions of the log into the new generation."""

    settings: Settings
    policy: Policy
    generation: int
    log: PartitionedLog
    policies: _ReadOnce | None
    policy_topic: str


@dataclass(frozen=True)
class _Range:
    """What a child checks: ``count`` rebuilt tickets after ``after``, in key order."""

    contracts: Contracts
    live: int
    new: int
    below: dict[int, int]
    same_policy: bool
    after: TicketKey | None
    count: int


def _partitions(part: object) -> str:
    return f"partitions {part.log.only}" if isinstance(part, _Part) else "tickets"  # type: ignore[attr-defined]


class RebuildChildFailed(RuntimeError):
    """A child process of the rebuild failed: the rebuild fails with it."""


class _Pool:
    """The rebuild's child processes (spawned: nothing of this process's state, its event loop
    and connections, is inherited), each with its own store and log reader; progress comes back
    on a queue."""

    def __init__(self, size: int, settings: Settings, open_store: Callable[..., ReadModelStore]):
        self.size = size
        context = multiprocessing.get_context("spawn")
        self.progress: multiprocessing.Queue = context.Queue()
        self.executor = ProcessPoolExecutor(
            size,
            mp_context=context,
            initializer=_child_init,
            initargs=(settings, self.progress, open_store),
        )

    async def run(
        self,
        fn: Callable[[Any], Any],
        items: Sequence[Any],
        progress: Callable[[int, int], None],
        *,
        what: Callable[[object], str],
    ) -> list[Any]:
        """``fn`` of each item, one per child, in their order; progress summed over them."""
        futures = [
            asyncio.wrap_future(self.executor.submit(fn, (index, item))) for index, item in enumerate(items)
        ]
        reported: dict[int, tuple[int, int]] = {}
        pending: set[asyncio.Future] = set(futures)
        while pending:
            _, pending = await asyncio.wait(pending, timeout=0.25, return_when=asyncio.FIRST_EXCEPTION)
            self._progress(reported, progress)
            for index, future in enumerate(futures):
                if future.done() and future.exception() is not None:
                    exc = future.exception()
                    raise RebuildChildFailed(
                        f"the rebuild process for {what(items[index])} failed: {type(exc).__name__}: {exc}"
                    ) from exc
        self._progress(reported, progress)
        return [future.result() for future in futures]

    def _progress(self, reported: dict[int, tuple[int, int]], progress: Callable[[int, int], None]) -> None:
        changed = False
        while True:
            try:
                index, done, total = self.progress.get_nowait()
            except queue.Empty:
                break
            reported[index], changed = (done, total), True
        if changed:
            progress(sum(d for d, _ in reported.values()), sum(t for _, t in reported.values()))

    def run_sync(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """``fn`` of each item in the children, in their order (from a thread: the check)."""
        futures: list[Future] = [self.executor.submit(fn, (index, item)) for index, item in enumerate(items)]
        results = []
        for future in futures:
            try:
                results.append(future.result())
            except Exception as exc:
                raise RebuildChildFailed(
                    f"a rebuild process checking tickets failed: {type(exc).__name__}: {exc}"
                ) from exc
        return results

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        self.progress.close()

    def kill(self) -> None:
        """Stop every child now (one failed, or the rebuild was cancelled): before the generation
        is dropped, nothing of theirs may still write to it."""
        processes = list(getattr(self.executor, "_processes", {}).values())
        for process in processes:
            process.terminate()
        for process in processes:
            process.join(10)
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.progress.close()


# In a child: its settings, its progress queue, and the store it opened (once, for every task).
_child: dict[str, Any] = {}


def _child_init(
    settings: Settings, progress: multiprocessing.Queue, open_store: Callable[..., ReadModelStore]
) -> None:
    from services import logs
    from services.runtime import tune_gc

    tune_gc()  # as the command that spawned it (a child does not run the command line)
    logs.configure(settings.log_level)
    _child.update(settings=settings, progress=progress, open_store=open_store)


def _child_store() -> ReadModelStore:
    if "store" not in _child:
        opened = _child["open_store"](_child["settings"], migrate=False)
        _child["store"] = opened
        atexit.register(opened.close)
    store: ReadModelStore = _child["store"]
    return store


def _expect_generation(store: ReadModelStore, part: _Part) -> None:
    """A child opens its store from the settings: it must be the store the rebuild created the
    generation in (else its rows would go elsewhere and the parent switch to an empty one)."""
    found = [g for g in store.generations() if g["generation"] == part.generation]
    if (
        not found
        or found[0]["reason"] != "rebuild"
        or found[0]["active"]
        or store.generation_policy(part.generation) != policy_text(part.policy)
    ):
        raise RebuildChildFailed(
            f"generation {part.generation} is not the new rebuild generation in the store the settings "
            "name: the rebuild was given another store"
        )


def _project_part(task: tuple[int, _Part]) -> tuple[int, int]:
    """A child's share of the log projected into the new generation: (events, invalid)."""
    index, part = task
    return asyncio.run(_project(index, part))


async def _project(index: int, part: _Part) -> tuple[int, int]:
    store = _child_store()
    _expect_generation(store, part)
    projector = Projector(
        store,
        part.policy,
        part.settings.topic_events,
        generation=part.generation,
        must_be_active=False,
        count_metrics=False,
        record_signals=False,
        policy_log=part.policies,
        policy_topic=part.policy_topic,
    )
    await projector.open()
    await projector.read_policies()
    counted = [0, 0]

    async def project(batch: ConsumedBatch) -> None:
        await projector.handle(batch)
        counted[0] += len(batch.valid)
        counted[1] += batch.rejected

    def progress(done: int, total: int) -> None:
        _child["progress"].put((index, done, total))

    async with part.log as reader:
        projector.partitions = set(reader.partitions)
        await reader.read_to_end(project, progress)
    return counted[0], counted[1]


def _check_range(task: tuple[int, _Range]) -> _Tickets:
    _, r = task
    return _check_tickets(
        _child_store(), r.contracts, r.live, r.new, r.below, r.same_policy, r.after, r.count
    )
