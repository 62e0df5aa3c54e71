"""The projector: folds ``ticket-events`` into the read models, exactly once,
and keeps them current as time passes.

Per batch (from :class:`services.kafka.consumer.ValidatingConsumer`): each event is
checked against the events already stored (:func:`accepted`: a later copy of
an event id is a duplicate, or with another body a dead letter); then the
story of every ticket the batch can change (:mod:`projections.story`) is told
with the pure engine — its own new events, the account events of its
customer, time passing up to the customer's log time — and the rows, the new
events, the signals and the partitions' next offsets are written in one
transaction. On assignment the consumer seeks to the offsets stored there, so
a crash at any instant loses nothing and applies nothing twice.

Between events, time still moves: every row carries ``next_change_at`` (the
next warning, due, breach or escalation instant of a running clock, or a
suspension boundary). Once a partition is caught up, one scheduler per worker
sleeps until the earliest of its partitions and re-evaluates what is due then,
as of the wall clock.

Signals go to an outbox table in the same transaction, and from there to the
``sla-signals`` topic.

This module tells a batch's (or a timer pass's) story and writes it; its parts are apart:
the generation and its policy (:mod:`services.worker.generations`), where each partition
stands and the rewinds (:mod:`services.worker.tracking`), the scheduler
(:mod:`services.worker.timers`), the rows (:mod:`services.worker.rows`), and the decoded
histories (:mod:`services.worker.histories`, :mod:`services.worker.history_cache`).
"""

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

import orjson

from events import Event, EventRejected, RejectKind, encode_event, quoted
from events.models import AccountContractChanged
from events.policies import encode_policy_event
from projections.as_of import policy_of
from projections.checkpoints import Checkpoint
from projections.contracts import Contracts, PolicyVersion, contract_at, contract_changes
from projections.counting import Tally
from projections.policy import Policy
from projections.quarantine import QUARANTINED, describe
from projections.signals import Ledger
from projections.story import Point, StandingCache, logged_work_ends, settles, tell, walk
from projections.ticket import TicketState
from projections.timeline import Recorded, TicketKey, event_key, same_event, ticket_key
from services import metrics
from services.worker.batches import (
    ConsumedBatch,
    ConsumedEvent,
    DeadLetters,
    DeadLettersFailed,
    PolicyLog,
    RawRecord,
    Rewind,
    dead_letter_each_partition,
)
from services.worker.generations import Generations
from services.worker.histories import decode_stored_body, partition_of, seq_of, stored_versions
from services.worker.history_cache import CACHE_TICKETS, HistoryCache, bound
from services.worker.ports import (
    BatchWrite,
    CustomerRow,
    GenerationChanged,
    ReadModelStore,
    Signal,
    StaleBatch,
    StoredEvent,
    TicketRow,
)
from services.worker.rows import (
    _customer_row,
    _pending_row,
    _quarantined_row,
    _Schedule,
    _ticket_row,
    epoch,
    instant_of,
)
from services.worker.sla_metrics import publish
from services.worker.stages import BatchStages
from services.worker.timers import run_timers
from services.worker.tracking import OffsetTracker

log = logging.getLogger(__name__)

SCHEDULE_FAULTS = 20_000  # tickets whose schedule fault was reported, remembered
POLICY_TOPIC = "policy-versions"
RECOMPUTE_CHUNK = 500  # tickets recomputed per transaction when a policy version arrives
# Tickets whose engine state is kept after their last event (projections.checkpoints), least
# recently used dropped first. Measured on the simulated desk (about ten events a ticket): 9.4 KiB
# a checkpoint besides its events, which the decoded histories hold too (about 20 KiB a ticket,
# kept alive by a checkpoint whose history the history cache dropped). As many as the history
# cache (CACHE_TICKETS), so the same tickets are in both: about 190 MB.
CHECKPOINT_TICKETS = CACHE_TICKETS


def wall_clock() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@dataclass
class Accepted:
    """A batch's events sorted by :func:`accepted`."""

    events: list[ConsumedEvent] = field(default_factory=list)
    duplicates: int = 0
    conflicts: list[tuple[ConsumedEvent, EventRejected]] = field(default_factory=list)


def accepted(valid: Sequence[ConsumedEvent], stored: dict[tuple[str, str], StoredEvent]) -> Accepted:
    """One rule for every path (projections.timeline.dedupe): the first copy of each
    (customer_id, event_id) is the event; a later identical copy is a duplicate, a later
    copy with another body a conflict. ``stored``: the first copies already stored."""
    result = Accepted()
    first: dict[tuple[str, str], tuple[Event, str]] = {
        key: (decode_stored_body(copy.body), f"at {copy.partition}@{copy.offset}")
        for key, copy in stored.items()
    }
    for item in sorted(valid, key=lambda v: (v.partition, v.offset)):
        key = event_key(item.event)
        if key not in first:
            first[key] = (item.event, f"at {item.partition}@{item.offset}")
            result.events.append(item)
        elif same_event(first[key][0], item.event):
            result.duplicates += 1
        else:
            detail = (
                f"event_id {quoted(item.event.event_id)} of customer {quoted(item.event.customer_id)} "
                f"was recorded before ({first[key][1]}) with another body; the first copy is the event"
            )
            result.conflicts.append((item, EventRejected(RejectKind.DUPLICATE_EVENT_ID_CONFLICT, detail)))
    return result


