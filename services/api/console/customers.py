"""The console's customer pages (issue 15, "a customer (account manager)"):

- ``/ui/customers``: every customer the principal sees, a page at a time (the API's
  ``GET /v1/customers``, :func:`services.api.queries.customer_page`), with its standing and its
  open and breached open tickets;
- ``/ui/customers/{customer_id}?month=YYYY-MM``: its standing (delinquent, dashboard suspended,
  and why: the invoices counting against it), the month's report
  (:func:`services.api.queries.generation_report`, the very computation of
  ``GET /v1/customers/{id}/report``), month navigation and the report's downloads;
- ``/ui/customers/{customer_id}/report.csv`` and ``report.html``: the API's report in those
  formats, the same bytes and headers, under ``/ui`` (where the browser sends the console's
  cookie; it holds no bearer token).

The month shown by default is the current month in UTC (the report of a month not over is as of
the customer's latest event). A customer the principal does not see, or that does not exist,
is one 404 page, answered for a foreign one before the store is read (services.api.scope).
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from projections.account import Owing, owing_invoices
from projections.policy import Policy
from projections.report import MonthError, parse_month
from projections.timeline import history
from services.api import queries
from services.api.auth import ApiError, Principal
from services.api.console import paths  # noqa: F401 - the routes' "id" convertor
from services.api.console.access import console_reader
from services.api.console.render import HEADERS, environment, page
from services.api.state import services
from services.worker.histories import decoded, generation_contracts
from services.worker.ports import CustomerListing, CustomerQuery, ReadModelStore

router = APIRouter(prefix="/ui", include_in_schema=False)
Viewer = Annotated[Principal, Depends(console_reader)]

MAX_ID = 128  # as the event contract's ids
CUSTOMERS_PER_PAGE = 100
# The console's headers that a report download carries besides the API's own (its CSP stays the
# printable page's: the console's would refuse that page's inline style).
DOWNLOAD_HEADERS = {k: v for k, v in HEADERS.items() if k != "Content-Security-Policy"}


def segment(text: str) -> str:
    """``text`` as one path segment of a URL (every reserved character escaped)."""
    return quote(text, safe="")


environment.filters["segment"] = segment


def _not_found(request: Request, principal: Principal, customer_id: str) -> Response:
    """The one 404 page of a customer that does not exist or that the principal does not see."""
    message = f"No customer {customer_id!r}."
    return page(request, "error.html", 404, title="Not found", message=message, principal=principal)


def _failed(request: Request, principal: Principal, exc: ApiError) -> Response:
    return page(
        request, "error.html", exc.status_code, title="Error", message=exc.detail, principal=principal
    )


def _flag(value: str | None, name: str) -> bool | None:
    if value in (None, ""):
        return None
    if value in ("true", "false"):
        return value == "true"
    raise ApiError(422, "invalid_parameter", f"{name}: expected true or false")


def current_month(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m")


def shifted(month: str, by: int) -> str | None:
    """The month ``by`` months from ``month`` (None outside 1970-01 to 2999-12)."""
    year, number = parse_month(month)
    index = year * 12 + number - 1 + by
    candidate = f"{index // 12:04d}-{index % 12 + 1:02d}"
    try:
        parse_month(candidate)
    except MonthError:
        return None
    return candidate


def _month(value: str | None) -> str:
    chosen = value or current_month()
    try:
        parse_month(chosen)
    except MonthError as exc:
        raise ApiError(422, "invalid_parameter", f"month: {exc}") from None
    return chosen


def _in_scope(principal: Principal, customer_id: str) -> bool:
    return 1 <= len(customer_id) <= MAX_ID and principal.sees(customer_id)


# -- the list -------------------------------------------------------------------


@router.get("/customers")
async def customers(
    request: Request,
    principal: Viewer,
    delinquent: str | None = None,
    dashboard_suspended: str | None = None,
    cursor: str | None = None,
) -> Response:
    """The customers the principal sees, by id, a page at a time."""
    try:
        late, suspended = _flag(delinquent, "delinquent"), _flag(dashboard_suspended, "dashboard_suspended")
        filters = {"delinquent": late, "dashboard_suspended": suspended}
        if cursor is not None and len(cursor) > 2048:
            raise ApiError(400, "bad_cursor", "cursor: too long")
        after = queries.decode_customer_cursor(cursor, queries.cursor_key(request)) if cursor else None
        query = CustomerQuery(delinquent=late, dashboard_suspended=suspended, after=after)
        found = await queries.customer_page(request, principal, query, CUSTOMERS_PER_PAGE)
    except ApiError as exc:
        return _failed(request, principal, exc)
    kept = {k: "true" if v else "false" for k, v in filters.items() if v is not None}
    next_url = None
    if found["next_cursor"] is not None:
        next_url = "/ui/customers?" + urlencode({**kept, "cursor": found["next_cursor"]})
    views = [
        ("All", "/ui/customers", not kept),
        ("Delinquent", "/ui/customers?delinquent=true", kept == {"delinquent": "true"}),
        (
            "Dashboard suspended",
            "/ui/customers?dashboard_suspended=true",
            kept == {"dashboard_suspended": "true"},
        ),
    ]
    return page(
        request,
        "customers.html",
        title="Customers",
        principal=principal,
        items=found["items"],
        next_url=next_url,
        first_url=("/ui/customers?" + urlencode(kept)) if cursor else None,
        views=views,
    )


# -- a customer's month -----------------------------------------------------------


@dataclass(frozen=True)
class Standing:
    """What the standing section shows: the stored flags, as of when, and why."""

    delinquent: bool
    dashboard_suspended: bool
    evaluated_at: datetime
    policy: Policy  # the contract's policy whose rules decide the standing
    owing: list[Owing]
    counts: CustomerListing | None


def _standing(
    store: ReadModelStore, generation: int, configured: Policy, customer_id: str, at: datetime
) -> tuple[Policy, list[Owing], CustomerListing | None]:
    """The rules the customer's standing is decided by at ``at`` (its contract's policy, as the
    worker takes it), the invoices counting against it then, and its ticket counts."""
    contracts = generation_contracts(store, generation, configured)
    account = decoded(store.account_events_of, generation, [customer_id])[customer_id]
    policy = contracts.customer_policy(account, at)
    owing = owing_invoices(history(account, at), policy, at)
    listed = store.list_customers(generation, CustomerQuery(customer_ids=frozenset({customer_id}), limit=1))
    return policy, owing, listed[0] if listed else None


@router.get("/customers/{customer_id:id}")
async def customer(
    request: Request, customer_id: str, principal: Viewer, month: str | None = None
) -> Response:
    """A customer's standing and the month's report."""
    if not _in_scope(principal, customer_id):
        return _not_found(request, principal, customer_id)  # before the store is read
    try:
        chosen = _month(month)
        store, generation, row = await queries.customer_row(request, customer_id)
        at = datetime.fromtimestamp(row.evaluated_at, UTC)
        configured = services(request.app).policy
        policy, owing, counts = await queries.store_call(
            _standing, store, generation, configured, customer_id, at
        )
        report = await queries.generation_report(request, store, generation, customer_id, chosen)
    except ApiError as exc:
        if exc.status_code == 404:
            return _not_found(request, principal, customer_id)
        return _failed(request, principal, exc)
    standing = Standing(row.delinquent, row.dashboard_suspended, at, policy, owing, counts)
    base = f"/ui/customers/{segment(customer_id)}"
    before, after = shifted(chosen, -1), shifted(chosen, 1)
    if after is not None and after > current_month():
        after = None  # no report of a month to come
    return page(
        request,
        "customer.html",
        title=f"Customer {customer_id}",
        principal=principal,
        customer_id=customer_id,
        month=chosen,
        standing=standing,
        report=report,
        base=base,
        prev_url=f"{base}?month={before}" if before else None,
        next_url=f"{base}?month={after}" if after else None,
        prev_month=before,
        next_month=after,
        csv_url=f"{base}/report.csv?month={chosen}",
        html_url=f"{base}/report.html?month={chosen}",
    )


async def _download(
    request: Request, principal: Principal, customer_id: str, month: str | None, form: queries.ReportFormat
) -> Response:
    if not _in_scope(principal, customer_id):
        return _not_found(request, principal, customer_id)
    try:
        report = await queries.customer_report(request, customer_id, _month(month))
    except ApiError as exc:
        if exc.status_code == 404:
            return _not_found(request, principal, customer_id)
        return _failed(request, principal, exc)
    response = queries.report_response(report, form)
    response.headers.update(DOWNLOAD_HEADERS)
    return response


@router.get("/customers/{customer_id:id}/report.csv")
async def report_csv(
    request: Request, customer_id: str, principal: Viewer, month: str | None = None
) -> Response:
    """The month's report as the API's CSV (an attachment)."""
    return await _download(request, principal, customer_id, month, "csv")


@router.get("/customers/{customer_id:id}/report.html")
async def report_html(
    request: Request, customer_id: str, principal: Viewer, month: str | None = None
) -> Response:
    """The month's report as the API's printable page."""
    return await _download(request, principal, customer_id, month, "html")
