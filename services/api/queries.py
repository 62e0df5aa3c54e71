"""The query API over the read models (role ``reader``).

- ``GET /v1/tickets/{id}``: the stored view, or (``?as_of=``) the view at an
  earlier instant recomputed from the stored events, as ``slatrack replay``
  computes it;
- ``GET /v1/tickets``: filtered, keyset-paginated (``cursor``, ``limit``);
- ``GET /v1/tickets/{id}/timeline``: the audit trail (``projections.explain``);
- ``GET /v1/customers``: customers and their standing, keyset-paginated (``cursor``, ``limit``);
- ``GET /v1/customers/{id}``: standing and billing by month;
- ``GET /v1/customers/{id}/billing?month=YYYY-MM``: per-ticket lines and the total;
- ``GET /v1/customers/{id}/report?month=YYYY-MM``: the monthly compliance report
  (projections.report), as JSON, CSV or a printable HTML page.

Every ``/v1/customers/{id}...`` endpoint finds its customer through :func:`customer_row`,
which answers the one 404 of an unknown customer.

A stored view is as of the instant the worker evaluated it; single-object
answers say which in the ``X-Slatrack-Evaluated-At`` header (RFC 3339, UTC),
list items in their ``evaluated_at`` field.

A token limited to customers sees only theirs (:mod:`services.api.scope`): another customer's
ticket or customer is the 404 of an id that does not exist, and lists hold only its customers'.
"""

import asyncio
import base64
import hmac
import logging
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, TypeVar

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from events.models import RFC3339_PATTERN, Priority
from projections.contracts import Contracts, PolicySource
from projections.explain import explain
from projections.quarantine import view_at
from projections.report import MonthError, MonthlyReport, monthly_report, parse_month
from projections.report_render import MEDIA_TYPES, render
from projections.ticket import utc
from projections.timeline import Recorded, TicketKey, parse_instant
from projections.views import BillingStatus, StoredTicketView
from services.api.auth import AUTH_RESPONSES, ApiError, Principal, error
from services.api.scope import (
    READER,
    Reader,
    VisibleCustomerId,
    no_customer,
    no_ticket,
    visible_customers,
    visible_tickets,
)
from services.api.state import read_models, services
from services.worker.histories import (
    AmbiguousTicket,
    UnknownTicket,
    customer_history,
    decode_stored,
    find_ticket,
    generation_contracts,
    stored_histories,
)
from services.worker.ports import (
    CALL_TIMEOUT,
    CustomerListing,
    CustomerQuery,
    CustomerRow,
    GenerationChanged,
    ReadModelStore,
    StoredEvent,
    StoreTimeout,
    StoreUnavailable,
    TicketQuery,
    TicketRow,
)

log = logging.getLogger(__name__)


async def _limit_store_calls(request: Request) -> None:
    """Every store call of the request gives up after SLATRACK_API_STORE_TIMEOUT_S (a 503).

    An async dependency runs in the request's own context, which the endpoint and its
    threads (asyncio.to_thread copies the context) share.
    """
    CALL_TIMEOUT.set(services(request.app).settings.api_store_timeout_s)


router = APIRouter(dependencies=[READER, Depends(_limit_store_calls)], responses=AUTH_RESPONSES)

PAGE = 500
MAX_LIMIT = 500
MAX_ID = 128  # as the event contract's ids
EVALUATED_AT = "X-Slatrack-Evaluated-At"
T = TypeVar("T")
CURSOR_MAC_BYTES = 16  # 128 bits of HMAC-SHA256: no forging by trial
# Signs cursors when SLATRACK_CURSOR_KEY is unset: they then hold on this process only.
_PROCESS_CURSOR_KEY = secrets.token_bytes(32)

TicketId = Annotated[
    str, Path(min_length=1, max_length=MAX_ID, description="The ticket id (1 to 128 characters).")
]
OfCustomer = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=MAX_ID,
        description="The ticket's customer: a ticket is (customer_id, ticket_id), so this is needed "
        "when two customers have a ticket with this id (409 `ambiguous_ticket` otherwise).",
    ),
]
# YYYY-MM, years 1970 to 2999 (those of the event contract's instants).
MONTH_PATTERN = r"^(19[7-9][0-9]|2[0-9]{3})-(0[1-9]|1[0-2])$"
ReportFormat = Literal["json", "csv", "html"]
# `now`, or an instant as RFC3339_PATTERN has one.
AS_OF_PATTERN = r"^(now|" + RFC3339_PATTERN.removeprefix("^").removesuffix("$") + r")$"
AsOf = Annotated[
    str | None,
    Query(
        max_length=40,
        pattern=AS_OF_PATTERN,
        description="`now`, or an earlier instant, RFC 3339 with an offset (e.g. "
        "`2026-11-02T10:00:00-05:00`). The view is recomputed from the stored events as of then. An "
        "instant in the future by at most `SLATRACK_API_CLOCK_SKEW_S` (default 30 s: a client's clock "
        "ahead of ours) is taken as now; further ahead it is a 422.",
    ),
]
BillingStatusFilter = BillingStatus  # the statuses the engine gives (projections.billing)


