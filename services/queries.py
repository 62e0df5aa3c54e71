"""Read endpoints over the read models: one ticket, one customer."""

import asyncio
from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

from services.store.base import ReadModelStore, TicketQuery

router = APIRouter()
PAGE = 500


def _store(request: Request) -> tuple[ReadModelStore, int]:
    store: ReadModelStore = request.app.state.store
    generation = store.active_generation()
    if generation is None:
        raise HTTPException(503, "no read models yet")
    return store, generation


def _json(document: Any) -> Response:
    return Response(orjson.dumps(document), media_type="application/json")


@router.get("/v1/tickets/{ticket_id}", summary="A ticket's current view")
async def get_ticket(ticket_id: str, request: Request) -> Response:
    store, generation = await asyncio.to_thread(_store, request)
    row = await asyncio.to_thread(store.ticket, generation, ticket_id)
    if row is None:
        raise HTTPException(404, f"no ticket {ticket_id!r}")
    return Response(row.view, media_type="application/json")


@router.get("/v1/customers/{customer_id}", summary="A customer's standing and billing by month")
async def get_customer(customer_id: str, request: Request) -> Response:
    store, generation = await asyncio.to_thread(_store, request)
    row = await asyncio.to_thread(store.customer, generation, customer_id)
    if row is None:
        raise HTTPException(404, f"no customer {customer_id!r}")
    months: dict[str, dict[str, int]] = {}
    after = None
    while True:
        page = await asyncio.to_thread(
            store.list_tickets, generation, TicketQuery(customer_id=customer_id, after=after, limit=PAGE)
        )
        for ticket in page:
            if ticket.billing_month is not None:
                month = months.setdefault(ticket.billing_month, {"amount_cents": 0, "billable_seconds": 0})
                month["amount_cents"] += ticket.amount_cents
                month["billable_seconds"] += ticket.billable_seconds
        if len(page) < PAGE:
            break
        after = page[-1].ticket_id
    return _json({**orjson.loads(row.view), "billing": dict(sorted(months.items()))})
