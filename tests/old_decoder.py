"""Today's decoder, frozen (issue 14): events/models.py and the decoding half of events/codec.py
as they were before decoding moved onto pydantic-core's native path, with Python-level
validators per field. tests/unit/test_decode_differential.py checks that the live decoder
gives the same verdict as this one: not for use outside the tests.
"""

# ruff: noqa
# mypy: ignore-errors
import math
import re
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    model_validator,
)
from pydantic_core import PydanticCustomError

SCHEMA_VERSION = 1
NOT_FINITE = "json_not_finite"  # the pydantic error type of a NaN or an infinity

# RFC 3339 date-time with an explicit offset ("Z" or +hh:mm). Pydantic alone
# would also take naive times, unix timestamps and dates without a time.
RFC3339_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$"
_RFC3339 = re.compile(RFC3339_PATTERN)
DATE_PATTERN = r"^\d{4}-\d{2}-\d{2}$"
_DATE = re.compile(DATE_PATTERN)

MAX_WORK_LOG = timedelta(hours=24)

# Instants and dates outside these years are typing mistakes, and near the
# ends of Python's calendar (years 1 and 9999) arithmetic on them overflows:
# rejected here, so that such an event goes to the dead-letter topic instead
# of stopping a worker.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)  # exclusive


def _rfc3339(value: Any) -> Any:
    if isinstance(value, datetime):
        return value  # AwareDatetime still rejects a naive one
    if isinstance(value, str) and _RFC3339.match(value):
        return value
    raise ValueError(
        "must be an RFC 3339 date-time with an explicit offset, "
        "e.g. 2026-10-30T15:30:00-04:00 or 2026-10-30T19:30:00Z"
    )


def _in_range(value: datetime) -> datetime:
    if not EARLIEST <= value < LATEST:
        raise ValueError("must lie between 1970-01-01T00:00:00Z and 2999-12-31T23:59:59Z")
    return value


def _date_in_range(value: date) -> date:
    if not EARLIEST.date() <= value < LATEST.date():
        raise ValueError("must lie between 1970-01-01 and 2999-12-31")
    return value


def _iso_date(value: Any) -> Any:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and _DATE.match(value):
        return value
    raise ValueError("must be a date in the form YYYY-MM-DD")


Instant = Annotated[
    AwareDatetime,
    Field(strict=False, json_schema_extra={"pattern": RFC3339_PATTERN}),
    BeforeValidator(_rfc3339),
    AfterValidator(_in_range),
]
LocalDate = Annotated[
    date,
    Field(strict=False, json_schema_extra={"pattern": DATE_PATTERN}),
    BeforeValidator(_iso_date),
    AfterValidator(_date_in_range),
]
# Ids and short texts become columns of the read models and labels in logs:
# no control characters (PostgreSQL cannot store NUL in text at all).
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
Id = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=PRINTABLE)]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=PRINTABLE)]
LongText = Annotated[str, StringConstraints(max_length=1024)]

Priority = Literal["urgent", "high", "medium", "low"]
Category = Literal["service", "non_service", "new_install"]
Party = Literal["provider", "customer", "third_party"]


def _non_finite(extra: dict[str, Any]) -> str | None:
    """Where the first non-finite number among the unknown keys is (``key.key[3]``), or None.

    pydantic reads ``NaN``, ``Infinity`` and ``1e400`` (infinity as a double) into
    keys it does not know; they are not JSON numbers (RFC 8259) and could not be
    written back as JSON. Iterative, so no nesting depth can exhaust the stack.
    """
    stack: list[tuple[str, Any]] = [(key, value) for key, value in extra.items()]
    while stack:
        path, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return path
        if isinstance(value, dict):
            stack.extend((f"{path}.{key}", item) for key, item in value.items())
        elif isinstance(value, list):
            stack.extend((f"{path}[{index}]", item) for index, item in enumerate(value))
    return None


def _json_integer(value: Any) -> Any:
    # Literal[1] alone takes true, 1.0 and 1e0 (each equals 1 in Python): the
    # contract says the JSON integer 1.
    if type(value) is not int:
        raise ValueError("must be the JSON integer 1")
    return value


