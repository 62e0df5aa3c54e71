"""The per-stage timing of a batch (services.worker.stages): the store's calls made while a batch
is current count for it, in its threads too, and are taken out of the engine's time; calls made
with no batch current count for none."""

import asyncio
import time

from services import metrics
from services.worker.stages import BatchStages, TimedStore


class SlowStore:
    flag = "not a method"

    def read(self, seconds: float) -> str:
        time.sleep(seconds)
        return "read"


def stage_sum(stage: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "slatrack_projector_stage_duration_seconds_sum", {"stage": stage}
    )
    assert value is not None
    return value


async def test_a_batch_s_store_calls_count_as_store_and_not_as_engine():
    store = TimedStore(SlowStore())  # type: ignore[arg-type]
    assert store.flag == "not a method"
    before = {stage: stage_sum(stage) for stage in ("engine", "store", "other")}
    stages = BatchStages()
    assert await asyncio.to_thread(store.read, 0.02) == "read"  # store, outside the fold
    with stages.fold():
        await asyncio.to_thread(store.read, 0.05)  # store, inside the fold
        await asyncio.to_thread(time.sleep, 0.03)  # the engine (no store call)
    total = stages.observe()
    assert 0.05 + 0.02 <= stages.store < 0.07 + 0.02
    assert 0.03 <= stages.engine < 0.03 + 0.02
    spent = {stage: stage_sum(stage) - before[stage] for stage in before}
    assert spent["store"] == stages.store and spent["engine"] == stages.engine
    assert abs(sum(spent.values()) - total) < 1e-6

    store.read(0.01)  # no batch current: counted nowhere
    assert stage_sum("store") - before["store"] == stages.store


def test_what_is_set_on_the_store_later_is_what_is_called():
    inner = SlowStore()
    store = TimedStore(inner)  # type: ignore[arg-type]
    read = store.read  # bound early, as the projector's history caches bind it
    inner.read = lambda seconds: "patched"  # type: ignore[method-assign]
    assert read(0) == "patched" and store.read(0) == "patched"


async def test_a_batch_closed_without_being_observed_is_current_no_more():
    """A batch that ends early or fails is closed, not observed: the store's later calls in the
    same context count for no batch (found by review: they went to the stale one)."""
    store = TimedStore(SlowStore())  # type: ignore[arg-type]
    stages = BatchStages()
    stages.close()
    store.read(0.01)
    assert stages.store == 0.0
    stages.close()  # twice: nothing more
