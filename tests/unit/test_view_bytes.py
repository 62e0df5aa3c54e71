"""The typed views print exactly the bytes the dict views printed (issue 12).

The read models store a view's bytes, replay and the API print them, and auditors compare
them: the move from ``dict[str, Any]`` to the types of ``projections.views`` must not change
a byte, key order included. The expected bytes below were printed by the code before that
move (``orjson.dumps`` of the dict views, and of the projector's pending placeholder) for a
few hand-made tickets, and pasted here (the marks' are in test_sla_metrics.py). Since then,
one key was added on purpose: ``contract`` (issue 13), before ``policy_version``.
"""

from datetime import date, datetime

import orjson
import pytest
from pydantic import TypeAdapter

from projections.account import account_standing
from projections.quarantine import quarantined_view
from projections.ticket import TicketState, evaluate
from projections.timeline import history
from projections.views import PendingView, QuarantinedView, StoredTicketView, TicketView
from tests.engine_helpers import Story, ny, utc


def stories() -> dict[str, tuple[Story, str, datetime]]:
    """name -> (story, ticket id, as-of instant)."""
    found: dict[str, tuple[Story, str, datetime]] = {}

    s = Story(ticket_id="RUN-1", customer_id="acme")
    s.opened(ny("2026-11-02 09:00"), "medium")
    found["running"] = (s, "RUN-1", ny("2026-11-02 11:30"))

    s = Story(ticket_id="P1-NIGHT", customer_id="acme")
    s.opened(ny("2026-11-03 22:00"), "urgent")
    s.responded(ny("2026-11-03 23:15"))
    s.status(ny("2026-11-04 01:00"), "pending_customer")
    s.status(ny("2026-11-04 02:00"), "in_progress")
    s.work(ny("2026-11-03 22:30"), ny("2026-11-04 00:10"))
    s.fault(ny("2026-11-04 12:00"), "customer")
    s.escalation_request(ny("2026-11-04 13:00"), 3, by="agent")
    s.resolved(ny("2026-11-04 15:00"))
    found["uncovered_p1"] = (s, "P1-NIGHT", ny("2026-11-05 12:00"))

    s = Story(ticket_id="NI-7", customer_id="bolt")
    s.opened(
        ny("2026-11-02 10:00"),
        "low",
        category="new_install",
        after_hours_requested=True,
        install_date=date(2026, 11, 5),
    )
    s.work(ny("2026-11-05 16:30"), ny("2026-11-05 19:45"))
    s.priority(ny("2026-11-03 09:00"), "high")
    s.resolved(ny("2026-11-06 10:00"))
    s.closed(ny("2026-11-06 11:00"))
    found["new_install_closed"] = (s, "NI-7", ny("2026-11-09 12:00"))

    s = Story(ticket_id="TPD-3", customer_id="bolt")
    s.opened(ny("2026-11-02 09:00"), "medium", third_party_disconnect=True)
    s.escalation_request(ny("2026-11-02 12:00"), 2)
    found["not_entitled"] = (s, "TPD-3", ny("2026-11-04 12:00"))

    s = Story(ticket_id="NS-9", customer_id="cust-9")
    s.invoice_due(utc("2026-10-01 12:00"), "INV-7", utc("2026-10-23 16:00"))
    s.opened(ny("2026-11-02 09:00"), "low", category="non_service")
    found["suspended"] = (s, "NS-9", ny("2026-11-02 15:00"))

    s = Story(ticket_id='Tï-ü€ "😀"', customer_id="ça/ß")
    s.opened(ny("2026-11-02 09:00"), "high")
    s.status(ny("2026-11-02 09:30"), "wartet auf Kündé \\ «tab»")
    found["unicode"] = (s, 'Tï-ü€ "😀"', ny("2026-11-02 10:00"))
    return found


STORIES = stories()


def state_of(name: str) -> TicketState:
    s, ticket, as_of = STORIES[name]
    mine = [r for r in s.records if getattr(r.event, "ticket_id", None) == ticket]
    account = [r for r in s.records if getattr(r.event, "ticket_id", None) is None]
    state = evaluate(mine, s.policy, as_of, account_standing(history(account, as_of), s.policy, as_of))
    assert state is not None
    return state


# -- the bytes printed before the views were typed ------------------------------------------------

