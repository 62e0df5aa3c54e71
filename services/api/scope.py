"""What a token limited to customers sees: its customers' data, as if no other customer existed.

A token configured with ``"customers": [...]`` (services.config.ApiToken) reads and publishes
only those customers' data. For every query the rule is the same: **anything of another
customer answers exactly what an id that does not exist answers** (the same status, error code
and detail text, built by the same function here), and lists are filtered *in the store's query*
(``TicketQuery.customer_ids``), so a page, its cursor and every other filter see only the
token's customers. An unscoped token, or the open API, sees every customer (``customers`` is
None) and nothing here changes what it gets.

The pieces, for every endpoint that reads a customer's data:

- :data:`READER` / :data:`Reader`: the reader-role dependency, whose value is the
  :class:`~services.api.auth.Principal` (the same object as the query router's dependency, so
  the token is checked once per request);
- :data:`VisibleCustomerId`: a ``{customer_id}`` path parameter that only a customer the token
  sees passes; any other is :func:`no_customer`'s 404, before the store is read, so a foreign
  customer and one that never existed are answered alike whatever the store's state;
- :func:`no_customer`, :func:`no_ticket`: the one 404 of each kind, for the unknown-id path too;
- :func:`visible_tickets`: a ``TicketQuery`` narrowed to the token's customers;
- :func:`visible_customers`: a ``CustomerQuery`` (the customer list) narrowed likewise;
- :func:`check_customer`: the 404 for a customer id the token does not see (for ids that are
  not a path parameter, e.g. ``?customer_id=`` of a ticket).
"""

from dataclasses import replace
from typing import Annotated

from fastapi import Depends, Path

from services.api.auth import ApiError, Principal, require
from services.worker.ports import CustomerQuery, TicketQuery

MAX_ID = 128  # as the event contract's ids

READER = require("reader")
"""The reader role: the query router's dependency, and (as :data:`Reader`) its handlers' principal."""

Reader = Annotated[Principal, READER]


def no_customer(customer_id: str) -> ApiError:
    """The 404 of a customer that does not exist, or that the token does not see: one answer."""
    return ApiError(404, "not_found", f"no customer {customer_id!r}")


def no_ticket(ticket_id: str) -> ApiError:
    """The 404 of a ticket that does not exist, or is not one of the token's customers'."""
    return ApiError(404, "not_found", f"no ticket {ticket_id!r}")


def check_customer(principal: Principal, customer_id: str) -> None:
    """Raises :func:`no_customer`'s 404 unless the principal sees ``customer_id``."""
    if not principal.sees(customer_id):
        raise no_customer(customer_id)


async def visible_customer_id(
    customer_id: Annotated[
        str, Path(min_length=1, max_length=MAX_ID, description="The customer id (1 to 128 characters).")
    ],
    principal: Reader,
) -> str:
    """The ``{customer_id}`` of the path, if the token sees that customer (else a 404)."""
    check_customer(principal, customer_id)
    return customer_id


VisibleCustomerId = Annotated[str, Depends(visible_customer_id)]
"""A ``{customer_id}`` path parameter the token sees: use it instead of a plain path parameter."""


def visible_tickets(query: TicketQuery, principal: Principal) -> TicketQuery:
    """``query`` among the principal's customers only (unchanged for one that sees every customer).

    The store applies it in its query (an empty answer for a ``customer_id`` filter of another
    customer, as for one that does not exist); never filter a page afterwards, which would end
    pages early and let a cursor stand on another customer's rows."""
    if principal.customers is None:
        return query
    among = principal.customers if query.customer_ids is None else principal.customers & query.customer_ids
    return replace(query, customer_ids=among)


def visible_customers(query: CustomerQuery, principal: Principal) -> CustomerQuery:
    """``query`` among the principal's customers only, applied in the store's query, as
    :func:`visible_tickets` (unchanged for one that sees every customer)."""
    if principal.customers is None:
        return query
    among = principal.customers if query.customer_ids is None else principal.customers & query.customer_ids
    return replace(query, customer_ids=among)