class Projector:
    """A worker's projection state. One instance per worker process (or per rebuild)."""

    def __init__(
        self,
        store: ReadModelStore,
        policy: Policy,
        topic: str,
        *,
        clock: Callable[[], datetime] = wall_clock,
        generation: int | None = None,
        must_be_active: bool = True,
        count_metrics: bool = True,
        record_signals: bool = True,
        dead_letter: DeadLetters | None = None,
        dead_letter_timeout_s: float = 10.0,
        policy_log: PolicyLog | None = None,
        policy_topic: str = POLICY_TOPIC,
    ):
        self.store = store
        # The generation written and its policy (the configured one until open).
        self.generations = Generations(store, policy, generation=generation, count_metrics=count_metrics)
        self.topic = topic
        self.clock = clock
        self.must_be_active = must_be_active
        # The SLA counters of this process (a rebuild counts nothing: the live workers did).
        self.count_metrics = count_metrics
        # A rebuild records no signals while it replays: its generation may never be
        # switched to. What a switch changes is recorded with the switch (services/worker/rebuild.py).
        self.record_signals = record_signals
        # Where conflicting duplicates go (None: only counted, as in a rebuild: the live
        # workers dead-lettered them when they first came).
        self.dead_letter = dead_letter
        self.dead_letter_timeout_s = dead_letter_timeout_s
        # The partitions held, the offset each wants next, which lag.
        self.tracking = OffsetTracker()
        self.lock = asyncio.Lock()  # batches and timer passes write one at a time
        self.committed = asyncio.Condition()  # notified after every commit (timers, outbox)
        self.applied_events = 0
        # Decoded histories of recently touched tickets and customers: a ticket touched by
        # consecutive batches is not read back each time.
        self._tickets: HistoryCache[TicketKey] = HistoryCache(store.events_of_tickets)
        self._accounts: HistoryCache[str] = HistoryCache(store.account_events_of)
        # Each recently told ticket's engine state after its last event: a batch applies its new
        # events to it instead of replaying the history (valid or not is checked against the
        # records given, so a stale one costs a replay, never a wrong state).
        self._checkpoints: OrderedDict[TicketKey, Checkpoint] = OrderedDict()
        # Where to read from after a switch the timers noticed (the consumer asks between batches).
        self._rewind: Rewind | None = None
        self._schedule_faults: OrderedDict[TicketKey, None] = OrderedDict()  # reported once each
        # The policy topic (None: no contracts but the configured policy) and how far it was read.
        self.policy_log = policy_log
        self.policy_topic = policy_topic
        self._policy_end = 0
        self._policies_pending = False  # held partitions may not be measured with every version yet
        self._stored_policies: set[int] = set()  # positions of the versions the generation stores
        self._rejected_policies: set[int] = set()  # positions whose rejection was logged

    @property
    def generation(self) -> int | None:
        """The generation written (None before open)."""
        return self.generations.generation

    @property
    def policy(self) -> Policy:
        """The policy the generation's rows are computed with."""
        return self.generations.policy

    @property
    def contracts(self) -> Contracts:
        """The generation's policy as the default contract's base, and every version read."""
        return self.generations.contracts

    @property
    def partitions(self) -> set[int]:
        """The partitions this worker holds (a rebuild: all of them)."""
        return self.tracking.partitions

    @partitions.setter
    def partitions(self, partitions: set[int]) -> None:
        self.tracking.partitions = partitions
        self._policies_pending = bool(self.contracts.versions)

    async def open(self) -> int:
        """Migrate the store, find (or create) the active generation, take its policy and the
        versions it has read, and read the policy topic in full (before any batch)."""
        generation = await self.generations.open()
        self._took_generation()
        try:
            await self.read_policies(whole=True)
        except Exception as exc:  # the broker down: the versions stored stand; follow_policies reads
            # on, and what a version read later changes is recomputed then (apply_policies)
            log.warning(
                "reading the policy topic %s failed (%r); reading it again later", self.policy_topic, exc
            )
        return generation

    def _took_generation(self) -> None:
        """After taking a generation: its versions are the ones read, and stored."""
        self._policy_end = self.contracts.position
        self._stored_policies = {v.position for v in self.contracts.versions}
        self._policies_pending = bool(self.contracts.versions)

    # -- contracts: the policy topic ----------------------------------------

    async def read_policies(self, *, whole: bool = False) -> int:
        """Read the policy topic on from where it was read (``whole``: from its beginning, as a
        worker does on taking a generation); return how many versions are new. The held
        partitions are then measured with them (:meth:`apply_policies`) before their next batch,
        or by :meth:`follow_policies` within its period, whichever comes first."""
        if self.policy_log is None:
            return 0
        read = await self.policy_log.read(0 if whole else self._policy_end)
        known = {v.position: v for v in self.contracts.versions}
        replaced = [
            v.position for v in read.versions if v.position in known and known[v.position].event != v.event
        ]
        if replaced:
            log.error(
                "the policy topic %s holds other versions at positions %s than the read models have read "
                "there: it was replaced. The read models keep measuring with the versions they hold; an "
                "export of this topic would not reproduce them. Point SLATRACK_TOPIC_POLICIES back at the "
                "topic, or empty it and `slatrack restore` (decision 0004)",
                self.policy_topic,
                replaced,
            )
        for position, why in read.rejected:
            if position not in self._rejected_policies:
                self._rejected_policies.add(position)
                log.error("%s@%d is not a policy version, skipped: %s", self.policy_topic, position, why)
        if read.end < self._policy_end:
            log.error(
                "the policy topic %s ends at position %d, before %d, where this worker has read it up to: "
                "it was emptied or replaced. The versions the read models hold stand; write them back with "
                "`slatrack restore` before publishing another (it would take a position already used)",
                self.policy_topic,
                read.end,
                self._policy_end,
            )
        self._policy_end = max(self._policy_end, read.end)
        return self._take_versions(read.versions, f"read at {self.policy_topic}")

    def _take_versions(self, versions: Sequence[PolicyVersion], where: str) -> int:
        known = {v.position for v in self.contracts.versions}
        new = [v for v in versions if v.position not in known]
        if new:
            self.generations.contracts = self.contracts.with_versions(new)
            self._policies_pending = True
            for version in new:
                log.warning(
                    "policy version %s of contract %s in force from %s (%s), %s@%d",
                    version.policy.version,
                    version.contract,
                    version.effective_from.isoformat(),
                    version.policy.digest,
                    where,
                    version.position,
                )
        return len(new)

    async def follow_policies(self, stop: asyncio.Event, every_s: float = 5.0) -> None:
        """Read the policy topic every ``every_s`` while running, and measure the held partitions
        with what they have not been measured with yet (versions read now, at the start or at an
        assignment, or whose application failed before: tried again here)."""
        while not stop.is_set():
            try:
                await self.read_policies()
                if self._policies_pending:
                    async with self.lock:
                        await self._apply_pending()
                    await self._notify()
            except Exception as exc:  # the broker or the store down: again later, as the consumer does
                log.warning(
                    "reading or applying the policy topic %s failed (%r); trying again in %s s",
                    self.policy_topic,
                    exc,
                    every_s,
                )
            try:
                await asyncio.wait_for(stop.wait(), every_s)
                return
            except TimeoutError:
                pass

    async def apply_policies(self) -> bool:
        """Recompute, partition by partition, the held tickets that versions read since the
        partition was last measured can change (those dispatched from the earliest instant they
        are in force) and the partition's customers, and record how far each partition is
        measured (as offsets of the policy topic, in the same transactions). Call under the
        lock. False: a partition moved on without us (another worker holds it now)."""
        end = self._policy_end
        if not self.contracts.versions or not self.partitions:
            return True
        gen = self._gen
        stored = await asyncio.to_thread(self.store.stored_offsets, gen, self.policy_topic)
        done = True
        for partition in sorted(self.partitions):
            start = stored.get(partition, 0)
            if start >= end:
                continue
            unapplied = [v.effective_from for v in self.contracts.versions if v.position >= start]
            keys: list[TicketKey] = []
            if unapplied:
                since = epoch(min(unapplied)) or 0
                keys = await asyncio.to_thread(self.store.tickets_opened_from, gen, since, [partition])
            # (Only records that are no version since: the position moves on, nothing to recompute.)
            customers = (
                await asyncio.to_thread(self.store.customers_in, gen, [partition]) if unapplied else []
            )
            held = self.tracking.held([partition])
            if keys:
                log.warning(
                    "partition %d: recomputing %d tickets and %d customers with the policy versions read "
                    "since position %d",
                    partition,
                    len(keys),
                    len(customers),
                    start,
                )
            chunks = [keys[i : i + RECOMPUTE_CHUNK] for i in range(0, len(keys), RECOMPUTE_CHUNK)] or [[]]
            for number, chunk in enumerate(chunks):
                last = number == len(chunks) - 1
                try:
                    write, tally = await self._project(
                        [],
                        held,
                        now=self.clock(),
                        recompute=chunk,
                        recompute_customers=customers if last else (),
                    )
                    if last:
                        write.policy_topic = self.policy_topic
                        write.policy_offsets = {partition: (start, end)}
                    await asyncio.to_thread(
                        self.store.commit_batch, gen, write, must_be_active=self.must_be_active
                    )
                except StaleBatch as exc:
                    self._forget()
                    log.warning(
                        "partition %d: policy versions not applied, it moved on without us: %s",
                        partition,
                        exc,
                    )
                    done = False
                    break
                except BaseException:
                    self._forget()
                    raise
                self._committed(write)
                self._publish(tally)
        return done

    async def _catch_up_with_partitions(self, partitions: set[int]) -> None:
        """Partitions assigned that another worker has measured with versions this one has not
        read yet (it read the topic before they were published): take them from the store,
        where that worker stored them, before projecting anything of those partitions."""
        if self.policy_log is None:
            return
        stored = await asyncio.to_thread(self.store.stored_offsets, self._gen, self.policy_topic)
        ahead = max((stored.get(p, 0) for p in partitions), default=0)
        if ahead <= self._policy_end:
            return
        versions = await asyncio.to_thread(stored_versions, self.store, self._gen)
        self._take_versions([v for v in versions if v.position < ahead], "from the read models")
        self._stored_policies |= {v.position for v in versions}
        self._policy_end = ahead

    def _committed(self, write: BatchWrite) -> None:
        """A write committed: the versions it stored are stored."""
        self._stored_policies.update(position for position, _ in write.policies)

    # -- the consumer's handler interface ----------------------------------

    async def start_offsets(self, partitions: set[int]) -> dict[int, int | None]:
        async with self.lock:
            stored = await asyncio.to_thread(self.store.stored_offsets, self._gen, self.topic)
            starts = self.tracking.assign(partitions, stored)
            self._forget()
            await self._catch_up_with_partitions(partitions)
            self._policies_pending = bool(self.contracts.versions)
            log.info(
                "assigned partitions %s; starting at %s",
                sorted(partitions),
                {p: stored.get(p, "beginning") for p in sorted(partitions)},
            )
            return starts

    async def revoked(self, partitions: set[int]) -> None:
        async with self.lock:
            self.tracking.revoke(partitions)
            self._forget()

    async def log_ended_before(self, partitions: dict[int, tuple[int, int]]) -> None:
        """Stored offsets beyond the end of the log: the log was replaced. Never skip silently."""
        async with self.lock:
            generation = await self.generations.log_ended_before(partitions)
            rewind = self.tracking.from_beginning(f"new generation {generation}")
            self._forget()
            raise rewind

    async def handle(self, batch: ConsumedBatch) -> None:
        stages = BatchStages()  # where the batch's time goes (services.worker.stages)
        try:
            await self._handle(batch, stages)
        finally:  # a batch that ended early or failed is observed in no stage
            stages.close()

    async def _handle(self, batch: ConsumedBatch, stages: BatchStages) -> None:
        async with self.lock:
            offsets, valid = self.tracking.trim(batch)
            if not offsets:
                return
            self.tracking.saw(batch)
            try:
                if self._policies_pending:
                    await self._apply_pending()
                stored = await asyncio.to_thread(
                    self.store.first_copies, self._gen, {event_key(v.event) for v in valid}
                )
                sorted_out = accepted(valid, stored)
                if sorted_out.conflicts and self.dead_letter is not None:
                    await self._dead_letter_conflicts(sorted_out.conflicts)
                with stages.fold():
                    write, tally = await self._project(sorted_out.events, offsets, now=self.clock())
                tally.duplicates += sorted_out.duplicates
                await asyncio.to_thread(
                    self.store.commit_batch, self._gen, write, must_be_active=self.must_be_active
                )
            except StaleBatch as exc:
                self._forget()
                stored_offsets = await asyncio.to_thread(self.store.stored_offsets, self._gen, self.topic)
                raise self.tracking.stale(offsets, stored_offsets, exc) from None
            except GenerationChanged:
                raise await self._follow_generation() from None
            except BaseException:
                self._forget()
                raise
            self._committed(write)
            self.tracking.applied(offsets)
            self.applied_events += len(valid)
            self._publish(tally)
            self._count_conflicts(sorted_out.conflicts)
        await self._notify()
        metrics.PROJECTOR_BATCH_SECONDS.observe(stages.observe())
        if valid:
            latest = max(item.event.occurred_at for item in valid)
            metrics.PROJECTOR_LAST_EVENT.set(latest.timestamp())

    async def _dead_letter_conflicts(self, conflicts: list[tuple[ConsumedEvent, EventRejected]]) -> None:
        """Dead-letter conflicting copies as the consumer does its own (each partition's apart, within
        the time a dead letter may take); the partitions where that fails halt at the first of
        theirs (DeadLettersFailed)."""
        assert self.dead_letter is not None
        letters = [(raw_record(self.topic, c), r) for c, r in conflicts]
        failed = await dead_letter_each_partition(self.dead_letter, letters, self.dead_letter_timeout_s)
        if failed:
            self._forget()
            reasons = "; ".join(sorted({why for _, why in failed.values()}))
            raise DeadLettersFailed({p: offset for p, (offset, _) in failed.items()}, reasons)

    def _count_conflicts(self, conflicts: list[tuple[ConsumedEvent, EventRejected]]) -> None:
        for item, rejection in conflicts:
            log.warning("dead-lettered %s[%d]@%d: %s", self.topic, item.partition, item.offset, rejection)
        if conflicts and self.count_metrics:
            reason = str(RejectKind.DUPLICATE_EVENT_ID_CONFLICT)
            metrics.EVENTS_REJECTED.labels(reason=reason).inc(len(conflicts))
            if self.dead_letter is not None:
                metrics.DLQ_MESSAGES.inc(len(conflicts))

    async def _apply_pending(self) -> None:
        """The held partitions measured with every version read (the flag stays up if a
        partition moved on: the next assignment or pass tries again)."""
        if await self.apply_policies():
            self._policies_pending = False

    async def _follow_generation(self) -> Rewind:
        self._forget()
        generation = await self.generations.follow()
        self._took_generation()
        try:
            await self.read_policies(whole=True)
        except Exception as exc:  # the broker down: the stored versions stand, follow_policies reads on
            log.warning("reading the policy topic %s failed (%r)", self.policy_topic, exc)
        stored = await asyncio.to_thread(self.store.stored_offsets, generation, self.topic)
        return self.tracking.restart(stored, f"generation changed to {generation}")

    # -- time (services.worker.timers drives these) -------------------------

    async def run_timers(self, stop: asyncio.Event) -> None:
        """Re-evaluate tickets and customers when their next change is due (within 1 s)."""
        await run_timers(self, stop)

    async def next_change(self) -> int | None:
        partitions = self.tracking.caught_up()
        if not partitions or self.generation is None:
            return None
        return await asyncio.to_thread(self.store.next_change, self._gen, partitions)

    async def notice_switch(self) -> None:
        """A rebuild switched generations: follow at once, not only at the next write. The rebuilt
        rows are as of the log's time; their due changes are the new generation's timers' to run."""
        active = await asyncio.to_thread(self.store.active_generation)
        if active is not None and active != self.generation:
            async with self.lock:
                if active != self.generation:
                    self._rewind = await self._follow_generation()

    async def follow_switch(self) -> None:
        async with self.lock:
            self._rewind = await self._follow_generation()

    def take_rewind(self) -> Rewind | None:
        rewind, self._rewind = self._rewind, None
        return rewind

    async def tick(self) -> int:
        """Re-evaluate what is due now, as of now; return how many tickets changed.

        Only caught-up partitions: a partition still reading its backlog moves
        its customers' time on with its batches, as of the log (projections.story).
        """
        async with self.lock:
            now, gen = self.clock(), self._gen
            partitions = self.tracking.caught_up()
            tickets = await asyncio.to_thread(
                self.store.tickets_changing_by, gen, epoch(now) or 0, partitions
            )
            customers = await asyncio.to_thread(
                self.store.customers_changing_by, gen, epoch(now) or 0, partitions
            )
            if not tickets and not customers:
                return 0
            # Claimed at the offsets this worker holds, unchanged: if another worker has moved a
            # partition on (this one lost it and has not noticed yet), the pass writes nothing.
            held = self.tracking.held(partitions)
            try:
                write, tally = await self._project([], held, now=now, due=tickets, due_customers=customers)
                await asyncio.to_thread(
                    self.store.commit_batch, gen, write, must_be_active=self.must_be_active
                )
            except StaleBatch as exc:
                self._forget()
                log.warning("timer pass not written, a partition moved on without us: %s", exc)
                return 0
            except BaseException:
                self._forget()
                raise
            self._committed(write)
            self._publish(tally)
        await self._notify()
        return len(tickets)

    def _publish(self, tally: Tally) -> None:
        if self.count_metrics:
            publish(tally)

    async def _notify(self) -> None:
        async with self.committed:
            self.committed.notify_all()

    # -- the projection itself ---------------------------------------------

    async def _project(
        self,
        events: list[ConsumedEvent],
        offsets: dict[int, tuple[int, int]],
        *,
        now: datetime,
        due: Sequence[TicketKey] = (),
        due_customers: Sequence[str] = (),
        recompute: Sequence[TicketKey] = (),
        recompute_customers: Sequence[str] = (),
    ) -> tuple[BatchWrite, Tally]:
        """A batch's write: its events (each a first copy) and the story of every ticket they can
        change, told up to its customer's log time (projections.story). For a timer pass
        (``due``, ``due_customers``): the tickets and customers whose next change is due, as of now.
        ``recompute``, ``recompute_customers``: tickets and customers evaluated again as of the
        instant they were (new policy versions). Every write stores the versions the generation
        does not hold yet: what the rows are measured with is what the API measures with."""
        gen = self._gen
        # One set of versions for the whole write: follow_policies may take new ones meanwhile
        # (outside the lock); this write stores exactly those its rows are measured with.
        contracts = self.contracts
        write = BatchWrite(self.topic, offsets)
        write.policies = [
            (v.position, encode_policy_event(v.event))
            for v in contracts.versions
            if v.position not in self._stored_policies
        ]
        streams = _streams(events, write)
        customers = set(streams) | set(due_customers) | set(recompute_customers)
        rows = await asyncio.to_thread(self.store.customer_rows, gen, customers)
        log_times = {c: _latest(rows.get(c), records) for c, records in streams.items()}
        # Each customer's tickets are told up to its log time (never past now); a timer's, up to now;
        # one evaluated again, as of the instant it was.
        again = {c: instant_of(rows[c].evaluated_at) or now for c in recompute_customers if c in rows}
        ends = again | {c: min(at, now) for c, at in log_times.items()} | dict.fromkeys(due_customers, now)

        reached = await asyncio.to_thread(
            self.store.tickets_reached, gen, _reach(streams, rows, due_customers)
        )
        crossing = await asyncio.to_thread(
            self.store.customer_tickets_changing_by, gen, {c: epoch(at) or 0 for c, at in ends.items()}
        )
        # A contract change reaches the customer's tickets dispatched from its effective instant on.
        switched = await asyncio.to_thread(self.store.tickets_opened_since, gen, _contract_changes(streams))
        affected = {key for records in streams.values() for r in records if (key := ticket_key(r.event))}
        affected |= {*reached, *crossing, *due, *switched, *recompute}
        previous = await asyncio.to_thread(self.store.ticket_rows, gen, affected)
        tickets = await self._tickets.get(gen, affected)
        accounts = await self._accounts.get(gen, {c for c, _ in affected} | customers)
        # The fold is CPU work (a ticket with a long history takes a good part of a second): off
        # the event loop, which also answers HTTP and keeps the consumer's group membership alive.
        tally = await asyncio.to_thread(
            self._fold,
            write,
            streams,
            rows,
            ends,
            log_times,
            reached,
            affected,
            previous,
            tickets,
            accounts,
            now=now,
            due_customers=[*due_customers, *(c for c in recompute_customers if c in ends)],
            recompute=recompute,
            contracts=contracts,
        )
        return write, tally

    def _fold(
        self,
        write: BatchWrite,
        streams: dict[str, list[Recorded]],
        rows: dict[str, CustomerRow],
        ends: dict[str, datetime],
        log_times: dict[str, datetime],
        reached: Sequence[TicketKey],
        affected: set[TicketKey],
        previous: dict[TicketKey, TicketRow],
        tickets: dict[TicketKey, list[Recorded]],
        accounts: dict[str, list[Recorded]],
        *,
        now: datetime,
        due_customers: Sequence[str],
        recompute: Sequence[TicketKey] = (),
        contracts: Contracts,
    ) -> Tally:
        """The batch's rows and signals into ``write``: the story of each affected ticket."""
        customers = set(streams) | set(due_customers)
        settling = {key for key, records in tickets.items() if any(settles(r) for r in records)}
        logged = {key: logged_work_ends(tickets[key]) for key in settling}
        # Each history grown once by the batch's records (a new list: the cached one may be shared).
        grown: dict[TicketKey | str, list[Recorded]] = {}
        for customer, records in streams.items():
            for record in records:
                grown.setdefault(ticket_key(record.event) or customer, []).append(record)
        for key, new in grown.items():
            if isinstance(key, str):
                accounts[key] = self._accounts[key] = [*accounts[key], *new]
            else:
                tickets[key] = self._tickets[key] = [*tickets[key], *new]

        evaluated = {key: instant_of(row.evaluated_at) or now for key, row in previous.items()}
        # What the walks need, by customer (one pass over each, not one per customer).
        reaches = _by_customer({k: previous[k].account_until for k in reached if k in previous})
        openings = _by_customer({k: row.opened_at for k, row in previous.items()})
        evaluated_of = _by_customer(evaluated)
        logged_of = _by_customer(logged)
        settling_of = _by_customer(dict.fromkeys(settling))
        points: dict[TicketKey, list[Point]] = {}
        for customer, records in streams.items():
            reach, opened = reaches.get(customer, {}), openings.get(customer, {})

            def reached_by(
                r: Recorded, reach: dict[TicketKey, int] = reach, opened: dict[TicketKey, int] = opened
            ) -> list[TicketKey]:
                if isinstance(r.event, AccountContractChanged):  # tickets dispatched since it is effective
                    since = int(r.event.data.effective_from.timestamp())
                    return [k for k, at in opened.items() if at >= since]
                return [k for k, until in reach.items() if until >= r.at.timestamp()]

            found = walk(
                records,
                instant_of(rows[customer].log_time) if customer in rows else None,
                now,
                reached=reached_by,
                evaluated=evaluated_of.get(customer, {}),
                settling=list(settling_of.get(customer, {})),
                work_ends=logged_of.get(customer, {}),
            )
            points.update(found.points)
        for key in set(recompute) - set(points):  # told again as of when it was (new policy versions)
            points[key] = [Point(None, evaluated.get(key, ends.get(key[0], now)))]
        for key in affected - set(points):  # no input of its own: time passing, or an account event
            end = ends.get(key[0], now)
            points[key] = [Point(None, max(end, evaluated.get(key, end)))]

        tally = Tally()
        standings: StandingCache = {}
        because = _Because(streams)
        for key in sorted(affected):
            records = tickets[key]
            if not records:
                continue
            before = previous.get(key)
            told = tell(
                points[key],
                records,
                accounts.get(key[0], []),
                contracts,
                Ledger.decode(before.signals if before is not None else None),
                before.marks if before is not None else None,
                tally,
                standings=standings,
                checkpoints=self._checkpoints,
                because=because(key),
            )
            bound(self._checkpoints, CHECKPOINT_TICKETS)
            at = points[key][-1].at
            self._report_uncounted(key, told.uncounted)
            if told.fault is None and told.state is None:
                # Not opened as of then (its ticket.opened is still ahead, or missing): a
                # placeholder row keeps the instant to look again.
                write.tickets.append(_pending_row(key, records, at, before))
                continue
            row, fault = None, told.fault
            if told.state is not None:
                try:
                    view = told.state.view()
                except Exception as error:  # the view itself failed: as replay has it, quarantined
                    fault = error
                else:
                    row = _ticket_row(
                        told.state,
                        view,
                        self._schedule(key, told.state, records, at),
                        records,
                        at,
                        told.ledger,
                        told.marks,
                    )
            if fault is not None:
                self._report_fault(key, fault, before)
                policy = policy_of(records, accounts.get(key[0], []), contracts, at)
                row = _quarantined_row(key, records, at, policy, fault, told.ledger, told.marks)
            assert row is not None
            write.tickets.append(row)
            if self.record_signals:
                partition = partition_of(records[0])
                write.signals += [
                    Signal(s["signal_id"], key[0], orjson.dumps(s, option=orjson.OPT_SORT_KEYS), partition)
                    for s in told.signals
                ]
        for customer in sorted(customers):
            stored, stream = rows.get(customer), streams.get(customer, [])
            partition = partition_of(stream[0]) if stream else stored.partition if stored is not None else 0
            log_time = log_times.get(customer) or instant_of(stored.log_time if stored is not None else None)
            policy = contracts.customer_policy(accounts[customer], ends[customer])
            # The customer's rules change when its contract does, or a version of it takes over.
            switches = _switches(contracts, accounts[customer], ends[customer])
            write.customers.append(
                _customer_row(
                    customer, partition, policy, ends[customer], accounts[customer], log_time, switches
                )
            )
        return tally

    def _report_fault(self, key: TicketKey, fault: Exception, before: TicketRow | None) -> None:
        """A ticket quarantined: counted and logged (with the traceback) when it becomes so; tried
        again while it stays, quietly (slatrack_tickets_quarantined shows them)."""
        if before is not None and before.state == QUARANTINED:
            log.debug("ticket %s stays quarantined: %s", key, describe(fault))
            return
        if self.count_metrics:
            metrics.ENGINE_FAULTS.labels(stage="evaluate").inc()
        log.error(
            "ticket %s quarantined: the engine raised evaluating it (a bug, not bad input); its row "
            "records the error and the event; the partition goes on (README, Operations)",
            key,
            exc_info=fault,
        )

    def _schedule(
        self, key: TicketKey, state: TicketState, records: list[Recorded], at: datetime
    ) -> _Schedule:
        """The row's next change; if the engine raises working it out (a bug), the view still stands
        (it is what replay gives) and the ticket is looked at again soon."""
        try:
            return _Schedule.of(state, records, at)
        except Exception as error:
            if key not in self._schedule_faults:  # once per ticket and process, not at every retry
                self._schedule_faults[key] = None
                bound(self._schedule_faults, SCHEDULE_FAULTS)
                if self.count_metrics:
                    metrics.ENGINE_FAULTS.labels(stage="schedule").inc()
                log.error(
                    "ticket %s: the engine raised working out its next change (a bug); its view stands, "
                    "its due instants are not stored, it is looked at again every 5 min",
                    key,
                    exc_info=error,
                )
            return _Schedule.unknown(at)

    def _report_uncounted(self, key: TicketKey, errors: list[Exception]) -> None:
        for error in errors:
            if self.count_metrics:
                metrics.ENGINE_FAULTS.labels(stage="count").inc()
            log.error(
                "ticket %s: the engine raised settling its signals or counting a state; that state's "
                "signals and counts are left out (a bug)",
                key,
                exc_info=error,
            )

    def _forget(self) -> None:
        """Drop the caches: after a failed write they may hold what was never committed."""
        self._tickets.clear()
        self._accounts.clear()
        self._checkpoints.clear()

    @property
    def _gen(self) -> int:
        return self.generations.current


