"""What was written several times is written once (issue 12): the account standing then the
engine (projections.as_of), the opening event and the parsing of an instant
(projections.timeline), the roles (services.config) and the worker's lag (services.worker.batches)."""

import random
from datetime import UTC, datetime

import click
import pytest

from projections.account import account_standing
from projections.as_of import standing_at, ticket_at
from projections.policy import default_policy
from projections.quarantine import view_at
from projections.ticket import evaluate
from projections.timeline import INSTANT_FORM, history, is_opening, opening, parse_instant
from services import bootstrap
from services.cli.commands import _instant, serve
from services.config import PROCESS_ROLES, ROLES
from services.worker import batches, gauges
from tests.engine_helpers import Story, ny, utc

AS_OF = ny("2026-11-13 12:00")


def suspended_story() -> Story:
    """A ticket whose customer's invoice is more than 10 days late for a while: the standing
    pauses its clocks, so a standing computed any other way would give another view."""
    s = Story("T-1", "acme")
    s.invoice_due(utc("2026-10-15 12:00"), "INV-1", utc("2026-10-29 03:40"))
    s.responded(ny("2026-11-07 21:00"))  # before the opening
    s.opened(ny("2026-11-07 22:00"), "urgent", category="non_service")
    s.invoice_paid(utc("2026-11-08 04:10"), "INV-1")
    s.invoice_due(utc("2026-11-12 12:00"), "INV-2", utc("2026-11-01 00:00"))  # late now
    s.responded(utc("2026-11-08 05:10"))
    return s


def split(s: Story):
    tickets = [r for r in s.records if r.event.type.startswith("ticket.")]
    return tickets, [r for r in s.records if r.event.type.startswith("account.")]


def shuffled_with_copies(records, seed=7):
    out = records + records[:2]  # later copies of the first two
    random.Random(seed).shuffle(out)
    return out


# -- the account standing, then the engine ---------------------------------------------


@pytest.mark.parametrize("as_of", [ny("2026-11-08 00:00"), ny("2026-11-10 12:00"), AS_OF])
def test_standing_at_orders_and_cuts_the_account_events(as_of):
    _, account = split(suspended_story())
    policy = default_policy()
    expected = account_standing(history(account, as_of), policy, as_of)
    assert standing_at(shuffled_with_copies(account), policy, as_of) == expected
    assert standing_at(account, policy, as_of) == expected


@pytest.mark.parametrize("as_of", [ny("2026-11-07 21:30"), ny("2026-11-08 00:00"), AS_OF])
def test_ticket_at_is_the_engine_with_the_standing_at_the_instant(as_of):
    """21:30: not opened yet; then with the first invoice's pause, and with the second's."""
    tickets, account = split(suspended_story())
    policy = default_policy()
    state = ticket_at(shuffled_with_copies(tickets), shuffled_with_copies(account), policy, as_of)
    expected = evaluate(tickets, policy, as_of, account_standing(history(account, as_of), policy, as_of))
    if expected is None:  # not opened yet
        assert state is None
        return
    assert state is not None and state.view() == expected.view()
    # The suspension counts: without the standing the view is another one.
    unsuspended = evaluate(tickets, policy, as_of)
    assert unsuspended is not None and expected.view() != unsuspended.view()
    assert view_at(("acme", "T-1"), tickets, account, policy, as_of) == expected.view().document()


# -- the opening event ---------------------------------------------------------------


def test_opening_is_the_first_ticket_opened_in_the_order_events_apply():
    s = Story("T-1", "acme")
    s.responded(ny("2026-11-02 08:00"))  # seq 0
    later = s.opened(ny("2026-11-02 10:00"), "low")  # seq 1: recorded first, applies second
    first = s.opened(ny("2026-11-02 09:00"), "high")  # seq 2
    records = s.records
    found = opening(shuffled_with_copies(records))
    assert found is not None and found.event.event_id == first["event_id"]
    state = evaluate(records, default_policy(), AS_OF)
    assert state is not None and state.opened == found.event  # the engine's own
    cut = opening(records, ny("2026-11-02 09:30"))
    assert cut is not None and cut.event.event_id == first["event_id"]
    assert opening(records, ny("2026-11-02 08:59:59")) is None  # not opened as of then
    assert opening(records[:1]) is None
    assert [is_opening(r.event) for r in records] == [False, True, True]
    assert later["event_id"] != first["event_id"]


# -- an instant given as text ---------------------------------------------------------


def test_parse_instant_takes_what_the_event_contract_takes_in_whole_seconds():
    assert parse_instant("2026-11-02T10:00:00.750-05:00") == datetime(2026, 11, 2, 15, 0, tzinfo=UTC)
    assert parse_instant("2026-11-02T15:00:00Z").tzinfo is UTC
    for bad in ("2026-11-02T10:00:00", "2026-11-02", "3000-01-01T00:00:00Z", "yesterday", ""):
        with pytest.raises(ValueError) as raised:
            parse_instant(bad)
        why = str(raised.value)
        assert why and not why.startswith("Value error") and "\n" not in why, why


def test_the_cli_and_the_api_say_the_same_about_a_bad_instant():
    from services.api.auth import ApiError
    from services.api.queries import _instant as api_instant

    with pytest.raises(ValueError) as parsed:
        parse_instant("2026-11-02T10:00:00")
    with pytest.raises(click.BadParameter) as cli:
        _instant("2026-11-02T10:00:00", "--as-of")
    with pytest.raises(ApiError) as api:
        api_instant("2026-11-02T10:00:00", "as_of")
    assert cli.value.message == str(parsed.value)
    assert api.value.detail == f"as_of: {parsed.value}"
    assert INSTANT_FORM.startswith("must be an RFC 3339 date-time")


# -- the roles, the lag -----------------------------------------------------------------


def test_one_kind_of_role_each():
    assert ROLES == ("reader", "publisher", "admin")  # what an API token grants
    assert PROCESS_ROLES == ("all", "worker", "api")  # what a `slatrack serve` process runs
    (role,) = [p for p in serve.params if p.name == "role"]
    assert isinstance(role.type, click.Choice) and tuple(role.type.choices) == PROCESS_ROLES


def test_one_lag():
    assert gauges.Lag is batches.Lag and bootstrap.Lag is batches.Lag
