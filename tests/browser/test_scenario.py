"""The browser tests' scenario is what it says: the real projector's views of its events, as of its
instant, hold the hand-computed figures the pages are compared with (no browser needed)."""

from collections.abc import Iterator

import orjson
import pytest

from events import decode_event
from projections.policy import default_policy
from projections.report import monthly_report
from projections.timeline import Recorded
from services.worker.ports import ReadModelStore, TicketRow
from tests.browser import scenario
from tests.browser.console_app import projected
from tests.feed import a_store


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> Iterator[dict[str, TicketRow]]:
    with a_store("sqlite", tmp_path_factory.mktemp("scenario")) as store:
        projected(store, scenario.NOW, scenario.events())
        yield _rows(store)


def _rows(store: ReadModelStore) -> dict[str, TicketRow]:
    generation = store.active_generation()
    assert generation is not None
    found = store.ticket_rows(generation, list(scenario.TICKETS))
    assert set(found) == set(scenario.TICKETS)
    return {ticket: row for (_, ticket), row in found.items()}


def test_every_ticket_is_as_of_the_scenarios_instant(rows):
    assert {row.evaluated_at for row in rows.values()} == {int(scenario.NOW.timestamp())}
    assert {ticket: row.priority for ticket, row in rows.items()} == scenario.PRIORITY_OF
    assert {t for t, row in rows.items() if row.state == "open"} == scenario.QUEUE
    assert {t for t, row in rows.items() if row.state != "open"} == scenario.NOT_IN_QUEUE


@pytest.mark.parametrize("ticket", sorted(scenario.CLOCKS))
def test_the_clocks_are_the_hand_computed_ones(rows, ticket):
    clocks = orjson.loads(rows[ticket].view)["clocks"]
    found = {
        name: (c["status"], c["elapsed_seconds"], c["due_at"], c["breached"], c["at_risk"], c["cycles"])
        for name, c in clocks.items()
    }
    assert found == scenario.CLOCKS[ticket]


def test_the_queue_order_is_the_earliest_due_of_a_clock_not_stopped(rows):
    def due(row: TicketRow) -> int | None:
        clocks = orjson.loads(row.view)["clocks"].values()
        dues = [scenario.epoch(c["due_at"]) for c in clocks if c["status"] != "stopped" and c["due_at"]]
        return min(dues, default=None)

    assert {t: due(rows[t]) for t in scenario.QUEUE} == scenario.QUEUE_DUE
    # The overdue ticket: its due has passed, it has not breached (that is Monday 09:00:01).
    overdue = rows["A-OVERDUE"]
    assert overdue.response_due_at is not None and overdue.response_due_at < overdue.evaluated_at
    assert not overdue.breached and overdue.at_risk
    assert rows["A-BREACHED"].breached and rows["A-BREACHED"].escalation_level == 1


def test_the_filters_leave_the_rows_the_scenario_says(rows):
    open_rows = {t: rows[t] for t in scenario.QUEUE}
    columns = {
        "customer": lambda row: row.customer_id,
        "priority": lambda row: row.priority,
        "breached": lambda row: str(row.breached).lower(),
        "at_risk": lambda row: str(row.at_risk).lower(),
        "billing_status": lambda row: row.billing_status,
    }
    for filters, expected in scenario.FILTERS:
        kept = {t for t, row in open_rows.items() if all(columns[f](row) == v for f, v in filters.items())}
        assert kept == expected, filters


def test_billing_and_the_reports_totals(rows):
    assert {t: rows[t].billing_status for t in scenario.BILLING_STATUS} == scenario.BILLING_STATUS
    assert rows["A-BILLED"].amount_cents == scenario.TOTAL_CENTS[scenario.ACME]
    records = [Recorded(seq, decode_event(orjson.dumps(e))) for seq, e in enumerate(scenario.events())]
    for customer, cents in scenario.TOTAL_CENTS.items():
        report = monthly_report(records, default_policy(), customer, scenario.MONTH, scenario.NOW)
        assert report.billing.total_cents == cents, customer
