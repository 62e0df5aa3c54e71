"""`slatrack replay` and `explain` with contracts (the policy lines of an export): with no version
the document is the one policy's byte for byte, whether that policy is the base or an override
(``--policy``); with versions, a ticket dispatched after an amendment is measured by it."""

import orjson
import pytest

from events import decode_event
from events.policies import decode_policy_event
from projections.contracts import Contracts, version_of
from projections.explain import explain
from projections.policy import default_policy, parse_policy
from projections.replay import replay
from projections.timeline import Recorded
from services.dev.simulator import Helpdesk
from services.worker.histories import split_history
from tests.samples import policy_sample, policy_text

TRIAL = parse_policy(policy_text("trial-2026.3", urgent_response="3h"))


@pytest.fixture(scope="module")
def records() -> list[Recorded]:
    events = list(Helpdesk(seed=4, customers=6, days=6).history(40))
    return [Recorded(n, decode_event(orjson.dumps(e))) for n, e in enumerate(events, start=1)]


def dumped(document) -> bytes:
    return orjson.dumps(document, option=orjson.OPT_INDENT_2)


@pytest.mark.parametrize("extra", [{}, {"signals": True}, {"breaches": True}])
def test_an_override_without_versions_is_the_one_policy_byte_for_byte(records, extra):
    alone = replay(records, TRIAL, **extra)
    assert dumped(replay(records, Contracts(default_policy(), override=TRIAL), **extra)) == dumped(alone)
    assert alone["policy_version"] == "trial-2026.3" and "policies" not in alone
    assert dumped(replay(records, Contracts(default_policy()), **extra)) == dumped(
        replay(records, default_policy(), **extra)
    )


def test_explain_takes_contracts_as_replay_does(records):
    ticket = next(r.event.ticket_id for r in records if r.event.type == "ticket.opened")
    mine, account = split_history(records, ticket)
    at = max(r.at for r in records)
    assert explain(mine, account, Contracts(default_policy(), override=TRIAL), at) == explain(
        mine, account, TRIAL, at
    )
    amended = version_of(
        decode_policy_event(orjson.dumps(policy_sample(effective_from="2000-01-01T00:00:00Z"))), 1
    )
    document = explain(mine, account, Contracts(default_policy(), [amended]), at)
    assert document is not None
    assert document["policy_version"] == "amended-2026.2" and document["view"]["contract"] == "default"


def test_a_ticket_dispatched_after_an_amendment_is_measured_by_it(records):
    opened = sorted(r.at for r in records if r.event.type == "ticket.opened")
    cut = opened[len(opened) // 2]
    raw = orjson.dumps(policy_sample(effective_from=cut.strftime("%Y-%m-%dT%H:%M:%SZ")))
    amended = version_of(decode_policy_event(raw), 1)
    document = replay(records, Contracts(default_policy(), [amended]))
    dispatched = {
        (r.event.customer_id, r.event.ticket_id): r.at for r in records if r.event.type == "ticket.opened"
    }
    for view in document["tickets"]:
        after = dispatched[(view["customer_id"], view["ticket_id"])] >= cut
        assert view["policy_version"] == ("amended-2026.2" if after else "default-2026.1")
        assert view["contract"] == "default"
    assert [p["policy_version"] for p in document["policies"]] == ["amended-2026.2"]
    assert document["policies_digest"].startswith("sha256:")
    # An override measures every ticket, whatever the versions; the document still lists them.
    overridden = replay(records, Contracts(default_policy(), [amended], override=TRIAL))
    assert {v["policy_version"] for v in overridden["tickets"]} == {"trial-2026.3"}
    assert overridden["policy_version"] == "trial-2026.3"
    assert overridden["policies"] == document["policies"]
    assert overridden["policies_digest"] != document["policies_digest"]
