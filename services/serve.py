"""``slatrack serve``: the broker connection (or the embedded broker), the
projector worker (consumer, timers, signal relay) and the HTTP app, in one
process by default; ``--role worker`` or ``--role api`` runs one side only.
"""

import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import uvicorn

from services import metrics
from services.api.app import create_app
from services.bootstrap import configured_policy, wire
from services.config import ApiToken, ProcessRole, Settings
from services.kafka.client import TopicProblem, ensure_topics, wait_until_reachable
from services.kafka.embedded import BrokerExited, EmbeddedBroker, PortTaken, check_port_free
from services.kafka.policies import KafkaPolicyLog
from services.kafka.publisher import EventPublisher
from services.kafka.restore import RestoreRefused, restore_log, restore_policies
from services.store import open_store
from services.worker import gauges
from services.worker.outbox import relay_signals

log = logging.getLogger(__name__)

BROKER_WAIT_S = 30.0
STOP_MARGIN_S = 15.0  # after SLATRACK_STOP_TIMEOUT_S, for the producer, the store and the broker to close
# Once the embedded broker is dead, how long the jobs may take to stop before they are
# cancelled: the Kafka clients would otherwise retry it for their whole request timeout.
STOP_WITHOUT_BROKER_S = 2.0


class ServeRefused(RuntimeError):
    """``serve`` cannot start as configured (a taken port, ...): found before anything started."""


class ServeFailed(RuntimeError):
    """``serve`` stopped on a failure it has logged already (the embedded broker died)."""


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: ``serve`` decides when everything stops."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (a name other than localhost is not assumed to be)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_problem(settings: Settings, role: ProcessRole, insecure: bool) -> str | None:
    """Why ``serve`` must not start as configured: an open API (no token) off loopback."""
    if role == "worker" or insecure or settings.tokens or is_loopback(settings.http_host):
        return None
    return (
        f"refusing to serve an open API on {settings.http_host}: no API token is configured, so anyone "
        "who reaches it could publish events and start rebuilds. Configure SLATRACK_API_TOKENS or "
        "SLATRACK_API_TOKENS_FILE, listen on a loopback address (SLATRACK_HTTP_HOST=127.0.0.1), or pass "
        "--insecure to serve it open anyway."
    )


def run(settings: Settings, role: ProcessRole = "all", check: Callable[[], None] = lambda: None) -> None:
    """Run until SIGINT or SIGTERM; stop everything this process started.

    ``check`` runs once the ports are known to be free, before anything starts (the
    caller's checks of the configuration, which may create the data dir). Raises
    :class:`ServeRefused` if a port is taken (nothing was started) or a topic cannot be used, and
    :class:`ServeFailed` if the embedded broker died (logged already).
    """
    # First, and kept: a taken HTTP port is found before anything starts, and no
    # other process can take the port between a check and the bind.
    sock = _listen(settings.http_host, settings.http_port)
    broker = None
    try:
        if settings.uses_embedded_broker and settings.embedded_port:
            check_port_free(settings.embedded_port)
        check()
        if settings.uses_embedded_broker:
            log_path = settings.data_dir / "embedded-broker.log"
            broker = EmbeddedBroker(settings.embedded_port, log_path=log_path)
            broker.spawn()  # from the main thread, so that it dies with us; checks its port first
        asyncio.run(_serve(settings, broker, role, sock))
    except (PortTaken, RestoreRefused, TopicProblem) as exc:
        raise ServeRefused(str(exc)) from None
    except BrokerExited as exc:
        raise ServeFailed(str(exc)) from None
    finally:
        if broker is not None:
            broker.stop()
        sock.close()


async def _start_embedded(settings: Settings, broker: EmbeddedBroker) -> Settings:
    """Wait for the new (so empty) embedded broker, and write back the log the read models hold."""
    await broker.wait_ready(settings, BROKER_WAIT_S)
    settings = broker.settings(settings)
    log.info("broker: embedded at %s (memory only: its log is lost when slatrack stops)", broker.bootstrap)
    store = open_store(settings)
    try:
        restored = await restore_log(settings, store)
        versions = await restore_policies(settings, store)
    finally:
        await asyncio.to_thread(store.close)
    if restored is not None:
        log.info("embedded broker: %s", restored.summary())
    if versions is not None:
        log.info("embedded broker: restored %d policy versions into %s", versions, settings.topic_policies)
    return settings