class _Data(BaseModel):
    """A per-type payload. Unknown keys are kept for forward compatibility, if their numbers are finite."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)

    @model_validator(mode="after")
    def _numbers_are_finite(self) -> "_Data":
        where = _non_finite(self.__pydantic_extra__ or {})
        if where is not None:
            # Its own error type: the codec files it under invalid_json, as a strict parser would.
            raise PydanticCustomError(
                NOT_FINITE,
                "numbers must be finite: {where} is NaN, Infinity or beyond ±1.8e308",
                {"where": where},
            )
        return self


class TicketOpenedData(_Data):
    priority: Priority
    category: Category = "service"
    after_hours_requested: bool = False
    priority_handling_requested: bool = False
    third_party_disconnect: bool = False
    install_date: LocalDate | None = None

    @model_validator(mode="after")
    def _install_date_needs_new_install(self) -> "TicketOpenedData":
        if self.install_date is not None and self.category != "new_install":
            raise ValueError("install_date is only allowed when category is new_install")
        return self


class TicketPriorityChangedData(_Data):
    priority: Priority
    reason: LongText | None = None


class TicketRespondedData(_Data):
    agent_id: Id | None = None


class TicketStatusChangedData(_Data):
    status: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=PRINTABLE)]


class TicketResolvedData(_Data):
    workaround: bool = False


class TicketReopenedData(_Data):
    pass


class TicketClosedData(_Data):
    auto: bool = False


class TicketWorkLoggedData(_Data):
    agent_id: Id | None = None
    started_at: Instant
    ended_at: Instant

    @model_validator(mode="after")
    def _interval_is_sane(self) -> "TicketWorkLoggedData":
        if self.ended_at <= self.started_at:
            raise ValueError("ended_at must be after started_at")
        if self.ended_at - self.started_at > MAX_WORK_LOG:
            raise ValueError("a work log spans at most 24 hours")
        return self


class TicketFaultDeterminedData(_Data):
    party: Party


class TicketEscalationRequestedData(_Data):
    level: Annotated[int, Field(ge=1, le=3)]
    requested_by: Literal["customer", "agent"]


class InvoiceDueData(_Data):
    invoice_id: Id
    due_at: Instant


class InvoicePaidData(_Data):
    invoice_id: Id


class InvoiceDisputedData(_Data):
    invoice_id: Id


# A contract's name: a word an operator types (`slatrack policy show NAME`) and a label.
CONTRACT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
ContractName = Annotated[str, StringConstraints(pattern=CONTRACT_PATTERN)]


class ContractChangedData(_Data):
    contract: ContractName
    effective_from: Instant


class _Envelope(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    event_id: Id = Field(description="The identity of the event: a second copy is a duplicate.")
    type: str
    schema_version: Annotated[Literal[1], BeforeValidator(_json_integer)]
    occurred_at: Instant
    customer_id: Id
    source: ShortText | None = None


class _TicketEnvelope(_Envelope):
    ticket_id: Id


class TicketOpened(_TicketEnvelope):
    type: Literal["ticket.opened"]
    data: TicketOpenedData


class TicketPriorityChanged(_TicketEnvelope):
    type: Literal["ticket.priority_changed"]
    data: TicketPriorityChangedData


class TicketResponded(_TicketEnvelope):
    type: Literal["ticket.responded"]
    data: TicketRespondedData = TicketRespondedData()


class TicketStatusChanged(_TicketEnvelope):
    type: Literal["ticket.status_changed"]
    data: TicketStatusChangedData


class TicketResolved(_TicketEnvelope):
    type: Literal["ticket.resolved"]
    data: TicketResolvedData = TicketResolvedData()


class TicketReopened(_TicketEnvelope):
    type: Literal["ticket.reopened"]
    data: TicketReopenedData = TicketReopenedData()


class TicketClosed(_TicketEnvelope):
    type: Literal["ticket.closed"]
    data: TicketClosedData = TicketClosedData()


class TicketWorkLogged(_TicketEnvelope):
    type: Literal["ticket.work_logged"]
    data: TicketWorkLoggedData


class TicketFaultDetermined(_TicketEnvelope):
    type: Literal["ticket.fault_determined"]
    data: TicketFaultDeterminedData


class TicketEscalationRequested(_TicketEnvelope):
    type: Literal["ticket.escalation_requested"]
    data: TicketEscalationRequestedData


class AccountInvoiceDue(_Envelope):
    type: Literal["account.invoice_due"]
    data: InvoiceDueData


class AccountInvoicePaid(_Envelope):
    type: Literal["account.invoice_paid"]
    data: InvoicePaidData


class AccountInvoiceDisputed(_Envelope):
    type: Literal["account.invoice_disputed"]
    data: InvoiceDisputedData


TicketEvent = (
    TicketOpened
    | TicketPriorityChanged
    | TicketResponded
    | TicketStatusChanged
    | TicketResolved
    | TicketReopened
    | TicketClosed
    | TicketWorkLogged
    | TicketFaultDetermined
    | TicketEscalationRequested
)


class AccountContractChanged(_Envelope):
    """The customer is on ``contract`` from ``effective_from`` on (docs/sla-semantics.md,
    "Contracts and versions"): its tickets dispatched since are measured against it."""

    type: Literal["account.contract_changed"]
    data: ContractChangedData


AccountEvent = AccountInvoiceDue | AccountInvoicePaid | AccountInvoiceDisputed | AccountContractChanged
Event = Annotated[TicketEvent | AccountEvent, Field(discriminator="type")]

# Validated once per message: build the validator once, at import.
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)

EVENT_MODELS: dict[str, type[_Envelope]] = {
    model.model_fields["type"].annotation.__args__[0]: model  # the Literal's value
    for model in (*TicketEvent.__args__, *AccountEvent.__args__)
}
TICKET_EVENT_TYPES = frozenset(t for t in EVENT_MODELS if t.startswith("ticket."))
ACCOUNT_EVENT_TYPES = frozenset(t for t in EVENT_MODELS if t.startswith("account."))
EVENT_TYPES = tuple(EVENT_MODELS)


# --- events/codec.py, decoding (its RejectKind and EventRejected are the live ones) ---

import orjson
from pydantic import ValidationError

from events.codec import DEFAULT_MAX_EVENT_BYTES, EventRejected, RejectKind


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
        return EVENT_ADAPTER.validate_json(raw)
    except ValidationError as exc:
        rejection = _rejection(exc)
    if rejection.kind != RejectKind.INVALID_JSON and (why := _not_strict_json(raw)) is not None:
        # pydantic's parser reads NaN, Infinity and 1e400, then found another fault; the
        # message is not JSON to begin with, and a strict parser (the intake's) says so.
        rejection = EventRejected(RejectKind.INVALID_JSON, why)
    raise rejection


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