VIEWS = {
    "running": (
        b'{"ticket_id":"RUN-1","customer_id":"acme","priority":"medium","category":"service",'
        b'"state":"open","status":"open","opened_at":"2026-11-02T14:00:00Z",'
        b'"clocks":{"response":{"status":"running","calendar":"business",'
        b'"target_seconds":14400,"elapsed_seconds":9000,"due_at":"2026-11-02T18:00:00Z",'
        b'"breached":false,"at_risk":false,"cycles":1},"resolution":{"status":"running",'
        b'"calendar":"business","target_seconds":28800,"elapsed_seconds":9000,'
        b'"due_at":"2026-11-02T22:00:00Z","breached":false,"at_risk":false,"cycles":1}},'
        b'"escalation":{"level":0,"reasons":[]},"billing":{"rule":null,"status":"none",'
        b'"billable_seconds":0,"amount_cents":0,"month":null},"flags":[],'
        b'"contract":"default","policy_version":"default-2026.1",'
        b'"policy_digest":"sha256:7f670878dd1b25a0447f7b4ca9997d09f6092ce636e9f2c422d8b4900e8b728e"}'
    ),
    "uncovered_p1": (
        b'{"ticket_id":"P1-NIGHT","customer_id":"acme","priority":"urgent",'
        b'"category":"service","state":"resolved","status":"in_progress",'
        b'"opened_at":"2026-11-04T03:00:00Z","clocks":{"response":{"status":"stopped",'
        b'"calendar":"24x7","target_seconds":3600,"elapsed_seconds":4500,'
        b'"due_at":"2026-11-04T04:00:00Z","breached":true,"at_risk":false,"cycles":1},'
        b'"resolution":{"status":"stopped","calendar":"24x7","target_seconds":null,'
        b'"elapsed_seconds":57600,"due_at":null,"breached":false,"at_risk":false,"cycles":1}},'
        b'"escalation":{"level":3,"reasons":[{"level":1,"at":"2026-11-04T04:00:01Z",'
        b'"cause":"response_breached","entitled":true},{"level":3,"at":"2026-11-04T18:00:00Z",'
        b'"cause":"requested_by_agent","entitled":true}]},"billing":{"rule":"uncovered_p1",'
        b'"status":"billable","billable_seconds":6000,"amount_cents":20833,"month":"2026-11"},'
        b'"flags":[],"contract":"default","policy_version":"default-2026.1",'
        b'"policy_digest":"sha256:7f670878dd1b25a0447f7b4ca9997d09f6092ce636e9f2c422d8b4900e8b728e"}'
    ),
    "new_install_closed": (
        b'{"ticket_id":"NI-7","customer_id":"bolt","priority":"high","category":"new_install",'
        b'"state":"closed","status":"open","opened_at":"2026-11-02T15:00:00Z",'
        b'"clocks":{"response":{"status":"stopped","calendar":"business","target_seconds":7200,'
        b'"elapsed_seconds":93600,"due_at":"2026-11-03T16:00:00Z","breached":true,'
        b'"at_risk":false,"cycles":2},"resolution":{"status":"stopped","calendar":"business",'
        b'"target_seconds":null,"elapsed_seconds":90000,"due_at":null,"breached":false,'
        b'"at_risk":false,"cycles":2}},"escalation":{"level":1,"reasons":[{"level":1,'
        b'"at":"2026-11-03T16:00:01Z","cause":"response_breached","entitled":true}]},'
        b'"billing":{"rule":"new_install","status":"billable","billable_seconds":9900,'
        b'"amount_cents":34375,"month":"2026-11"},"flags":["short_install_notice"],'
        b'"contract":"default","policy_version":"default-2026.1",'
        b'"policy_digest":"sha256:7f670878dd1b25a0447f7b4ca9997d09f6092ce636e9f2c422d8b4900e8b728e"}'
    ),
    "not_entitled": (
        b'{"ticket_id":"TPD-3","customer_id":"bolt","priority":"medium","category":"service",'
        b'"state":"open","status":"open","opened_at":"2026-11-02T14:00:00Z",'
        b'"clocks":{"response":{"status":"running","calendar":"business",'
        b'"target_seconds":14400,"elapsed_seconds":68400,"due_at":"2026-11-02T18:00:00Z",'
        b'"breached":true,"at_risk":false,"cycles":1},"resolution":{"status":"running",'
        b'"calendar":"business","target_seconds":28800,"elapsed_seconds":68400,'
        b'"due_at":"2026-11-02T22:00:00Z","breached":true,"at_risk":false,"cycles":1}},'
        b'"escalation":{"level":0,"reasons":[{"level":2,"at":"2026-11-02T17:00:00Z",'
        b'"cause":"requested_by_customer","entitled":false}]},"billing":{"rule":null,'
        b'"status":"none","billable_seconds":0,"amount_cents":0,"month":null},'
        b'"flags":["escalation_not_entitled"],"contract":"default","policy_version":"default-2026.1",'
        b'"policy_digest":"sha256:7f670878dd1b25a0447f7b4ca9997d09f6092ce636e9f2c422d8b4900e8b728e"}'
    ),
    "suspended": (
        b'{"ticket_id":"NS-9","customer_id":"cust-9","priority":"low","category":"non_service",'
        b'"state":"open","status":"open","opened_at":"2026-11-02T14:00:00Z",'
        b'"clocks":{"response":{"status":"paused","calendar":"business","target_seconds":28800,'
        b'"elapsed_seconds":7200,"due_at":null,"breached":false,"at_risk":false,"cycles":1},'
        b'"resolution":{"status":"paused","calendar":"business","target_seconds":172800,'
        b'"elapsed_seconds":7200,"due_at":null,"breached":false,"at_risk":false,"cycles":1}},'
        b'"escalation":{"level":0,"reasons":[]},"billing":{"rule":null,"status":"none",'
        b'"billable_seconds":0,"amount_cents":0,"month":null},"flags":["suspended"],'
        b'"contract":"default","policy_version":"default-2026.1",'
        b'"policy_digest":"sha256:7f670878dd1b25a0447f7b4ca9997d09f6092ce636e9f2c422d8b4900e8b728e"}'
    ),
    "unicode": (
        b'{"ticket_id":"T\xc3\xaf-\xc3\xbc\xe2\x82\xac \\"\xf0\x9f\x98\x80\\"",'
        b'"customer_id":"\xc3\xa7a/\xc3\x9f","priority":"high","category":"service",'
        b'"state":"open","status":"wartet auf K\xc3\xbcnd\xc3\xa9 \\\\ \xc2\xabtab\xc2\xbb",'
        b'"opened_at":"2026-11-02T14:00:00Z","clocks":{"response":{"status":"running",'
        b'"calendar":"business","target_seconds":7200,"elapsed_seconds":3600,'
        b'"due_at":"2026-11-02T16:00:00Z","breached":false,"at_risk":false,"cycles":1},'
        b'"resolution":{"status":"running","calendar":"business","target_seconds":null,'
        b'"elapsed_seconds":3600,"due_at":null,"breached":false,"at_risk":false,"cycles":1}},'
        b'"escalation":{"level":0,"reasons":[]},"billing":{"rule":null,"status":"none",'
        b'"billable_seconds":0,"amount_cents":0,"month":null},"flags":[],'
        b'"contract":"default","policy_version":"default-2026.1",'
        b'"policy_digest":"sha256:7f670878dd1b25a0447f7b4ca9997d09f6092ce636e9f2c422d8b4900e8b728e"}'
    ),
}

