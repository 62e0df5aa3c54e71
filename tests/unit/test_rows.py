"""Row mapping (services.worker.rows) alone: the rows of a ticket not opened yet and of a
customer, and the instants that make the timers look again."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import orjson

from events import decode_event
from projections.policy import default_policy
from projections.timeline import Recorded
from services.worker.histories import seq_of
from services.worker.ports import FOREVER
from services.worker.rows import _customer_row, _pending_row, epoch, instant_of
from tests.feed import event

AS_OF = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)


def recorded(partition: int, offset: int, document: dict) -> Recorded:
    return Recorded(seq_of(partition, offset), decode_event(orjson.dumps(document)))


def test_instants_are_whole_epoch_seconds_in_rows():
    assert epoch(AS_OF) == int(AS_OF.timestamp()) and epoch(None) is None
    assert instant_of(epoch(AS_OF)) == AS_OF and instant_of(None) is None


def test_a_ticket_not_opened_yet_is_pending_until_it_opens_keeping_what_it_asserted():
    opens = AS_OF + timedelta(hours=3)
    records = [
        recorded(4, 10, event("e-2", "ticket.responded", "2026-11-02T11:00:00Z", "c-1", "T-1")),
        recorded(4, 11, event("e-1", "ticket.opened", "2026-11-02T15:00:00Z", "c-1", "T-1", priority="low")),
    ]
    fresh = _pending_row(("c-1", "T-1"), records, AS_OF, None)
    assert (fresh.state, fresh.partition, fresh.evaluated_at) == ("pending", 4, epoch(AS_OF))
    assert fresh.next_change_at == epoch(opens)  # the instant to look again
    assert orjson.loads(fresh.view) == {
        "ticket_id": "T-1",
        "customer_id": "c-1",
        "state": "pending",
        "opens_at": "2026-11-02T15:00:00Z",
    }
    assert (fresh.signals, fresh.marks, fresh.account_until) == (b"{}", b"{}", FOREVER)
    before = replace(fresh, signals=b'{"s":1}', marks=b'{"m":2}')
    again = _pending_row(("c-1", "T-1"), records, AS_OF, before)
    assert (again.signals, again.marks) == (b'{"s":1}', b'{"m":2}')  # nothing taken back


def test_a_customers_row_looks_again_when_a_future_account_event_comes_into_force():
    due = event(
        "e-9",
        "account.invoice_due",
        "2026-11-05T00:00:00Z",
        "c-1",
        invoice_id="i-1",
        due_at="2026-11-20T00:00:00Z",
    )
    row = _customer_row("c-1", 3, default_policy(), AS_OF, [recorded(3, 0, due)], AS_OF - timedelta(hours=1))
    assert (row.customer_id, row.partition, row.delinquent, row.dashboard_suspended) == (
        "c-1",
        3,
        False,
        False,
    )
    assert row.next_change_at == epoch(datetime(2026, 11, 5, tzinfo=UTC))
    assert row.log_time == epoch(AS_OF - timedelta(hours=1)) and row.evaluated_at == epoch(AS_OF)
    nothing = _customer_row("c-1", 3, default_policy(), AS_OF, [], None)
    assert nothing.next_change_at is None and nothing.log_time is None