async def _watch_broker(broker: EmbeddedBroker, stop: asyncio.Event) -> None:
    try:
        await broker.watch(stop)
    except BrokerExited as exc:
        log.error("%s; stopping", exc)
        # What the Kafka clients log from now on (refused connections, every 100 ms) says
        # nothing more than this line.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
        raise


async def _serve(
    settings: Settings, broker: EmbeddedBroker | None, role: ProcessRole, sock: socket.socket
) -> None:
    if broker is not None:
        settings = await _start_embedded(settings, broker)
    else:
        await wait_until_reachable(settings, settings.kafka_request_timeout_ms / 1000)
        await ensure_topics(settings)
        log.info("broker: %s (%s)", settings.bootstrap(), settings.kafka_security_protocol)

    policy = configured_policy(settings)
    metrics.SLA_ELAPSED.install(policy)  # every role exports the histogram with the same buckets
    store = open_store(settings)
    wired = wire(settings, store, worker=role in ("all", "worker"), policy=policy)
    stop = asyncio.Event()
    _on_signals(stop)
    jobs: dict[str, Coroutine[Any, Any, None]] = {}
    assert wired.broker is not None  # wire watches the broker
    jobs["broker-watch"] = wired.broker.run(stop)
    projector = wired.worker.projector if wired.worker is not None else None
    publisher = wired.publisher
    await publisher.start()
    try:
        if wired.worker is not None:
            worker = wired.worker
            generation = await worker.projector.open()
            log.info(
                "worker: policy %s, read models generation %d", worker.projector.policy.version, generation
            )
            gauges.WORKER.attach(
                store,
                lambda: (worker.projector.generation, tuple(sorted(worker.projector.partitions))),
                worker.consumer.lag,
            )
            jobs["consumer"] = worker.consumer.run(stop)
            jobs["timers"] = worker.projector.run_timers(stop)
            jobs["policies"] = worker.projector.follow_policies(stop, settings.policy_poll_s)
            jobs["signals"] = relay_signals(
                store, publisher, stop, lambda: sorted(worker.projector.partitions)
            )
        if broker is not None:
            jobs["embedded-broker"] = _watch_broker(broker, stop)
        # Every role listens: a worker serves /healthz, /readyz and /metrics only.
        await asyncio.to_thread(store.migrate)
        host, port = sock.getsockname()[:2]
        app = create_app(wired, api=role != "worker")
        if role == "worker":
            log.info("worker: HTTP serves /healthz, /readyz and /metrics only")
        else:
            _log_access(settings, host)
        server = _Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off"))
        jobs["http"] = server.serve(sockets=[sock])
        log.info("slatrack listening on http://%s:%d", host, port)
        tasks = [asyncio.create_task(job, name=name) for name, job in jobs.items()]
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait([*tasks, stopping], return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        watchdog = _watchdog(settings.stop_timeout_s + STOP_MARGIN_S)
        server.should_exit = True
        if projector is not None:
            async with projector.committed:  # the timers sleep on it: wake them to see the stop
                projector.committed.notify_all()
        # Without its embedded broker nothing can finish: a short grace. Nothing is lost by
        # cancelling: every batch is committed with its offsets or not at all.
        broker_died = any(t.get_name() == "embedded-broker" and t.done() for t in tasks)
        results = await _finish(tasks, STOP_WITHOUT_BROKER_S if broker_died else settings.stop_timeout_s)
        stopping.cancel()
    finally:
        await _stop_publisher(publisher)
        if wired.worker is not None:
            await _close_policies(wired.worker.policies)
    gauges.WORKER.detach()
    await asyncio.to_thread(store.close)
    watchdog.cancel()  # stopped in time
    failures = [r for r in results if isinstance(r, BaseException)]
    failures.sort(key=lambda r: not isinstance(r, BrokerExited))  # the cause of what failed after it
    if failures:
        raise failures[0]
    log.info("slatrack stopped")


async def _finish(tasks: list[asyncio.Task[None]], grace: float) -> list[BaseException | None]:
    """Let every job end by itself within ``grace`` seconds; then abandon the rest.

    Abandoning loses nothing committed: a batch not committed is read again from the log by
    the next owner of its partitions, a signal not yet relayed stays in the outbox.
    """
    _, pending = await asyncio.wait(tasks, timeout=grace)
    if pending:
        log.warning(
            "still busy %.0f s after the stop (SLATRACK_STOP_TIMEOUT_S): %s; abandoning them (what they "
            "had not committed is read again from the log)",
            grace,
            ", ".join(sorted(t.get_name() for t in pending)),
        )
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=5)
    return [None if t.cancelled() or not t.done() else t.exception() for t in tasks]


