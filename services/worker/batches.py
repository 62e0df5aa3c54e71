"""What the worker receives and sends back: batches of consumed events, and its answers to the
consumer (rewind, dead letters not written); and what it reads of the policy topic (the policy
versions: :class:`PolicyRead`, :class:`PolicyLog`). The Kafka consumer (services.kafka.consumer)
makes the batches, services.kafka.policies reads the policy topic; nothing here knows Kafka.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from events import Event, EventRejected, RejectKind
from events.policies import PolicyVersionPublished, decode_policy_event
from projections.contracts import ContractError, PolicyVersion, version_of

log = logging.getLogger(__name__)

# A record's position in the read models is ``offset * MAX_PARTITIONS + partition``
# (services.worker.histories.seq_of): only partitions 0 to MAX_PARTITIONS - 1 have positions of
# their own (partition 1025 at offset 0 would be partition 1 at offset 1). services.config refuses
# more partitions for the topics slatrack creates; the consumer halts a partition beyond them.
MAX_PARTITIONS = 1024


def partition_problem(partition: int) -> str | None:
    """Why the records of ``partition`` cannot be projected (None: they can)."""
    if 0 <= partition < MAX_PARTITIONS:
        return None
    return (
        f"partition {partition} is beyond the {MAX_PARTITIONS} partitions slatrack can project (a "
        f"record's position is offset x {MAX_PARTITIONS} + partition); copy the log into a topic of "
        f"at most {MAX_PARTITIONS} partitions and `slatrack rebuild`"
    )


@dataclass(frozen=True)
class RawRecord:
    """A message as it was read from Kafka, before validation."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes | None]] = ()  # Kafka allows a header without a value


@dataclass(frozen=True, slots=True)
class ConsumedEvent:
    event: Event
    partition: int
    offset: int
    raw: bytes = b""  # the message as it came: valid, so it decodes to ``event`` again
    # The whole message (key, timestamp, headers), for a dead letter the handler may send.
    record: RawRecord | None = None


@dataclass
class ConsumedBatch:
    valid: list[ConsumedEvent]
    # partition -> (first offset of the batch, next offset after it)
    offsets: dict[int, tuple[int, int]]
    rejected: int = 0
    # Partitions with more records after this batch (the reader is behind the log).
    lagging: set[int] = field(default_factory=set)


class BatchHandler(Protocol):
    async def start_offsets(self, partitions: set[int]) -> dict[int, int | None] | None:
        """Where to start reading each newly assigned partition (None: its beginning).

        Returning None altogether means "Kafka's committed offsets".
        """

    async def revoked(self, partitions: set[int]) -> None: ...

    async def handle(self, batch: ConsumedBatch) -> None:
        """Apply a batch. Raise :class:`Rewind` to read partitions again from given offsets."""

    async def log_ended_before(self, partitions: dict[int, tuple[int, int]]) -> None:
        """Stored offsets lie beyond the end of the log: partition -> (offset, end)."""

    def take_rewind(self) -> "Rewind | None":
        """A rewind the handler decided on between batches (a generation switch noticed by its
        timers), for the consumer to carry out; None if there is none."""


class DeadLettersFailed(Exception):
    """Raised by a handler: dead letters it had to write (conflicting copies of an event) were
    not acknowledged. ``offsets``: partition -> the offset of its first such message, where that
    partition halts; the others go on."""

    def __init__(self, offsets: dict[int, int], reason: str):
        super().__init__(reason)
        self.offsets = offsets
        self.reason = reason


class Rewind(Exception):
    """Raised by a handler: read these partitions again from these offsets (None: the beginning)."""

    def __init__(self, offsets: dict[int, int | None], reason: str):
        super().__init__(reason)
        self.offsets = offsets


class DeadLetterNotWritten(Exception):
    """Raised by a dead-letter sender: the broker did not take a dead letter (the sender's own
    errors translated once, so that nothing here needs to know the broker client)."""


DeadLetters = Callable[[list[tuple[RawRecord, EventRejected]]], Awaitable[None]]

# What the consumer tells about the partitions it holds (services.kafka.consumer.ValidatingConsumer),
# for /readyz and /metrics: per partition, how many records are not processed yet (None: not known
# yet); and why partitions do not go on, given how long one may make no progress (its ``problems``).
Lag = Callable[[], dict[int, int | None]]
Problems = Callable[[float], list[str]]


