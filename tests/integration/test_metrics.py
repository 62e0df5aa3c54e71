"""What /metrics says after a scripted scenario went through the broker and the
real worker processes: exact values, after a restart (a reset, never a double
count) and summed over two workers sharing the partitions."""

import asyncio
import signal
from collections.abc import Mapping
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from projections.policy import default_policy
from services.kafka.embedded import free_port
from services.kafka.log_reader import WholeLogReader
from services.store import open_store
from services.worker.rebuild import rebuild
from tests.feed import event
from tests.kafka_helpers import produce
from tests.worker_helpers import (
    applied,
    assignments,
    pending_signals,
    postgres_database,
    recorded_signals,
    wait_for,
    worker,
)

pytestmark = [pytest.mark.broker, pytest.mark.timeout(240)]

MON = "2026-11-02"  # a Monday; New York business hours 08:00-17:00 (EST, UTC-5)
SAT = "2026-11-07"


def ev(n: str, type_: str, at: str, customer: str, ticket: str | None, **data) -> tuple[bytes, bytes]:
    return customer.encode(), orjson.dumps(event(f"m-{n}", type_, at, customer, ticket, **data))


def scenario() -> list[tuple[bytes, bytes]]:
    """Five tickets of five customers (spread over the partitions), one repeat, one bad message."""
    return [
        # T1 urgent, answered in 30 min: response met (1800 s).
        ev("1", "ticket.opened", f"{MON}T09:00:00-05:00", "c1", "T1", priority="urgent"),
        ev("2", "ticket.responded", f"{MON}T09:30:00-05:00", "c1", "T1"),
        ev("2", "ticket.responded", f"{MON}T09:30:00-05:00", "c1", "T1"),  # the same event again
        ev("3", "ticket.closed", f"{MON}T10:00:00-05:00", "c1", "T1"),
        # T2 urgent, answered after 2 h: a breach (escalation level 1), response missed (7200 s).
        ev("4", "ticket.opened", f"{MON}T09:00:00-05:00", "c2", "T2", priority="urgent"),
        ev("5", "ticket.responded", f"{MON}T11:00:00-05:00", "c2", "T2"),
        ev("6", "ticket.closed", f"{MON}T12:00:00-05:00", "c2", "T2"),
        # T3 medium: response (10 min) and resolution (7 business hours of 8) met.
        ev("7", "ticket.opened", f"{MON}T09:00:00-05:00", "c3", "T3", priority="medium"),
        ev("8", "ticket.responded", f"{MON}T09:10:00-05:00", "c3", "T3"),
        ev("9", "ticket.resolved", f"{MON}T16:00:00-05:00", "c3", "T3"),
        ev("10", "ticket.closed", f"{MON}T16:30:00-05:00", "c3", "T3"),
        # T4 urgent on a Saturday night: uncovered P1, 2 h of work, the customer's fault: 2 h billed.
        ev("11", "ticket.opened", f"{SAT}T03:00:00-05:00", "c4", "T4", priority="urgent"),
        ev("12", "ticket.responded", f"{SAT}T03:10:00-05:00", "c4", "T4"),
        ev(
            "13",
            "ticket.work_logged",
            f"{SAT}T05:00:00-05:00",
            "c4",
            "T4",
            started_at=f"{SAT}T03:00:00-05:00",
            ended_at=f"{SAT}T05:00:00-05:00",
        ),
        ev("14", "ticket.fault_determined", f"{SAT}T05:30:00-05:00", "c4", "T4", party="customer"),
        ev("15", "ticket.closed", f"{SAT}T06:00:00-05:00", "c4", "T4"),
        # T5 urgent, never answered, still open: breached (level 1), running, breached_open.
        ev("16", "ticket.opened", "2026-11-20T09:00:00-05:00", "c5", "T5", priority="urgent"),
        (b"c5", b'{"not": "an event"}'),
    ]


