"""The service's ASGI app: intake, queries, admin, health, readiness, metrics.

Access: see :mod:`services.api.auth` (bearer tokens with roles). Every error is
JSON ``{"error": ..., "detail": ...}`` (a request that fails validation also
lists ``errors``).
"""

import asyncio
import logging
import time
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, Literal

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from events.models import EVENT_ADAPTER
from projections.ticket import utc
from services import metrics
from services.api import console, intake, queries
from services.api.auth import AUTH_RESPONSES, ApiError, Authenticator, error, refuse_scoped_tokens, require
from services.api.state import ApiState, RebuildJob, api_state, read_models, services
from services.bootstrap import Services
from services.config import Settings
from services.worker import gauges
from services.worker.ports import StoreUnavailable, call_with_timeout

log = logging.getLogger(__name__)

READY_STORE_TIMEOUT_S = 5.0

DESCRIPTION = """
Event-sourced SLA tracking for support desks.

**Access.** Every operation but `/docs`, `/openapi.json` (and, unless
`SLATRACK_METRICS_PUBLIC=false`, `/metrics`, `/healthz`, `/readyz`) needs
`Authorization: Bearer <token>` with a token configured in
`SLATRACK_API_TOKENS` or `SLATRACK_API_TOKENS_FILE`, holding the operation's
role: **reader** (queries), **publisher** (`POST /v1/events`), **admin**
(`/v1/admin/*`). Roles do not imply one another. 401: no token or an unknown
one; 403: the token lacks the role. With no token configured at all, the API
is open (development only: `slatrack serve` then listens on loopback only
unless given `--insecure`).

**Tokens limited to customers** (`"customers": [...]` in the configuration)
hold only the reader and publisher roles. They see only their customers'
tickets, timelines, customers and billing: another customer's is a 404
exactly as an id that does not exist, and `GET /v1/tickets` lists only
theirs (`customer_id` of another customer: no item). `POST /v1/events` with
an event of another customer is a 403 naming its index, and sends nothing.
`/v1/admin/*` and `/metrics` are a 403 for them, and so are `/healthz` and
`/readyz` when they need a token.

**Errors** are JSON `{"error": "<code>", "detail": "<text>"}`.

**As of.** A stored view is as of the instant the worker evaluated it, given
in the `X-Slatrack-Evaluated-At` header (RFC 3339, UTC), or per item in list
answers (`evaluated_at`). `?as_of=` recomputes a ticket's view (or its audit
trail) at an earlier instant from the stored events; `as_of=now` at the
request's instant, and an instant ahead of ours by at most
`SLATRACK_API_CLOCK_SKEW_S` (a client's clock running fast) is taken as now.

**The queue.** `GET /v1/tickets?sort=due` lists tickets by their next due
instant, soonest first, so the overdue ones (past their due instant, breached
or not) first; each item has its `due_at` and `remaining_seconds` (negative
when overdue); `overdue` and `billing_status` filter it.
"""


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready"]
    generation: int | None = Field(description="The active read-model generation")
    lag: dict[str, int | None] | None = Field(
        description="partition -> events of the log the worker of this process has not processed "
        "(null: not known yet); null when this process runs no worker"
    )


class NotReady(BaseModel):
    error: Literal["not_ready"]
    detail: str
    reasons: list[str]
    lag: dict[str, int | None] | None


class RebuildStatus(BaseModel):
    status: Literal["idle", "running", "done", "failed"] = Field(
        description="done: finished (see report.switched and report.mismatches); failed: see error"
    )
    started_at: str | None = None
    finished_at: str | None = None
    progress: float = Field(0.0, description="0 to 1 (also the gauge slatrack_rebuild_progress_ratio)")
    report: dict[str, Any] | None = Field(None, description="What `slatrack rebuild` prints, once done")
    error: str | None = None


