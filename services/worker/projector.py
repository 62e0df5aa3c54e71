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
"""

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import orjson

from events import Event, EventRejected, RejectKind, decode_event, encode_event, quoted
from projections.account import account_standing
from projections.counting import Tally
from projections.policy import Policy, parse_policy
from projections.quarantine import QUARANTINED, describe, quarantined_view
from projections.signals import Ledger
from projections.story import FOREVER, Point, StandingCache, logged_work_ends, settles, tell, walk
from projections.ticket import TicketState
from projections.timeline import Recorded, TicketKey, event_key, history, same_event, ticket_key, whole_second
from services import metrics
from services.worker.batches import (
    ConsumedBatch,
    ConsumedEvent,
    DeadLetters,
    DeadLettersFailed,
    RawRecord,
    Rewind,
    dead_letter_each_partition,
)
from services.worker.ports import FOREVER as FOREVER_EPOCH
from services.worker.ports import (
    NEVER,
    BatchWrite,
    CustomerRow,
    GenerationChanged,
    ReadModelStore,
    Signal,
    StaleBatch,
    StoredEvent,
    TicketRow,
)
from services.worker.sla_metrics import publish

log = logging.getLogger(__name__)

CACHE_TICKETS = 20_000  # decoded histories kept: about 100 MB
QUARANTINE_RETRY_S = 300  # how often a quarantined ticket is tried again as time passes


def wall_clock() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def epoch(instant: datetime | None) -> int | None:
    return None if instant is None else int(instant.timestamp())


def instant_of(epoch_seconds: int | None) -> datetime | None:
    return None if epoch_seconds is None else datetime.fromtimestamp(epoch_seconds, UTC)


def seq_of(partition: int, offset: int) -> int:
    """Recording order: the offset (a customer's events share one partition), then the partition."""
    return offset * 1024 + partition


def partition_of(record: Recorded) -> int:
    """The partition a record was read from (the inverse of :func:`seq_of`)."""
    return record.seq % 1024


@dataclass
class Accepted:
    """A batch's events sorted by :func:`accepted`."""

    events: list[ConsumedEvent] = field(default_factory=list)
    duplicates: int = 0
    conflicts: list[tuple[ConsumedEvent, EventRejected]] = field(default_factory=list)


@dataclass(frozen=True)
class _Schedule:
    """When a row's ticket changes next, derived from its state (not part of its view)."""

    dues: dict[str, datetime | None]
    next_change: datetime | None
    reach: datetime | None  # account_until

    @staticmethod
    def of(state: TicketState, records: list[Recorded], at: datetime) -> "_Schedule":
        future_events = [r.at for r in records if r.at > at]
        upcoming = [t for t in (state.next_change_at(), min(future_events, default=None)) if t is not None]
        dues: dict[str, datetime | None] = {name: state.clocks[name].due_at(at) for name in state.clocks}
        return _Schedule(dues, min(upcoming, default=None), state.account_until(FOREVER))

    @staticmethod
    def unknown(at: datetime) -> "_Schedule":
        """The engine raised working it out: look again soon, and let any account change reach it."""
        return _Schedule({}, at + timedelta(seconds=QUARANTINE_RETRY_S), FOREVER)


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
    ):
        self.store = store
        # The policy configured; the generation's own is the one used (see open).
        self.configured = policy
        self.policy = policy
        self.topic = topic
        self.clock = clock
        self.generation = generation
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
        self.partitions: set[int] = set()
        self.expected: dict[int, int | None] = {}  # partition -> next offset this generation wants
        self.lock = asyncio.Lock()  # batches and timer passes write one at a time
        self.committed = asyncio.Condition()  # notified after every commit (timers, outbox)
        self.applied_events = 0
        # Partitions with more records after their last batch: their timers wait, the
        # batches themselves move their customers' log time on (projections.story).
        self.lagging: set[int] = set()
        # Decoded histories of recently touched tickets and customers (least recently
        # used first): a ticket touched by consecutive batches is not read back each time.
        self._tickets: OrderedDict[TicketKey, list[Recorded]] = OrderedDict()
        self._accounts: OrderedDict[str, list[Recorded]] = OrderedDict()
        # Where to read from after a switch the timers noticed (the consumer asks between batches).
        self._rewind: Rewind | None = None
        self._schedule_faults: OrderedDict[TicketKey, None] = OrderedDict()  # reported once each

    async def open(self) -> int:
        """Migrate the store, find (or create) the active generation, and take its policy."""
        await asyncio.to_thread(self.store.migrate)
        if self.generation is None:
            self.generation = await asyncio.to_thread(self.store.active_generation)
            if self.generation is None:
                self.generation = await asyncio.to_thread(
                    self.store.create_generation, "first start", policy_text(self.configured)
                )
                await asyncio.to_thread(self.store.activate_generation, self.generation)
                log.info("created read-model generation %d", self.generation)
        await self._take_policy()
        return self.generation

    async def _take_policy(self) -> None:
        """Every row of a generation is computed with one policy: the one it was created with.

        A worker configured with another one follows the generation's and says
        so; ``slatrack rebuild`` builds a generation with a new policy and
        switches to it, and the workers follow the switch (docs/sla-semantics.md).
        """
        text = await asyncio.to_thread(self.store.generation_policy, self._gen)
        if text is None:  # created before generations recorded their policy: bind ours
            text = await asyncio.to_thread(self.store.bind_policy, self._gen, policy_text(self.configured))
        policy = (
            self.configured if text == self.configured.text else parse_policy(text, f"generation {self._gen}")
        )
        if policy.digest != self.configured.digest:
            log.warning(
                "read-model generation %d is computed with policy %s (%s); the configured policy %s (%s) "
                "is not used: a generation keeps its policy, and `slatrack rebuild` builds one with the "
                "configured policy",
                self._gen,
                policy.version,
                policy.digest,
                self.configured.version,
                self.configured.digest,
            )
        self.policy = policy
        if self.count_metrics:
            metrics.SLA_ELAPSED.install(policy)

    # -- the consumer's handler interface ----------------------------------

    async def start_offsets(self, partitions: set[int]) -> dict[int, int | None]:
        async with self.lock:
            stored = await asyncio.to_thread(self.store.stored_offsets, self._gen, self.topic)
            self.partitions |= partitions
            for partition in partitions:
                self.expected[partition] = stored.get(partition)
            self._forget()
            log.info(
                "assigned partitions %s; starting at %s",
                sorted(partitions),
                {p: stored.get(p, "beginning") for p in sorted(partitions)},
            )
            return {p: stored.get(p) for p in partitions}

    async def revoked(self, partitions: set[int]) -> None:
        async with self.lock:
            self.partitions -= partitions
            self.lagging -= partitions
            for partition in partitions:
                self.expected.pop(partition, None)
            self._forget()

    async def log_ended_before(self, partitions: dict[int, tuple[int, int]]) -> None:
        """Stored offsets beyond the end of the log: the log was replaced. Never skip silently."""
        async with self.lock:
            log.error(
                "THE LOG ENDS BEFORE THE STORED OFFSETS of generation %s (partition: (stored, end) %s). "
                "The broker's log was replaced or emptied (an embedded broker restarts empty). "
                "Starting a new read-model generation from the beginning of this log; the old one is kept.",
                self.generation,
                partitions,
            )
            generation = await asyncio.to_thread(
                self.store.create_generation,
                f"log ended before stored offsets {partitions}",
                policy_text(self.policy),
            )
            await asyncio.to_thread(self.store.activate_generation, generation)
            await asyncio.to_thread(keep_only, self.store, {generation, self.generation})
            self.generation = generation
            self.expected = dict.fromkeys(self.partitions)
            self._forget()
            raise Rewind(dict.fromkeys(self.partitions), f"new generation {generation}")

    async def handle(self, batch: ConsumedBatch) -> None:
        started = time.perf_counter()
        async with self.lock:
            offsets, valid = self._trim(batch)
            if not offsets:
                return
            self.lagging = (self.lagging - set(batch.offsets)) | batch.lagging
            try:
                stored = await asyncio.to_thread(
                    self.store.first_copies, self._gen, {event_key(v.event) for v in valid}
                )
                sorted_out = accepted(valid, stored)
                if sorted_out.conflicts and self.dead_letter is not None:
                    await self._dead_letter_conflicts(sorted_out.conflicts)
                write, tally = await self._project(sorted_out.events, offsets, now=self.clock())
                tally.duplicates += sorted_out.duplicates
                await asyncio.to_thread(
                    self.store.commit_batch, self._gen, write, must_be_active=self.must_be_active
                )
            except StaleBatch as exc:
                self._forget()
                stored_offsets = await asyncio.to_thread(self.store.stored_offsets, self._gen, self.topic)
                for partition in offsets:
                    self.expected[partition] = stored_offsets.get(partition)
                raise Rewind({p: stored_offsets.get(p) for p in offsets}, f"stale batch: {exc}") from None
            except GenerationChanged:
                raise await self._follow_generation() from None
            except BaseException:
                self._forget()
                raise
            for partition, (_, after) in offsets.items():
                self.expected[partition] = after
            self.applied_events += len(valid)
            self._publish(tally)
            self._count_conflicts(sorted_out.conflicts)
        await self._notify()
        metrics.PROJECTOR_BATCH_SECONDS.observe(time.perf_counter() - started)
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

    def _trim(self, batch: ConsumedBatch) -> tuple[dict[int, tuple[int, int]], list[ConsumedEvent]]:
        """Leave out what this generation already holds (records read again after a rewind)."""
        offsets = dict(batch.offsets)
        valid = batch.valid
        for partition, (first, after) in batch.offsets.items():
            expected = self.expected.get(partition)
            if expected is None or first == expected:
                continue
            if first > expected:  # a gap: never apply over it
                raise Rewind({partition: expected}, f"gap in partition {partition}: {first} > {expected}")
            if after <= expected:
                del offsets[partition]
            else:
                offsets[partition] = (expected, after)
            valid = [v for v in valid if v.partition != partition or v.offset >= expected]
        return offsets, valid

    async def _follow_generation(self) -> Rewind:
        self._forget()
        self.generation = await asyncio.to_thread(self.store.active_generation)
        await self._take_policy()
        stored = await asyncio.to_thread(self.store.stored_offsets, self._gen, self.topic)
        self.expected = {p: stored.get(p) for p in self.partitions}
        log.warning(
            "the active read-model generation is now %s; continuing from its offsets", self.generation
        )
        return Rewind(dict(self.expected), f"generation changed to {self.generation}")

    # -- time --------------------------------------------------------------

    async def run_timers(self, stop: asyncio.Event) -> None:
        """Re-evaluate tickets and customers when their next change is due (within 1 s)."""
        while not stop.is_set():
            try:
                await self._notice_switch()
                async with self.committed:
                    partitions = sorted(self.partitions - self.lagging)
                    upcoming = (
                        await asyncio.to_thread(self.store.next_change, self._gen, partitions)
                        if partitions and self.generation is not None
                        else None
                    )
                    delay = 5.0 if upcoming is None else min(5.0, upcoming - time.time())
                    if delay > 0:
                        await _wait(self.committed, stop, delay)
                        continue
                await self.tick()
            except GenerationChanged:
                async with self.lock:
                    self._rewind = await self._follow_generation()
            except Exception:
                log.exception("timer pass failed; trying again in 1 s")
                await asyncio.sleep(1)

    async def _notice_switch(self) -> None:
        """A rebuild switched generations: follow at once, not only at the next write. The rebuilt
        rows are as of the log's time; their due changes are the new generation's timers' to run."""
        active = await asyncio.to_thread(self.store.active_generation)
        if active is not None and active != self.generation:
            async with self.lock:
                if active != self.generation:
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
            partitions = sorted(self.partitions - self.lagging)
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
            held = {p: (o, o) for p in partitions if (o := self.expected.get(p)) is not None}
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
    ) -> tuple[BatchWrite, Tally]:
        """A batch's write: its events (each a first copy) and the story of every ticket they can
        change, told up to its customer's log time (projections.story). For a timer pass
        (``due``, ``due_customers``): the tickets and customers whose next change is due, as of now."""
        gen = self._gen
        write = BatchWrite(self.topic, offsets)
        streams = _streams(events, write)
        customers = set(streams) | set(due_customers)
        rows = await asyncio.to_thread(self.store.customer_rows, gen, customers)
        log_times = {c: _latest(rows.get(c), records) for c, records in streams.items()}
        # Each customer's tickets are told up to its log time (never past now); a timer's, up to now.
        ends = {c: min(at, now) for c, at in log_times.items()} | dict.fromkeys(due_customers, now)

        reached = await asyncio.to_thread(
            self.store.tickets_reached, gen, _reach(streams, rows, due_customers)
        )
        crossing = await asyncio.to_thread(
            self.store.customer_tickets_changing_by, gen, {c: epoch(at) or 0 for c, at in ends.items()}
        )
        affected = {key for records in streams.values() for r in records if (key := ticket_key(r.event))}
        affected |= {*reached, *crossing, *due}
        previous = await asyncio.to_thread(self.store.ticket_rows, gen, affected)
        tickets = await self._histories(affected)
        accounts = await self._account_histories({c for c, _ in affected} | customers)
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
            due_customers=due_customers,
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
    ) -> Tally:
        """The batch's rows and signals into ``write``: the story of each affected ticket."""
        customers = set(streams) | set(due_customers)
        settling = {key for key, records in tickets.items() if any(settles(r) for r in records)}
        logged = {key: logged_work_ends(tickets[key]) for key in settling}
        for customer, records in streams.items():
            for record in records:
                key = ticket_key(record.event)
                if key is None:
                    accounts[customer] = self._accounts[customer] = [*accounts[customer], record]
                else:
                    tickets[key] = self._tickets[key] = [*tickets[key], record]

        evaluated = {key: instant_of(row.evaluated_at) or now for key, row in previous.items()}
        points: dict[TicketKey, list[Point]] = {}
        for customer, records in streams.items():
            reach = {k: previous[k].account_until for k in reached if k[0] == customer and k in previous}

            def reached_by(r: Recorded, reach: dict[TicketKey, int] = reach) -> list[TicketKey]:
                return [k for k, until in reach.items() if until >= r.at.timestamp()]

            found = walk(
                records,
                instant_of(rows[customer].log_time) if customer in rows else None,
                now,
                reached=reached_by,
                evaluated={k: at for k, at in evaluated.items() if k[0] == customer},
                settling=[k for k in settling if k[0] == customer],
                work_ends={k: v for k, v in logged.items() if k[0] == customer},
            )
            points.update(found.points)
        for key in affected - set(points):  # no input of its own: time passing, or an account event
            end = ends.get(key[0], now)
            points[key] = [Point(None, max(end, evaluated.get(key, end)))]

        tally = Tally()
        standings: StandingCache = {}
        for key in sorted(affected):
            records = tickets[key]
            if not records:
                continue
            before = previous.get(key)
            told = tell(
                points[key],
                records,
                accounts.get(key[0], []),
                self.policy,
                Ledger.decode(before.signals if before is not None else None),
                before.marks if before is not None else None,
                tally,
                standings=standings,
                because=[r for r in streams.get(key[0], []) if ticket_key(r.event) in (key, None)],
            )
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
                row = _quarantined_row(key, records, at, self.policy, fault, told.ledger, told.marks)
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
            write.customers.append(
                _customer_row(customer, partition, self.policy, ends[customer], accounts[customer], log_time)
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
                while len(self._schedule_faults) > CACHE_TICKETS:
                    self._schedule_faults.popitem(last=False)
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

    # -- histories (cache, then store) -------------------------------------

    async def _histories(self, tickets: Iterable[TicketKey]) -> dict[TicketKey, list[Recorded]]:
        wanted = set(tickets)
        missing = [key for key in wanted if key not in self._tickets]
        if missing:  # read and decoded off the loop (CPU work, as the fold)
            self._tickets.update(
                await asyncio.to_thread(_decoded, self.store.events_of_tickets, self._gen, missing)
            )
        histories = {}
        for key in wanted:
            self._tickets.move_to_end(key)
            histories[key] = self._tickets[key]
        _bound(self._tickets)  # after taking them: bounding may drop some
        return histories

    async def _account_histories(self, customers: Iterable[str]) -> dict[str, list[Recorded]]:
        wanted = set(customers)
        missing = [c for c in wanted if c not in self._accounts]
        if missing:
            self._accounts.update(
                await asyncio.to_thread(_decoded, self.store.account_events_of, self._gen, missing)
            )
        histories = {}
        for customer in wanted:
            self._accounts.move_to_end(customer)
            histories[customer] = self._accounts[customer]
        _bound(self._accounts)
        return histories

    def _forget(self) -> None:
        """Drop the caches: after a failed write they may hold what was never committed."""
        self._tickets.clear()
        self._accounts.clear()

    @property
    def _gen(self) -> int:
        if self.generation is None:
            raise RuntimeError("the projector is not open")
        return self.generation


def policy_text(policy: Policy) -> str:
    """The TOML text a generation records as its policy."""
    if policy.text is None:
        raise ValueError(f"policy {policy.version} has no TOML text (build it with parse_policy)")
    return policy.text


def keep_only(store: ReadModelStore, generations: set[int | None]) -> None:
    """Drop every generation but these (the active one and the one before it, for a look back)."""
    for old in store.generations():
        if old["generation"] not in generations and not old["active"]:
            store.drop_generation(old["generation"])


def decode_stored_body(body: bytes) -> Event:
    """A stored event: accepted once under whatever size limit applied then, so read without one."""
    return decode_event(body, max_bytes=None)


def decode_stored(stored: list[StoredEvent]) -> list[Recorded]:
    return [Recorded(seq_of(e.partition, e.offset), decode_stored_body(e.body)) for e in stored]


K = TypeVar("K")


def _decoded(
    read: Callable[[int, list[K]], dict[K, list[StoredEvent]]], generation: int, keys: list[K]
) -> dict[K, list[Recorded]]:
    """The stored histories of ``keys``, decoded (an empty one for a key with none)."""
    stored = read(generation, keys)
    return {key: decode_stored(stored.get(key, [])) for key in keys}


def raw_record(topic: str, item: ConsumedEvent) -> RawRecord:
    """The message an event came in, for its dead letter."""
    if item.record is not None:
        return item.record
    return RawRecord(topic, item.partition, item.offset, -1, item.event.customer_id.encode(), item.raw)


def _bound(cache: OrderedDict) -> None:
    while len(cache) > CACHE_TICKETS:
        cache.popitem(last=False)  # the least recently used


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


def _latest(row: CustomerRow | None, records: list[Recorded]) -> datetime:
    """A customer's log time after ``records``: the latest occurred_at of all its events."""
    latest = max(r.at for r in records)
    before = instant_of(row.log_time) if row is not None else None
    return latest if before is None else max(before, latest)


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


def _ticket_row(
    state: TicketState,
    view: dict,
    schedule: _Schedule,
    records: list[Recorded],
    at: datetime,
    ledger: Ledger,
    marks: bytes | None,
) -> TicketRow:
    clocks = view["clocks"]
    dues = {name: schedule.dues.get(name) for name in clocks}
    pending_dues = [
        due
        for name, due in dues.items()
        if due is not None and due > at and clocks[name]["status"] == "running"
    ]
    upcoming = [schedule.next_change] if schedule.next_change is not None else []
    billing = view["billing"]
    reach = schedule.reach
    return TicketRow(
        ticket_id=view["ticket_id"],
        customer_id=view["customer_id"],
        partition=partition_of(records[0]),
        priority=view["priority"],
        category=view["category"],
        state=view["state"],
        status=view["status"],
        escalation_level=view["escalation"]["level"],
        response_status=clocks["response"]["status"],
        resolution_status=clocks["resolution"]["status"],
        breached=any(c["breached"] for c in clocks.values()),
        at_risk=any(c["at_risk"] for c in clocks.values()),
        response_due_at=epoch(dues["response"]),
        resolution_due_at=epoch(dues["resolution"]),
        next_due_at=epoch(min(pending_dues, default=None)),
        next_change_at=epoch(min(upcoming, default=None)),
        billing_rule=billing["rule"],
        billing_status=billing["status"],
        billing_month=billing["month"],
        amount_cents=billing["amount_cents"],
        billable_seconds=billing["billable_seconds"],
        opened_at=epoch(state.opened_at) or 0,
        evaluated_at=epoch(at) or 0,
        view=orjson.dumps(view),
        signals=ledger.encode(),
        response_at_risk=clocks["response"]["at_risk"],
        response_breached=clocks["response"]["breached"],
        resolution_at_risk=clocks["resolution"]["at_risk"],
        resolution_breached=clocks["resolution"]["breached"],
        marks=marks or b"{}",
        account_until=NEVER if reach is None else epoch(reach) or 0,
    )


def _pending_row(
    key: TicketKey, records: list[Recorded], as_of: datetime, before: TicketRow | None
) -> TicketRow:
    customer, ticket = key
    ahead = [r.at for r in records if r.at > as_of]
    opening = next((r for r in history(records) if r.event.type == "ticket.opened"), None)
    opens_at = whole_second(opening.event.occurred_at).strftime("%Y-%m-%dT%H:%M:%SZ") if opening else None
    view = {"ticket_id": ticket, "customer_id": customer, "state": "pending", "opens_at": opens_at}
    # What the row asserted and counted before stays: a view that is only not opened *yet*
    # takes nothing back.
    return _row_without_state(
        key,
        records,
        as_of,
        "pending",
        view,
        next_change_at=epoch(min(ahead, default=None)),
        signals=before.signals if before is not None else b"{}",
        marks=before.marks if before is not None else b"{}",
    )


def _quarantined_row(
    key: TicketKey,
    records: list[Recorded],
    as_of: datetime,
    policy: Policy,
    error: Exception,
    ledger: Ledger,
    marks: bytes | None,
) -> TicketRow:
    """A ticket the engine raised on: its view says so (projections.quarantine). Its signals
    and counts stay as they were; it is evaluated again at its next event, or as of the wall
    clock after QUARANTINE_RETRY_S (a fixed version of the engine heals it then)."""
    return _row_without_state(
        key,
        records,
        as_of,
        QUARANTINED,
        quarantined_view(key, records, as_of, error, policy),
        next_change_at=(epoch(as_of) or 0) + QUARANTINE_RETRY_S,
        signals=ledger.encode(),
        marks=marks or b"{}",
    )


def _row_without_state(
    key: TicketKey,
    records: list[Recorded],
    as_of: datetime,
    state: str,
    view: dict,
    *,
    next_change_at: int | None,
    signals: bytes,
    marks: bytes,
) -> TicketRow:
    """The row of a ticket with no engine state as of ``as_of`` (pending, quarantined): no
    clocks, billing or escalation; any account change can reach it."""
    customer, ticket = key
    return TicketRow(
        ticket_id=ticket,
        customer_id=customer,
        partition=partition_of(records[0]),
        priority="",
        category="",
        state=state,
        status="",
        escalation_level=0,
        response_status="",
        resolution_status="",
        breached=False,
        at_risk=False,
        response_due_at=None,
        resolution_due_at=None,
        next_due_at=None,
        next_change_at=next_change_at,
        billing_rule=None,
        billing_status="none",
        billing_month=None,
        amount_cents=0,
        billable_seconds=0,
        opened_at=0,
        evaluated_at=epoch(as_of) or 0,
        view=orjson.dumps(view),
        signals=signals,
        marks=marks,
        account_until=FOREVER_EPOCH,
    )


def _customer_row(
    customer: str,
    partition: int,
    policy: Policy,
    at: datetime,
    accounts: list[Recorded],
    log_time: datetime | None,
) -> CustomerRow:
    standing = account_standing(history(accounts, at), policy, at)
    future = [r.at for r in accounts if r.at > at]
    upcoming = [t for t in (standing.next_change_at, min(future, default=None)) if t is not None]
    view = {
        "customer_id": customer,
        "delinquent": standing.delinquent,
        "dashboard_suspended": standing.dashboard_suspended,
    }
    return CustomerRow(
        customer_id=customer,
        partition=partition,
        delinquent=standing.delinquent,
        dashboard_suspended=standing.dashboard_suspended,
        next_change_at=epoch(min(upcoming, default=None)),
        evaluated_at=epoch(at) or 0,
        view=orjson.dumps(view),
        log_time=epoch(log_time),
    )


async def _wait(condition: asyncio.Condition, stop: asyncio.Event, timeout: float) -> None:
    """Wait (holding ``condition``) until notified, stopped, or ``timeout`` seconds passed."""
    try:
        await asyncio.wait_for(condition.wait(), timeout)
    except TimeoutError:
        pass
