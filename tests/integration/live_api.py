"""The HTTP app served for real (uvicorn on a free port, in a thread with its own event
loop), over a real store, with the real projector worker (consumer) beside it, as
`slatrack serve` runs them; and the helpers the API tests share."""

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import uvicorn
from pydantic import SecretStr

from projections.policy import default_policy
from services.api.app import create_app
from services.api.state import api_state
from services.bootstrap import Services
from services.config import Settings
from services.kafka.client import ensure_topics, topic_specs
from services.kafka.consumer import ValidatingConsumer
from services.kafka.policies import KafkaPolicyLog
from services.kafka.publisher import EventPublisher
from services.store import open_store
from services.worker.batches import Lag
from services.worker.projector import Projector

AS_OF = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)  # the projector's clock, fixed for comparison

TOKENS = {
    "reader": "reader-token-" + uuid.uuid4().hex,
    "publisher": "publisher-token-" + uuid.uuid4().hex,
    "admin": "admin-token-" + uuid.uuid4().hex,
    "all": "all-roles-token-" + uuid.uuid4().hex,
}
TOKENS_JSON = json.dumps(
    [
        {"name": "ops-reader", "token": TOKENS["reader"], "roles": ["reader"]},
        {"name": "helpdesk", "token": TOKENS["publisher"], "roles": ["publisher"]},
        {"name": "oncall", "token": TOKENS["admin"], "roles": ["admin"]},
        {"name": "everything", "token": TOKENS["all"], "roles": ["reader", "publisher", "admin"]},
    ]
)


def auth(role: str) -> dict[str, str]:
    return {"authorization": f"Bearer {TOKENS[role]}"}


def fresh_settings(kafka_bootstrap: str, **overrides: Any) -> Settings:
    """Settings with topics and a group of their own (created), and the test tokens."""
    suffix = uuid.uuid4().hex[:10]
    values: dict[str, Any] = {
        "kafka_bootstrap": kafka_bootstrap,
        "topic_events": f"ticket-events-{suffix}",
        "topic_dlq": f"ticket-events-{suffix}.dlq",
        "topic_signals": f"sla-signals-{suffix}",
        "topic_policies": f"policy-versions-{suffix}",
        "kafka_group_id": f"slatrack-{suffix}",
        "kafka_session_timeout_ms": 6000,
        "api_tokens": SecretStr(TOKENS_JSON),
    }
    settings = Settings(**(values | overrides))
    asyncio.run(ensure_topics(settings, topic_specs(settings)))
    return settings


def free_socket() -> socket.socket:
    # IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY on the connections it accepts only
    # when the listening socket says it is TCP; without it every answer on a kept-alive connection
    # waited about 40 ms (Nagle's algorithm against the client's delayed ACK).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class LiveApi:
    """The app on a real port, its store, and (once :meth:`start_worker`) the projector worker."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], datetime] | None = lambda: AS_OF,
        lag: Lag | None = None,
        worker: bool = True,
        policies: bool = False,
        api_clock: Callable[[], datetime] | None = None,
    ):
        self.settings = settings
        self.api_clock = api_clock  # the API's now (None: the wall clock)
        self.with_policies = policies  # the worker follows the policy topic, as serve's does
        self.clock = clock
        self.custom_lag = lag
        self.with_worker = worker
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="live-api", daemon=True)
        self.thread.start()
        self.stop_event: asyncio.Event | None = None
        self.tasks: list[asyncio.Task] = []
        self.worker_task: asyncio.Task | None = None
        self.call(self._start())
        self.client = httpx.Client(base_url=self.url, timeout=60)

    def call(self, coroutine: Coroutine[Any, Any, Any], timeout: float = 120) -> Any:
        future: Future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(timeout)

    async def _start(self) -> None:
        self.stop_event = asyncio.Event()
        self.store = await asyncio.to_thread(open_store, self.settings)
        self.publisher = EventPublisher(self.settings)
        await self.publisher.__aenter__()
        kwargs: dict[str, Any] = {} if self.clock is None else {"clock": self.clock}
        self.policies = KafkaPolicyLog(self.settings) if self.with_policies else None
        if self.policies is not None:
            kwargs |= {"policy_log": self.policies, "policy_topic": self.settings.topic_policies}
        self.projector = Projector(
            self.store,
            default_policy(),
            self.settings.topic_events,
            dead_letter=self.publisher.dead_letter,
            **kwargs,
        )
        self.consumer = ValidatingConsumer(self.settings, self.publisher, self.projector)
        lag = self.custom_lag or (self.consumer.lag if self.with_worker else None)
        wired = Services(self.settings, default_policy(), self.publisher, self.store, lag=lag)
        if self.api_clock is not None:
            wired = replace(wired, clock=self.api_clock)
        self.app = create_app(wired)
        sock = free_socket()
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = _Server(uvicorn.Config(self.app, log_config=None, access_log=True, lifespan="off"))
        self.tasks.append(asyncio.create_task(self.server.serve(sockets=[sock])))
        while not self.server.started:  # noqa: ASYNC110 - uvicorn's flag
            await asyncio.sleep(0.02)

    def start_worker(self) -> None:
        async def start() -> None:
            await self.projector.open()
            assert self.stop_event is not None
            self.worker_task = asyncio.create_task(self.consumer.run(self.stop_event))
            if self.policies is not None:
                self.tasks.append(asyncio.create_task(self.projector.follow_policies(self.stop_event, 0.5)))

        self.call(start())

    def wait_applied(self, events: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.projector.applied_events < events:
            assert self.worker_task is None or not self.worker_task.done(), self.worker_task.exception()
            assert time.monotonic() < deadline, f"applied {self.projector.applied_events} of {events}"
            time.sleep(0.1)

    def close(self) -> None:
        async def stop() -> None:
            assert self.stop_event is not None
            self.stop_event.set()
            self.server.should_exit = True
            await asyncio.gather(*self.tasks, return_exceptions=True)
            if self.worker_task is not None:
                await asyncio.gather(self.worker_task, return_exceptions=True)
            rebuild = api_state(self.app).rebuild.task
            if rebuild is not None:
                await asyncio.gather(rebuild, return_exceptions=True)
            await self.publisher.__aexit__(None, None, None)
            if self.policies is not None:
                await self.policies.close()
            await asyncio.to_thread(self.store.close)

        self.client.close()
        try:
            self.call(stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


class LogCapture(logging.Handler):
    """Every log record of the process, formatted, with tracebacks (to look for secrets)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    @contextlib.contextmanager
    def installed(self) -> Iterator["LogCapture"]:
        root = logging.getLogger()
        level = root.level
        root.addHandler(self)
        root.setLevel(logging.DEBUG)
        try:
            yield self
        finally:
            root.removeHandler(self)
            root.setLevel(level)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def walk(client: httpx.Client, params: dict[str, Any], headers: dict[str, str]) -> list[dict[str, Any]]:
    """Every item of ``GET /v1/tickets`` with these filters, following ``next_cursor``."""
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(10_000):
        page = client.get(
            "/v1/tickets", params={**params, **({"cursor": cursor} if cursor else {})}, headers=headers
        )
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body["items"]) <= params.get("limit", 100)
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items
        assert body["items"], "a page that promises more must not be empty"
    raise AssertionError("no end to the pages")


def keyed(events: list[dict]) -> list[tuple[bytes, bytes]]:
    return [(e["customer_id"].encode(), orjson.dumps(e)) for e in events]
