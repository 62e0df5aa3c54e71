"""The console's routes (``/ui/...``), each a page over the read models, for the signed-in
principal (:func:`services.api.console.access.console_reader`).

Pages read the store with the query API's own helpers (:mod:`services.api.queries`): the same
active generation, the same store-call timeout and 503s, the same scoping of a token limited to
customers (:func:`services.api.scope.visible_tickets`; another customer's page is the 404 of one
that does not exist).
"""

from dataclasses import dataclass
from typing import Annotated, get_args
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from events.models import Priority
from services.api import queries
from services.api.auth import ApiError, Principal
from services.api.console import customers, ticket_page
from services.api.console.access import (
    COOKIE,
    NotAllowed,
    SignInNeeded,
    console_reader,
    cookie_options,
    cookie_value,
    form_token,
    identify,
    same_origin,
)
from services.api.console.paths import ConsolePaths
from services.api.console.render import page, static
from services.api.scope import visible_tickets
from services.worker.ports import TicketQuery, TicketRow

router = APIRouter(prefix="/ui", include_in_schema=False)
Viewer = Annotated[Principal, Depends(console_reader)]


def install(app: FastAPI) -> None:
    """Serve the console at /ui/ on ``app`` (an API process with read models)."""
    app.add_middleware(ConsolePaths)  # ids with "/" in the paths (services.api.console.paths)
    app.include_router(router)
    app.include_router(customers.router)  # the customer pages (services.api.console.customers)
    app.include_router(ticket_page.router)  # a ticket's page (services.api.console.ticket_page)

    @app.exception_handler(SignInNeeded)
    async def sign_in_needed(request: Request, exc: SignInNeeded) -> Response:
        return RedirectResponse("/ui/sign-in", status_code=303)

    @app.exception_handler(NotAllowed)
    async def not_allowed(request: Request, exc: NotAllowed) -> Response:
        message = f"The token {exc.name!r} lacks the reader role the console needs."
        return page(request, "error.html", 403, title="Not allowed", message=message, principal=None)

    @app.get("/ui", include_in_schema=False)
    async def ui_root() -> Response:  # a fixed path, not built from the Host header
        return RedirectResponse("/ui/", status_code=308)


@router.get("/static/{name}")
async def static_file(name: str) -> Response:
    return static(name)


@router.get("/sign-in")
async def sign_in_form(request: Request) -> Response:
    return page(request, "sign_in.html", title="Sign in", message=None, principal=None)


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    if not same_origin(request):
        message = "Sign in from this console's own page."
        return page(request, "sign_in.html", 403, title="Sign in", message=message, principal=None)
    token = await form_token(request)
    principal = identify(request, token)
    if principal is None or token is None:
        message = "That token is not known."
        return page(request, "sign_in.html", 401, title="Sign in", message=message, principal=None)
    if "reader" not in principal.roles:
        message = f"The token {principal.name!r} lacks the reader role the console needs."
        return page(request, "sign_in.html", 403, title="Sign in", message=message, principal=None)
    response = RedirectResponse("/ui/", status_code=303)
    response.set_cookie(value=cookie_value(token), **cookie_options(request))  # type: ignore[arg-type]
    return response


@router.post("/sign-out")
async def sign_out(request: Request) -> Response:
    if not same_origin(request):  # another site must not sign anyone out either
        message = "Sign out from this console's own page."
        return page(request, "error.html", 403, title="Not allowed", message=message, principal=None)
    response = RedirectResponse("/ui/sign-in", status_code=303)
    options = cookie_options(request)
    response.delete_cookie(
        COOKIE, path="/ui", secure=bool(options["secure"]), httponly=True, samesite="strict"
    )
    return response


QUEUE_PAGE = 50  # tickets per page of the queue
PRIORITIES: tuple[str, ...] = get_args(Priority)
BILLING_STATUSES: tuple[str, ...] = get_args(queries.BillingStatusFilter)
YES_NO = {"true": True, "false": False}


