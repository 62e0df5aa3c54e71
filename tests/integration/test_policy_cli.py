"""`slatrack policy publish|list|show`, and the policy topic in `export`, `replay --events` and
`explain --events`, on the real (embedded) broker. A foreign producer (librdkafka, via
confluent-kafka) writes records that are no version: they are reported with why, and nothing
stops on them."""

import asyncio
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from confluent_kafka import Producer

from events.policies import is_policy_event
from projections.policy import default_policy
from services.cli.commands import main
from services.kafka.policies import read_policies
from tests.feed import event
from tests.kafka_helpers import produce
from tests.samples import policy_sample, policy_text

pytestmark = pytest.mark.broker


def env_of(settings) -> dict[str, str | None]:
    """The test's broker and topics, and no other SLATRACK_ variable."""
    unset: dict[str, str | None] = {k: None for k in os.environ if k.upper().startswith("SLATRACK_")}
    return unset | {
        "SLATRACK_KAFKA_BOOTSTRAP": settings.bootstrap(),
        "SLATRACK_TOPIC_EVENTS": settings.topic_events,
        "SLATRACK_TOPIC_DLQ": settings.topic_dlq,
        "SLATRACK_TOPIC_SIGNALS": settings.topic_signals,
        "SLATRACK_TOPIC_POLICIES": settings.topic_policies,
    }


def cli(settings, *args: str):
    return CliRunner().invoke(main, list(args), env=env_of(settings), catch_exceptions=False)


def toml(tmp_path: Path, version: str, urgent_response: str = "2h") -> Path:
    path = tmp_path / f"{version}.toml"
    path.write_text(policy_text(version, urgent_response), encoding="utf-8")
    return path


def z(instant: datetime) -> str:
    return instant.strftime("%Y-%m-%dT%H:%M:%SZ")


