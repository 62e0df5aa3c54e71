"""``slatrack serve``: the broker connection (or the embedded broker), the
projector worker (consumer, timers, signal relay) and the HTTP app, in one
process by default; ``--role worker`` or ``--role api`` runs one side only.
"""

import asyncio
import contextlib
import ipaddress
import logging
import signal
import socket
from collections.abc import Coroutine, Iterator
from typing import Any, Literal

import uvicorn

from projections.policy import Policy, default_policy, load_policy
from services import metrics
from services.config import Settings
from services.consumer import ValidatingConsumer
from services.embedded_broker import EmbeddedBroker
from services.http import create_app
from services.kafka import ensure_topics, wait_until_reachable
from services.outbox import relay_signals
from services.projector import Projector
from services.publisher import EventPublisher
from services.store import open_store

log = logging.getLogger(__name__)

BROKER_WAIT_S = 30.0
Role = Literal["all", "worker", "api"]


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: ``serve`` decides when everything stops."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def policy_of(settings: Settings) -> Policy:
    return load_policy(settings.policy_file) if settings.policy_file else default_policy()


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (a name other than localhost is not assumed to be)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_problem(settings: Settings, role: Role, insecure: bool) -> str | None:
    """Why ``serve`` must not start as configured: an open API (no token) off loopback."""
    if role == "worker" or insecure or settings.tokens or is_loopback(settings.http_host):
        return None
    return (
        f"refusing to serve an open API on {settings.http_host}: no API token is configured, so anyone "
        "who reaches it could publish events and start rebuilds. Configure SLATRACK_API_TOKENS or "
        "SLATRACK_API_TOKENS_FILE, listen on a loopback address (SLATRACK_HTTP_HOST=127.0.0.1), or pass "
        "--insecure to serve it open anyway."
    )


def run(settings: Settings, role: Role = "all") -> None:
    """Run until SIGINT or SIGTERM; stop everything this process started."""
    broker = None
    if settings.uses_embedded_broker:
        broker = EmbeddedBroker(settings.embedded_port, log_path=settings.data_dir / "embedded-broker.log")
        broker.spawn()  # from the main thread, so that it dies with us
    try:
        asyncio.run(_serve(settings, broker, role))
    finally:
        if broker is not None:
            broker.stop()


async def _serve(settings: Settings, broker: EmbeddedBroker | None, role: Role) -> None:
    if broker is not None:
        await broker.wait_ready(settings, BROKER_WAIT_S)
        settings = broker.settings(settings)
        log.info(
            "broker: embedded at %s (memory only: its log is lost when slatrack stops)", broker.bootstrap
        )
    else:
        await wait_until_reachable(settings, settings.kafka_request_timeout_ms / 1000)
        await ensure_topics(settings)
        log.info("broker: %s (%s)", settings.bootstrap(), settings.kafka_security_protocol)

    policy = policy_of(settings)
    metrics.SLA_ELAPSED.install(policy)  # every role exports the histogram with the same buckets
    store = open_store(settings)
    stop = asyncio.Event()
    _on_signals(stop)
    jobs: dict[str, Coroutine[Any, Any, None]] = {}
    consumer: ValidatingConsumer | None = None
    async with EventPublisher(settings) as publisher:
        if role in ("all", "worker"):
            projector = Projector(store, policy, settings.topic_events, dead_letter=publisher.dead_letter)
            generation = await projector.open()
            log.info("worker: policy %s, read models generation %d", projector.policy.version, generation)
            consumer = ValidatingConsumer(settings, publisher, projector)
            metrics.WORKER.attach(
                store, lambda: (projector.generation, tuple(sorted(projector.partitions))), consumer.lag
            )
            jobs["consumer"] = consumer.run(stop)
            jobs["timers"] = projector.run_timers(stop)
            jobs["signals"] = relay_signals(store, publisher, stop, lambda: sorted(projector.partitions))
        # Every role listens: a worker serves /healthz, /readyz and /metrics only.
        await asyncio.to_thread(store.migrate)
        sock = _listen(settings.http_host, settings.http_port)
        host, port = sock.getsockname()[:2]
        app = create_app(
            settings, publisher, store, policy, lag=consumer.lag if consumer else None, api=role != "worker"
        )
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
        server.should_exit = True
        results = await asyncio.gather(*tasks, return_exceptions=True)
        stopping.cancel()
    metrics.WORKER.detach()
    await asyncio.to_thread(store.close)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        raise failures[0]
    log.info("slatrack stopped")


def _log_access(settings: Settings, host: str) -> None:
    """Who may use the API (token names only, never a token)."""
    tokens = settings.tokens
    if tokens:
        names = ", ".join(f"{t.name} ({'+'.join(sorted(t.roles))})" for t in tokens)
        log.info("api: %d bearer tokens: %s", len(tokens), names)
    elif is_loopback(host):
        log.warning("api: no token configured: the API is open (listening on loopback only)")
    else:
        log.warning("api: NO TOKEN CONFIGURED AND --insecure: the API is open to anyone who reaches %s", host)
    if not settings.metrics_public:
        log.info("api: /metrics, /healthz and /readyz need the reader role")


def _on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()

    def handle(signum: int) -> None:
        if stop.is_set():
            log.warning("second %s: stopping now", signal.Signals(signum).name)
            raise SystemExit(1)
        log.info("%s: finishing the batch in hand, then stopping", signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, handle, signum)


def _listen(host: str, port: int) -> socket.socket:
    """Bind before serving, so that the address we log is the real one (port 0 included)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock
