"""The console served for real for a browser: the HTTP app (uvicorn on a free port, in a thread with
its own event loop, as :class:`tests.integration.live_api.LiveApi` serves it) over a SQLite store
that the real projector filled with the scenario's events (:mod:`tests.feed`), as of the scenario's
instant. No broker: nothing here publishes (the app's producer is never started), and no worker
runs, so the rows stay as of ``scenario.NOW``."""

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from pydantic import SecretStr

from projections.policy import default_policy
from services.api.app import create_app
from services.bootstrap import Services
from services.config import Settings
from services.kafka.publisher import EventPublisher
from services.store import open_store
from services.worker.ports import ReadModelStore
from tests.feed import Feed
from tests.integration.live_api import _Server, free_socket


def console_settings(data_dir: Path, tokens: list[dict[str, Any]]) -> Settings:
    return Settings(
        kafka_bootstrap="127.0.0.1:1",  # never contacted
        data_dir=data_dir,
        api_tokens=SecretStr(json.dumps(tokens)),
        cursor_key=SecretStr("console-browser-tests-cursor-key"),
    )


class ServedApp:
    """``create_app`` over ``store`` on a real socket; ``url`` is its base."""

    def __init__(
        self, settings: Settings, store: ReadModelStore, clock: Callable[[], datetime] | None = None
    ):
        self.settings = settings
        self.store = store
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="console-app", daemon=True)
        self.thread.start()
        wired = Services(settings, default_policy(), EventPublisher(settings), store)
        if clock is not None:  # the API's now (the queue's countdowns, as_of=now, the skew)
            wired = replace(wired, clock=clock)
        self.app = create_app(wired)
        sock = free_socket()
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        # No access log: a test of what is logged would look at the app's own lines.
        config = uvicorn.Config(self.app, log_config=None, access_log=False, lifespan="off")
        self.server = _Server(config)
        self.task = asyncio.run_coroutine_threadsafe(self.server.serve(sockets=[sock]), self.loop)
        asyncio.run_coroutine_threadsafe(self._started(), self.loop).result(30)

    async def _started(self) -> None:
        while not self.server.started:  # noqa: ASYNC110 - uvicorn's flag
            await asyncio.sleep(0.02)

    def client(self, **options: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **options)

    def close(self) -> None:
        self.server.should_exit = True
        try:
            self.task.result(30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


def projected(
    store: ReadModelStore, clock: datetime, events: list[dict[str, Any]], batch: int = 5000
) -> None:
    """``events`` folded into ``store`` by the real projector (one partition, in order, batches of
    ``batch``), its clock fixed at ``clock``."""

    async def feed() -> None:
        fed = await Feed(store, clock).open()
        for start in range(0, len(events), batch):
            await fed.send(*events[start : start + batch])

    asyncio.run(feed())


@contextmanager
def served_console(
    data_dir: Path,
    tokens: list[dict[str, Any]],
    fill: Callable[[ReadModelStore], None],
    clock: Callable[[], datetime] | None = None,
) -> Iterator[ServedApp]:
    """The console over a fresh SQLite store in ``data_dir``, filled by ``fill``; ``clock``: the
    API's now (None: the wall clock)."""
    settings = console_settings(data_dir, tokens)
    store = open_store(settings)
    try:
        fill(store)
        served = ServedApp(settings, store, clock)
        try:
            yield served
        finally:
            served.close()
    finally:
        store.close()
