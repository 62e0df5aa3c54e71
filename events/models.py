"""Pydantic models of event contract v1 (see ``docs/events.md``).

One model per event type; :data:`Event` is their discriminated union on
``type``, so a message is validated in one pass. Models are strict (a string
is never coerced into a number or a boolean) so that validating JSON text and
validating already-parsed JSON give the same answer. Unknown envelope keys are
rejected; unknown keys inside ``data`` are kept, so that a publisher can add a
field before we read it.

Decoding reads JSON: there, instants, dates and ``schema_version`` are checked by
pydantic-core schemas (:class:`_NativeJson`) that give the Python validators'
verdicts and errors without calling Python; Python input goes through the
validators themselves (tests/unit/test_decode_differential.py holds the two equal
to the decoder before issue 14).
"""

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
    GetCoreSchemaHandler,
    StringConstraints,
    TypeAdapter,
    model_validator,
)
from pydantic.json_schema import GetJsonSchemaHandler, JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError
from pydantic_core import core_schema as cs

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


INSTANT_FORM = (
    "must be an RFC 3339 date-time with an explicit offset, "
    "e.g. 2026-10-30T15:30:00-04:00 or 2026-10-30T19:30:00Z"
)
INSTANT_RANGE = "must lie between 1970-01-01T00:00:00Z and 2999-12-31T23:59:59Z"
DATE_FORM = "must be a date in the form YYYY-MM-DD"
DATE_RANGE = "must lie between 1970-01-01 and 2999-12-31"
JSON_INTEGER_1 = "must be the JSON integer 1"


def _rfc3339(value: Any) -> Any:
    if isinstance(value, datetime):
        return value  # AwareDatetime still rejects a naive one
    if isinstance(value, str) and _RFC3339.match(value):
        return value
    raise ValueError(INSTANT_FORM)


def _in_range(value: datetime) -> datetime:
    if not EARLIEST <= value < LATEST:
        raise ValueError(INSTANT_RANGE)
    return value


def _date_in_range(value: date) -> date:
    if not EARLIEST.date() <= value < LATEST.date():
        raise ValueError(DATE_RANGE)
    return value


def _iso_date(value: Any) -> Any:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and _DATE.match(value):
        return value
    raise ValueError(DATE_FORM)


def _json_integer(value: Any) -> Any:
    # Literal[1] alone takes true, 1.0 and 1e0 (each equals 1 in Python): the
    # contract says the JSON integer 1.
    if type(value) is not int:
        raise ValueError(JSON_INTEGER_1)
    return value


def _value_error(schema: CoreSchema, message: str) -> CoreSchema:
    """``schema``, whose every failure is the one error ``ValueError(message)`` raised in a
    validator gives: type value_error, "Value error, <message>" (pydantic-core, no Python call)."""
    return cs.custom_error_schema(
        schema, custom_error_type="value_error", custom_error_context={"error": message}
    )


def _native_pattern(pattern: str) -> str:
    # Python's re.match: "$" also matches before a final newline (the parser rejects that one then).
    return pattern.removesuffix("$") + r"\n?$"


class _NativeJson:
    """Annotated metadata: JSON input is validated by ``json``, a pydantic-core schema that runs
    no Python code and says what the Python validators before it say, error for error; Python
    input (and the JSON Schema) go by those validators. Decoding a message is JSON (issue 14)."""

    def __init__(self, json: CoreSchema):
        self.json = json

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        python = handler(source)

        def json_schema(_: CoreSchema, generate: GetJsonSchemaHandler) -> JsonSchemaValue:
            return generate(python)

        return cs.json_or_python_schema(
            json_schema=self.json, python_schema=python, metadata={"pydantic_js_functions": [json_schema]}
        )


