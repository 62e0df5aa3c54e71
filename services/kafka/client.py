"""Kafka plumbing shared by every client: connection options, security, topics.

Nothing here knows whether the broker is Apache Kafka or the embedded one.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from aiokafka.helpers import create_ssl_context
from faststream.kafka.security import parse_security
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from services.config import Settings
from services.worker.batches import partition_problem

log = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = 36
# The policy topic has one partition: the order of its versions is the offset order.
POLICY_PARTITIONS = 1


def security(settings: Settings) -> BaseSecurity | None:
    """TLS and SASL settings as faststream's security object (also the source of aiokafka's options)."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    use_ssl = protocol.endswith("SSL")
    context = (
        create_ssl_context(
            cafile=_path(settings.kafka_ssl_cafile),
            certfile=_path(settings.kafka_ssl_certfile),
            keyfile=_path(settings.kafka_ssl_keyfile),
        )
        if use_ssl
        else None
    )
    if protocol == "SSL":
        return BaseSecurity(ssl_context=context, use_ssl=True)
    sasl = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}
    password = settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else ""
    return sasl[settings.kafka_sasl_mechanism or "PLAIN"](
        username=settings.kafka_sasl_username or "",
        password=password,
        ssl_context=context,
        use_ssl=use_ssl,
    )


def client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments every aiokafka client of ours takes."""
    return {
        "bootstrap_servers": settings.bootstrap(),
        "client_id": settings.kafka_client_id,
        "request_timeout_ms": settings.kafka_request_timeout_ms,
        **parse_security(security(settings)),
    }


def raw_producer(settings: Settings, max_request_size: int | None = None) -> AIOKafkaProducer:
    """A plain aiokafka producer (acks=all), for messages that must go out exactly as given.

    faststream's publishers add headers of their own (``content-type``, a random
    ``correlation_id``) and send an empty key as none; a dead letter, a replay or a
    restored event must carry the original key, value and headers byte for byte.
    ``max_request_size``: by default never below what a dead letter may be
    (SLATRACK_DLQ_MAX_MESSAGE_BYTES), so that one cut to fit is not refused by the
    producer itself. Call it in the event loop that will use it.
    """
    if max_request_size is None:
        max_request_size = max(1024 * 1024, settings.dlq_max_message_bytes + 64 * 1024)
    return AIOKafkaProducer(
        acks="all",
        enable_idempotence=settings.kafka_enable_idempotence,
        linger_ms=5,
        max_request_size=max_request_size,
        **client_options(settings),
    )


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str] = field(default_factory=dict)


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Our topics. The log is kept forever: it is the source every read model is rebuilt from.

    The dead-letter topic is kept forever too: a rejected message waits there
    until someone has looked at it. Signals are notifications, kept for
    ``signals_retention_ms``. The policy topic is part of the log (every number is computed
    with its versions): kept forever, and in one partition, so that its order is one order
    for every reader (a version's position is its offset).
    """
    forever = {"cleanup.policy": "delete", "retention.ms": "-1"}
    signals = {"cleanup.policy": "delete", "retention.ms": str(settings.signals_retention_ms)}
    partitions, replicas = settings.topic_partitions, settings.topic_replication_factor
    return [
        TopicSpec(settings.topic_events, partitions, replicas, forever),
        TopicSpec(settings.topic_dlq, partitions, replicas, forever),
        TopicSpec(settings.topic_signals, partitions, replicas, signals),
        TopicSpec(settings.topic_policies, POLICY_PARTITIONS, replicas, forever),
    ]


async def ensure_topics(
    settings: Settings, specs: list[TopicSpec] | None = None, *, create: bool | None = None
) -> None:
    """Create our topics where missing (``create``; default: SLATRACK_KAFKA_CREATE_TOPICS); check
    the ones that exist."""
    specs = specs if specs is not None else topic_specs(settings)
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        if settings.kafka_create_topics if create is None else create:
            await _create_missing(admin, specs)
        existing = await admin.describe_topics([s.name for s in specs])
    finally:
        await admin.close()
    by_name = {t["topic"]: t for t in existing}
    for spec in specs:
        found = by_name.get(spec.name)
        problem = topic_problem(settings, spec, found)
        if problem is not None:
            raise TopicProblem(problem)
        assert found is not None
        if len(found["partitions"]) != spec.partitions:
            log.warning(
                "topic %s has %d partitions, configured %d; using it as it is",
                spec.name,
                len(found["partitions"]),
                spec.partitions,
            )


class TopicProblem(RuntimeError):
    """A topic slatrack needs is missing, or cannot be used as it is."""


def topic_problem(settings: Settings, spec: TopicSpec, found: dict[str, Any] | None) -> str | None:
    """Why the topic the broker describes (``found``, None: not described) cannot be used."""
    if found is None or found.get("error_code", 0) != 0:
        return (
            f"topic {spec.name!r} does not exist on {settings.bootstrap()}; create it "
            f"({spec.partitions} partitions, {spec.configs}) or set SLATRACK_KAFKA_CREATE_TOPICS=true"
        )
    beyond = sorted(p["partition"] for p in found["partitions"] if partition_problem(p["partition"]))
    if spec.name == settings.topic_events and beyond:
        # Refused at start, rather than every partition from there on halting for ever.
        return (
            f"topic {spec.name!r} has {len(found['partitions'])} partitions: {partition_problem(beyond[0])}"
        )
    if spec.name == settings.topic_policies and len(found["partitions"]) != POLICY_PARTITIONS:
        return policy_partitions_problem(settings, len(found["partitions"]))
    return None


