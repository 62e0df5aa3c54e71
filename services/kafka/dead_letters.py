"""The dead-letter topic for operators: ``slatrack dlq list`` and ``slatrack dlq replay``.

A dead letter is named by where it is in the dead-letter topic, ``PARTITION@OFFSET``.

**Replaying** sends a dead letter back to the events topic as it was (key,
value and its publisher's headers byte for byte; the ``slatrack-dlq-*``
headers left out) with one header more, ``slatrack-replay-of:
<dlq topic>:<partition>@<offset>``. That header is the record of the replay,
and it is in the log itself: before sending, a replay reads the events topic
and leaves out every dead letter whose replay is there already. So a dead
letter is sent at most once across runs and crashes: a run that stops half
way sent some (they are in the log, and the next run sees them) and not the
others (the next run sends them). Two runs at the same instant can both send
one: run one at a time. Even then nothing is counted twice, because a second
identical copy of an event is a duplicate (docs/events.md, Identity).

Both read their topics from the beginning to the end as found at the start
(:func:`services.kafka.log_reader.read_records`: the fetch high watermark, not
ListOffsets), without joining a consumer group.
"""

import asyncio
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiokafka import ConsumerRecord

from services.config import Settings
from services.kafka.client import raw_producer
from services.kafka.log_reader import read_records
from services.kafka.publisher import (
    DLQ_PREFIX,
    H_DETAIL,
    H_OFFSET,
    H_PARTITION,
    H_REASON,
    H_TOPIC,
    H_TRUNCATED,
)

H_REPLAY_OF = "slatrack-replay-of"
PREVIEW_BYTES = 40


class UnknownDeadLetter(LookupError):
    """A dead letter asked for by name is not in the dead-letter topic."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]

    @classmethod
    def of(cls, record: ConsumerRecord) -> "DeadLetter":
        return cls(
            record.partition,
            record.offset,
            record.timestamp,
            record.key,
            record.value,
            tuple(record.headers or ()),
        )

    @property
    def name(self) -> str:
        return f"{self.partition}@{self.offset}"

    def header(self, name: str) -> str | None:
        """The last header of that name, as text."""
        for found, value in reversed(self.headers):
            if found == name:
                return (value or b"").decode("utf-8", "replace")
        return None

    @property
    def reason(self) -> str:
        return self.header(H_REASON) or "unknown"

    @property
    def original_topic(self) -> str | None:
        return self.header(H_TOPIC)

    @property
    def original(self) -> str:
        """Where the message was first read: ``topic partition@offset``."""
        return f"{self.original_topic} {self.header(H_PARTITION)}@{self.header(H_OFFSET)}"

    def document(self) -> dict[str, object]:
        """What ``dlq list --json`` prints of it."""
        return {
            "dead_letter": self.name,
            "dead_lettered_at": _instant(self.timestamp_ms),
            "reason": self.reason,
            "detail": self.header(H_DETAIL),
            "original_topic": self.original_topic,
            "original_partition": _int(self.header(H_PARTITION)),
            "original_offset": _int(self.header(H_OFFSET)),
            "key": None if self.key is None else self.key.decode("utf-8", "replace"),
            "value_bytes": None if self.value is None else len(self.value),
            "value_start": preview(self.value),
            "replay_of": self.header(H_REPLAY_OF),
        }

    def replay_headers(self, dlq_topic: str) -> list[tuple[str, bytes | None]]:
        """Its publisher's own headers, byte for byte, and which dead letter this is a replay of."""
        own = [(n, v) for n, v in self.headers if not n.startswith(DLQ_PREFIX) and n != H_REPLAY_OF]
        return [*own, (H_REPLAY_OF, replay_id(dlq_topic, self.name).encode())]


def replay_id(dlq_topic: str, name: str) -> str:
    return f"{dlq_topic}:{name}"


def parse_name(text: str) -> tuple[int, int]:
    """``PARTITION@OFFSET`` -> (partition, offset); ValueError if it is not one."""
    partition, at, offset = text.partition("@")
    if not at or not partition.isdigit() or not offset.isdigit():
        raise ValueError(f"{text} is not PARTITION@OFFSET (for example 3@17)")
    return int(partition), int(offset)


def preview(value: bytes | None, limit: int = PREVIEW_BYTES) -> str:
    """The first bytes of a value as one line of text (undecodable bytes as U+FFFD)."""
    if value is None:
        return "(no value)"
    if not value:
        return "(empty)"
    text = value[:limit].decode("utf-8", "replace")
    text = "".join(c if c.isprintable() else " " for c in text)
    return text + ("…" if len(value) > limit else "")


async def dead_letters(settings: Settings) -> AsyncIterator[DeadLetter]:
    """Every dead letter up to the end of the topic as found at the start, in the topic's order."""
    async with aclosing(read_records(settings, settings.topic_dlq)) as records:
        async for _, record in records:
            yield DeadLetter.of(record)


@dataclass
class Listing:
    shown: list[DeadLetter] = field(default_factory=list)
    matching: int = 0
    total: int = 0


async def list_dead_letters(settings: Settings, reasons: Collection[str], limit: int) -> Listing:
    """The first ``limit`` dead letters with one of ``reasons`` (all if empty), and the counts."""
    listing = Listing()
    async for letter in dead_letters(settings):
        listing.total += 1
        if reasons and letter.reason not in reasons:
            continue
        listing.matching += 1
        if len(listing.shown) < limit:
            listing.shown.append(letter)
    return listing


@dataclass
class ReplayPlan:
    send: list[DeadLetter] = field(default_factory=list)
    # Dead letters replayed before: name -> where the replay is in the events topic.
    replayed: dict[str, str] = field(default_factory=dict)
    # From another topic than the configured events topic: not sent.
    foreign: list[DeadLetter] = field(default_factory=list)
    # Cut to fit the dead-letter topic (value or headers): not the message as it came (that one is
    # at its original offset).
    cut: list[DeadLetter] = field(default_factory=list)


async def plan_replay(settings: Settings, names: Collection[str], reasons: Collection[str]) -> ReplayPlan:
    """What a replay of the dead letters named (or with one of ``reasons``) would send.

    Raises :class:`UnknownDeadLetter` if a name is not in the topic.
    """
    wanted = {parse_name(n) for n in names}
    chosen: list[DeadLetter] = []
    async for letter in dead_letters(settings):
        if (letter.partition, letter.offset) in wanted or letter.reason in reasons:
            chosen.append(letter)
    missing = wanted - {(letter.partition, letter.offset) for letter in chosen}
    if missing:
        listed = ", ".join(f"{p}@{o}" for p, o in sorted(missing))
        raise UnknownDeadLetter(f"no dead letter at {listed} in {settings.topic_dlq}")
    plan = ReplayPlan()
    if not chosen:
        return plan
    done = await replays_in_log(settings)
    for letter in chosen:
        if (where := done.get(replay_id(settings.topic_dlq, letter.name))) is not None:
            plan.replayed[letter.name] = where
        elif letter.original_topic != settings.topic_events:
            plan.foreign.append(letter)
        elif letter.header(H_TRUNCATED) is not None:  # its value or its own headers left out to fit
            plan.cut.append(letter)
        else:
            plan.send.append(letter)
    return plan


async def replays_in_log(settings: Settings) -> dict[str, str]:
    """Every replay in the events topic: its ``slatrack-replay-of`` -> ``partition@offset``."""
    found: dict[str, str] = {}
    async with aclosing(read_records(settings, settings.topic_events)) as records:
        async for _, record in records:
            for name, value in record.headers or ():
                if name == H_REPLAY_OF and value:
                    found.setdefault(value.decode("utf-8", "replace"), f"{record.partition}@{record.offset}")
    return found


async def send_replays(
    settings: Settings, letters: list[DeadLetter], on_sent: Callable[[DeadLetter, str], None]
) -> None:
    """Send each dead letter back to the events topic, in the dead-letter topic's order; return once
    the broker acknowledged every one (``on_sent`` is told where each landed)."""
    producer = raw_producer(settings)
    await producer.start()
    try:
        pending = [
            await producer.send(
                settings.topic_events,
                letter.value,
                key=letter.key,
                headers=letter.replay_headers(settings.topic_dlq),
            )
            for letter in letters
        ]
        for letter, sent in zip(letters, await asyncio.gather(*pending), strict=True):
            on_sent(letter, f"{sent.partition}@{sent.offset}")
    finally:
        await producer.stop()


def _instant(timestamp_ms: int) -> str | None:
    if timestamp_ms < 0:
        return None
    return datetime.fromtimestamp(timestamp_ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _int(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() else None