async def dead_letter_each_partition(
    send: DeadLetters, letters: list[tuple[RawRecord, EventRejected]], timeout: float
) -> dict[int, tuple[int, str]]:
    """Send the dead letters, each partition's apart and within ``timeout``: the partitions where
    that failed, with the offset of their first dead letter (where they halt) and why. One
    partition's failure never holds back another's letters."""
    by_partition: dict[int, list[tuple[RawRecord, EventRejected]]] = {}
    for item in sorted(letters, key=lambda item: (item[0].partition, item[0].offset)):
        by_partition.setdefault(item[0].partition, []).append(item)

    async def one(items: list[tuple[RawRecord, EventRejected]]) -> str | None:
        try:
            await asyncio.wait_for(send(items), timeout)
        except Exception as exc:  # the broker, or a message we could not make a dead letter of
            if not isinstance(exc, DeadLetterNotWritten | OSError | TimeoutError):
                log.error("a dead letter could not be made", exc_info=exc)
            return f"its dead letter could not be written: {said(exc)}"
        return None

    partitions = sorted(by_partition)
    outcomes = await asyncio.gather(*(one(by_partition[p]) for p in partitions))
    failed = {p: why for p, why in zip(partitions, outcomes, strict=True) if why}
    return {p: (by_partition[p][0][0].offset, why) for p, why in failed.items()}


def said(error: BaseException) -> str:
    """An error in one line: its type, and its message if it has one."""
    if isinstance(error, DeadLetterNotWritten):
        return str(error)
    name, text = type(error).__name__, str(error).strip().splitlines()[0] if str(error).strip() else ""
    if text.startswith(name):  # aiokafka's errors name themselves
        return text
    return f"{name}: {text}" if text else name


class WholeLog(Protocol):
    """The whole event log, from its earliest offset (a rebuild reads it): entered, it knows its
    partitions; ``read_to_end`` hands every batch up to the current end to ``handle``."""

    partitions: list[int]

    async def __aenter__(self) -> "WholeLog": ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    async def read_to_end(
        self,
        handle: Callable[[ConsumedBatch], Awaitable[None]],
        progress: Callable[[int, int], None] = ...,
    ) -> None: ...


@runtime_checkable
class PartitionedLog(WholeLog, Protocol):
    """A whole log that can be read partition by partition in other processes: ``part`` gives a
    log of some of its partitions, not entered, that pickles (the partitions are independent: a
    customer's events share one); ``seek`` moves an entered one on to given offsets."""

    def part(self, partitions: Collection[int]) -> "PartitionedLog": ...

    async def seek(self, offsets: dict[int, int | None]) -> None: ...


# --- the policy topic --------------------------------------------------------------------------


@dataclass
class PolicyRead:
    """What a read of the policy topic found, from a position up to the end as found when the
    reading started: the valid versions in topic order, the records that are none (position,
    why: never raised, a malformed policy event must not stop a reader), and the position to read
    from next. ``end`` below the position asked from: the topic ends before it (it was emptied or
    replaced). ``duplicates``: the positions of later identical copies of a version (skipped)."""

    versions: list[PolicyVersion] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)
    end: int = 0
    duplicates: list[int] = field(default_factory=list)


class PolicyLog(Protocol):
    """The policy topic, followed: ``read(start)`` reads from position ``start`` up to the end as
    found when the reading starts (services.kafka.policies.KafkaPolicyLog; tests: an in-memory
    one). A missing topic reads as empty."""

    async def read(self, start: int) -> PolicyRead: ...


class PolicyDecoder:
    """Policy records, position by position, as versions or why not (the same for the topic and
    the policy lines of an export): the envelope (events.policies.decode_policy_event), then the
    policy and its digest (projections.contracts.version_of). The first copy of an ``event_id``
    is the version: a later identical copy is a duplicate (skipped), a later one with another body
    rejected (``duplicate_event_id_conflict``). First copies are remembered across reads, by
    position, so reading a stretch again gives the same answer."""

    def __init__(self) -> None:
        self._first: dict[str, tuple[int, PolicyVersionPublished]] = {}

    def take(self, position: int, raw: bytes | None) -> PolicyVersion | int | str:
        """The version at ``position``; or the position of the first copy it duplicates (an int);
        or why it is no version (a str, ``kind: detail``)."""
        try:
            event = decode_policy_event(raw)
        except EventRejected as rejection:
            return f"{rejection.kind}: {rejection.detail}"
        first = self._first.get(event.event_id)
        if first is not None and first[0] != position:
            if first[0] < position:
                if first[1] == event:
                    return first[0]
                return (
                    f"{RejectKind.DUPLICATE_EVENT_ID_CONFLICT}: event_id {event.event_id!r} is at position "
                    f"{first[0]} with another body; the first copy is the version"
                )
        try:
            version = version_of(event, position)
        except ContractError as exc:
            return f"invalid_policy: {exc}"
        if first is None or position < first[0]:
            self._first[event.event_id] = (position, event)
        return version

    def read(self, records: Iterable[tuple[int, bytes | None]], end: int) -> PolicyRead:
        """A :class:`PolicyRead` of ``(position, value)`` records, in position order, up to ``end``."""
        found = PolicyRead(end=end)
        for position, raw in records:
            taken = self.take(position, raw)
            if isinstance(taken, PolicyVersion):
                found.versions.append(taken)
            elif isinstance(taken, int):
                found.duplicates.append(position)
            else:
                found.rejected.append((position, taken))
        return found
