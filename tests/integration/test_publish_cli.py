"""`slatrack publish FILE.jsonl`: validate every line first, then send."""

import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from tests.kafka_helpers import read_all
from tests.samples import sample

pytestmark = pytest.mark.broker

SLATRACK = Path(sys.executable).parent / "slatrack"


def publish(settings, *args: str, **variables: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLATRACK_")}
    env |= {
        "SLATRACK_KAFKA_BOOTSTRAP": settings.bootstrap(),
        "SLATRACK_TOPIC_EVENTS": settings.topic_events,
        "SLATRACK_TOPIC_DLQ": settings.topic_dlq,
        "SLATRACK_TOPIC_SIGNALS": settings.topic_signals,
        "SLATRACK_TOPIC_POLICIES": settings.topic_policies,
        **variables,
    }
    return subprocess.run(
        [str(SLATRACK), "publish", *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def write_jsonl(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


async def test_invalid_lines_block_the_file(kafka_settings, tmp_path):
    lines = [
        orjson.dumps(sample("ticket.opened", event_id=f"f-{i}", customer_id=f"c{i % 7}")) for i in range(2500)
    ]
    lines[9] = b'{"broken": '  # line 10
    lines[1999] = orjson.dumps(sample("ticket.opened", event_id="naive", occurred_at="2026-10-30T15:30:00"))
    file = write_jsonl(tmp_path / "events.jsonl", lines)

    refused = publish(kafka_settings, str(file))
    assert refused.returncode == 1
    assert f"{file}:10: invalid_json" in refused.stderr
    assert f"{file}:2000: invalid_event: occurred_at" in refused.stderr
    assert "2 invalid lines, 2498 valid: nothing sent" in refused.stderr

    sent = publish(kafka_settings, "--skip-invalid", str(file))
    assert sent.returncode == 0, sent.stderr
    assert "published 2498 events" in sent.stdout and "2 invalid lines skipped" in sent.stdout
    records = await read_all(kafka_settings, kafka_settings.topic_events, 2498)
    ids = [orjson.loads(r.value)["event_id"] for r in records]
    # Exactly the valid lines, once each: the refused run sent nothing.
    assert sorted(ids) == sorted(f"f-{i}" for i in range(2500) if i not in (9, 1999))
    assert all(r.key == orjson.loads(r.value)["customer_id"].encode() for r in records)


def test_blank_lines_are_ignored_and_unreachable_broker_is_clear(tmp_path, kafka_settings):
    file = write_jsonl(tmp_path / "one.jsonl", [b"", orjson.dumps(sample("ticket.reopened")), b"   "])
    unreachable = kafka_settings.model_copy(update={"kafka_bootstrap": "127.0.0.1:1"})
    started = time.monotonic()
    result = publish(unreachable, str(file), SLATRACK_KAFKA_REQUEST_TIMEOUT_MS="5000")
    assert time.monotonic() - started < 12  # within the configured timeout, not a fixed 15 s
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("Error: Kafka at 127.0.0.1:1 not reachable after 5 s: ")


def test_a_policy_line_is_not_sent_to_the_events_topic(kafka_settings, tmp_path):
    """An export starts with its policy events: they are the policy topic's, and publish says so."""
    from tests.samples import policy_sample

    file = write_jsonl(
        tmp_path / "export.jsonl", [orjson.dumps(policy_sample()), orjson.dumps(sample("ticket.opened"))]
    )
    refused = publish(kafka_settings, str(file))
    assert refused.returncode == 1
    assert (
        f"{file}:1: unknown_type: a policy event (policy.version_published): it goes to the policy topic"
        in (refused.stderr)
    )
