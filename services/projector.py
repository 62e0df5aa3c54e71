"""The projector: folds ``ticket-events`` into the read models, exactly once,
and keeps them current as time passes.

Per batch (from :class:`services.consumer.ValidatingConsumer`): the touched
tickets, and the open tickets of customers whose account changed, are
replayed with the pure engine (``projections``) as of now; their rows, the new
events, the signals they assert and the partitions' next offsets are written
in one transaction. On assignment the consumer seeks to the offsets stored
there, so a crash at any instant loses nothing and applies nothing twice.

Between events, time still moves: every row carries ``next_change_at`` (the
next warning, due, breach or escalation instant of a running clock, or a
suspension boundary). One scheduler per worker sleeps until the earliest of
its partitions and re-evaluates what is due then.

Signals go to an outbox table in the same transaction, and from there to the
``sla-signals`` topic.
"""

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

import orjson

from events import decode_event, encode_event
from projections.account import AccountStanding, account_standing
from projections.policy import Policy
from projections.signals import asserted, revoked
from projections.ticket import TicketState, evaluate
from projections.timeline import Recorded, history, whole_second
from services import metrics
from services.consumer import ConsumedBatch, ConsumedEvent, Rewind
from services.sla_metrics import Tally
from services.store.base import (
    BatchWrite,
    CustomerRow,
    GenerationChanged,
    ReadModelStore,
    Signal,
    StaleBatch,
    StoredEvent,
    TicketRow,
)

log = logging.getLogger(__name__)

CACHE_TICKETS = 20_000  # decoded histories kept: about 100 MB


def wall_clock() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def epoch(instant: datetime | None) -> int | None:
    return None if instant is None else int(instant.timestamp())


def seq_of(partition: int, offset: int) -> int:
    """Recording order: the offset (a customer's events share one partition), then the partition."""
    return offset * 1024 + partition


