"""What the worker receives and sends back: batches of consumed events, and its answers to the
consumer (rewind, dead letters not written). The Kafka consumer (services.kafka.consumer) makes
the batches; nothing here knows Kafka.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from events import Event, EventRejected
from projections.contracts import PolicyVersion

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


@dataclass(frozen=True)
class PolicyRead:
    """What a read of the policy topic found: the versions (each checked), the records rejected
    ((offset, why): a malformed one never stops a reader), and the position after them."""

    versions: list[PolicyVersion]
    rejected: list[tuple[int, str]]
    end: int


class PolicyLog(Protocol):
    """The policy topic, as the worker reads it (services.kafka.policies)."""

    async def read(self, start: int) -> PolicyRead:
        """Its records from position ``start`` up to its end as found now."""
        ...