def raw_record(topic: str, item: ConsumedEvent) -> RawRecord:
    """The message an event came in, for its dead letter."""
    if item.record is not None:
        return item.record
    return RawRecord(topic, item.partition, item.offset, -1, item.event.customer_id.encode(), item.raw)


def _streams(events: Sequence[ConsumedEvent], write: BatchWrite) -> dict[str, list[Recorded]]:
    """Each customer's new events, in recording order; their stored form goes into ``write``."""
    streams: dict[str, list[Recorded]] = {}
    for item in sorted(events, key=lambda e: (e.partition, e.offset)):
        record = Recorded(seq_of(item.partition, item.offset), item.event)
        key = ticket_key(item.event)
        write.events.append(
            StoredEvent(
                item.event.event_id,
                key[1] if key is not None else None,
                item.event.customer_id,
                item.partition,
                item.offset,
                int(record.at.timestamp()),
                item.raw or encode_event(item.event),
            )
        )
        streams.setdefault(item.event.customer_id, []).append(record)
    return streams


V = TypeVar("V")


def _by_customer(values: dict[TicketKey, V]) -> dict[str, dict[TicketKey, V]]:
    """``values`` split by the tickets' customers (each keeping the order it had)."""
    split: dict[str, dict[TicketKey, V]] = {}
    for key, value in values.items():
        split.setdefault(key[0], {})[key] = value
    return split


