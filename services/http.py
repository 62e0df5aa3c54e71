"""The service's ASGI app: intake, health, metrics (later issues add queries)."""

from typing import Any

from fastapi import FastAPI, Response
from fastapi.openapi.utils import get_openapi
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from events.models import EVENT_ADAPTER
from projections.policy import Policy
from services import intake, metrics, queries
from services.config import Settings
from services.publisher import EventPublisher
from services.store.base import ReadModelStore


def create_app(
    settings: Settings,
    publisher: EventPublisher,
    store: ReadModelStore | None = None,
    policy: Policy | None = None,
) -> FastAPI:
    app = FastAPI(
        title="slatrack",
        version="1",
        summary="Event-sourced SLA tracking for support desks",
    )
    app.state.settings = settings
    app.state.publisher = publisher
    app.state.store = store
    app.state.policy = policy
    app.include_router(intake.router)
    if store is not None:
        app.include_router(queries.router)

    @app.get("/healthz", summary="Alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema plus the event contract, which the intake reads by hand."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        event = EVENT_ADAPTER.json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(event.pop("$defs", {}))
        components["Event"] = event
        app.openapi_schema = schema
    return app.openapi_schema