# -- documentation models (the handlers answer JSON bytes as stored) ------------
# A ticket's view is documented by the view types themselves (projections.views): the
# engine's view, or the placeholder of a ticket not opened yet (pending) or quarantined.


class TicketItem(BaseModel):
    evaluated_at: str = Field(description="The instant the view is as of (RFC 3339, UTC)")
    due_at: str | None = Field(
        description="The earliest due instant of a running clock, reached already (overdue) or not "
        "(RFC 3339, UTC); null when no clock with a target runs (paused, stopped, no target)"
    )
    breach_at: str | None = Field(
        description="The earliest breach instant of a running clock: past (breached, still running) "
        "or when it will breach with no new event (for business hours, the next opening's first "
        "second after `due_at`; RFC 3339, UTC); null when no clock with a target runs"
    )
    remaining_seconds: int | None = Field(
        description="`due_at` minus the request's now, in wall-clock seconds: negative when overdue; "
        "null with `due_at`"
    )
    view: StoredTicketView


class TicketPage(BaseModel):
    items: list[TicketItem]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page (opaque)"
    )


class CustomerView(BaseModel):
    model_config = ConfigDict(extra="allow")

    customer_id: str
    delinquent: bool
    dashboard_suspended: bool
    billing: dict[str, dict[str, int]] = Field(
        description="YYYY-MM -> {amount_cents, billable_seconds}, over the customer's tickets"
    )


class CustomerItem(BaseModel):
    model_config = ConfigDict(extra="allow")

    customer_id: str
    delinquent: bool
    dashboard_suspended: bool
    evaluated_at: str = Field(description="The instant the standing is as of (RFC 3339, UTC)")
    open_tickets: int = Field(description="The customer's tickets in state `open`")
    breached_open_tickets: int = Field(description="Of those, the ones with a breached clock (any cycle)")


class CustomerPage(BaseModel):
    items: list[CustomerItem]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page (opaque)"
    )


class BillingLine(BaseModel):
    ticket_id: str
    priority: str
    category: str
    rule: str | None
    status: str
    billable_seconds: int
    amount_cents: int
    evaluated_at: str
    contract: str = Field(description="The contract whose version the line is computed with")
    policy_version: str = Field(description="The policy the line is computed with (its `version`)")
    policy_digest: str = Field(description="sha256 of that policy's settings (docs/audit.md)")
    rate_cents_per_hour: int = Field(description="The rate of that policy")


class BillingTotal(BaseModel):
    tickets: int
    billable_seconds: int
    amount_cents: int


class CustomerBilling(BaseModel):
    customer_id: str
    month: str
    lines: list[BillingLine]
    total: BillingTotal = Field(description="The sums of the lines")


def _evaluated_header(description: str) -> dict[str, Any]:
    return {EVALUATED_AT: {"description": description, "schema": {"type": "string"}}}


_STORE_RESPONSES: dict[int | str, dict[str, Any]] = {
    503: error(
        "No read models yet (no active generation), the store cannot be reached, or it did not "
        "answer in time (`store_timeout`)"
    ),
}


# -- helpers --------------------------------------------------------------------


async def _policy(request: Request, store: ReadModelStore, generation: int) -> Contracts:
    """The contracts the generation's rows are computed with (its policy and the versions it has
    read): recomputations use them too."""
    return await store_call(generation_contracts, store, generation, services(request.app).policy)


async def store_call(function: Callable[..., T], *args: Any) -> T:
    """A store call in a thread; a store that cannot answer is a 503, not a 500.

    Only slatrack's own errors are caught: the stores translate their drivers' errors once,
    an outage (a database down, a lock held too long) to StoreUnavailable. Anything else (a bad
    statement, a violated constraint) is a bug: a 500, logged with its traceback."""
    try:
        return await asyncio.to_thread(function, *args)
    except StoreTimeout:
        limit = CALL_TIMEOUT.get()
        log.error("read models: %s: no answer within %s s", getattr(function, "__name__", "query"), limit)
        detail = f"the read models did not answer within {limit:g} s (SLATRACK_API_STORE_TIMEOUT_S); retry"
        raise ApiError(503, "store_timeout", detail) from None
    except StoreUnavailable as exc:
        log.error("read models: %s failed: %s", getattr(function, "__name__", "query"), type(exc).__name__)
        raise ApiError(503, "store_unavailable", "the read models cannot be reached; retry") from None
    except GenerationChanged:  # a rebuild switched and dropped the generation meanwhile
        detail = "the read models switched to another generation during the request; retry"
        raise ApiError(503, "store_unavailable", detail) from None