class _Because:
    """For each ticket, its customer's new events that are its own or its account's, in recording
    order: what a revocation with no late input of its own names."""

    def __init__(self, streams: dict[str, list[Recorded]]):
        self._streams = streams
        self._split: dict[str, dict[TicketKey | None, list[Recorded]]] = {}

    def __call__(self, key: TicketKey) -> list[Recorded]:
        split = self._split.get(key[0])
        if split is None:
            split = self._split[key[0]] = {}
            for record in self._streams.get(key[0], []):
                split.setdefault(ticket_key(record.event), []).append(record)
        own, account = split.get(key, []), split.get(None, [])
        return sorted([*own, *account], key=lambda r: r.seq) if own and account else own or account


def _latest(row: CustomerRow | None, records: list[Recorded]) -> datetime:
    """A customer's log time after ``records``: the latest occurred_at of all its events."""
    latest = max(r.at for r in records)
    before = instant_of(row.log_time) if row is not None else None
    return latest if before is None else max(before, latest)


def _switches(contracts: Contracts, account: list[Recorded], at: datetime) -> list[datetime]:
    """The instants after ``at`` from which a customer's rules change with no new event: its
    contract changes', and those of the versions of the contracts it is or will be on (not every
    contract's: a version of another contract does not wake every customer at its instant)."""
    names = {contract_at(account, at)} | {
        r.event.data.contract for r in account if isinstance(r.event, AccountContractChanged)
    }
    instants = contract_changes(account) + [
        version.effective_from for name in sorted(names) for version in contracts.history_of(name)
    ]
    return [t for t in instants if t > at]


def _contract_changes(streams: dict[str, list[Recorded]]) -> dict[str, int]:
    """Per customer, the earliest instant a new contract change in its events is effective from."""
    return {
        customer: int(changes[0].timestamp())
        for customer, records in streams.items()
        if (changes := contract_changes(records))
    }


def _reach(
    streams: dict[str, list[Recorded]], rows: dict[str, CustomerRow], due: Iterable[str]
) -> dict[str, int]:
    """Per customer, the earliest instant its new account events change: tickets whose life
    reaches it are the ones they can change. A timer's customer: its next change."""
    since: dict[str, int] = {}
    for customer, records in streams.items():
        account = [r.at for r in records if ticket_key(r.event) is None]
        if account:
            since[customer] = int(min(account).timestamp())
    for customer in due:  # a future-dated account event coming into force
        at = rows[customer].next_change_at if customer in rows else None
        if at is not None:
            since[customer] = min(since.get(customer, at), at)
    return since
