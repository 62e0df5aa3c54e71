"""HTTP intake: ``POST /v1/events`` takes one event or a JSON array of events.

All or nothing: every event is validated first; if any is invalid the answer
is 422 with the errors of each bad item and nothing is sent. A token limited to
customers may send only their events: if any valid event is of another
customer the answer is 403 naming each such item by its index (nothing else of
it) and nothing is sent. Otherwise all are sent to the log and the answer, 202,
comes once the broker acknowledged them.

Each event is validated from its own bytes, exactly as a worker validates a
message of the log (:func:`events.decode_event`), and those very bytes are what
is sent: the intake never re-encodes an event (a re-encoding parser would turn
a 40-digit integer into a float, or fail on deep nesting), so both paths
accept and reject the same events for the same reasons.
"""

import asyncio
import logging
from typing import Annotated, Any

import msgspec
import orjson
from aiokafka.errors import KafkaError
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from events import ACCOUNT_EVENT_TYPES, Event, EventRejected, RejectKind, decode_event, quoted
from projections.timeline import event_key, same_event
from services import metrics
from services.api.auth import AUTH_RESPONSES, Principal, error, require
from services.api.state import services

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
MAX_EVENTS = 1000
JSON_WHITESPACE = b" \t\n\r"
# A JSON array as the raw bytes of each item: msgspec checks the array's syntax
# (strings, escapes, nesting) and leaves the items' contents to decode_event.
_ITEMS = msgspec.json.Decoder(list[msgspec.Raw])
_NOT_JSON = (str(RejectKind.EMPTY), str(RejectKind.INVALID_JSON))

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
    responses={
        **AUTH_RESPONSES,
        202: {"description": 'Every event is in the log: `{"accepted": [event ids]}`'},
        403: error(
            "The token lacks the publisher role, or is limited to customers and an event is of another "
            "customer (`errors` lists each such item's `index`); nothing was sent"
        ),
        408: {"description": "The body did not arrive in `SLATRACK_INTAKE_BODY_TIMEOUT_S`"},
        413: {"description": "The body is over 1 MiB"},
        422: {"description": "Not valid: `errors` lists each bad item; nothing was sent"},
        503: {"description": "The broker did not acknowledge; send the same request again"},
    },
)
async def post_events(
    request: Request, principal: Annotated[Principal, require("publisher")]
) -> JSONResponse:
    code = "500"  # unless an answer comes back: the app's error handler answers 500
    try:
        response = await _handle(request, principal)
        code = str(response.status_code)
        return response
    finally:
        metrics.INTAKE_REQUESTS.labels(code=code).inc()


async def _handle(request: Request, principal: Principal) -> JSONResponse:
    wired = services(request.app)
    settings = wired.settings
    body = await _read_body(request, settings.intake_body_timeout_s)
    if isinstance(body, JSONResponse):
        return body
    try:
        items, batch = split_body(body)
    except ValueError as exc:
        return _error(422, str(RejectKind.INVALID_JSON), f"the body is not JSON: {exc}")
    if not 1 <= len(items) <= MAX_EVENTS:
        return _error(422, "bad_batch", f"send 1 to {MAX_EVENTS} events; this request has {len(items)}")

    events, errors = _validate(items, settings.max_event_bytes)
    if errors and not batch and errors[0]["kind"] in _NOT_JSON:
        # A body of one value that is not JSON: said of the body, as of an array that is not.
        detail = "the body is empty" if errors[0]["kind"] == RejectKind.EMPTY else errors[0]["detail"]
        return _error(422, errors[0]["kind"], f"the body is not JSON: {detail}")
    if errors:
        detail = f"{len(errors)} of {len(items)} events are invalid; nothing was sent"
        return JSONResponse({"error": "invalid_events", "detail": detail, "errors": errors}, status_code=422)
    if (refused := _not_for(principal, events)) is not None:
        return refused

    publisher, broker = wired.publisher, wired.broker
    if broker is not None and (silent := broker.problem()) is not None:
        # Known to be away: say so now rather than hold the client for a request timeout.
        return _error(503, "broker_unavailable", f"{silent}; nothing was sent; retry")
    timeout = settings.kafka_request_timeout_ms / 1000 + 5
    messages = [(event.customer_id, raw) for event, raw in zip(events, items, strict=True)]
    try:
        await asyncio.wait_for(publisher.publish_raw(messages), timeout)
    except (KafkaError, OSError, TimeoutError) as exc:
        log.error("intake: broker did not acknowledge %d events: %r", len(events), exc)
        return _error(503, "broker_unavailable", "the broker did not acknowledge the events; retry")
    metrics.INTAKE_EVENTS.inc(len(events))
    return JSONResponse({"accepted": [e.event_id for e in events]}, status_code=202)


