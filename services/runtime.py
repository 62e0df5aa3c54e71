"""What a slatrack process sets about the interpreter itself: its garbage collector.

CPython 3.11 collects its youngest generation every 700 net allocations of container objects,
and the whole heap whenever the objects that survived grew by a quarter. A worker keeps tens
of thousands of decoded histories alive and allocates a dozen objects for every event it
decodes and every state it evaluates: with those defaults, full collections (each a walk over
every live object) took about a sixth of the projector's time, mostly inside decoding (3,000
simulated tickets fed in-process, 41,785 events: 7 or 8 full collections, 2.4 to 3.7 s of 13 to
20 s; decoding 59 to 80 µs an event, 31 to 33 µs with the thresholds below). slatrack's own
objects form no reference cycles (the same run left 0 unreachable objects for ``gc.collect()``),
so collecting cycles less often costs no memory: the peak RSS was the same, 364 MB.
"""

import gc

# Young collections every 50,000 net allocations; a middle one every 20 of them; a full one every
# 100 middle ones at most (and still only when survivors grew by a quarter).
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    """Set the collector's thresholds for a process that holds many live objects."""
    gc.set_threshold(*GC_THRESHOLDS)