async def active_generation(request: Request) -> tuple[ReadModelStore, int]:
    store = read_models(request.app)
    generation = await store_call(store.active_generation)
    if generation is None:
        raise ApiError(503, "no_read_models", "no read models yet: no active generation")
    return store, generation


def _storable(text: str) -> bool:
    """Text a store can hold (PostgreSQL refuses NUL): other text matches no row."""
    return "\x00" not in text


def _instant(value: str, name: str) -> datetime:
    """An instant as the event contract takes one (RFC 3339 with an offset, 1970 to 2999)."""
    try:
        return parse_instant(value)
    except ValueError as exc:
        raise ApiError(422, "invalid_parameter", f"{name}: {exc}") from None


def now(request: Request) -> datetime:
    """The request's now (the app's clock: services.bootstrap.Services.clock)."""
    return services(request.app).clock()


def _as_of(value: str, request: Request) -> datetime:
    """``now``, or an instant not in the future; one ahead of now by at most
    SLATRACK_API_CLOCK_SKEW_S (the client's clock ahead of ours) is now."""
    current = now(request).replace(microsecond=0)  # the views' instants are whole seconds
    if value == "now":
        return current
    instant = _instant(value, "as_of")
    skew = services(request.app).settings.api_clock_skew_s
    if instant > current + timedelta(seconds=skew):
        detail = f"as_of: must not be in the future (by more than {skew:g} s: SLATRACK_API_CLOCK_SKEW_S)"
        raise ApiError(422, "invalid_parameter", detail)
    return min(instant, current)


def stamp(epoch: int) -> str:
    """Epoch seconds as the API writes instants: RFC 3339, UTC, whole seconds."""
    return utc(datetime.fromtimestamp(epoch, UTC)) or ""


def _json(document: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(document), status_code=status, media_type="application/json", headers=headers
    )


async def _ticket_row(
    request: Request, principal: Principal, ticket_id: str, customer_id: str | None
) -> tuple[ReadModelStore, int, TicketRow]:
    """The ticket's row, among the customers the principal sees (as if there were no other)."""
    if customer_id is not None and not principal.sees(customer_id):
        raise no_ticket(ticket_id)  # before the store: as an id that exists nowhere, in any state
    store, generation = await active_generation(request)
    if not _storable(ticket_id) or (customer_id is not None and not _storable(customer_id)):
        raise no_ticket(ticket_id)
    try:
        key = await store_call(find_ticket, store, generation, ticket_id, customer_id, principal.customers)
    except UnknownTicket:
        raise no_ticket(ticket_id) from None
    except AmbiguousTicket as exc:
        detail = f"ticket {ticket_id!r} exists under {len(exc.customers)} customers: add ?customer_id="
        raise ApiError(409, "ambiguous_ticket", detail) from None
    row = await store_call(store.ticket, generation, key)
    if row is None:  # gone between the two reads (a rebuild switched)
        raise no_ticket(ticket_id)
    return store, generation, row


async def customer_row(request: Request, customer_id: str) -> tuple[ReadModelStore, int, CustomerRow]:
    """The customer's row in the active generation, or the 404 of an unknown customer.

    The one lookup of every ``/v1/customers/{customer_id}...`` endpoint (whose path parameter is
    a :data:`services.api.scope.VisibleCustomerId`: a customer the token does not see got this
    same 404 before the store was read)."""
    store, generation = await active_generation(request)
    row = await store_call(store.customer, generation, customer_id) if _storable(customer_id) else None
    if row is None:
        raise no_customer(customer_id)
    return store, generation, row


def view_as_of(
    store: ReadModelStore, generation: int, policy: PolicySource, ticket: TicketKey, as_of: datetime
) -> dict[str, Any] | None:
    """The ticket's view as of ``as_of`` from the stored events (None if not opened by then)."""
    records, account = stored_histories(store, generation, ticket)
    return view_at(ticket, records, account, policy, as_of)


# (queue_due_at or queue_breach_at, ticket_id, customer_id): the order of sort=due or sort=breach.
DueKey = tuple[int | None, str, str]


def encode_cursor(after: TicketKey, key: bytes) -> str:
    """``payload.mac``: the last ticket of the page, signed, so that a client cannot alter it."""
    customer, ticket = after
    return _signed([ticket, customer], key, TICKET_CURSORS)


def encode_due_cursor(after: DueKey, key: bytes, sort: str = "due") -> str:
    """The cursor of a page in a queue's order (``sort=due`` or ``sort=breach``): its last row's
    sort key, signed. Its payload has a form of its own (``[sort, instant, ticket, customer]``),
    so that a cursor of one sort is never taken for another."""
    due, ticket, customer = after
    return _signed([sort, due, ticket, customer], key, TICKET_CURSORS)


