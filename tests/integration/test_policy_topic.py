"""The policy topic on the real (embedded) broker: publish_policy, read_policies and
KafkaPolicyLog (services.kafka.policies). Records a foreign producer (librdkafka, via
confluent-kafka) wrote that are no version are rejected with why and never stop a reader."""

import asyncio

import orjson
import pytest
from confluent_kafka import Producer

from events.policies import decode_policy_event
from services.kafka.client import TopicProblem, client_options
from services.kafka.policies import KafkaPolicyLog, publish_policy, read_policies, read_policy_records
from tests.samples import policy_sample, policy_text

pytestmark = pytest.mark.broker


def produce_foreign(settings, values: list[bytes]) -> None:
    """Records on the policy topic from a producer that is not ours."""
    producer = Producer({"bootstrap.servers": settings.bootstrap(), "acks": "all", "linger.ms": 5})
    for value in values:
        producer.produce(settings.topic_policies, value, key=b"gold")
    assert producer.flush(30) == 0, "not all delivered"


def event(**fields):
    return decode_policy_event(orjson.dumps(policy_sample(**fields)))


async def test_published_versions_are_read_back_and_bad_records_do_not_stop_the_reader(kafka_settings):
    settings = kafka_settings
    empty = await read_policies(settings)
    assert (empty.versions, empty.rejected, empty.end) == ([], [], 0)

    assert await publish_policy(settings, event(event_id="pol-1")) == 0
    malformed = b'{"type": "policy.version_published", "contract": "gold"'
    wrong_digest = orjson.dumps(
        policy_sample(
            event_id="pol-3", contract="gold", text=policy_text("gold-1"), digest="sha256:" + "0" * 64
        )
    )
    await asyncio.to_thread(produce_foreign, settings, [malformed, wrong_digest])
    gold = event(
        event_id="pol-4", contract="gold", text=policy_text("gold-2"), effective_from="2026-12-01T00:00:00Z"
    )
    assert await publish_policy(settings, gold) == 3
    assert await publish_policy(settings, event(event_id="pol-1")) == 4  # a retried publication

    read = await read_policies(settings)
    assert [(v.position, v.contract, v.policy.version) for v in read.versions] == [
        (0, "default", "amended-2026.2"),
        (3, "gold", "gold-2"),
    ]
    reasons = dict(read.rejected)
    assert sorted(reasons) == [1, 2]
    assert reasons[1].startswith("invalid_json: ")
    assert reasons[2].startswith("invalid_policy: ") and "the event says sha256:000" in reasons[2]
    assert read.end == 5 and read.duplicates == [4]
    assert read.versions[1].event == gold

    later = await read_policies(settings, 3)  # what is before is read too: 4 is a copy of 0
    assert [v.position for v in later.versions] == [3] and later.rejected == [] and later.end == 5
    assert later.duplicates == [4]
    beyond = await read_policies(settings, 9)
    assert (beyond.versions, beyond.end) == ([], 5)  # the topic ends before: end < start says so

    recorded = await read_policy_records(settings)
    assert [offset for offset, _ in recorded.records] == [0, 1, 2, 3, 4]
    assert recorded.records[1][1] == malformed


async def test_the_log_follows_the_topic_with_one_consumer(kafka_settings):
    settings = kafka_settings
    async with KafkaPolicyLog(settings) as policies:
        first = await policies.read(0)
        assert (first.versions, first.end) == ([], 0)
        await publish_policy(settings, event(event_id="pol-1"))
        second = await policies.read(first.end)  # the end of this read, not the last one's
        assert [v.position for v in second.versions] == [0] and second.end == 1
        await publish_policy(settings, event(event_id="pol-2", effective_from="2026-12-01T00:00:00Z"))
        await publish_policy(settings, event(event_id="pol-1"))
        third = await policies.read(second.end)
        assert [v.position for v in third.versions] == [1] and third.duplicates == [2] and third.end == 3
        assert (await policies.read(3)).end == 3


async def test_a_missing_topic_reads_as_empty_and_one_of_more_partitions_is_refused(kafka_settings):
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    missing = kafka_settings.model_copy(update={"topic_policies": kafka_settings.topic_policies + "-none"})
    read = await read_policies(missing, 2)
    assert (read.versions, read.rejected, read.end) == ([], [], 0)  # as an empty topic

    wide = kafka_settings.model_copy(update={"topic_policies": kafka_settings.topic_policies + "-wide"})
    admin = AIOKafkaAdminClient(**client_options(wide))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(wide.topic_policies, 2, 1)])
    finally:
        await admin.close()
    with pytest.raises(TopicProblem, match="has 2 partitions; the policy topic must have exactly one"):
        await read_policies(wide)


def test_serve_refuses_a_policy_topic_of_more_than_one_partition(kafka_settings, tmp_path):
    """At start, as a missing topic is: one line, exit status 2, nothing projected."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from tests.worker_helpers import worker

    settings = kafka_settings.model_copy(
        update={"topic_policies": kafka_settings.topic_policies + "-wide", "data_dir": tmp_path / "data"}
    )

    async def create() -> None:
        admin = AIOKafkaAdminClient(**client_options(settings))
        await admin.start()
        try:
            await admin.create_topics([NewTopic(settings.topic_policies, 3, 1)])
        finally:
            await admin.close()

    asyncio.run(create())
    log = tmp_path / "serve.log"
    process = worker(settings, log)
    assert process.wait(timeout=120) == 2
    [line] = [line for line in log.read_text().splitlines() if line.startswith("slatrack serve: ")]
    assert line == (
        f"slatrack serve: topic {settings.topic_policies!r} has 3 partitions; the policy topic must have "
        "exactly one (a version's position is its offset, one order for every reader): create it with one "
        "partition (retention.ms=-1) and publish the versions again, or set SLATRACK_TOPIC_POLICIES to "
        "another topic"
    )