def partition_of(record: Recorded) -> int:
    """The partition a record was read from (the inverse of :func:`seq_of`)."""
    return record.seq % 1024


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
    ):
        self.store = store
        self.policy = policy
        self.topic = topic
        self.clock = clock
        self.generation = generation
        self.must_be_active = must_be_active
        # The SLA counters of this process (a rebuild counts nothing: the live workers did).
        self.count_metrics = count_metrics
        if count_metrics:
            metrics.SLA_ELAPSED.install(policy)
        self.partitions: set[int] = set()
        self.expected: dict[int, int | None] = {}  # partition -> next offset this generation wants
        self.lock = asyncio.Lock()  # batches and timer passes write one at a time
        self.committed = asyncio.Condition()  # notified after every commit (timers, outbox)
        self.applied_events = 0
        # Catching up on a backlog, a ticket is evaluated as of the latest
        # event time seen in its partition, not as of now: otherwise every
        # ticket whose response is still further down the log would look
        # breached for a moment (and page someone). Once a partition is caught
        # up, now is the time.
        self.watermark: dict[int, datetime] = {}
        self.lagging: set[int] = set()
        # Decoded histories of recently touched tickets and customers: a ticket
        # touched by consecutive batches is not read back and decoded each time.
        self._tickets: dict[str, list[Recorded]] = {}
        self._accounts: dict[str, list[Recorded]] = {}

    async def open(self) -> int:
        """Migrate the store and find (or create) the active generation."""
        await asyncio.to_thread(self.store.migrate)
        if self.generation is None:
            self.generation = await asyncio.to_thread(self.store.active_generation)
            if self.generation is None:
                self.generation = await asyncio.to_thread(self.store.create_generation, "first start")
                await asyncio.to_thread(self.store.activate_generation, self.generation)
                log.info("created read-model generation %d", self.generation)
        return self.generation

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
                self.watermark.pop(partition, None)  # a partition that comes back starts afresh
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
                self.store.create_generation, f"log ended before stored offsets {partitions}"
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
            for item in valid:
                at = whole_second(item.event.occurred_at)
                if item.partition not in self.watermark or at > self.watermark[item.partition]:
                    self.watermark[item.partition] = at
            self.lagging = (self.lagging - set(batch.offsets)) | batch.lagging
            try:
                write, tally = await self._project(valid, offsets)
                await asyncio.to_thread(
                    self.store.commit_batch, self._gen, write, must_be_active=self.must_be_active
                )
            except StaleBatch as exc:
                self._forget()
                stored = await asyncio.to_thread(self.store.stored_offsets, self._gen, self.topic)
                for partition in offsets:
                    self.expected[partition] = stored.get(partition)
                raise Rewind({p: stored.get(p) for p in offsets}, f"stale batch: {exc}") from None
            except GenerationChanged:
                raise await self._follow_generation() from None
            except BaseException:
                self._forget()
                raise
            for partition, (_, after) in offsets.items():
                self.expected[partition] = after
            self.applied_events += len(valid)
            self._publish(tally)
        await self._notify()
        metrics.PROJECTOR_BATCH_SECONDS.observe(time.perf_counter() - started)
        if valid:
            latest = max(item.event.occurred_at for item in valid)
            metrics.PROJECTOR_LAST_EVENT.set(latest.timestamp())

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
                async with self.committed:
                    partitions = sorted(self.partitions)
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
                await self._follow_generation()
            except Exception:
                log.exception("timer pass failed; trying again in 1 s")
                await asyncio.sleep(1)

    async def tick(self) -> int:
        """Re-evaluate what is due now; return how many tickets changed."""
        async with self.lock:
            now, gen = self.clock(), self._gen
            tickets: list[str] = []
            customers: list[str] = []
            for partition in sorted(self.partitions):
                instant = epoch(self._as_of(partition, now))
                tickets += await asyncio.to_thread(self.store.tickets_changing_by, gen, instant, [partition])
                customers += await asyncio.to_thread(
                    self.store.customers_changing_by, gen, instant, [partition]
                )
            if not tickets and not customers:
                return 0
            # Claimed at the offsets this worker holds, unchanged: if another worker has moved a
            # partition on (this one lost it and has not noticed yet), the pass writes nothing.
            held = {p: (o, o) for p in sorted(self.partitions) if (o := self.expected.get(p)) is not None}
            try:
                write, tally = await self._project([], held, tickets, customers)
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

    def _as_of(self, partition: int, now: datetime) -> datetime:
        if partition in self.lagging and partition in self.watermark:
            return min(now, self.watermark[partition])
        return now

    def _publish(self, tally: Tally) -> None:
        if self.count_metrics:
            tally.publish()

    async def _notify(self) -> None:
        async with self.committed:
            self.committed.notify_all()

    # -- the projection itself ---------------------------------------------

    async def _project(
        self,
        valid: list[ConsumedEvent],
        offsets: dict[int, tuple[int, int]],
        also_tickets: Iterable[str] = (),
        also_customers: Iterable[str] = (),
    ) -> tuple[BatchWrite, Tally]:
        now = self.clock()
        write = BatchWrite(self.topic, offsets)
        tally = Tally()
        new_tickets: dict[str, list[Recorded]] = {}
        new_accounts: dict[str, list[Recorded]] = {}
        customer_partition: dict[str, int] = {}
        for item in valid:
            event = item.event
            record = Recorded(seq_of(item.partition, item.offset), event)
            ticket_id = getattr(event, "ticket_id", None)
            write.events.append(
                StoredEvent(
                    event.event_id,
                    ticket_id,
                    event.customer_id,
                    item.partition,
                    item.offset,
                    int(record.at.timestamp()),
                    item.raw or encode_event(event),
                )
            )
            customer_partition[event.customer_id] = item.partition
            if ticket_id is None:
                new_accounts.setdefault(event.customer_id, []).append(record)
            else:
                new_tickets.setdefault(ticket_id, []).append(record)

        customers = set(new_accounts) | set(also_customers)
        affected = set(new_tickets) | set(also_tickets)
        if customers:
            affected |= set(await asyncio.to_thread(self.store.open_tickets_of, self._gen, customers))
        tickets = await self._histories(affected, new_tickets, tally)
        owners = {t: _owner(records) for t, records in tickets.items()}
        customers |= {c for c in owners.values() if c is not None}
        accounts = await self._account_histories(customers, new_accounts, tally)
        previous = await asyncio.to_thread(self.store.ticket_rows, self._gen, affected)
        standings: dict[tuple[str, datetime], AccountStanding] = {}

        def standing(customer: str, as_of: datetime) -> AccountStanding:
            if (customer, as_of) not in standings:
                account = history(accounts.get(customer, []), as_of)
                standings[customer, as_of] = account_standing(account, self.policy, as_of)
            return standings[customer, as_of]

        for ticket_id in sorted(affected):
            records = tickets.get(ticket_id, [])
            if not records:
                continue
            owner = owners.get(ticket_id)
            as_of = self._as_of(partition_of(records[0]), now)
            state = evaluate(records, self.policy, as_of, standing(owner, as_of) if owner else None)
            if state is None:
                # Not opened as of now (its ticket.opened is still ahead, or
                # missing): a placeholder row keeps the instant to look again.
                write.tickets.append(_pending_row(ticket_id, owner, records, as_of, previous.get(ticket_id)))
                continue
            row, signals = self._ticket_row(state, records, previous.get(ticket_id), as_of, tally)
            write.tickets.append(row)
            write.signals.extend(signals)
        for customer in sorted(customers):
            account = accounts.get(customer, [])
            partition = customer_partition.get(
                customer, _customer_partition(account, tickets, owners, customer)
            )
            as_of = self._as_of(partition, now)
            write.customers.append(
                _customer_row(customer, partition, standing(customer, as_of), as_of, account)
            )
        return write, tally

    def _ticket_row(
        self,
        state: TicketState,
        records: list[Recorded],
        before: TicketRow | None,
        now: datetime,
        tally: Tally,
    ) -> tuple[TicketRow, list[Signal]]:
        view = state.view()
        clocks = view["clocks"]
        dues = {name: state.clocks[name].due_at(now) for name in clocks}
        pending_dues = [
            due
            for name, due in dues.items()
            if due is not None and due > now and clocks[name]["status"] == "running"
        ]
        future_events = [r.at for r in records if r.at > now]
        upcoming = [t for t in (state.next_change_at(), min(future_events, default=None)) if t is not None]

        claims = asserted(state)
        # The row keeps {signal id: type} of what it asserted, to see what a late event took back.
        had: dict[str, str] = orjson.loads(before.signals) if before is not None else {}
        fresh = {sid: body for sid, body in claims.items() if sid not in had}
        breaches_before = {sid for sid, kind in had.items() if kind == "sla.breached"}
        revocations = revoked(breaches_before, claims, view["ticket_id"], view["customer_id"])
        fresh.update(revocations)
        signals = [
            Signal(
                sid,
                view["customer_id"],
                orjson.dumps(body, option=orjson.OPT_SORT_KEYS),
                partition_of(records[0]) if records else None,
            )
            for sid, body in sorted(fresh.items())
        ]
        marks = tally.count_ticket(
            state, before.marks if before is not None else None, [*claims.values(), *revocations.values()]
        )
        billing = view["billing"]
        partition = partition_of(records[0]) if records else 0
        row = TicketRow(
            ticket_id=view["ticket_id"],
            customer_id=view["customer_id"],
            partition=partition,
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
            evaluated_at=epoch(now) or 0,
            view=orjson.dumps(view),
            signals=orjson.dumps({sid: body["type"] for sid, body in sorted(claims.items())}),
            response_at_risk=clocks["response"]["at_risk"],
            response_breached=clocks["response"]["breached"],
            resolution_at_risk=clocks["resolution"]["at_risk"],
            resolution_breached=clocks["resolution"]["breached"],
            marks=marks,
        )
        return row, signals

    # -- histories (cache, then store) -------------------------------------

    async def _histories(
        self, ticket_ids: set[str], new: dict[str, list[Recorded]], tally: Tally
    ) -> dict[str, list[Recorded]]:
        missing = [t for t in ticket_ids if t not in self._tickets]
        if missing:
            stored = await asyncio.to_thread(self.store.events_of_tickets, self._gen, missing)
            for ticket_id in missing:
                self._tickets[ticket_id] = decode_stored(stored.get(ticket_id, []))
        for ticket_id, records in new.items():
            tally.duplicates += _repeats(self._tickets[ticket_id], records)
            self._tickets[ticket_id] = self._tickets[ticket_id] + records
        histories = {t: self._tickets[t] for t in ticket_ids}
        self._bound()  # after taking them: bounding may empty the cache
        return histories

    async def _account_histories(
        self, customers: set[str], new: dict[str, list[Recorded]], tally: Tally
    ) -> dict[str, list[Recorded]]:
        missing = [c for c in customers if c not in self._accounts]
        if missing:
            stored = await asyncio.to_thread(self.store.account_events_of, self._gen, missing)
            for customer in missing:
                self._accounts[customer] = decode_stored(stored.get(customer, []))
        for customer, records in new.items():
            tally.duplicates += _repeats(self._accounts[customer], records)
            self._accounts[customer] = self._accounts[customer] + records
        return {c: self._accounts[c] for c in customers}

    def _bound(self) -> None:
        if len(self._tickets) > CACHE_TICKETS:
            self._tickets.clear()
            self._accounts.clear()

    def _forget(self) -> None:
        """Drop the caches: after a failed write they may hold what was never committed."""
        self._tickets.clear()
        self._accounts.clear()

    @property
    def _gen(self) -> int:
        if self.generation is None:
            raise RuntimeError("the projector is not open")
        return self.generation