EXPECTED = {
    'slatrack_sla_targets_evaluated_total{clock="response",priority="urgent"}': 3,
    'slatrack_sla_targets_met_total{clock="response",priority="urgent"}': 2,
    'slatrack_sla_targets_evaluated_total{clock="response",priority="medium"}': 1,
    'slatrack_sla_targets_met_total{clock="response",priority="medium"}': 1,
    'slatrack_sla_targets_evaluated_total{clock="resolution",priority="medium"}': 1,
    'slatrack_sla_targets_met_total{clock="resolution",priority="medium"}': 1,
    'slatrack_sla_targets_evaluated_total{clock="resolution",priority="urgent"}': 0,  # no target
    'slatrack_sla_breaches_total{clock="response",priority="urgent"}': 2,
    'slatrack_sla_breaches_total{clock="resolution",priority="medium"}': 0,
    'slatrack_escalations_total{level="1"}': 2,
    'slatrack_escalations_total{level="2"}': 0,
    'slatrack_billable_seconds_total{rule="uncovered_p1"}': 7200,
    'slatrack_billed_amount_cents_total{rule="uncovered_p1"}': 25_000,
    'slatrack_billed_amount_cents_total{rule="new_install"}': 0,
    'slatrack_sla_elapsed_seconds_count{clock="response",priority="urgent"}': 3,
    'slatrack_sla_elapsed_seconds_sum{clock="response",priority="urgent"}': 1800 + 7200 + 600,
    # The 1 h urgent target is a bucket bound: two cycles took at most 1 h.
    'slatrack_sla_elapsed_seconds_bucket{clock="response",le="3600.0",priority="urgent"}': 2,
    'slatrack_events_consumed_total{type="ticket.opened"}': 5,
    'slatrack_events_consumed_total{type="ticket.responded"}': 5,  # the repeat included
    "slatrack_events_duplicate_total": 1,
    'slatrack_events_rejected_total{reason="invalid_event"}': 1,
    "slatrack_dlq_messages_total": 1,
}
# What the open ticket T5 holds, whoever holds its partition.
OPEN_CLOCKS = {
    'slatrack_sla_clocks{clock="response",priority="urgent",status="running"}': 1,
    'slatrack_sla_clocks{clock="response",priority="urgent",status="breached_open"}': 1,
    'slatrack_sla_clocks{clock="resolution",priority="urgent",status="running"}': 1,
    'slatrack_sla_clocks{clock="response",priority="urgent",status="at_risk"}': 0,
    'slatrack_sla_clocks{clock="resolution",priority="medium",status="running"}': 0,
}


