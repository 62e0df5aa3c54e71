"""HTTP intake: ``POST /v1/events`` takes one event or a JSON array of events.

All or nothing: every event is validated first; if any is invalid the answer
is 422 with the errors of each bad item and nothing is sent. Otherwise all are
sent to the log and the answer, 202, comes once the broker acknowledged them.
"""

import asyncio
import logging
from typing import Any

import orjson
from aiokafka.errors import KafkaError
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from events import Event, EventRejected, RejectKind, decode_event
from projections.timeline import event_key, same_event
from services import metrics
from services.auth import AUTH_RESPONSES, require
from services.publisher import EventPublisher

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
MAX_EVENTS = 1000

router = APIRouter()

_REQUEST_BODY = {
    "required": True,
    "description": f"One event, or a JSON array of 1 to {MAX_EVENTS} events (at most 1 MiB in all).",
    "content": {
        "application/json": {
            "schema": {
                "oneOf": [
                    {"$ref": "#/components/schemas/Event"},
                    {
                        "type": "array",
                        "items": {"$ref": "#/components/schemas/Event"},
                        "minItems": 1,
                        "maxItems": MAX_EVENTS,
                    },
                ]
            }
        }
    },
}


@router.post(
    "/v1/events",
    status_code=202,
    summary="Publish ticket and account events to the log",
    openapi_extra={"requestBody": _REQUEST_BODY},
    dependencies=[require("publisher")],
    responses={
        **AUTH_RESPONSES,
        202: {"description": 'Every event is in the log: `{"accepted": [event ids]}`'},
        413: {"description": "The body is over 1 MiB"},
        422: {"description": "Not valid: `errors` lists each bad item; nothing was sent"},
        503: {"description": "The broker did not acknowledge; send the same request again"},
    },
)
async def post_events(request: Request) -> JSONResponse:
    response = await _handle(request)
    metrics.INTAKE_REQUESTS.labels(code=str(response.status_code)).inc()
    return response


async def _handle(request: Request) -> JSONResponse:
    body = await _read_body(request)
    if body is None:
        return _error(413, "too_large", f"the request body is over {MAX_BODY_BYTES} bytes")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return _error(422, str(RejectKind.INVALID_JSON), f"the body is not JSON: {exc}")
    items = document if isinstance(document, list) else [document]
    if not 1 <= len(items) <= MAX_EVENTS:
        return _error(422, "bad_batch", f"send 1 to {MAX_EVENTS} events; this request has {len(items)}")

    events, errors = _validate(items, request.app.state.settings.max_event_bytes)
    if errors:
        detail = f"{len(errors)} of {len(items)} events are invalid; nothing was sent"
        return JSONResponse({"error": "invalid_events", "detail": detail, "errors": errors}, status_code=422)

    publisher: EventPublisher = request.app.state.publisher
    broker = request.app.state.broker
    if broker is not None and (silent := broker.problem()) is not None:
        # Known to be away: say so now rather than hold the client for a request timeout.
        return _error(503, "broker_unavailable", f"{silent}; nothing was sent; retry")
    timeout = request.app.state.settings.kafka_request_timeout_ms / 1000 + 5
    try:
        await asyncio.wait_for(publisher.publish(events), timeout)
    except (KafkaError, OSError, TimeoutError) as exc:
        log.error("intake: broker did not acknowledge %d events: %r", len(events), exc)
        return _error(503, "broker_unavailable", "the broker did not acknowledge the events; retry")
    metrics.INTAKE_EVENTS.inc(len(events))
    return JSONResponse({"accepted": [e.event_id for e in events]}, status_code=202)


def _validate(items: list[Any], max_bytes: int) -> tuple[list[Event], list[dict[str, Any]]]:
    events: list[Event] = []
    errors: list[dict[str, Any]] = []
    first: dict[tuple[str, str], tuple[int, Event]] = {}
    for index, item in enumerate(items):
        try:
            # The same path as a message read from Kafka, size limit included.
            event = decode_event(orjson.dumps(item), max_bytes=max_bytes)
            _not_a_conflict(event, first.setdefault(event_key(event), (index, event)))
        except EventRejected as rejection:
            event_id = item.get("event_id") if isinstance(item, dict) else None
            errors.append({"index": index, "event_id": event_id, **rejection.as_dict()})
        else:
            events.append(event)
    return events, errors


def _not_a_conflict(event: Event, first: tuple[int, Event]) -> None:
    """The workers would dead-letter the second of two bodies with one event id: refuse it here."""
    index, kept = first
    if not same_event(kept, event):
        raise EventRejected(
            RejectKind.DUPLICATE_EVENT_ID_CONFLICT,
            f"event_id {event.event_id!r} of customer {event.customer_id!r} is item {index} of this "
            "request with another body; an event id names one event",
        )


async def _read_body(request: Request) -> bytes | None:
    """The body, or None as soon as it is known to be over the limit."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return None
    return bytes(body)


def _error(status: int, error: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status)