async def _close_policies(policies: KafkaPolicyLog) -> None:
    """Close the policy topic's consumer; a broker that does not answer cannot hold the stop up."""
    try:
        async with asyncio.timeout(5):
            await policies.close()
    except TimeoutError:
        log.warning("the policy topic's consumer did not close within 5 s; leaving it")


async def _stop_publisher(publisher: EventPublisher) -> None:
    """Flush and close the producer; a broker that does not answer cannot hold the stop up."""
    try:
        async with asyncio.timeout(5):
            await publisher.stop()
    except TimeoutError:
        log.warning("the producer did not close within 5 s (the broker does not answer); leaving it")


def _log_access(settings: Settings, host: str) -> None:
    """Who may use the API (token names only, never a token)."""
    tokens = settings.tokens
    if tokens:
        names = ", ".join(f"{t.name} ({'+'.join(sorted(t.roles))}{_scope(t)})" for t in tokens)
        log.info("api: %d bearer tokens: %s", len(tokens), names)
    elif is_loopback(host):
        log.warning("api: no token configured: the API is open (listening on loopback only)")
    else:
        log.warning("api: NO TOKEN CONFIGURED AND --insecure: the API is open to anyone who reaches %s", host)
    if not settings.metrics_public:
        log.info("api: /metrics, /healthz and /readyz need the reader role")


def _scope(token: ApiToken) -> str:
    if token.customers is None:
        return ""
    count = len(token.customers)
    return f", limited to {count} customer{'s' if count != 1 else ''}"


def _on_signals(stop: asyncio.Event) -> None:
    """The first SIGINT or SIGTERM stops in order; a second one ends the process at once (which
    loses nothing committed: every write is a transaction, and what was not committed is read
    again from the log)."""
    loop = asyncio.get_running_loop()
    signalled = False

    def handle(signum: int) -> None:
        nonlocal signalled
        name = signal.Signals(signum).name
        if signalled:
            log.warning("second %s: stopping now", name)
            os._exit(1)
        signalled = True
        log.info("%s: finishing the batch in hand, then stopping", name)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, handle, signum)


def _watchdog(after: float) -> threading.Timer:
    """Once a stop has begun, however it began: if the process is still there ``after`` seconds
    later (a thread stuck on a database that does not answer, which nothing in Python can
    interrupt), end it. Cancelled when the stop completes."""
    watchdog = threading.Timer(after, _stop_now, args=(after,))
    watchdog.daemon = True
    watchdog.start()
    return watchdog


def _stop_now(after: float) -> None:
    log.error("still not stopped %.0f s after the signal (something does not answer): exiting now", after)
    os._exit(1)


def _listen(host: str, port: int) -> socket.socket:
    """Bind and listen before anything else, so that the address we log is the real one (port 0
    included) and a taken port is a :class:`ServeRefused` before a broker or a database is touched."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        # Listening at once: a bound socket that does not listen yet can be bound again by
        # another process with SO_REUSEADDR (Linux); a listening one cannot.
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ServeRefused(
            f"cannot listen on {host}:{port} ({exc.strerror}): another process holds it, or the address "
            "is not this machine's. Set SLATRACK_HTTP_PORT (0: any free port) or SLATRACK_HTTP_HOST"
        ) from None
    sock.set_inheritable(True)
    return sock
