"""Contracts on the real worker path (issue 13): the projector reads the policy topic before
projecting, measures each ticket with its contract's version at dispatch, and equals
``replay`` of the same log; a version published later (retroactive) recomputes exactly the
tickets it can change, and the usual revocation signals say what changed."""

import asyncio
import random
from datetime import UTC, datetime

import orjson
import pytest

from projections.contracts import Contracts
from projections.policy import default_policy
from services.worker.projector import Projector
from tests.contracts_helpers import amended_text, default_text, premium_text, published
from tests.engine_helpers import Story, ny
from tests.feed import a_store
from tests.integration.test_replay_equality import (
    PARTITIONS,
    TOPIC,
    batches,
    check_rows_equal_replay,
    recorded,
    rows,
)
from tests.worker_helpers import ListPolicyLog

NOV_1 = datetime(2026, 11, 1, tzinfo=UTC)
AMENDED_FROM = ny("2026-11-16 00:00")
CLOCK = ny("2026-11-20 12:00")


def loosened_text() -> str:
    """The default contract again, 4 h for medium responses, as a version of its own."""
    return default_text().replace('version = "default-2026.1"', 'version = "default-2026.3"', 1)


def the_log() -> Story:
    s = Story(customer_id="acme")
    s.opened(ny("2026-11-13 09:00"), "medium", ticket_id="BEFORE")  # default-2026.1
    s.responded(ny("2026-11-13 10:00"), ticket_id="BEFORE")
    s.opened(ny("2026-11-16 09:00"), "medium", ticket_id="AFTER")  # the amendment (2 h)
    s.responded(ny("2026-11-16 12:00"), ticket_id="AFTER")  # 3 h: breached under 2 h
    s.contract(NOV_1, "premium", NOV_1, customer_id="bolt")
    s.opened(ny("2026-11-07 10:00"), "medium", ticket_id="SAT", customer_id="bolt")  # premium, 24x7
    s.opened(ny("2026-11-10 09:00"), "medium", ticket_id="OPEN", customer_id="cora")
    s.contract(ny("2026-11-11 12:00"), "premium", ny("2026-11-11 12:00"), customer_id="cora")
    s.opened(ny("2026-11-12 09:00"), "medium", ticket_id="NEW", customer_id="cora")
    return s


def partitioned(story: Story) -> list[list[dict]]:
    """The events in the log's partitions, each customer in one, in the story's order."""
    home = {"acme": 0, "bolt": 1, "cora": 2}
    partitions: list[list[dict]] = [[] for _ in range(PARTITIONS)]
    for event in story.dicts:
        partitions[home[event["customer_id"]]].append(event)
    return partitions


async def project(store, policy_log, partitions, seed: int = 7) -> Projector:
    projector = Projector(
        store, default_policy(), TOPIC, clock=lambda: CLOCK, count_metrics=False, policy_log=policy_log
    )
    await projector.open()
    await projector.start_offsets(set(range(PARTITIONS)))
    for batch in batches(partitions, random.Random(seed)):
        await projector.handle(batch)
    await projector.tick()
    return projector


def by_ticket(store, generation) -> dict[str, tuple[str, str, bytes, int]]:
    return {
        row.ticket_id: (
            orjson.loads(row.view)["contract"],
            orjson.loads(row.view)["policy_version"],
            row.view,
            row.evaluated_at,
        )
        for row in rows(store, generation)
    }


