"""The pieces of a token's scope (services.api.scope); served, in tests/integration/test_scope.py."""

import json

from services.api.auth import ANONYMOUS, Authenticator, Principal
from services.api.scope import visible_tickets
from services.config import parse_api_tokens
from services.worker.ports import TicketQuery


def test_principal_sees_and_the_query_narrowed():
    acme = Principal("acme", frozenset({"reader"}), frozenset({"ACME"}))
    assert acme.scoped and acme.sees("ACME") and not acme.sees("GLOBEX") and not acme.sees("acme")
    assert not ANONYMOUS.scoped and ANONYMOUS.sees("GLOBEX")
    query = TicketQuery(priority="P1", customer_id="GLOBEX", limit=5)
    assert visible_tickets(query, ANONYMOUS) is query
    assert visible_tickets(query, acme) == TicketQuery(
        priority="P1", customer_id="GLOBEX", customer_ids=frozenset({"ACME"}), limit=5
    )
    # Narrowing an already narrowed query: the intersection, never wider.
    two = TicketQuery(customer_ids=frozenset({"ACME", "GLOBEX"}))
    assert visible_tickets(two, acme).customer_ids == frozenset({"ACME"})
    assert visible_tickets(TicketQuery(customer_ids=frozenset({"GLOBEX"})), acme).customer_ids == frozenset()


def test_the_authenticator_knows_each_tokens_customers():
    tokens = parse_api_tokens(
        json.dumps(
            [
                {"name": "ops", "token": "o" * 20, "roles": ["reader", "admin"]},
                {"name": "acme", "token": "a" * 20, "roles": ["reader"], "customers": ["ACME"]},
            ]
        ),
        "test",
    )
    authenticator = Authenticator(tokens)
    ops, acme = authenticator.identify("o" * 20), authenticator.identify("a" * 20)
    assert ops == Principal("ops", frozenset({"reader", "admin"})) and not ops.scoped
    assert acme == Principal("acme", frozenset({"reader"}), frozenset({"ACME"})) and acme.scoped
