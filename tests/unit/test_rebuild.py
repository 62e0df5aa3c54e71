"""A rebuild, against SQLite and a fake whole log (no broker)."""

import os

from projections.policy import default_policy
from services.config import Settings
from services.store import open_store
from services.worker.ports import GenerationBehind
from services.worker.rebuild import rebuild, rebuild_processes


class _FakeLog:
    """A WholeLog with nothing in it: counts reads, reports progress as the real reader does."""

    def __init__(self) -> None:
        self.partitions = [0]
        self.reads = 0

    async def __aenter__(self) -> "_FakeLog":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    async def read_to_end(self, handle, progress=lambda done, total: None) -> None:
        self.reads += 1
        progress(self.reads, 10)


async def test_a_rebuild_reports_progress_while_it_reads_on_before_switching(tmp_path):
    """The catch-up reads before the switch (the live workers read further: GenerationBehind)
    report progress too: the CLI's bar, the API's job and slatrack_rebuild_progress_ratio move."""
    store = open_store(Settings(database_url=f"sqlite:///{tmp_path}/slatrack.db"))
    real_activate = store.activate_generation
    refused: list[int] = []

    def activate(generation, *, covering=None):
        if covering is not None and not refused:
            refused.append(generation)
            raise GenerationBehind({0: (0, 5)})
        return real_activate(generation, covering=covering)

    store.activate_generation = activate  # type: ignore[method-assign]
    seen: list[tuple[int, int]] = []
    log = _FakeLog()
    try:
        report = await rebuild(
            Settings(database_url=f"sqlite:///{tmp_path}/slatrack.db"),
            store,
            default_policy(),
            lambda done, total: seen.append((done, total)),
            log_source=log,
        )
    finally:
        store.close()
    assert report.switched and log.reads == 2
    assert seen == [(1, 10), (2, 10)], f"progress reported only for {seen}"
    assert report.processes == 1  # a log that cannot be read in parts is read here


def test_a_rebuild_uses_a_process_per_core_never_more_than_the_partitions():
    cores = len(os.sched_getaffinity(0))
    assert rebuild_processes(Settings(), 64) == cores
    assert rebuild_processes(Settings(), 1) == 1
    assert rebuild_processes(Settings(rebuild_processes=1), 6) == 1
    assert rebuild_processes(Settings(rebuild_processes=8), 3) == 3