def create_app(wired: Services, *, api: bool = True) -> FastAPI:
    """The app over the services of this process (services.bootstrap: the worker's lag and
    problems when it runs one, the broker watch, the store if any).

    ``api=False`` (``serve --role worker``) serves only /healthz, /readyz and /metrics.
    """
    settings = wired.settings
    app = FastAPI(
        title="slatrack",
        version="1",
        summary="Event-sourced SLA tracking for support desks",
        description=DESCRIPTION,
        # No redirect from /path/ to /path: Starlette builds its Location from the
        # Host header, which nobody authenticated (an open redirect). /path/ is a 404.
        redirect_slashes=False,
    )
    # Read through services.api.state's accessors, typed.
    app.state.services = wired
    app.state.api = ApiState(created=time.monotonic(), auth=Authenticator(settings.tokens))
    _error_handlers(app)
    if api:
        app.include_router(intake.router)
    if api and wired.store is not None:
        app.include_router(queries.router)
        app.include_router(admin)
        console.install(app)  # the web console at /ui/, over the same read models and tokens

    operations = APIRouter(
        # About the whole service: never for a token limited to customers (403), whatever its roles.
        dependencies=[] if settings.metrics_public else [require("reader", every_customer=True)],
        responses={} if settings.metrics_public else AUTH_RESPONSES,
    )

    @operations.get("/healthz", summary="Alive", response_model=Health)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @operations.get(
        "/readyz",
        summary="Ready to serve",
        response_model=Readiness,
        responses={503: {"model": NotReady, "description": "Not ready: `reasons` says why"}},
    )
    async def readyz(request: Request) -> JSONResponse:
        """Ready when the read models can be reached and have an active generation, and, in a
        process that runs the worker, once the worker was assigned its partitions (or three
        session timeouts passed without any) and none has more than `SLATRACK_READY_MAX_LAG`
        unprocessed events (nor an unknown lag), no partition is halted (the reason names
        each halted partition, its offset and why) or has records to project and made no
        progress for `SLATRACK_READY_STALL_S`, and the broker answers."""
        return await _readiness(request.app)

    @operations.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        # Public, it answers anyone, but never a token limited to customers.
        dependencies=[refuse_scoped_tokens] if settings.metrics_public else [],
        responses={
            200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "The text exposition format"},
            403: error("A token limited to customers (or, unless public, one without the reader role)"),
        },
    )
    async def prometheus_metrics() -> Response:
        gauges.WORKER.prepare()  # the worker's partitions, read on the loop that changes them
        # Counting clocks reads the store: within the API's limit, or without that gauge.
        limit = settings.api_store_timeout_s
        body = await asyncio.to_thread(call_with_timeout, limit, generate_latest, metrics.REGISTRY)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    app.include_router(operations)
    # FastAPI's documented way to replace the document; mypy refuses assigning to a method.
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


# -- readiness -------------------------------------------------------------------


async def _readiness(app: FastAPI) -> JSONResponse:
    reasons: list[str] = []
    generation = None
    wired, state = services(app), api_state(app)
    settings = wired.settings
    store = wired.store
    if store is not None:
        try:
            # The limit is the store's own (CALL_TIMEOUT): a thread that waits on a frozen
            # PostgreSQL past it would hold a worker of the thread pool, probe after probe.
            limit = min(READY_STORE_TIMEOUT_S, settings.api_store_timeout_s)
            generation = await asyncio.wait_for(
                asyncio.to_thread(call_with_timeout, limit, store.active_generation), limit + 1
            )
        except (TimeoutError, StoreUnavailable) as exc:  # a bug is a 500, not "cannot be reached"
            reasons.append(f"the read models cannot be reached ({type(exc).__name__})")
        else:
            if generation is None:
                reasons.append("no read models yet: no active generation")
    lag: dict[str, int | None] | None = None
    if wired.lag is not None:
        partitions = wired.lag()
        lag = {str(p): behind for p, behind in sorted(partitions.items())}
        bound = settings.ready_max_lag
        if partitions:
            state.worker_assigned = True
        elif not state.worker_assigned and time.monotonic() - state.created < _join_grace(settings):
            # Just started: not in its group yet, so what it has to catch up on is not known. (A
            # worker that stays without partitions, one more than there are partitions, is ready
            # once the grace has passed.)
            reasons.append("the worker has not been assigned partitions yet")
        unknown = [p for p, behind in sorted(partitions.items()) if behind is None]
        over = {
            p: behind for p, behind in sorted(partitions.items()) if behind is not None and behind > bound
        }
        if unknown:
            reasons.append(f"the worker's lag is not known yet in partitions {unknown}")
        if over:
            reasons.append(
                f"the worker is behind by more than {bound} events (SLATRACK_READY_MAX_LAG) in "
                f"partitions {sorted(over)}: up to {max(over.values())}"
            )
    if wired.problems is not None:
        reasons += wired.problems(settings.ready_stall_s)
    broker = wired.broker
    if broker is not None and (silent := broker.problem()) is not None:
        reasons.append(silent)
    if reasons:
        body = {"error": "not_ready", "detail": "; ".join(reasons), "reasons": reasons, "lag": lag}
        return JSONResponse(body, status_code=503)
    return JSONResponse({"status": "ready", "generation": generation, "lag": lag})