def keep_only(store: ReadModelStore, generations: set[int | None]) -> None:
    """Drop every generation but these (the active one and the one before it, for a look back)."""
    for old in store.generations():
        if old["generation"] not in generations and not old["active"]:
            store.drop_generation(old["generation"])


def decode_stored(stored: list[StoredEvent]) -> list[Recorded]:
    return [Recorded(seq_of(e.partition, e.offset), decode_event(e.body)) for e in stored]


def _repeats(held: list[Recorded], new: list[Recorded]) -> int:
    """How many of ``new`` repeat an event_id already held (or repeated within ``new``)."""
    seen = {r.event.event_id for r in held}
    repeats = 0
    for record in new:
        repeats += record.event.event_id in seen
        seen.add(record.event.event_id)
    return repeats


def _owner(records: list[Recorded]) -> str | None:
    """The customer of a ticket: the one named by the ticket.opened that applies."""
    for record in history(records):
        if record.event.type == "ticket.opened":
            return record.event.customer_id
    return records[0].event.customer_id if records else None


def _customer_partition(
    accounts: list[Recorded], tickets: dict[str, list[Recorded]], owners: dict[str, str | None], customer: str
) -> int:
    for record in accounts:
        return partition_of(record)
    for ticket_id, owner in owners.items():
        if owner == customer and tickets.get(ticket_id):
            return partition_of(tickets[ticket_id][0])
    return 0


