"""Producing and reading topics directly, to check what the service wrote."""

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from services.kafka.client import client_options


async def produce(settings, messages) -> None:
    producer = AIOKafkaProducer(
        **client_options(settings), acks="all", linger_ms=5, max_request_size=2 * 1024 * 1024
    )
    await producer.start()
    try:
        pending = [await producer.send(settings.topic_events, value, key=key) for key, value in messages]
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def read_all(settings, topic: str, expected: int, timeout: float = 60) -> list:
    consumer = AIOKafkaConsumer(topic, auto_offset_reset="earliest", **client_options(settings))
    await consumer.start()
    records: list = []
    try:
        async with asyncio.timeout(timeout):
            while len(records) < expected:
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    records.extend(batch)
        # Nothing more than expected arrives.
        extra = await consumer.getmany(timeout_ms=1000)
        records.extend(r for batch in extra.values() for r in batch)
    finally:
        await consumer.stop()
    return records
