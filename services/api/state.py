"""What the HTTP app holds, typed: the services it was wired with (:class:`services.bootstrap.Services`,
``app.state.services``) and its own state (:class:`ApiState`, ``app.state.api``), each read through
an accessor here rather than as loose attributes of ``app.state``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from starlette.applications import Starlette

from services.bootstrap import Services
from services.worker.ports import ReadModelStore

if TYPE_CHECKING:
    from services.api.auth import Authenticator

T = TypeVar("T")


@dataclass
class RebuildJob:
    """The rebuild this API process runs or ran last (one at a time)."""

    status: Literal["idle", "running", "done", "failed"] = "idle"
    started_at: str | None = None
    finished_at: str | None = None
    progress: float = 0.0
    report: dict[str, Any] | None = None
    error: str | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        """What ``GET /v1/admin/rebuild`` answers (services.api.app.RebuildStatus): all but the task."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "task"}


@dataclass
class ApiState:
    """The app's own state, beside the services it reads."""

    created: float  # time.monotonic() when the app was made
    auth: Authenticator
    worker_assigned: bool = False  # the worker had partitions once (see the readiness)
    rebuild: RebuildJob = field(default_factory=RebuildJob)


def services(app: Starlette) -> Services:
    """The services the app was made with (services.api.app.create_app)."""
    return _held(app, "services", Services)


def read_models(app: Starlette) -> ReadModelStore:
    """The store of the read models (the routes that read it exist only in an app that has one)."""
    store = services(app).store
    if store is None:
        raise RuntimeError("this app has no read models")
    return store


def api_state(app: Starlette) -> ApiState:
    """The app's own state (services.api.app.create_app)."""
    return _held(app, "api", ApiState)


def _held(app: Starlette, name: str, kind: type[T]) -> T:
    found = getattr(app.state, name, None)
    if not isinstance(found, kind):
        raise TypeError(
            f"app.state.{name} is a {type(found).__name__}: an app made by create_app holds {kind.__name__}"
        )
    return found