def _pending_row(
    ticket_id: str, owner: str | None, records: list[Recorded], as_of: datetime, before: TicketRow | None
) -> TicketRow:
    ahead = [r.at for r in records if r.at > as_of]
    opening = next((r for r in history(records) if r.event.type == "ticket.opened"), None)
    opens_at = whole_second(opening.event.occurred_at).strftime("%Y-%m-%dT%H:%M:%SZ") if opening else None
    view = {"ticket_id": ticket_id, "customer_id": owner, "state": "pending", "opens_at": opens_at}
    return TicketRow(
        ticket_id=ticket_id,
        customer_id=owner or "",
        partition=partition_of(records[0]),
        priority="",
        category="",
        state="pending",
        status="",
        escalation_level=0,
        response_status="",
        resolution_status="",
        breached=False,
        at_risk=False,
        response_due_at=None,
        resolution_due_at=None,
        next_due_at=None,
        next_change_at=epoch(min(ahead, default=None)),
        billing_rule=None,
        billing_status="none",
        billing_month=None,
        amount_cents=0,
        billable_seconds=0,
        opened_at=0,
        evaluated_at=epoch(as_of) or 0,
        view=orjson.dumps(view),
        # What the row asserted and counted before stays: it is not taken back by
        # a view that is only not opened *yet* (evaluated as of a lagging partition's watermark).
        signals=before.signals if before is not None else b"{}",
        marks=before.marks if before is not None else b"{}",
    )


def _customer_row(
    customer: str, partition: int, standing: AccountStanding, now: datetime, accounts: list[Recorded]
) -> CustomerRow:
    future = [r.at for r in accounts if r.at > now]
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
        evaluated_at=epoch(now) or 0,
        view=orjson.dumps(view),
    )


async def _wait(condition: asyncio.Condition, stop: asyncio.Event, timeout: float) -> None:
    """Wait (holding ``condition``) until notified, stopped, or ``timeout`` seconds passed."""
    try:
        await asyncio.wait_for(condition.wait(), timeout)
    except TimeoutError:
        pass