def policy_partitions_problem(settings: Settings, partitions: int) -> str:
    """Why a policy topic of ``partitions`` partitions cannot be used (it must have exactly one)."""
    return (
        f"topic {settings.topic_policies!r} has {partitions} partitions; the policy topic must have "
        "exactly one (a version's position is its offset, one order for every reader): create it "
        f"with one partition (retention.ms=-1) and publish the versions again, or set "
        "SLATRACK_TOPIC_POLICIES to another topic"
    )


async def _create_missing(admin: AIOKafkaAdminClient, specs: list[TopicSpec]) -> None:
    response = await admin.create_topics(
        [NewTopic(s.name, s.partitions, s.replication_factor, topic_configs=s.configs) for s in specs]
    )
    for topic, code, message in response.topic_errors:
        if code == 0:
            log.info("created topic %s", topic)
        elif code != _TOPIC_ALREADY_EXISTS:
            raise RuntimeError(f"could not create topic {topic}: error {code}: {message}")


class BrokerUnreachable(TimeoutError):
    """No broker answered in time; the message says where and the last error."""


async def wait_until_reachable(settings: Settings, timeout: float, still_starting: Any = None) -> None:
    """Poll until a metadata request succeeds (no fixed sleep), or fail after ``timeout`` seconds.

    ``still_starting`` is an optional callable that raises when the broker
    process died, so that we stop waiting at once.
    """
    deadline = time.monotonic() + timeout
    options = {**client_options(settings), "request_timeout_ms": 5_000}
    last_error: Exception | None = None
    with _aiokafka_errors_muted():
        while time.monotonic() < deadline:
            if still_starting is not None:
                still_starting()
            admin = AIOKafkaAdminClient(**options)
            try:
                await admin.start()  # bootstraps with a metadata request
                await admin.list_topics()
                return
            except (KafkaError, OSError) as exc:
                last_error = exc
            finally:
                await admin.close()
            await asyncio.sleep(0.05)
    raise BrokerUnreachable(
        f"Kafka at {settings.bootstrap()} not reachable after {timeout:.0f} s: {last_error}"
    )


class BrokerWatch:
    """Whether the broker answers now: a metadata request every ``every`` seconds, each given
    ``timeout`` seconds (a frozen broker keeps its connections open and answers nothing, so
    only a timeout tells). ``/readyz`` and the intake ask :meth:`problem`."""

    def __init__(self, settings: Settings, every: float = 2.0, timeout: float = 3.0):
        self.settings = settings
        self.every = every
        self.timeout = timeout
        self.failing_since: float | None = None
        self.error = ""

    def problem(self) -> str | None:
        """Why the broker counts as unreachable, or None while it answers."""
        if self.failing_since is None:
            return None
        silent = time.monotonic() - self.failing_since
        return f"the broker at {self.settings.bootstrap()} has not answered for {silent:.0f} s ({self.error})"

    async def run(self, stop: asyncio.Event) -> None:
        admin: AIOKafkaAdminClient | None = None
        options = {**client_options(self.settings), "request_timeout_ms": int(self.timeout * 1000)}
        try:
            while not stop.is_set():
                try:
                    async with asyncio.timeout(self.timeout):
                        if admin is None:
                            admin = AIOKafkaAdminClient(**options)
                            await admin.start()
                        await admin.list_topics()
                except (KafkaError, OSError, TimeoutError) as exc:
                    self._failed(exc)
                    if admin is not None:
                        await _close_quietly(admin)
                        admin = None
                else:
                    self._answered()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.every)
        finally:
            if admin is not None:
                await _close_quietly(admin)

    def _failed(self, error: BaseException) -> None:
        timed_out = isinstance(error, TimeoutError)
        self.error = "no answer in time" if timed_out else str(error) or type(error).__name__
        if self.failing_since is None:
            self.failing_since = time.monotonic()
            log.warning("the broker at %s does not answer: %s", self.settings.bootstrap(), self.error)

    def _answered(self) -> None:
        if self.failing_since is not None:
            log.info(
                "the broker at %s answers again (after %.0f s)",
                self.settings.bootstrap(),
                time.monotonic() - self.failing_since,
            )
        self.failing_since = None


async def _close_quietly(admin: AIOKafkaAdminClient) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(2):
            await admin.close()


@contextmanager
def _aiokafka_errors_muted() -> Iterator[None]:
    # aiokafka logs an error for each refused connection; while a broker is
    # still starting those are expected, and the last one is reported if the
    # wait fails.
    logger = logging.getLogger("aiokafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _path(value: Any) -> str | None:
    return None if value is None else str(value)
