"""`slatrack topics create`: the deployment's one-shot job that creates our topics."""

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from services.kafka.client import client_options
from services.kafka.embedded import free_port

pytestmark = pytest.mark.broker

SLATRACK = Path(sys.executable).parent / "slatrack"


def topics_create(bootstrap: str, suffix: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLATRACK_")}
    env |= {
        "SLATRACK_KAFKA_BOOTSTRAP": bootstrap,
        "SLATRACK_TOPIC_EVENTS": f"events-{suffix}",
        "SLATRACK_TOPIC_DLQ": f"events-{suffix}.dlq",
        "SLATRACK_TOPIC_SIGNALS": f"signals-{suffix}",
        "SLATRACK_TOPIC_POLICIES": f"policies-{suffix}",
        "SLATRACK_TOPIC_PARTITIONS": "3",
        # Forbidden for serve, and still done here: creating them is this command's job.
        "SLATRACK_KAFKA_CREATE_TOPICS": "false",
    }
    return subprocess.run(
        [str(SLATRACK), "topics", "create", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_creates_the_four_topics_and_can_run_again(kafka_settings):
    suffix = uuid.uuid4().hex[:8]
    first = topics_create(kafka_settings.bootstrap(), suffix)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [
        f"events-{suffix}: 3 partitions, replication 1, cleanup.policy=delete, retention.ms=-1",
        f"events-{suffix}.dlq: 3 partitions, replication 1, cleanup.policy=delete, retention.ms=-1",
        f"signals-{suffix}: 3 partitions, replication 1, cleanup.policy=delete, retention.ms=2592000000",
        # One partition whatever SLATRACK_TOPIC_PARTITIONS says: one order of the versions.
        f"policies-{suffix}: 1 partition, replication 1, cleanup.policy=delete, retention.ms=-1",
    ]
    admin = AIOKafkaAdminClient(**client_options(kafka_settings))
    await admin.start()
    try:
        described = await admin.describe_topics([f"events-{suffix}", f"policies-{suffix}"])
        found = {t["topic"]: len(t["partitions"]) for t in described}
    finally:
        await admin.close()
    assert found == {f"events-{suffix}": 3, f"policies-{suffix}": 1}
    again = topics_create(kafka_settings.bootstrap(), suffix)
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout


def test_an_unreachable_broker_is_a_clear_error():
    result = topics_create(f"127.0.0.1:{free_port()}", "x", "--wait", "2")
    assert result.returncode == 1
    assert "topics not ready on 127.0.0.1:" in result.stderr
    assert "Traceback" not in result.stderr
