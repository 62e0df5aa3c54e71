"""Wiring: what the settings make of slatrack's services, in one place.

:func:`wire` builds the typed set of services one process runs with (:class:`Services`):
``slatrack serve`` runs them, and the HTTP app (``services.api.app.create_app``) reads them.
The policy is never None: :func:`configured_policy` is the only place where the packaged
default is taken (:func:`policy_from`, for a command's own ``--policy`` file).

Imported by the command line at every start: the broker clients and the projector are
imported when :func:`wire` runs, not with this module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from projections.policy import Policy, default_policy, load_policy
from services.config import Settings
from services.worker.batches import Lag, Problems
from services.worker.ports import ReadModelStore

if TYPE_CHECKING:
    from services.kafka.client import BrokerWatch
    from services.kafka.consumer import ValidatingConsumer
    from services.kafka.policies import KafkaPolicyLog
    from services.kafka.publisher import EventPublisher
    from services.worker.projector import Projector


def policy_from(path: Path | None) -> Policy:
    """The policy file at ``path``, or the packaged default policy (``path`` None). Raises
    projections.policy.PolicyError for a file that is not a valid policy."""
    return load_policy(path) if path is not None else default_policy()


def configured_policy(settings: Settings) -> Policy:
    """The policy of ``SLATRACK_POLICY_FILE``, or the packaged one."""
    return policy_from(settings.policy_file)


def wall_clock() -> datetime:
    """Now, in UTC: what the API measures "now" with (remaining seconds, overdue, as_of=now)."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Worker:
    """The projector worker of a process: the projector, and the consumer that feeds it."""

    projector: Projector
    consumer: ValidatingConsumer
    policies: KafkaPolicyLog  # the policy topic the projector follows (closed at the stop)


@dataclass(frozen=True, slots=True)
class Services:
    """What a process of slatrack runs with, made from the settings by :func:`wire`."""

    settings: Settings
    policy: Policy  # the configured one (read models computed with another say so themselves)
    publisher: EventPublisher
    store: ReadModelStore | None = None  # None: the app has no read models (intake only)
    broker: BrokerWatch | None = None  # whether the broker answers (None: not watched)
    lag: Lag | None = None  # the worker's lag per partition (None: no worker in this process)
    problems: Problems | None = None  # why the worker's partitions do not go on
    worker: Worker | None = None
    # The API's now (the queue's remaining seconds and overdue filter, as_of=now and its clamp);
    # tests fix it, as they fix the projector's.
    clock: Callable[[], datetime] = wall_clock


def wire(
    settings: Settings, store: ReadModelStore, *, worker: bool, policy: Policy | None = None
) -> Services:
    """The services of a process over ``store``: a producer, a watch on the broker and, with
    ``worker``, the projector and its consumer (whose lag and problems readiness reads). Nothing
    is started: the caller starts what it runs (``services.serve``). Needs a running event loop
    (the broker clients bind to it). ``policy``: the configured one unless given."""
    from services.kafka.client import BrokerWatch
    from services.kafka.consumer import ValidatingConsumer
    from services.kafka.policies import KafkaPolicyLog
    from services.kafka.publisher import EventPublisher
    from services.worker.projector import Projector
    from services.worker.stages import timed_store

    policy = configured_policy(settings) if policy is None else policy
    publisher = EventPublisher(settings)
    runner = None
    if worker:
        policies = KafkaPolicyLog(settings)
        projector = Projector(
            timed_store(store),  # its calls timed per batch (services.worker.stages)
            policy,
            settings.topic_events,
            dead_letter=publisher.dead_letter,
            dead_letter_timeout_s=settings.dlq_send_timeout_s,
            policy_log=policies,
            policy_topic=settings.topic_policies,
        )
        runner = Worker(projector, ValidatingConsumer(settings, publisher, projector), policies)
    return Services(
        settings,
        policy,
        publisher,
        store,
        BrokerWatch(settings),
        lag=runner.consumer.lag if runner is not None else None,
        problems=runner.consumer.problems if runner is not None else None,
        worker=runner,
    )