REPLAY_UNCOVERED_P1 = (
    b'{"as_of":"2026-11-05T17:00:00Z","policy_version":"default-2026.1",'
    b'"tickets":[{"ticket_id":"P1-NIGHT","customer_id":"acme","priority":"urgent",'
    b'"category":"service","state":"resolved","status":"in_progress",'
    b'"opened_at":"2026-11-04T03:00:00Z","clocks":{"response":{"status":"stopped",'
    b'"calendar":"24x7","target_seconds":3600,"elapsed_seconds":4500,'
    b'"due_at":"2026-11-04T04:00:00Z","breached":true,"at_risk":false,"cycles":1},'
    b'"resolution":{"status":"stopped","calendar":"24x7","target_seconds":null,'
    b'"elapsed_seconds":57600,"due_at":null,"breached":false,"at_risk":false,"cycles":1}},'
    b'"escalation":{"level":3,"reasons":[{"level":1,"at":"2026-11-04T04:00:01Z",'
    b'"cause":"response_breached","entitled":true},{"level":3,"at":"2026-11-04T18:00:00Z",'
    b'"cause":"requested_by_agent","entitled":true}]},"billing":{"rule":"uncovered_p1",'
    b'"status":"billable","billable_seconds":6000,"amount_cents":20833,"month":"2026-11"},'
    b'"flags":[],"contract":"default","policy_version":"default-2026.1",'
    b'"policy_digest":"sha256:7f670878dd1b25a0447f7b4ca9997d09f6092ce636e9f2c422d8b4900e8b728e"}],'
    b'"customers":[{"customer_id":"acme","delinquent":false,"dashboard_suspended":false,'
    b'"billing":{"2026-11":{"amount_cents":20833,"billable_seconds":6000}}}],"rejected":0}'
)