@dataclass(frozen=True)
class QueueFilters:
    """The queue's filters as the form sends them; a value that is none of the choices is "any"."""

    customer: str = ""
    priority: str = ""
    breached: str = ""
    at_risk: str = ""
    billing_status: str = ""

    @staticmethod
    def of(request: Request) -> "QueueFilters":
        params = request.query_params
        customer = params.get("customer", "").strip()
        if len(customer) > queries.MAX_ID or "\x00" in customer:
            customer = ""
        return QueueFilters(
            customer=customer,
            priority=_choice(params.get("priority"), PRIORITIES),
            breached=_choice(params.get("breached"), tuple(YES_NO)),
            at_risk=_choice(params.get("at_risk"), tuple(YES_NO)),
            billing_status=_choice(params.get("billing_status"), BILLING_STATUSES),
        )

    def query(self, after: queries.DueKey | None, limit: int) -> TicketQuery:
        return TicketQuery(
            state="open",
            customer_id=self.customer or None,
            priority=self.priority or None,
            breached=YES_NO.get(self.breached),
            at_risk=YES_NO.get(self.at_risk),
            billing_status=self.billing_status or None,
            sort="breach",
            after_due=after,
            limit=limit,
        )

    def params(self) -> dict[str, str]:
        """The filters given, as query parameters (the next page's link keeps them)."""
        return {name: value for name, value in vars(self).items() if value}


def _choice(value: str | None, choices: tuple[str, ...]) -> str:
    return value if value in choices else ""


@dataclass(frozen=True)
class QueueRow:
    """A row of the queue's table, from a ticket row and the request's now."""

    ticket_id: str
    customer_id: str
    href: str
    priority: str
    clock: str  # the clock that falls due first: response, resolution, or "" (none runs)
    due: int | None
    due_text: str
    breach: int | None  # the order of the queue (TicketRow.queue_breach_at)
    breach_text: str
    remaining: int | None
    escalation_level: int
    breached: bool
    at_risk: bool
    paused: bool

    @staticmethod
    def of(row: TicketRow, now: int) -> "QueueRow":
        due = row.queue_due_at
        clock = ""
        if due is not None:
            if row.response_status == "running" and row.response_due_at == due:
                clock = "response"
            elif row.resolution_status == "running" and row.resolution_due_at == due:
                clock = "resolution"
        return QueueRow(
            ticket_id=row.ticket_id,
            customer_id=row.customer_id,
            href=f"/ui/customers/{quote(row.customer_id, safe='')}/tickets/{quote(row.ticket_id, safe='')}",
            priority=row.priority,
            clock=clock,
            due=due,
            due_text="" if due is None else queries.stamp(due),
            breach=row.queue_breach_at,
            breach_text="" if row.queue_breach_at is None else queries.stamp(row.queue_breach_at),
            remaining=queries.remaining(row, now),
            escalation_level=row.escalation_level,
            breached=row.breached,
            at_risk=row.at_risk,
            paused="paused" in (row.response_status, row.resolution_status),
        )


@router.get("/")
async def queue(request: Request, principal: Viewer) -> Response:
    """The queue: open tickets by their next breach, soonest first (the overdue ones, breached or
    not, at the top), through the list query's own store call (``sort="breach"``), scoped to the
    principal's customers; filters in the query string, pages by a signed cursor."""
    filters = QueueFilters.of(request)
    key = queries.cursor_key(request)
    cursor = request.query_params.get("cursor") or None
    try:
        after = queries.decode_due_cursor(cursor, key, "breach") if cursor is not None else None
        store, generation = await queries.active_generation(request)
        current = int(queries.now(request).timestamp())
        query = visible_tickets(filters.query(after, QUEUE_PAGE + 1), principal)
        rows = await queries.store_call(store.list_tickets, generation, query)
    except ApiError as exc:
        status, message = exc.status_code, str(exc.detail)
        return page(request, "error.html", status, title="Queue", message=message, principal=principal)
    more = len(rows) > QUEUE_PAGE
    rows = rows[:QUEUE_PAGE]
    next_page = None
    if more:
        last = rows[-1]
        next_cursor = queries.encode_due_cursor(
            (last.queue_breach_at, last.ticket_id, last.customer_id), key, "breach"
        )
        next_page = "/ui/?" + urlencode({**filters.params(), "cursor": next_cursor})
    return page(
        request,
        "queue.html",
        title="Queue",
        principal=principal,
        filters=filters,
        priorities=PRIORITIES,
        billing_statuses=BILLING_STATUSES,
        rows=[QueueRow.of(row, current) for row in rows],
        now=current,
        next_page=next_page,
        first_page="/ui/?" + urlencode(filters.params()) if cursor is not None else None,
    )