def decode_cursor(cursor: str, key: bytes) -> TicketKey:
    """The ticket a cursor of ours (``sort=ticket``) continues after; 400 for anything else (altered,
    foreign, stale key, or a cursor of ``sort=due``)."""
    found = _decode(cursor, key)
    if len(found) != 2:
        raise _other_sort(str(found[0]), "ticket")
    ticket, customer = found
    return str(customer), str(ticket)


def decode_due_cursor(cursor: str, key: bytes, sort: str = "due") -> DueKey:
    """The sort key a cursor of ``sort`` (``due`` or ``breach``) continues after; 400 for anything
    else."""
    found = _decode(cursor, key)
    if len(found) != 4 or found[0] != sort:
        raise _other_sort("ticket" if len(found) == 2 else str(found[0]), sort)
    _, due, ticket, customer = found
    return (None if due is None else int(due)), str(ticket), str(customer)


def _other_sort(given: str, asked: str) -> ApiError:
    return ApiError(
        400,
        "bad_cursor",
        f"cursor: a cursor of sort={given}, not of sort={asked}: pass the sort of the page that gave it",
    )


def _decode(cursor: str, key: bytes) -> list[Any]:
    found = _verified(cursor, key, TICKET_CURSORS, "from another deployment")
    assert isinstance(found, list)  # signed by us: one of the two forms above
    return found


# The MAC's domain of each list's cursors: a cursor of one list is never taken by the other.
TICKET_CURSORS = b"slatrack list cursor v1:"
CUSTOMER_CURSORS = b"slatrack customer cursor v1:"


def _signed(value: Any, key: bytes, domain: bytes) -> str:
    """``payload.mac``: ``value`` as JSON, base64url, and its HMAC-SHA256 in ``domain``."""
    payload = _b64(orjson.dumps(value))
    return f"{payload}.{_b64(_cursor_mac(key, domain, payload))}"


def _verified(cursor: str, key: bytes, domain: bytes, foreign: str) -> Any:
    """The value a cursor of :func:`_signed` holds; 400 ``bad_cursor`` for anything else
    (``foreign``: where else a cursor with a MAC that does not match may come from)."""
    payload, _, mac = cursor.rpartition(".")
    # Constant time: the answer must not tell how much of a forged MAC was right.
    if not hmac.compare_digest(mac.encode(), _b64(_cursor_mac(key, domain, payload)).encode()):
        raise ApiError(
            400,
            "bad_cursor",
            f"cursor: not a cursor this API gave (altered, {foreign}, or from before a "
            "restart without SLATRACK_CURSOR_KEY); start again without it",
        )
    return orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def _cursor_mac(key: bytes, domain: bytes, payload: str) -> bytes:
    return hmac.digest(key, domain + payload.encode(), "sha256")[:CURSOR_MAC_BYTES]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def cursor_key(request: Request) -> bytes:
    configured = services(request.app).settings.cursor_key
    return configured.get_secret_value().encode() if configured is not None else _PROCESS_CURSOR_KEY


def encode_customer_cursor(after: str, key: bytes) -> str:
    """A customer list's cursor: the page's last customer id, signed (another domain than the
    ticket list's, so that neither is taken for the other)."""
    return _signed(after, key, CUSTOMER_CURSORS)


def decode_customer_cursor(cursor: str, key: bytes) -> str:
    """The customer a customer list's cursor continues after; 400 ``bad_cursor`` for anything else."""
    return str(_verified(cursor, key, CUSTOMER_CURSORS, "from another deployment or list"))


# -- tickets --------------------------------------------------------------------