QUARANTINED = (
    b'{"ticket_id":"P1-NIGHT","customer_id":"acme","state":"quarantined",'
    b'"quarantine":{"error":"RuntimeError: bad\\n\\tline \x7f \\"\xc3\xbc\\"",'
    b'"event_id":"e-8","event_type":"ticket.resolved"},"contract":"default","policy_version":"default-2026.1",'
    b'"policy_digest":"sha256:7f670878dd1b25a0447f7b4ca9997d09f6092ce636e9f2c422d8b4900e8b728e"}'
)

QUARANTINED_BEFORE_ANY_EVENT = (
    b'{"ticket_id":"P1-NIGHT","customer_id":"acme","state":"quarantined",'
    b'"quarantine":{"error":"KeyError","event_id":null,"event_type":null},'
    b'"contract":"default","policy_version":"default-2026.1",'
    b'"policy_digest":"sha256:7f670878dd1b25a0447f7b4ca9997d09f6092ce636e9f2c422d8b4900e8b728e"}'
)

PENDING = b'{"ticket_id":"P1-NIGHT","customer_id":"acme","state":"pending","opens_at":"2026-11-04T03:00:00Z"}'

PENDING_WITHOUT_OPENED = b'{"ticket_id":"ORPHAN","customer_id":"acme","state":"pending","opens_at":null}'


# -- the tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VIEWS))
def test_a_typed_view_encodes_to_the_bytes_the_dict_view_gave(name):
    view = state_of(name).view()
    assert view.encode() == VIEWS[name]
    assert orjson.dumps(view.document()) == VIEWS[name]  # the JSON document replay and explain print
    assert TicketView.model_validate_json(VIEWS[name]) == view  # a stored view reads back the same


@pytest.mark.parametrize("name", sorted(VIEWS))
def test_replay_prints_each_view_as_it_did(name):
    s, _, as_of = STORIES[name]
    [ticket] = s.replay(as_of)["tickets"]
    assert orjson.dumps(ticket) == VIEWS[name]


def test_a_replay_document_is_the_same_bytes():
    s, _, as_of = STORIES["uncovered_p1"]
    assert orjson.dumps(s.replay(as_of)) == REPLAY_UNCOVERED_P1


def test_a_quarantined_view_is_the_same_bytes():
    s, ticket, as_of = STORIES["uncovered_p1"]
    mine = [r for r in s.records if getattr(r.event, "ticket_id", None) == ticket]
    error = RuntimeError('bad\n\tline \x7f "ü"')
    assert quarantined_view((s.customer_id, ticket), mine, as_of, error, s.policy).encode() == QUARANTINED
    early = quarantined_view((s.customer_id, ticket), mine, ny("2026-11-01 00:00"), KeyError(), s.policy)
    assert early.encode() == QUARANTINED_BEFORE_ANY_EVENT


def test_the_pending_placeholder_is_the_same_bytes():
    pending = PendingView(
        ticket_id="P1-NIGHT", customer_id="acme", state="pending", opens_at="2026-11-04T03:00:00Z"
    )
    assert pending.encode() == PENDING
    orphan = PendingView(ticket_id="ORPHAN", customer_id="acme", state="pending", opens_at=None)
    assert orphan.encode() == PENDING_WITHOUT_OPENED


@pytest.mark.parametrize(
    ("stored", "kind"),
    [
        *((VIEWS[name], TicketView) for name in sorted(VIEWS)),
        (QUARANTINED, QuarantinedView),
        (QUARANTINED_BEFORE_ANY_EVENT, QuarantinedView),
        (PENDING, PendingView),
        (PENDING_WITHOUT_OPENED, PendingView),
    ],
)
def test_every_stored_view_is_one_of_the_documented_kinds(stored, kind):
    """What the API documents a row's view as (StoredTicketView) reads each stored view back."""
    view = TypeAdapter(StoredTicketView).validate_json(stored)
    assert type(view) is kind
    assert view.encode() == stored