# The JSON paths of Instant and LocalDate: the form (a string matching the pattern), then
# pydantic's own parsing (its errors as they were), then the range, each as a Python
# validator would say it.
_INSTANT_JSON = cs.chain_schema(
    [
        _value_error(cs.str_schema(pattern=_native_pattern(RFC3339_PATTERN), strict=True), INSTANT_FORM),
        cs.datetime_schema(tz_constraint="aware", strict=False),
        _value_error(cs.datetime_schema(ge=EARLIEST, lt=LATEST, strict=True), INSTANT_RANGE),
    ]
)
_DATE_JSON = cs.chain_schema(
    [
        _value_error(cs.str_schema(pattern=_native_pattern(DATE_PATTERN), strict=True), DATE_FORM),
        cs.date_schema(strict=False),
        _value_error(cs.date_schema(ge=EARLIEST.date(), lt=LATEST.date(), strict=True), DATE_RANGE),
    ]
)
# A JSON integer (not true, 1.0 or 1e0), then the literal.
_SCHEMA_VERSION_JSON = cs.chain_schema(
    [_value_error(cs.int_schema(strict=True), JSON_INTEGER_1), cs.literal_schema([SCHEMA_VERSION])]
)

Instant = Annotated[
    AwareDatetime,
    Field(strict=False, json_schema_extra={"pattern": RFC3339_PATTERN}),
    BeforeValidator(_rfc3339),
    AfterValidator(_in_range),
    _NativeJson(_INSTANT_JSON),
]
LocalDate = Annotated[
    date,
    Field(strict=False, json_schema_extra={"pattern": DATE_PATTERN}),
    BeforeValidator(_iso_date),
    AfterValidator(_date_in_range),
    _NativeJson(_DATE_JSON),
]
SchemaVersion = Annotated[Literal[1], BeforeValidator(_json_integer), _NativeJson(_SCHEMA_VERSION_JSON)]
# Ids and short texts become columns of the read models and labels in logs:
# no control characters (PostgreSQL cannot store NUL in text at all).
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
Id = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=PRINTABLE)]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=PRINTABLE)]
LongText = Annotated[str, StringConstraints(max_length=1024)]

Priority = Literal["urgent", "high", "medium", "low"]
Category = Literal["service", "non_service", "new_install"]
Party = Literal["provider", "customer", "third_party"]


# orjson (and so encode_event, the digests, the store's views) writes integers of these bounds only.
INT_RANGE = (-(2**63), 2**64 - 1)
INT_TOO_LARGE = "json_int_too_large"  # the pydantic error type of an integer beyond INT_RANGE


def _unwritable(extra: dict[str, Any]) -> tuple[str, str] | None:
    """Where the first number among the unknown keys that could not be written back as JSON is
    (``key.key[3]``), and the error type: a NaN or infinity (:data:`NOT_FINITE`), or an integer
    beyond 64 bits (:data:`INT_TOO_LARGE`); None if there is none.

    pydantic reads ``NaN``, ``Infinity`` and ``1e400`` (infinity as a double) into keys it does
    not know; they are not JSON numbers (RFC 8259). It also keeps integers of any size, which
    RFC 8259 leaves to implementations and orjson cannot write: accepted, such an event would
    make every digest of its ticket fail. Iterative, so no nesting depth can exhaust the stack.
    """
    low, high = INT_RANGE
    stack: list[tuple[str, Any]] = [(key, value) for key, value in extra.items()]
    while stack:
        path, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return path, NOT_FINITE
        if isinstance(value, int) and not isinstance(value, bool) and not low <= value <= high:
            return path, INT_TOO_LARGE
        if isinstance(value, dict):
            stack.extend((f"{path}.{key}", item) for key, item in value.items())
        elif isinstance(value, list):
            stack.extend((f"{path}[{index}]", item) for index, item in enumerate(value))
    return None


class _Data(BaseModel):
    """A per-type payload. Unknown keys are kept for forward compatibility, if their numbers can
    be written back as JSON."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)

    @model_validator(mode="after")
    def _numbers_are_finite(self) -> "_Data":
        extra = self.__pydantic_extra__
        if not extra:  # nearly every payload: no unknown key, nothing to walk (a call per event)
            return self
        found = _unwritable(extra)
        if found is None:
            return self
        where, kind = found
        if kind == NOT_FINITE:
            # Its own error type: the codec files it under invalid_json, as a strict parser would.
            raise PydanticCustomError(
                NOT_FINITE,
                "numbers must be finite: {where} is NaN, Infinity or beyond ±1.8e308",
                {"where": where},
            )
        raise PydanticCustomError(
            INT_TOO_LARGE,
            "integers must fit in 64 bits: {where} is beyond -2**63 .. 2**64-1",
            {"where": where},
        )


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
    schema_version: SchemaVersion
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
