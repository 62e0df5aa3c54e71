"""The embedded broker wrapper: ready when a metadata request succeeds, topics
created with their configs, and never left running."""

import asyncio
import socket

import psutil
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from services.config import Settings
from services.kafka.client import client_options
from services.kafka.embedded import EmbeddedBroker, EmbeddedBrokerError, PortTaken

pytestmark = pytest.mark.broker


async def test_topics_are_created_with_their_configs(kafka_bootstrap):
    settings = Settings(kafka_bootstrap=kafka_bootstrap)
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        described = await admin.describe_topics([settings.topic_events, settings.topic_dlq])
        assert [len(t["partitions"]) for t in described] == [6, 6]
        configs = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, settings.topic_events)]
        )
        entries = {e[0]: e[1] for e in configs[0].resources[0][4]}
        assert entries["retention.ms"] == "-1"
    finally:
        await admin.close()


def test_stop_leaves_no_process():
    broker = EmbeddedBroker().start(Settings(topic_partitions=2))
    process = psutil.Process(broker.pid)
    assert process.is_running()
    broker.stop()
    assert not psutil.pid_exists(process.pid) or process.status() == psutil.STATUS_ZOMBIE
    broker.stop()  # twice is fine


def test_a_taken_port_is_refused_before_the_broker_starts():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        broker = EmbeddedBroker(port)
        with pytest.raises(PortTaken, match=f"port 127.0.0.1:{port} is taken"):
            broker.start(timeout=20)
    assert broker.pid is None  # never spawned: nothing can answer in its place


def test_a_broker_that_exits_before_it_is_ready_says_so_in_one_line(tmp_path):
    broker = EmbeddedBroker(log_path=tmp_path / "broker.log")
    broker.spawn()
    assert broker.pid is not None
    psutil.Process(broker.pid).kill()
    with pytest.raises(EmbeddedBrokerError) as failed:
        asyncio.run(broker.wait_ready(timeout=20))
    broker.stop()
    assert str(failed.value) == (
        "the embedded broker exited (killed by SIGKILL) before it was ready; "
        f"its log: {tmp_path / 'broker.log'}"
    )