def produce_foreign(settings, values: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": settings.bootstrap(), "acks": "all"})
    for value in values:
        producer.produce(settings.topic_policies, value, key=b"gold")
    assert producer.flush(30) == 0


def listed(settings, *args: str) -> dict:
    result = cli(settings, "policy", "list", "--format", "json", *args)
    assert result.exit_code == 0, result.output
    return orjson.loads(result.stdout)


def test_publish_list_and_show_before_and_after_an_amendment(kafka_settings, tmp_path):
    settings = kafka_settings
    first = cli(
        settings,
        "policy",
        "publish",
        str(toml(tmp_path, "gold-1")),
        "--contract",
        "gold",
        "--effective-from",
        "now",
    )
    assert first.exit_code == 0, first.output
    assert first.stdout.startswith("published contract gold version gold-1 (sha256:")
    assert first.stdout.endswith(f"to {settings.topic_policies} at offset 0\n")
    amended_at = datetime.now(UTC).replace(microsecond=0) + timedelta(days=7)
    second = cli(
        settings,
        "policy",
        "publish",
        str(toml(tmp_path, "gold-2", "3h")),
        "--contract",
        "gold",
        "--effective-from",
        z(amended_at),
    )
    assert second.exit_code == 0, second.output
    assert f"effective from {z(amended_at)}, to {settings.topic_policies} at offset 1" in second.stdout

    # A past instant without --retroactive: refused, nothing published.
    refused = cli(
        settings,
        "policy",
        "publish",
        str(toml(tmp_path, "gold-0")),
        "--contract",
        "gold",
        "--effective-from",
        "2026-01-01T00:00:00Z",
    )
    assert refused.exit_code == 2
    assert "would rewrite history" in refused.stderr and "pass --retroactive" in refused.stderr
    assert [v["policy_version"] for v in listed(settings)["versions"]] == ["gold-1", "gold-2"]
    # With --retroactive: published, and said so.
    retro = cli(
        settings,
        "policy",
        "publish",
        str(toml(tmp_path, "silver-1")),
        "--contract",
        "silver",
        "--effective-from",
        "2026-01-01T00:00:00Z",
        "--retroactive",
    )
    assert retro.exit_code == 0, retro.output
    assert "effective from 2026-01-01T00:00:00Z (retroactive)" in retro.stdout

    document = listed(settings)
    assert document["topic"] == settings.topic_policies and document["rejected"] == []
    assert [
        (v["position"], v["contract"], v["policy_version"], v["retroactive"]) for v in document["versions"]
    ] == [
        (0, "gold", "gold-1", False),
        (1, "gold", "gold-2", False),
        (2, "silver", "silver-1", True),
    ]
    assert [v["position"] for v in listed(settings, "--contract", "silver")["versions"]] == [2]
    table = cli(settings, "policy", "list")
    assert table.exit_code == 0
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["offset", "contract", "version"]
    assert [line.split()[:3] for line in lines[2:5]] == [
        ["0", "gold", "gold-1"],
        ["1", "gold", "gold-2"],
        ["2", "silver", "silver-1"],
    ]
    assert "retroactive" in lines[4] and lines[-1] == f"3 versions on {settings.topic_policies}"

    # show: the version in force before and after the amendment.
    now = cli(settings, "policy", "show", "gold")
    assert now.exit_code == 0 and now.stdout == policy_text("gold-1")
    later = cli(settings, "policy", "show", "gold", "--at", z(amended_at))
    assert later.exit_code == 0 and later.stdout == policy_text("gold-2", "3h")
    before = cli(
        settings, "policy", "show", "gold", "--at", z(amended_at - timedelta(seconds=1)), "--format", "json"
    )
    shown = orjson.loads(before.stdout)
    assert (
        shown["policy_version"] == "gold-1"
        and shown["position"] == 0
        and shown["policy"] == policy_text("gold-1")
    )
    # The default contract with no version: the configured policy; another contract: an error.
    default = cli(settings, "policy", "show", "default", "--format", "json")
    assert orjson.loads(default.stdout)["policy_version"] == default_policy().version
    assert orjson.loads(default.stdout)["policy"] == default_policy().text
    ahead = cli(settings, "policy", "show", "gold", "--at", "2026-01-01T00:00:00Z")
    assert ahead.exit_code == 2
    [line] = ahead.stderr.splitlines()
    assert line.startswith(
        "Error: contract 'gold' has no version in force at 2026-01-01T00:00:00Z (2 published"
    )
    assert cli(settings, "policy", "show", "bronze").exit_code == 2


def test_records_that_are_no_version_are_reported_and_stop_nothing(kafka_settings, tmp_path):
    settings = kafka_settings
    wrong_digest = orjson.dumps(
        policy_sample(
            event_id="pol-2", contract="gold", text=policy_text("gold-1"), digest="sha256:" + "0" * 64
        )
    )
    asyncio.run(asyncio.to_thread(produce_foreign, settings, [b"\x00 not a policy", wrong_digest]))
    published = cli(
        settings,
        "policy",
        "publish",
        str(toml(tmp_path, "gold-2")),
        "--contract",
        "gold",
        "--effective-from",
        "now",
    )
    assert published.exit_code == 0, published.output
    result = cli(settings, "policy", "list", "--format", "json")
    assert result.exit_code == 0
    document = orjson.loads(result.stdout)
    assert [v["position"] for v in document["versions"]] == [2]
    assert [r["position"] for r in document["rejected"]] == [0, 1]
    errors = result.stderr.splitlines()
    assert errors[0].startswith(f"{settings.topic_policies} offset 0: invalid_json: ")
    assert errors[1].startswith(f"{settings.topic_policies} offset 1: invalid_policy: ")
    assert "the event says sha256:0000" in errors[1]
    read = asyncio.run(read_policies(settings))
    assert [v.position for v in read.versions] == [2] and [p for p, _ in read.rejected] == [0, 1]
    # The export leaves them out, saying so.
    out = tmp_path / "export.jsonl"
    exported = cli(settings, "export", "--out", str(out))
    assert exported.exit_code == 0, exported.output
    assert "before them 1 policy events" in exported.stderr and "1 policy events from" in exported.stderr
    assert f"{settings.topic_policies} offset 1: invalid_policy: " in exported.stderr
    assert ", 2 invalid (not written)" in exported.stderr
    [line] = out.read_bytes().splitlines()
    assert orjson.loads(line)["policy_version"] == "gold-2"


MON = "2026-11-02"  # a Monday; the amendment takes effect on the Tuesday


def history() -> list[dict]:
    """Two urgent tickets of acme (one before the amendment, one after), never answered; one of
    globex, which is on contract gold."""
    return [
        event(
            "c-1",
            "account.contract_changed",
            "2026-10-30T12:00:00Z",
            "globex",
            contract="gold",
            effective_from="2026-11-01T00:00:00Z",
        ),
        event("a-1", "ticket.opened", f"{MON}T14:00:00Z", "acme", "EARLY", priority="urgent"),
        event("g-1", "ticket.opened", f"{MON}T15:00:00Z", "globex", "GOLD", priority="urgent"),
        event("a-2", "ticket.opened", "2026-11-03T14:00:00Z", "acme", "LATE", priority="urgent"),
        event(
            "a-3",
            "ticket.work_logged",
            "2026-11-03T18:00:00Z",
            "acme",
            "LATE",
            agent_id="x",
            started_at="2026-11-03T15:00:00Z",
            ended_at="2026-11-03T16:00:00Z",
        ),
    ]


def test_export_writes_the_policy_events_first_and_replay_measures_with_them(kafka_settings, tmp_path):
    settings = kafka_settings
    events = history()
    asyncio.run(produce(settings, [(e["customer_id"].encode(), orjson.dumps(e)) for e in events]))
    for args in (
        [
            str(toml(tmp_path, "amended-2026.2")),
            "--contract",
            "default",
            "--effective-from",
            "2026-11-03T00:00:00Z",
        ],
        [
            str(toml(tmp_path, "gold-1", "30m")),
            "--contract",
            "gold",
            "--effective-from",
            "2026-10-01T00:00:00Z",
        ],
    ):
        result = cli(settings, "policy", "publish", *args, "--retroactive")
        assert result.exit_code == 0, result.output

    out = tmp_path / "export.jsonl"
    exported = cli(settings, "export", "--out", str(out))
    assert exported.exit_code == 0, exported.output
    assert f"exported {len(events)} events" in exported.stderr
    assert f"before them 2 policy events from {settings.topic_policies}" in exported.stderr
    lines = out.read_bytes().splitlines()
    assert [is_policy_event(line) for line in lines] == [True, True] + [False] * len(events)
    assert [orjson.loads(line)["policy_version"] for line in lines[:2]] == ["amended-2026.2", "gold-1"]
    # Whatever the filter, every policy event.
    mine = tmp_path / "acme.jsonl"
    assert cli(settings, "export", "--customer", "acme", "--out", str(mine)).exit_code == 0
    assert mine.read_bytes().splitlines()[:2] == lines[:2] and len(mine.read_bytes().splitlines()) == 2 + 3

    def views(*args: str) -> dict[str, dict]:
        result = cli(settings, "replay", "--events", str(out), "--as-of", "2026-11-04T00:00:00Z", *args)
        assert result.exit_code == 0, result.output
        document = orjson.loads(result.stdout)
        return {"document": document} | {t["ticket_id"]: t for t in document["tickets"]}

    replayed = views()
    assert (replayed["EARLY"]["contract"], replayed["EARLY"]["policy_version"]) == (
        "default",
        "default-2026.1",
    )
    assert (replayed["LATE"]["contract"], replayed["LATE"]["policy_version"]) == ("default", "amended-2026.2")
    assert (replayed["GOLD"]["contract"], replayed["GOLD"]["policy_version"]) == ("gold", "gold-1")
    assert replayed["LATE"]["clocks"]["response"]["target_seconds"] == 2 * 3600
    assert replayed["GOLD"]["clocks"]["response"]["target_seconds"] == 30 * 60
    document = replayed["document"]
    assert [p["policy_version"] for p in document["policies"]] == ["amended-2026.2", "gold-1"]
    assert [p["position"] for p in document["policies"]] == [1, 2]  # their line numbers
    assert document["rejected"] == 0

    # --policy overrides every version (the views still name their contracts).
    trial = toml(tmp_path, "trial-9", "4h")
    overridden = views("--policy", str(trial))
    assert {overridden[t]["policy_version"] for t in ("EARLY", "LATE", "GOLD")} == {"trial-9"}
    assert overridden["GOLD"]["contract"] == "gold"
    assert overridden["document"]["policies"] == document["policies"]

    # --compare OLD: OLD against the log's versions.
    compared = cli(
        settings, "replay", "--events", str(out), "--as-of", "2026-11-04T00:00:00Z", "--compare", str(trial)
    )
    assert compared.exit_code == 0, compared.output
    comparison = orjson.loads(compared.stdout)
    assert comparison["old_policy_version"] == "trial-9"

    # explain --events: the version of the ticket's contract in force at its dispatch.
    explained = cli(
        settings,
        "explain",
        "LATE",
        "--events",
        str(out),
        "--as-of",
        "2026-11-04T00:00:00Z",
        "--format",
        "json",
    )
    assert explained.exit_code == 0, explained.output
    trail = orjson.loads(explained.stdout)
    assert trail["policy_version"] == "amended-2026.2" and trail["view"]["contract"] == "default"
    gold = cli(
        settings,
        "explain",
        "GOLD",
        "--events",
        str(out),
        "--as-of",
        "2026-11-04T00:00:00Z",
        "--format",
        "json",
        "--policy",
        str(trial),
    )
    assert orjson.loads(gold.stdout)["policy_version"] == "trial-9"
