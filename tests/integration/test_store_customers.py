"""``QueryStore.list_customers`` (the customer list of the API and the console), on SQLite and
PostgreSQL: keyset pages by customer id, the standing filters, the set of customers a token is
limited to (applied in the query), and each customer's open and breached open tickets."""

from dataclasses import replace

import pytest

from services.store import ReadModelStore
from services.worker.ports import CustomerQuery
from tests.integration import test_store_contract as contract
from tests.integration.test_store_contract import batch, customer, ticket


def ids(listings) -> list[str]:
    return [listing.row.customer_id for listing in listings]


def every_page(store: ReadModelStore, generation: int, query: CustomerQuery) -> list[list[str]]:
    pages: list[list[str]] = []
    after: str | None = None
    while True:
        page = ids(store.list_customers(generation, replace(query, after=after)))
        assert len(page) <= query.limit
        if not page:
            return pages
        pages.append(page)
        after = page[-1]


class CustomerListContract:
    @pytest.fixture
    def desk(self, store: ReadModelStore, gen: int) -> int:
        customers = [
            customer("acme", log_time=contract.T0 + 5),
            customer("globex", delinquent=True),
            customer("initech", delinquent=True, dashboard_suspended=True, partition=1),
            customer("umbrella"),
            customer("late & co/ü", dashboard_suspended=True),
        ]
        tickets = [
            ticket("t1", customer_id="acme"),
            ticket("t2", customer_id="acme", breached=True),
            ticket("t3", customer_id="acme", state="resolved", breached=True),
            ticket("t4", customer_id="acme", state="closed"),
            ticket("t1", customer_id="globex", breached=True),
            ticket("t5", customer_id="globex", state="pending"),
            ticket("t6", customer_id="initech", partition=1, state="quarantined"),
            # A ticket of a customer with no customer row is not listed as a customer.
            ticket("t7", customer_id="nobody"),
        ]
        store.commit_batch(gen, batch({0: (0, 1), 1: (0, 1)}, tickets=tickets, customers=customers))
        return gen

    def test_every_customer_by_id_with_its_row(self, store, desk):
        listed = store.list_customers(desk, CustomerQuery())
        assert ids(listed) == ["acme", "globex", "initech", "late & co/ü", "umbrella"]
        rows = store.customer_rows(desk, ids(listed))
        assert [listing.row for listing in listed] == [rows[c] for c in ids(listed)]

    def test_open_and_breached_open_tickets(self, store, desk):
        counts = {
            listing.row.customer_id: (listing.open_tickets, listing.breached_open_tickets)
            for listing in store.list_customers(desk, CustomerQuery())
        }
        # Only state open counts: not resolved, closed, pending nor quarantined tickets.
        assert counts == {
            "acme": (2, 1),
            "globex": (1, 1),
            "initech": (0, 0),
            "late & co/ü": (0, 0),
            "umbrella": (0, 0),
        }

    @pytest.mark.parametrize(
        ("query", "expected"),
        [
            (CustomerQuery(delinquent=True), ["globex", "initech"]),
            (CustomerQuery(delinquent=False), ["acme", "late & co/ü", "umbrella"]),
            (CustomerQuery(dashboard_suspended=True), ["initech", "late & co/ü"]),
            (CustomerQuery(delinquent=False, dashboard_suspended=False), ["acme", "umbrella"]),
            (CustomerQuery(customer_ids=frozenset({"umbrella", "acme", "NOBODY"})), ["acme", "umbrella"]),
            (CustomerQuery(customer_ids=frozenset({"globex"}), delinquent=False), []),
            (CustomerQuery(customer_ids=frozenset()), []),
            (CustomerQuery(after="globex"), ["initech", "late & co/ü", "umbrella"]),
            (CustomerQuery(after="zzz"), []),
            (CustomerQuery(limit=2), ["acme", "globex"]),
            (CustomerQuery(limit=0), []),
        ],
    )
    def test_filters(self, store, desk, query, expected):
        assert ids(store.list_customers(desk, query)) == expected

    def test_pages_by_keyset(self, store, desk):
        everyone = ids(store.list_customers(desk, CustomerQuery()))
        for limit in (1, 2, 3, 5):
            pages = every_page(store, desk, CustomerQuery(limit=limit))
            assert [c for page in pages for c in page] == everyone
            assert all(len(page) == limit for page in pages[:-1])
        among = frozenset({"acme", "initech", "umbrella"})
        pages = every_page(store, desk, CustomerQuery(customer_ids=among, limit=1))
        assert pages == [["acme"], ["initech"], ["umbrella"]]
        # A page after a customer outside the set holds only the set's.
        assert ids(store.list_customers(desk, CustomerQuery(customer_ids=among, after="globex"))) == [
            "initech",
            "umbrella",
        ]

    def test_many_customers_in_the_set(self, store, gen):
        many = [customer(f"c{i:04d}") for i in range(1200)]
        tickets = [ticket(f"t{i}", customer_id=f"c{i:04d}") for i in range(0, 1200, 7)]
        store.commit_batch(gen, batch({0: (0, 1)}, tickets=tickets, customers=many))
        wanted = frozenset(f"c{i:04d}" for i in range(0, 1200, 3))
        listed = store.list_customers(gen, CustomerQuery(customer_ids=wanted, limit=1000))
        assert ids(listed) == sorted(wanted)
        assert sum(listing.open_tickets for listing in listed) == len(range(0, 1200, 21))

    def test_other_generations_are_apart(self, store, desk):
        other = store.create_generation("other")
        assert store.list_customers(other, CustomerQuery()) == []
        store.commit_batch(other, batch({0: (0, 1)}, customers=[customer("acme")]), must_be_active=False)
        [only] = store.list_customers(other, CustomerQuery())
        assert (only.row.customer_id, only.open_tickets) == ("acme", 0)


class TestSqliteCustomers(CustomerListContract):
    new_store = contract.TestSqliteStore.new_store
    store = contract.StoreContract.store
    gen = contract.StoreContract.gen


@pytest.mark.postgres
class TestPostgresCustomers(CustomerListContract):
    conninfo = contract.TestPostgresStore.conninfo
    new_store = contract.TestPostgresStore.new_store
    store = contract.StoreContract.store
    gen = contract.StoreContract.gen