# What a token limited to customers may not publish even for its own customers: what the
# provider's side decides (its billing, the contract, whose fault a ticket is), never a
# customer's portal: a customer could put itself on a better contract, backdated, settle its own
# invoices or waive its own charges.
PROVIDER_ONLY = frozenset({*ACCOUNT_EVENT_TYPES, "ticket.fault_determined"})


def _not_for(principal: Principal, events: list[Event]) -> JSONResponse | None:
    """The 403 when the token is limited to customers and an event is of another one, or of a
    type only the provider publishes (:data:`PROVIDER_ONLY`): the items by their index only
    (nothing of theirs is echoed, not even their customer's id)."""
    if principal.customers is None:
        return None
    refused = [
        (index, "customer_not_allowed" if not principal.sees(event.customer_id) else "type_not_allowed")
        for index, event in enumerate(events)
        if not principal.sees(event.customer_id) or event.type in PROVIDER_ONLY
    ]
    if not refused:
        return None
    shown = ", ".join(str(index) for index, _ in refused[:10]) + (", ..." if len(refused) > 10 else "")
    detail = (
        f"{len(refused)} of {len(events)} events are of customers the token {principal.name!r} may not "
        "publish for, or of types only the provider publishes (account events, fault determination) "
        f"(items {shown}); nothing was sent"
    )
    log.warning("intake: 403, %s", detail)
    errors = [{"index": index, "kind": kind} for index, kind in refused]
    return JSONResponse({"error": "forbidden", "detail": detail, "errors": errors}, status_code=403)


def split_body(body: bytes) -> tuple[list[bytes], bool]:
    """The raw bytes of each event of a body, and whether it was an array.

    A body that is not an array is one event, byte for byte as sent (even if it
    is not JSON: its validation says so, as a worker's would). Raises ValueError
    if an array is not JSON.
    """
    if not body.lstrip(JSON_WHITESPACE).startswith(b"["):
        return [body], False
    try:
        return [bytes(item) for item in _ITEMS.decode(body)], True
    except msgspec.DecodeError as exc:
        raise ValueError(str(exc)) from None
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _validate(items: list[bytes], max_bytes: int) -> tuple[list[Event], list[dict[str, Any]]]:
    """Every item validated from its bytes; the events if all are valid, else the errors."""
    events: list[Event] = []
    errors: list[dict[str, Any]] = []
    first: dict[tuple[str, str], tuple[int, Event]] = {}
    for index, raw in enumerate(items):
        try:
            # The same path as a message read from Kafka, size limit included.
            event = decode_event(raw, max_bytes=max_bytes)
            _not_a_conflict(event, first.setdefault(event_key(event), (index, event)))
        except EventRejected as rejection:
            errors.append({"index": index, "event_id": _event_id(raw), **rejection.as_dict()})
        else:
            events.append(event)
    return events, errors


def _event_id(raw: bytes) -> str | None:
    """The event_id of an invalid item, if it has one, to help the sender find it."""
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    event_id = document.get("event_id") if isinstance(document, dict) else None
    return event_id if isinstance(event_id, str) else None


def _not_a_conflict(event: Event, first: tuple[int, Event]) -> None:
    """The workers would dead-letter the second of two bodies with one event id: refuse it here."""
    index, kept = first
    if not same_event(kept, event):
        raise EventRejected(
            RejectKind.DUPLICATE_EVENT_ID_CONFLICT,
            f"event_id {quoted(event.event_id)} of customer {quoted(event.customer_id)} is item {index} "
            "of this request with another body; an event id names one event",
        )


async def _read_body(request: Request, timeout_s: float) -> bytes | JSONResponse:
    """The body, or the answer when there is none to read: over the limit (413, as soon as that is
    known), not all there within ``timeout_s`` (408), or the client gone (499, for the metric)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return _error(413, "too_large", f"the request body is over {MAX_BODY_BYTES} bytes", close=True)
    body = bytearray()
    try:
        # One deadline for the whole body: a client that sends a byte now and then
        # must not hold a connection (and its buffer) forever.
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                body += chunk
                if len(body) > MAX_BODY_BYTES:
                    return _error(
                        413, "too_large", f"the request body is over {MAX_BODY_BYTES} bytes", close=True
                    )
    except TimeoutError:
        log.warning(
            "intake: 408, the body was not complete after %g s (%d bytes arrived)", timeout_s, len(body)
        )
        detail = f"the request body did not arrive within {timeout_s:g} s (SLATRACK_INTAKE_BODY_TIMEOUT_S)"
        return _error(408, "request_timeout", detail, close=True)
    except ClientDisconnect:
        # Nothing was sent and nobody reads an answer: a line, not a traceback.
        log.info("intake: the client disconnected after %d bytes of the body; nothing was sent", len(body))
        return _error(499, "client_disconnected", "the client disconnected before the body was complete")
    return bytes(body)


def _error(status: int, error: str, detail: str, *, close: bool = False) -> JSONResponse:
    # close: the rest of the body was not read, so the connection cannot serve another request.
    headers = {"connection": "close"} if close else None
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)
