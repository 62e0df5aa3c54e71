"""projections.account.owing_invoices: the invoices counting against a customer at an instant,
the "why" of its standing (the console's customer page). Its flags are exactly the standing's."""

from datetime import UTC, datetime, timedelta

import hypothesis.strategies as st
from hypothesis import given, settings

from projections.account import account_standing, owing_invoices
from projections.policy import default_policy
from projections.timeline import history
from tests.engine_helpers import Story

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def test_an_unpaid_invoice_past_both_thresholds():
    s = Story(customer_id="acme")
    s.invoice_due(T0, "INV-1", T0 + DAY)
    s.invoice_due(T0 + DAY, "INV-2", T0 + 40 * DAY)  # not due yet at the instant asked about
    s.invoice_due(T0, "INV-3", T0 + DAY)
    s.invoice_paid(T0 + 3 * DAY, "INV-3")
    as_of = T0 + 17 * DAY  # 16 days past INV-1's due date: > 10 and >= 15
    owing = owing_invoices(history(s.records, as_of), default_policy(), as_of)
    assert [(o.invoice_id, o.delinquent, o.dashboard_suspended) for o in owing] == [
        ("INV-1", True, True),
        ("INV-2", False, False),
    ]
    assert owing[0].overdue_seconds == 16 * 86400 and owing[0].due_at == T0 + DAY
    assert owing[1].overdue_seconds == -23 * 86400
    standing = account_standing(history(s.records, as_of), default_policy(), as_of)
    assert standing.delinquent and standing.dashboard_suspended


def test_the_thresholds_exactly():
    s = Story(customer_id="acme")
    s.invoice_due(T0, "INV-1", T0)
    policy = default_policy()
    for days, delinquent, suspended in [(10, False, False), (10.0001, True, False), (15, True, True)]:
        as_of = T0 + timedelta(days=days)
        [owing] = owing_invoices(history(s.records, as_of), policy, as_of)
        assert (owing.delinquent, owing.dashboard_suspended) == (delinquent, suspended), days


def test_a_moved_due_date_counts_from_when_it_was_moved():
    s = Story(customer_id="acme")
    s.invoice_due(T0, "INV-1", T0)
    s.invoice_due(T0 + 5 * DAY, "INV-1", T0 + 30 * DAY)
    as_of = T0 + 20 * DAY
    [owing] = owing_invoices(history(s.records, as_of), default_policy(), as_of)
    assert (owing.due_at, owing.since, owing.delinquent) == (T0 + 30 * DAY, T0 + 5 * DAY, False)


KINDS = st.sampled_from(["due", "paid", "disputed"])


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(st.tuples(KINDS, st.integers(0, 2), st.integers(0, 60), st.integers(-5, 40)), max_size=8),
    at=st.integers(0, 90),
    exempt=st.booleans(),
)
def test_the_flags_are_the_standings(steps, at, exempt):
    """Whatever the invoices, any owing invoice's flag is the standing's flag."""
    policy = default_policy()
    suspension = policy.suspension.model_copy(update={"disputed_invoices_exempt": exempt})
    policy = policy.model_copy(update={"suspension": suspension})
    s = Story(customer_id="acme")
    for kind, invoice, day, due in sorted(steps, key=lambda step: step[2]):
        when = T0 + day * DAY
        if kind == "due":
            s.invoice_due(when, f"INV-{invoice}", when + due * DAY)
        elif kind == "paid":
            s.invoice_paid(when, f"INV-{invoice}")
        else:
            s.invoice_disputed(when, f"INV-{invoice}")
    as_of = T0 + at * DAY + timedelta(hours=at % 7)
    events = history(s.records, as_of)
    owing = owing_invoices(events, policy, as_of)
    standing = account_standing(events, policy, as_of)
    assert any(o.delinquent for o in owing) == standing.delinquent
    assert any(o.dashboard_suspended for o in owing) == standing.dashboard_suspended
    assert len({o.invoice_id for o in owing}) == len(owing)  # one stretch of each in force
