"""``slatrack serve``: the broker connection (or the embedded broker), the
validating consumer and the HTTP app in one process, stopped together.
"""

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Iterator

import uvicorn

from services.config import Settings
from services.consumer import ConsumedEvent, ValidatingConsumer
from services.embedded_broker import EmbeddedBroker
from services.http import create_app
from services.kafka import ensure_topics, wait_until_reachable
from services.publisher import EventPublisher

log = logging.getLogger(__name__)

BROKER_WAIT_S = 30.0


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: ``serve`` decides when everything stops."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _hand_on(events: list[ConsumedEvent]) -> None:
    # Until the projector exists, valid events are validated and counted only.
    return None


def run(settings: Settings) -> None:
    """Run until SIGINT or SIGTERM; stop everything this process started."""
    broker = None
    if settings.uses_embedded_broker:
        broker = EmbeddedBroker(settings.embedded_port, log_path=settings.data_dir / "embedded-broker.log")
        broker.spawn()  # from the main thread, so that it dies with us
    try:
        asyncio.run(_serve(settings, broker))
    finally:
        if broker is not None:
            broker.stop()


async def _serve(settings: Settings, broker: EmbeddedBroker | None) -> None:
    if broker is not None:
        await broker.wait_ready(settings, BROKER_WAIT_S)
        settings = broker.settings(settings)
        log.info(
            "broker: embedded at %s (memory only: its log is lost when slatrack stops)", broker.bootstrap
        )
    else:
        await wait_until_reachable(settings, BROKER_WAIT_S)
        await ensure_topics(settings)
        log.info("broker: %s (%s)", settings.bootstrap(), settings.kafka_security_protocol)

    stop = asyncio.Event()
    _on_signals(stop)
    sock = _listen(settings.http_host, settings.http_port)
    host, port = sock.getsockname()[:2]

    async with EventPublisher(settings) as publisher:
        consumer = ValidatingConsumer(settings, publisher, _hand_on)
        server = _Server(
            uvicorn.Config(create_app(settings, publisher), log_config=None, access_log=False, lifespan="off")
        )
        tasks = [
            asyncio.create_task(consumer.run(stop), name="consumer"),
            asyncio.create_task(server.serve(sockets=[sock]), name="http"),
        ]
        log.info("slatrack listening on http://%s:%d", host, port)
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait([*tasks, stopping], return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        server.should_exit = True
        results = await asyncio.gather(*tasks, return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        raise failures[0]
    log.info("slatrack stopped")


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
