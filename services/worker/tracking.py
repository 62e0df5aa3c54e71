"""Where each partition a worker holds stands in the generation it writes: the offset the
generation wants next, and the rewinds that keep the consumer reading from there.

A partition starts at its stored offset (None: the beginning, or nothing known yet). Then:

- a batch that starts after the offset wanted (a gap) is never applied: rewind to that offset;
- records below it (read again after a rewind) are left out, a batch wholly below it ignored;
- a batch the store refuses as stale (another worker committed the partition first) rewinds
  the batch's partitions to the stored offsets;
- a generation switch rewinds every partition to the new generation's offsets, a new
  generation (the log ended before the stored offsets) to the beginning.

Nothing here reads the store: the projector hands in the offsets it read there.
"""

from services.worker.batches import ConsumedBatch, ConsumedEvent, Rewind


class OffsetTracker:
    """The partitions a worker holds, the next offset its generation wants of each, and which
    of them are lagging."""

    def __init__(self) -> None:
        self.partitions: set[int] = set()
        self.expected: dict[int, int | None] = {}  # partition -> next offset this generation wants
        # Partitions with more records after their last batch: their timers wait, the
        # batches themselves move their customers' log time on (projections.story).
        self.lagging: set[int] = set()

    def assign(self, partitions: set[int], stored: dict[int, int]) -> dict[int, int | None]:
        """Newly assigned partitions start at their stored offsets: where to read each from."""
        self.partitions |= partitions
        for partition in partitions:
            self.expected[partition] = stored.get(partition)
        return {p: stored.get(p) for p in partitions}

    def revoke(self, partitions: set[int]) -> None:
        self.partitions -= partitions
        self.lagging -= partitions
        for partition in partitions:
            self.expected.pop(partition, None)

    def trim(self, batch: ConsumedBatch) -> tuple[dict[int, tuple[int, int]], list[ConsumedEvent]]:
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

    def saw(self, batch: ConsumedBatch) -> None:
        """A batch read: its partitions lag if the log has more records after it."""
        self.lagging = (self.lagging - set(batch.offsets)) | batch.lagging

    def applied(self, offsets: dict[int, tuple[int, int]]) -> None:
        """A batch committed: each of its partitions wants the offset after it next."""
        for partition, (_, after) in offsets.items():
            self.expected[partition] = after

    def stale(self, offsets: dict[int, tuple[int, int]], stored: dict[int, int], why: object) -> Rewind:
        """The store refused a batch (another worker committed first): its partitions go back to
        the stored offsets."""
        for partition in offsets:
            self.expected[partition] = stored.get(partition)
        return Rewind({p: stored.get(p) for p in offsets}, f"stale batch: {why}")

    def restart(self, stored: dict[int, int], why: str) -> Rewind:
        """Another generation written (a switch): every partition from its stored offset there."""
        self.expected = {p: stored.get(p) for p in self.partitions}
        return Rewind(dict(self.expected), why)

    def from_beginning(self, why: str) -> Rewind:
        """A new, empty generation: every partition from the beginning of the log."""
        self.expected = dict.fromkeys(self.partitions)
        return Rewind(dict.fromkeys(self.partitions), why)

    def caught_up(self) -> list[int]:
        """The partitions whose timers run (a lagging one's batches move its time on)."""
        return sorted(self.partitions - self.lagging)

    def held(self, partitions: list[int]) -> dict[int, tuple[int, int]]:
        """A timer pass's claim: the offsets this worker holds of ``partitions``, unchanged (if
        another worker has moved one on, the store refuses the pass)."""
        return {p: (o, o) for p in partitions if (o := self.expected.get(p)) is not None}