@pytest.mark.parametrize("seed", [7, 11, 23])  # batch boundaries
@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_the_worker_measures_each_ticket_with_its_version_and_equals_replay(kind, seed, tmp_path, request):
    dsn = request.getfixturevalue("postgres_dsn") if kind == "postgres" else None
    versions = [
        published(premium_text(), "premium", NOV_1, 0),
        published(amended_text(), "default", AMENDED_FROM, 1),
    ]
    partitions = partitioned(the_log())
    with a_store(kind, tmp_path, dsn) as store:
        projector = asyncio.run(project(store, ListPolicyLog(versions), partitions, seed))
        gen = projector.generations.current
        found = by_ticket(store, gen)
        assert {t: v[:2] for t, v in found.items()} == {
            "BEFORE": ("default", "default-2026.1"),
            "AFTER": ("default", "default-2026.2"),
            "SAT": ("premium", "premium-2026.1"),
            "OPEN": ("default", "default-2026.1"),  # open when cora changed contract: stays
            "NEW": ("premium", "premium-2026.1"),
        }
        contracts = Contracts(default_policy(), versions)
        check_rows_equal_replay(store, gen, recorded(partitions), contracts, CLOCK)
        # The generation keeps the versions it read, and each partition is measured with both.
        assert [p for p, _ in store.policy_versions(gen)] == [0, 1]
        assert store.stored_offsets(gen, projector.policy_topic) == {0: 2, 1: 2, 2: 2}


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_retroactive_version_recomputes_exactly_the_tickets_it_can_change(kind, tmp_path, request):
    dsn = request.getfixturevalue("postgres_dsn") if kind == "postgres" else None
    versions = [
        published(premium_text(), "premium", NOV_1, 0),
        published(amended_text(), "default", AMENDED_FROM, 1),
    ]
    policy_log = ListPolicyLog(versions)
    partitions = partitioned(the_log())
    with a_store(kind, tmp_path, dsn) as store:
        projector = asyncio.run(project(store, policy_log, partitions))
        gen = projector.generations.current
        before = by_ticket(store, gen)
        assert orjson.loads(before["AFTER"][2])["clocks"]["response"]["breached"] is True
        signals_before = {s.signal_id for s in store.pending_signals(limit=10_000)}

        written: list[str] = []
        commit = store.commit_batch

        def spying(generation, batch, **kw):
            written.extend(row.ticket_id for row in batch.tickets)
            return commit(generation, batch, **kw)

        store.commit_batch = spying  # type: ignore[method-assign]
        # Published on the 18th, in force from the 16th as the amendment was (the later published
        # wins): loosens the default contract again.
        policy_log.versions.append(
            published(
                loosened_text(),
                "default",
                AMENDED_FROM,
                2,
                published_at=ny("2026-11-18 00:00"),
                retroactive=True,
            )
        )

        async def follow() -> None:
            assert await projector.read_policies() == 1
            async with projector.lock:
                await projector.apply_policies()

        asyncio.run(follow())
        store.commit_batch = commit  # type: ignore[method-assign]
        # Dispatched since the 16th: AFTER only (bolt's and cora's tickets are all older).
        assert sorted(written) == ["AFTER"]
        after = by_ticket(store, gen)
        assert after["AFTER"][:2] == ("default", "default-2026.3")
        assert orjson.loads(after["AFTER"][2])["clocks"]["response"]["breached"] is False
        assert after["AFTER"][3] == before["AFTER"][3]  # recomputed as of the same instant
        for ticket in ("BEFORE", "SAT", "OPEN", "NEW"):
            assert after[ticket] == before[ticket], ticket
        revoked = [
            orjson.loads(s.body)
            for s in store.pending_signals(limit=10_000)
            if s.signal_id not in signals_before
        ]
        # What changed, said about AFTER only: its breach taken back (and what the 4 h target asserts).
        assert {s["ticket_id"] for s in revoked} == {"AFTER"}
        assert "sla.breach_revoked" in [s["type"] for s in revoked]
        # And the read models still equal replay of the same log with every version.
        contracts = Contracts(default_policy(), policy_log.versions)
        check_rows_equal_replay(store, gen, recorded(partitions), contracts, CLOCK)
        assert store.stored_offsets(gen, projector.policy_topic) == {0: 3, 1: 3, 2: 3}
        # A second pass (a restart) has nothing left to do.
        written.clear()
        store.commit_batch = spying  # type: ignore[method-assign]

        async def again() -> None:
            async with projector.lock:
                await projector.apply_policies()

        asyncio.run(again())
        assert written == []