def scrape(port: int) -> dict[str, float]:
    """Every sample as 'name{labels}' -> value (labels sorted by name, as written above)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return samples


def summed(scrapes: list[dict[str, float]]) -> dict[str, float]:
    total: dict[str, float] = {}
    for samples in scrapes:
        for key, value in samples.items():
            total[key] = total.get(key, 0) + value
    return total


def picked(samples: dict[str, float], wanted: Mapping[str, float]) -> dict[str, float | None]:
    return {key: samples.get(key) for key in wanted}


async def http_up(port: int, timeout: float = 60) -> None:
    def up() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    await wait_for(up, timeout, f"the worker's HTTP port {port}")


def stop(process) -> None:
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0


async def settled(settings, total: int, ports: list[int], expected: Mapping[str, float]) -> list[dict]:
    """Wait until every message is applied and the scrapes add up to ``expected``."""
    await wait_for(lambda: applied(settings) == total, 90, "the workers to apply everything")
    scrapes: list[dict] = []

    def adds_up() -> bool:
        scrapes[:] = [scrape(port) for port in ports]
        return picked(summed(scrapes), expected) == expected

    try:
        await wait_for(adds_up, 20, "the counters", interval=0.5)
    finally:
        assert picked(summed(scrapes), expected) == expected  # shows the difference on failure
    return scrapes


@pytest.fixture
def sqlite_settings(kafka_settings, tmp_path):
    return kafka_settings.model_copy(update={"data_dir": tmp_path / "data"})


async def test_exact_values_and_a_restart_resets_without_counting_twice(sqlite_settings, tmp_path: Path):
    settings, log, port = sqlite_settings, tmp_path / "worker.log", free_port()
    messages = scenario()
    process = worker(settings, log, http_port=port)
    try:
        await http_up(port)
        await produce(settings, messages)
        await settled(settings, len(messages), [port], EXPECTED | OPEN_CLOCKS)
    finally:
        stop(process)

    # Restarted: the counters start again from 0 and the log holds nothing new for them; the
    # gauges come from the read models, so they are back at once.
    log = tmp_path / "restarted.log"
    process = worker(settings, log, http_port=port)
    try:
        await http_up(port)
        await wait_for(lambda: assignments(log) == set(range(6)), 60, "the assignment")
        await asyncio.sleep(2)  # time enough to count anything twice, if it would
        after = scrape(port)
        assert picked(after, OPEN_CLOCKS) == OPEN_CLOCKS
        assert after['slatrack_sla_targets_evaluated_total{clock="response",priority="urgent"}'] == 0
        assert after['slatrack_sla_breaches_total{clock="response",priority="urgent"}'] == 0
        assert after["slatrack_events_duplicate_total"] == 0
        assert after['slatrack_projector_lag_events{partition="0"}'] == 0

        # T5 is answered now: only that counts, once.
        answered = [ev("17", "ticket.responded", "2026-11-20T12:00:00-05:00", "c5", "T5")]
        await produce(settings, answered)
        now_expected = {
            'slatrack_sla_targets_evaluated_total{clock="response",priority="urgent"}': 1,
            'slatrack_sla_targets_met_total{clock="response",priority="urgent"}': 0,
            'slatrack_sla_breaches_total{clock="response",priority="urgent"}': 0,
            'slatrack_sla_clocks{clock="response",priority="urgent",status="running"}': 0,
            'slatrack_sla_clocks{clock="response",priority="urgent",status="breached_open"}': 1,
        }
        await settled(settings, len(messages) + 1, [port], now_expected)
    finally:
        stop(process)


async def test_a_rebuild_switch_counts_nothing_again(sqlite_settings, tmp_path: Path):
    """The rebuilt rows of open tickets are as of the log's last event time; the worker brings
    them up to now after the switch, which must not count their breaches and escalations again."""
    settings, port = sqlite_settings, free_port()
    messages = scenario()
    process = worker(settings, tmp_path / "worker.log", http_port=port)
    try:
        await http_up(port)
        await produce(settings, messages)
        await settled(settings, len(messages), [port], EXPECTED | OPEN_CLOCKS)
        store = open_store(settings)
        try:
            report = await rebuild(settings, store, default_policy(), log_source=WholeLogReader(settings))
            assert report.switched and report.mismatches == []

            def t5_current() -> bool:  # the worker followed the switch and re-evaluated T5 as of now
                row = store.ticket(report.generation, ("c5", "T5"))
                return row is not None and row.breached

            await wait_for(t5_current, 30, "the worker to bring T5 up to date in the new generation")
        finally:
            store.close()
        await asyncio.sleep(1)
        assert picked(scrape(port), EXPECTED | OPEN_CLOCKS) == EXPECTED | OPEN_CLOCKS
    finally:
        stop(process)


@pytest.mark.postgres
async def test_two_workers_sum_to_the_same_values(kafka_settings, postgres_dsn, tmp_path: Path):
    with postgres_database(kafka_settings, postgres_dsn, tmp_path) as settings:
        logs, ports = [tmp_path / "w1.log", tmp_path / "w2.log"], [free_port(), free_port()]
        workers = [worker(settings, logs[i], http_port=ports[i]) for i in range(2)]
        try:
            for port in ports:
                await http_up(port)
            await wait_for(
                lambda: assignments(logs[0]) and assignments(logs[1]), 60, "both workers to get partitions"
            )
            assert assignments(logs[0]) | assignments(logs[1]) == set(range(6))
            assert not assignments(logs[0]) & assignments(logs[1])
            messages = scenario()
            await produce(settings, messages)
            scrapes = await settled(settings, len(messages), ports, EXPECTED | OPEN_CLOCKS)
            # Each exports the lag of its own partitions only.
            for samples, log in zip(scrapes, logs, strict=True):
                lagged = {k for k in samples if k.startswith("slatrack_projector_lag_events")}
                assert lagged == {
                    f'slatrack_projector_lag_events{{partition="{p}"}}' for p in assignments(log)
                }
            # Each signal has one sender: the worker holding its customer's partition.
            await wait_for(lambda: pending_signals(settings) == 0, 30, "the outbox to drain")
            sent = [
                sum(v for k, v in scrape(port).items() if k.startswith("slatrack_signals_sent_total"))
                for port in ports
            ]
            assert sum(sent) == recorded_signals(settings) > 0
        finally:
            for process in workers:
                stop(process)