def _join_grace(settings: Settings) -> float:
    """How long a starting worker may take to join its group: three session timeouts."""
    return 3 * settings.kafka_session_timeout_ms / 1000


# -- admin: the rebuild ----------------------------------------------------------

admin = APIRouter(prefix="/v1/admin", dependencies=[require("admin")], responses=AUTH_RESPONSES)


@admin.post(
    "/rebuild",
    status_code=202,
    summary="Start a rebuild of the read models (replay, check, switch)",
    response_model=RebuildStatus,
    responses={409: error("A rebuild is running already")},
)
async def start_rebuild(request: Request) -> JSONResponse:
    """Replays the whole log into a new generation in the background of this API process,
    checks it against the live one and switches to it (as `slatrack rebuild`). One at a
    time: 409 while one runs. Follow it with `GET /v1/admin/rebuild` (or the gauge
    `slatrack_rebuild_progress_ratio`)."""
    state = api_state(request.app)
    job = state.rebuild
    if job.task is not None and not job.task.done():
        raise ApiError(409, "rebuild_running", f"a rebuild is running since {job.started_at}")
    fresh = RebuildJob(status="running", started_at=_now())
    fresh.task = asyncio.create_task(_run_rebuild(request.app, fresh), name="rebuild")
    state.rebuild = fresh
    metrics.REBUILD_PROGRESS.set(0)
    log.info("rebuild started through the API")
    return JSONResponse(fresh.as_dict(), status_code=202)


@admin.get("/rebuild", summary="The status of the rebuild running or run last", response_model=RebuildStatus)
async def rebuild_status(request: Request) -> JSONResponse:
    return JSONResponse(api_state(request.app).rebuild.as_dict())


async def _run_rebuild(app: FastAPI, job: RebuildJob) -> None:
    from services.kafka.log_reader import WholeLogReader
    from services.kafka.policies import KafkaPolicyLog
    from services.store import open_store
    from services.worker.rebuild import rebuild

    def progress(done: int, total: int) -> None:
        job.progress = round(min(done / total, 1.0), 4) if total else 0.0
        metrics.REBUILD_PROGRESS.set(job.progress)

    started = time.monotonic()
    try:
        wired = services(app)
        whole_log = WholeLogReader(wired.settings)
        async with KafkaPolicyLog(wired.settings) as policies:
            report = await rebuild(
                wired.settings,
                read_models(app),
                wired.policy,
                progress,
                switch=True,
                log_source=whole_log,
                policy_log=policies,
                policy_topic=wired.settings.topic_policies,
                open_store=open_store,
            )
    except Exception as exc:
        log.exception("rebuild failed after %.1f s", time.monotonic() - started)
        job.status, job.error = "failed", f"{type(exc).__name__}: {exc}"[:1000]
    else:
        job.status, job.report, job.progress = "done", report.as_dict(), 1.0
        metrics.REBUILD_PROGRESS.set(1.0)
        log.info(
            "rebuild done: generation %d, %d events, switched %s",
            report.generation,
            report.events,
            report.switched,
        )
    finally:
        job.finished_at = _now()


def _now() -> str:
    return utc(datetime.now(UTC).replace(microsecond=0)) or ""


# -- errors ----------------------------------------------------------------------


def _code(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = exc.error if isinstance(exc, ApiError) else _code(exc.status_code)
        return JSONResponse(
            {"error": code, "detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "loc": [str(part) for part in e.get("loc", ())],
                "msg": str(e.get("msg", "")),
                "type": e.get("type"),
            }
            for e in exc.errors()
        ]
        detail = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors) or "the request is not valid"
        return JSONResponse({"error": "invalid_request", "detail": detail, "errors": errors}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed: %r", request.method, request.url.path, exc, exc_info=exc)
        return JSONResponse(
            {"error": "internal_error", "detail": "an unexpected error (it is logged)"}, status_code=500
        )


# -- the OpenAPI document --------------------------------------------------------


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema plus the event contract, which the intake reads by hand."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            description=app.description,
            routes=app.routes,
        )
        event = EVENT_ADAPTER.json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(event.pop("$defs", {}))
        components["Event"] = event
        app.openapi_schema = schema
    return app.openapi_schema
