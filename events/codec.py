"""Bytes in, events out (and back): the only way services read or write events.

Decoding sorts every failure into a small, fixed set of :class:`RejectKind`
values: they become dead-letter headers and metric labels, so the set must stay
bounded. The human detail goes alongside.
"""

from enum import StrEnum
from typing import Any

import orjson
from pydantic import ValidationError

from events.models import EVENT_ADAPTER, EVENT_MODELS, NOT_FINITE, Event

DEFAULT_MAX_EVENT_BYTES = 64 * 1024
_MAX_DETAIL_CHARS = 1000


class RejectKind(StrEnum):
    EMPTY = "empty"
    TOO_LARGE = "too_large"
    INVALID_JSON = "invalid_json"
    UNKNOWN_TYPE = "unknown_type"
    UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
    INVALID_EVENT = "invalid_event"
    # A Kafka message whose key is not the event's customer_id: it may sit in
    # the wrong partition, out of order with the customer's other events.
    KEY_MISMATCH = "key_mismatch"
    # A second event with the event_id of an earlier one of the same customer, but
    # another body: the first copy is the event (docs/events.md, "Identity").
    DUPLICATE_EVENT_ID_CONFLICT = "duplicate_event_id_conflict"


class EventRejected(ValueError):
    """An input that is not a valid v1 event, with why."""

    def __init__(self, kind: RejectKind, detail: str, errors: list[dict[str, str]] | None = None):
        detail = detail if len(detail) <= _MAX_DETAIL_CHARS else detail[: _MAX_DETAIL_CHARS - 1] + "…"
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail
        self.errors = errors or [{"loc": "", "msg": detail}]

    def as_dict(self) -> dict[str, Any]:
        return {"kind": str(self.kind), "detail": self.detail, "errors": self.errors}


# pydantic-core's validator itself: TypeAdapter.validate_json only forwards to it, with defaults,
# and that layer of Python cost as much as a tenth of a decode.
_VALIDATE_JSON = EVENT_ADAPTER.validator.validate_json


def decode_event(raw: bytes | None, *, max_bytes: int | None = DEFAULT_MAX_EVENT_BYTES) -> Event:
    """Validate one UTF-8 JSON event; raise :class:`EventRejected` if it is not one.

    ``max_bytes=None``: no size limit (for events accepted once and stored: what
    was accepted under one limit stays readable under any other).
    """
    if not raw:
        raise EventRejected(RejectKind.EMPTY, "the message has no value")
    if max_bytes is not None and len(raw) > max_bytes:
        # Checked before parsing, so an oversized message costs no parse.
        raise EventRejected(RejectKind.TOO_LARGE, f"the event is {len(raw)} bytes; the limit is {max_bytes}")
    try:
        return _VALIDATE_JSON(raw)
    except ValidationError as exc:
        rejection = _rejection(exc)
    if rejection.kind != RejectKind.INVALID_JSON and (why := _not_strict_json(raw)) is not None:
        # pydantic's parser reads NaN, Infinity and 1e400, then found another fault; the
        # message is not JSON to begin with, and a strict parser (the intake's) says so.
        rejection = EventRejected(RejectKind.INVALID_JSON, why)
    raise rejection


def encode_event(event: Event) -> bytes:
    """The canonical bytes of an event: UTF-8 JSON, keys sorted, unset defaults left out."""
    return orjson.dumps(event.model_dump(mode="json", exclude_unset=True), option=orjson.OPT_SORT_KEYS)


def quoted(text: str | bytes) -> str:
    """Text in double quotes, escaped as JSON writes it: how details and logs name an id or a key
    (never a Python repr such as ``b'...'``). Bytes are read as UTF-8, undecodable ones as U+FFFD."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return orjson.dumps(text).decode()


def _not_strict_json(raw: bytes) -> str | None:
    """Why ``raw`` is not JSON (RFC 8259), or None; called for rejected messages only."""
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return f"{exc} (numbers must be finite: NaN, Infinity and numbers beyond ±1.8e308 are not JSON)"
    return None


def _rejection(exc: ValidationError) -> EventRejected:
    errors = exc.errors(include_url=False, include_input=False)
    kinds = {e["type"] for e in errors}
    items = [{"loc": _loc(e["loc"]), "msg": e["msg"]} for e in errors]
    if kinds & {"json_invalid", "json_type", NOT_FINITE}:
        kind = RejectKind.INVALID_JSON
    elif kinds & {"union_tag_invalid", "union_tag_not_found"}:
        kind = RejectKind.UNKNOWN_TYPE if "union_tag_invalid" in kinds else RejectKind.INVALID_EVENT
    elif any(_loc(e["loc"]) == "schema_version" and e["type"] != "missing" for e in errors):
        kind = RejectKind.UNSUPPORTED_SCHEMA_VERSION
    else:
        kind = RejectKind.INVALID_EVENT
    detail = "; ".join(f"{i['loc']}: {i['msg']}" if i["loc"] else i["msg"] for i in items)
    return EventRejected(kind, detail, items)


def _loc(loc: tuple[int | str, ...]) -> str:
    # A discriminated union puts the tag first ("ticket.opened", "data", ...):
    # the reader knows the type already, so leave it out.
    if loc and loc[0] in EVENT_MODELS:
        loc = loc[1:]
    return ".".join(str(part) for part in loc)