@router.get(
    "/v1/tickets",
    summary="Tickets, filtered, a page at a time",
    response_model=TicketPage,
    responses={
        400: error("`bad_cursor`: not a cursor this API gave, or altered"),
        422: error("A parameter is not valid"),
        **_STORE_RESPONSES,
    },
)
async def list_tickets(
    request: Request,
    principal: Reader,
    state: Annotated[
        Literal["open", "resolved", "closed", "pending", "quarantined"] | None,
        Query(
            description="The ticket's state (pending: its ticket.opened is not in force yet; "
            "quarantined: the engine raised evaluating it)"
        ),
    ] = None,
    priority: Annotated[Priority | None, Query(description="The current priority")] = None,
    clock_status: Annotated[
        Literal["running", "paused", "stopped"] | None,
        Query(description="Either clock (response or resolution) has this status"),
    ] = None,
    breached: Annotated[bool | None, Query(description="Any clock breached, in any cycle")] = None,
    at_risk: Annotated[bool | None, Query(description="Any clock past its warning, not breached")] = None,
    due_before: Annotated[
        str | None,
        Query(
            max_length=40,
            pattern=RFC3339_PATTERN,
            description="A running clock falls due at or before this instant (RFC 3339 with an offset), "
            "whether it has reached its due instant already (overdue, breached or not) or not: the "
            "item's `due_at` is at or before it",
        ),
    ] = None,
    overdue: Annotated[
        bool | None,
        Query(
            description="true: a running clock is past its due instant as of now (breached or not: "
            "`remaining_seconds` <= 0); false: none is"
        ),
    ] = None,
    billing_status: Annotated[
        BillingStatusFilter | None,
        Query(description="The billing status (`pending_review`: a charge waiting for someone's review)"),
    ] = None,
    customer_id: Annotated[
        str | None, Query(min_length=1, max_length=MAX_ID, description="The ticket's customer")
    ] = None,
    min_escalation_level: Annotated[
        int | None, Query(ge=0, le=1000, description="The escalation level is at least this")
    ] = None,
    sort: Annotated[
        Literal["ticket", "due", "breach"],
        Query(
            description="`ticket`: by ticket id, then customer; `due`: by `due_at`, soonest first (so "
            "the most overdue first), then ticket id and customer, the tickets with no running clock "
            "last (by ticket id, then customer); `breach`: the same by `breach_at` (the console's "
            "queue: breached and still running first, then the soonest to breach)"
        ),
    ] = "ticket",
    cursor: Annotated[
        str | None,
        # Long enough for two ids of 128 four-byte characters, base64, and the MAC.
        Query(
            min_length=1,
            max_length=2048,
            description="`next_cursor` of the previous page, with the same `sort` (a cursor of the other "
            "sort is a 400 `bad_cursor`)",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Tickets per page")] = 100,
) -> Response:
    """Tickets matching every given filter, ordered by ticket id (then customer), or with `sort=due`
    as a queue: by their next due instant, overdue ones first (`sort=breach`: by their next breach
    instant, as the console's queue is). Walk the pages with
    `cursor` = the previous page's `next_cursor` until it is null: no ticket is skipped or
    repeated (a ticket that changes meanwhile is seen as it is when its page is read). Each item
    has its `due_at` and `remaining_seconds` as of the request. A token limited to customers lists
    only theirs (`customer_id` of another customer: no item, as of one that does not exist)."""
    key = cursor_key(request)
    after, after_due = None, None
    if cursor is not None and sort != "ticket":
        after_due = decode_due_cursor(cursor, key, sort)
    elif cursor is not None:
        after = decode_cursor(cursor, key)
    due = int(_instant(due_before, "due_before").timestamp()) if due_before is not None else None
    current = int(now(request).timestamp())
    store, generation = await active_generation(request)
    if customer_id is not None and not _storable(customer_id):
        return _json({"items": [], "next_cursor": None})
    filters = TicketQuery(
        state=state,
        priority=priority,
        clock_status=clock_status,
        breached=breached,
        at_risk=at_risk,
        due_before=due,
        overdue=current if overdue is True else None,
        not_overdue=current if overdue is False else None,
        billing_status=billing_status,
        customer_id=customer_id,
        escalation_level=min_escalation_level,
        after=after,
        sort=sort,
        after_due=after_due,
        limit=limit + 1,
    )
    rows = await store_call(store.list_tickets, generation, visible_tickets(filters, principal))
    more = len(rows) > limit
    rows = rows[:limit]
    items = b",".join(_item(row, current) for row in rows)
    next_cursor = None
    if more:
        last = rows[-1]
        if sort == "ticket":
            next_cursor = encode_cursor(last.key, key)
        else:
            instant = last.queue_due_at if sort == "due" else last.queue_breach_at
            next_cursor = encode_due_cursor((instant, last.ticket_id, last.customer_id), key, sort)
    body = b'{"items":[' + items + b'],"next_cursor":' + orjson.dumps(next_cursor) + b"}"
    return Response(body, media_type="application/json")


def remaining(row: TicketRow, current: int) -> int | None:
    """Wall-clock seconds from ``current`` to the row's queue due instant (negative: overdue)."""
    return None if row.queue_due_at is None else row.queue_due_at - current


def _item(row: TicketRow, current: int) -> bytes:
    due = None if row.queue_due_at is None else stamp(row.queue_due_at)
    breach = None if row.queue_breach_at is None else stamp(row.queue_breach_at)
    head = orjson.dumps(
        {
            "evaluated_at": stamp(row.evaluated_at),
            "due_at": due,
            "breach_at": breach,
            "remaining_seconds": remaining(row, current),
        }
    )
    return head[:-1] + b',"view":' + row.view + b"}"


@router.get(
    "/v1/tickets/{ticket_id}",
    summary="A ticket's view, now or as of an earlier instant",
    response_model=StoredTicketView,
    responses={
        200: {"headers": _evaluated_header("The instant the view is as of (RFC 3339, UTC)")},
        404: error(
            "No such ticket (or not one of the token's customers: the same answer), or (with as_of) "
            "not opened by then"
        ),
        409: error("The ticket id exists under several customers: add `customer_id`"),
        422: error("A parameter is not valid"),
        **_STORE_RESPONSES,
    },
)
async def get_ticket(
    ticket_id: TicketId,
    request: Request,
    principal: Reader,
    as_of: AsOf = None,
    customer_id: OfCustomer = None,
) -> Response:
    """The stored view, as of the instant in `X-Slatrack-Evaluated-At`. With `as_of`, the view
    recomputed from the stored events as of that instant, with the policy the read models are
    computed with: the same as `slatrack replay --as-of` over the same events."""
    instant = _as_of(as_of, request) if as_of is not None else None
    store, generation, row = await _ticket_row(request, principal, ticket_id, customer_id)
    if instant is None:
        return Response(
            row.view, media_type="application/json", headers={EVALUATED_AT: stamp(row.evaluated_at)}
        )
    policy = await _policy(request, store, generation)
    view = await store_call(view_as_of, store, generation, policy, row.key, instant)
    if view is None:
        raise ApiError(404, "not_found", f"the ticket {ticket_id!r} was not opened as of {utc(instant)}")
    return _json(view, headers={EVALUATED_AT: utc(instant) or ""})


@router.get(
    "/v1/tickets/{ticket_id}/timeline",
    summary="A ticket's audit trail: every event and every rule that applied",
    responses={
        200: {
            "description": "The audit trail (projections.explain)",
            "content": {"application/json": {"schema": {"type": "object"}}},
            "headers": _evaluated_header("The instant the trail is as of (RFC 3339, UTC)"),
        },
        404: error(
            "No such ticket (or not one of the token's customers: the same answer), or (with as_of) "
            "not opened by then"
        ),
        409: error("The ticket id exists under several customers: add `customer_id`"),
        422: error("A parameter is not valid"),
        **_STORE_RESPONSES,
    },
)
async def get_timeline(
    ticket_id: TicketId,
    request: Request,
    principal: Reader,
    as_of: AsOf = None,
    customer_id: OfCustomer = None,
) -> Response:
    """The audit trail up to `as_of`; by default as of the instant the stored view is
    (`X-Slatrack-Evaluated-At`), so that it explains exactly that view."""
    instant = _as_of(as_of, request) if as_of is not None else None
    store, generation, row = await _ticket_row(request, principal, ticket_id, customer_id)
    if instant is None:
        instant = datetime.fromtimestamp(row.evaluated_at, UTC)
    policy = await _policy(request, store, generation)

    def trail() -> dict[str, Any] | None:
        records, account = stored_histories(store, generation, row.key)
        return explain(records, account, policy, instant)

    document = await store_call(trail)
    if document is None:
        raise ApiError(404, "not_found", f"the ticket {ticket_id!r} was not opened as of {utc(instant)}")
    return _json(document, headers={EVALUATED_AT: utc(instant) or ""})


def _billing_line(row: TicketRow, contracts: Contracts) -> dict[str, Any]:
    """A billing line, naming the contract and version its stored view was computed with."""
    view = orjson.loads(row.view)
    digest = view.get("policy_digest")
    policies = {p.digest: p for p in (contracts.base, *(v.policy for v in contracts.versions))}
    policy = policies.get(digest, contracts.base)
    return {
        "ticket_id": row.ticket_id,
        "priority": row.priority,
        "category": row.category,
        "rule": row.billing_rule,
        "status": row.billing_status,
        "billable_seconds": row.billable_seconds,
        "amount_cents": row.amount_cents,
        "evaluated_at": stamp(row.evaluated_at),
        "contract": view.get("contract", policy.contract),
        "policy_version": view.get("policy_version", policy.version),
        "policy_digest": digest or policy.digest,
        "rate_cents_per_hour": policy.billing.rate_cents_per_hour,
    }


# -- customers ------------------------------------------------------------------


@router.get(
    "/v1/customers",
    summary="Customers and their standing, a page at a time",
    response_model=CustomerPage,
    responses={
        400: error("`bad_cursor`: not a cursor this API gave, or altered"),
        422: error("A parameter is not valid"),
        **_STORE_RESPONSES,
    },
)
async def list_customers(
    request: Request,
    principal: Reader,
    delinquent: Annotated[bool | None, Query(description="The customer is delinquent")] = None,
    dashboard_suspended: Annotated[
        bool | None, Query(description="The customer's dashboard is suspended")
    ] = None,
    cursor: Annotated[
        str | None,
        Query(min_length=1, max_length=2048, description="`next_cursor` of the previous page"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Customers per page")] = 100,
) -> Response:
    """Customers matching every given filter, ordered by customer id: each one's stored standing
    (as of its `evaluated_at`) and how many of its tickets are open, and of those breached. Walk
    the pages with `cursor` = the previous page's `next_cursor` until it is null. A token limited
    to customers lists only theirs."""
    after = decode_customer_cursor(cursor, cursor_key(request)) if cursor is not None else None
    page = await customer_page(
        request,
        principal,
        CustomerQuery(delinquent=delinquent, dashboard_suspended=dashboard_suspended, after=after),
        limit,
    )
    return _json(page)


async def customer_page(
    request: Request, principal: Principal, query: CustomerQuery, limit: int
) -> dict[str, Any]:
    """A page of ``GET /v1/customers`` (the console's customer list reads it too): ``{"items",
    "next_cursor"}``, among the customers the principal sees."""
    store, generation = await active_generation(request)
    if query.after is not None and not _storable(query.after):
        return {"items": [], "next_cursor": None}  # no cursor of ours holds one
    narrowed = visible_customers(replace(query, limit=limit + 1), principal)
    listings = await store_call(store.list_customers, generation, narrowed)
    more = len(listings) > limit
    listings = listings[:limit]
    items = [customer_item(listing) for listing in listings]
    last = listings[-1].row.customer_id if listings else None
    next_cursor = encode_customer_cursor(last, cursor_key(request)) if more and last is not None else None
    return {"items": items, "next_cursor": next_cursor}


def customer_item(listing: CustomerListing) -> dict[str, Any]:
    """An item of the customer list: the stored customer view, as of when, and its ticket counts."""
    row = listing.row
    return {
        **orjson.loads(row.view),
        "customer_id": row.customer_id,
        "delinquent": row.delinquent,
        "dashboard_suspended": row.dashboard_suspended,
        "evaluated_at": stamp(row.evaluated_at),
        "open_tickets": listing.open_tickets,
        "breached_open_tickets": listing.breached_open_tickets,
    }


@router.get(
    "/v1/customers/{customer_id}",
    summary="A customer's standing and billing by month",
    response_model=CustomerView,
    responses={
        200: {"headers": _evaluated_header("The instant the standing is as of (RFC 3339, UTC)")},
        404: error("No such customer (or not one of the token's customers: the same answer)"),
        422: error("A parameter is not valid"),
        **_STORE_RESPONSES,
    },
)
async def get_customer(customer_id: VisibleCustomerId, request: Request, principal: Reader) -> Response:
    store, generation, row = await customer_row(request, customer_id)
    months: dict[str, dict[str, int]] = {}
    after = None
    while True:
        query = visible_tickets(TicketQuery(customer_id=customer_id, after=after, limit=PAGE), principal)
        page = await store_call(store.list_tickets, generation, query)
        for ticket in page:
            if ticket.billing_month is not None:
                month = months.setdefault(ticket.billing_month, {"amount_cents": 0, "billable_seconds": 0})
                month["amount_cents"] += ticket.amount_cents
                month["billable_seconds"] += ticket.billable_seconds
        if len(page) < PAGE:
            break
        after = page[-1].key
    return _json(
        {**orjson.loads(row.view), "billing": dict(sorted(months.items()))},
        headers={EVALUATED_AT: stamp(row.evaluated_at)},
    )


@router.get(
    "/v1/customers/{customer_id}/billing",
    summary="A customer's charges of one month: a line per ticket, and the total",
    response_model=CustomerBilling,
    responses={
        404: error("No such customer (or not one of the token's customers: the same answer)"),
        422: error("A parameter is not valid"),
        **_STORE_RESPONSES,
    },
)
async def get_billing(
    customer_id: VisibleCustomerId,
    request: Request,
    month: Annotated[
        str, Query(pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$", description="The month charged, YYYY-MM")
    ],
) -> Response:
    """The tickets charged in `month` (the month of dispatch in the policy's month calendar, see
    docs/sla-semantics.md), as their stored views have it; a month with no charge has no lines."""
    store, generation, _ = await customer_row(request, customer_id)
    rows = await store_call(store.billing, generation, customer_id, month)
    contracts = await _policy(request, store, generation)
    lines = [_billing_line(row, contracts) for row in rows]
    total = {
        "tickets": len(lines),
        "billable_seconds": sum(row.billable_seconds for row in rows),
        "amount_cents": sum(row.amount_cents for row in rows),
    }
    return _json({"customer_id": customer_id, "month": month, "lines": lines, "total": total})


@router.get(
    "/v1/customers/{customer_id}/report",
    summary="A customer's monthly compliance report: JSON, CSV or a printable page",
    response_model=MonthlyReport,
    responses={
        200: {
            "description": "The report (projections.report): JSON by default; CSV (RFC 4180) with "
            "`Accept: text/csv` or `format=csv`; a self-contained HTML page with `format=html` (or "
            "`Accept: text/html`)",
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "text/html": {"schema": {"type": "string"}},
            },
            "headers": _evaluated_header("The instant the report is as of (its `as_of`)"),
        },
        404: error("No such customer (or not one of the token's customers: the same answer)"),
        422: error("A parameter is not valid"),
        **_STORE_RESPONSES,
    },
)
async def get_report(
    customer_id: VisibleCustomerId,
    request: Request,
    month: Annotated[
        str, Query(pattern=MONTH_PATTERN, description="The month, YYYY-MM (1970-01 to 2999-12)")
    ],
    form: Annotated[
        ReportFormat | None,
        Query(alias="format", description="json, csv or html; default: from the Accept header, else json"),
    ] = None,
) -> Response:
    """The tickets dispatched in `month` (in the zone of their contract's month calendar), each as
    of the month's end, or, the month not being over, as of the customer's latest event: the
    contract versions in force, attainment per clock and priority, breaches with their overrun,
    escalations, billing lines and total, tickets still open, and the digest of the events and
    contracts it was computed from. `slatrack report --events` computes the same bytes from an
    export (docs/audit.md, "Verifying a monthly report")."""
    chosen = form or negotiated(request.headers.get("accept"))
    try:
        parse_month(month)
    except MonthError as exc:  # the pattern let it through: the two disagree (a bug), still a 422
        raise ApiError(422, "invalid_parameter", f"month: {exc}") from None
    return report_response(await customer_report(request, customer_id, month), chosen)


async def customer_report(request: Request, customer_id: str, month: str) -> MonthlyReport:
    """The customer's report of ``month`` from the active generation: what
    ``GET /v1/customers/{id}/report`` answers, and what the console's customer page shows (one
    computation for both). The 404 of an unknown customer; the caller has checked the scope."""
    store, generation, _ = await customer_row(request, customer_id)
    return await generation_report(request, store, generation, customer_id, month)


async def generation_report(
    request: Request, store: ReadModelStore, generation: int, customer_id: str, month: str
) -> MonthlyReport:
    """The report of ``month`` of a customer found in ``generation`` (:func:`customer_row`)."""
    configured = services(request.app).policy

    def compute() -> MonthlyReport:
        contracts = generation_contracts(store, generation, configured)
        records = customer_history(store, generation, customer_id, decode=cached_records)
        return monthly_report(records, contracts, customer_id, month, datetime.now(UTC))

    return await store_call(compute)


# Decoded stored events, by (position, body): a stored event never changes (the first copy of an
# event id is kept), so the same position and bytes always decode to the same record. A customer's
# page, its other months and its downloads decode its history once. About 1.5 KB an entry.
CACHED_RECORDS = 50_000
_records: OrderedDict[tuple[int, int, bytes], Recorded] = OrderedDict()
_records_lock = threading.Lock()


def cached_records(stored: list[StoredEvent]) -> list[Recorded]:
    """``decode_stored(stored)``, each event decoded at most once while it stays in the cache."""
    keys = [(event.partition, event.offset, event.body) for event in stored]
    with _records_lock:
        known = {key: _records[key] for key in keys if key in _records}
        for key in known:
            _records.move_to_end(key)
    missing = [event for key, event in zip(keys, stored, strict=True) if key not in known]
    if missing:
        fresh = decode_stored(missing)  # outside the lock: the CPU work
        with _records_lock:
            for event, record in zip(missing, fresh, strict=True):
                key = (event.partition, event.offset, event.body)
                known[key] = _records[key] = record
            while len(_records) > CACHED_RECORDS:
                _records.popitem(last=False)
    return [known[key] for key in keys]


REPORT_PAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'"  # no script, no external asset


def report_response(report: MonthlyReport, form: ReportFormat) -> Response:
    """The report in ``form``, with the API's headers (the console's downloads answer these too)."""
    headers = {EVALUATED_AT: report.as_of, "Vary": "Accept"}
    if form == "csv":
        headers["Content-Disposition"] = f'attachment; filename="slatrack-report-{report.month}.csv"'
    if form == "html":  # nothing else may load
        headers["Content-Security-Policy"] = REPORT_PAGE_CSP
    return Response(render(report, form), media_type=MEDIA_TYPES[form], headers=headers)


_OFFERED: dict[str, ReportFormat] = {"application/json": "json", "text/csv": "csv", "text/html": "html"}


def negotiated(accept: str | None) -> ReportFormat:
    """The format an Accept header prefers among JSON, CSV and HTML: the highest q, a type named
    before a wildcard at the same q; JSON when it names none of them (or there is none)."""
    best: tuple[float, int, int] | None = None
    chosen: ReportFormat = "json"
    for rank, part in enumerate((accept or "").split(",")):
        media, *parameters = (piece.strip() for piece in part.split(";"))
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        media = media.lower()
        if media in _OFFERED:
            found, specific = _OFFERED[media], 1
        elif media in ("*/*", "application/*"):
            found, specific = "json", 0
        else:
            continue
        if quality <= 0:
            continue
        key = (quality, specific, -rank)
        if best is None or key > best:
            best, chosen = key, found
    return chosen
