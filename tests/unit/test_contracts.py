"""Contracts and versions (issue 13, docs/sla-semantics.md "Contracts and versions"): which
version measures a ticket, worked by hand."""

from datetime import UTC, datetime

import pytest

from projections.as_of import ticket_at
from projections.contracts import ContractError, Contracts, contract_at, version_of
from projections.policy import default_policy
from projections.replay import replay
from tests.contracts_helpers import amended_text, policy_event, premium_text, published
from tests.engine_helpers import Story, ny

NOV_1 = datetime(2026, 11, 1, tzinfo=UTC)
AMENDED_FROM = ny("2026-11-16 00:00")  # mid-month, New York midnight (05:00Z)


def contracts() -> Contracts:
    return Contracts(
        default_policy(),
        [
            published(premium_text(), "premium", NOV_1, 0),
            published(amended_text(), "default", AMENDED_FROM, 1),
        ],
    )


def views(story: Story, as_of: datetime, source=None) -> dict[str, dict]:
    document = replay(story.records, source or contracts(), as_of)
    return {t["ticket_id"]: t for t in document["tickets"]}


def test_tickets_before_and_after_an_amendment_get_their_versions():
    s = Story(customer_id="acme")
    s.opened(ny("2026-11-13 09:00"), "medium", ticket_id="BEFORE")  # Friday, before the amendment
    s.opened(ny("2026-11-16 09:00"), "medium", ticket_id="AFTER")  # Monday, after it
    found = views(s, ny("2026-11-16 10:00"))
    before, after = found["BEFORE"], found["AFTER"]
    assert (before["contract"], before["policy_version"]) == ("default", "default-2026.1")
    assert (after["contract"], after["policy_version"]) == ("default", "default-2026.2")
    # 4 h under the old version, 2 h under the amendment, business hours 09:00-17:00 New York.
    assert before["clocks"]["response"]["target_seconds"] == 4 * 3600
    assert before["clocks"]["response"]["due_at"] == "2026-11-13T18:00:00Z"  # 13:00 EST
    assert after["clocks"]["response"]["target_seconds"] == 2 * 3600
    assert after["clocks"]["response"]["due_at"] == "2026-11-16T16:00:00Z"  # 11:00 EST


def test_a_customer_on_the_premium_contract_runs_round_the_clock():
    s = Story(customer_id="bolt")
    s.contract(NOV_1, "premium", NOV_1)
    s.opened(ny("2026-11-07 10:00"), "medium", ticket_id="SAT")  # a Saturday
    view = views(s, ny("2026-11-07 11:00"))["SAT"]
    assert (view["contract"], view["policy_version"]) == ("premium", "premium-2026.1")
    response = view["clocks"]["response"]
    # 24x7: one hour elapsed of four, due at 14:00 New York (19:00Z) the same Saturday.
    assert (response["calendar"], response["elapsed_seconds"]) == ("24x7", 3600)
    assert response["due_at"] == "2026-11-07T19:00:00Z"
    # The default contract would not have started counting before Monday 09:00.
    default = views(s, ny("2026-11-07 11:00"), Contracts(default_policy()))["SAT"]
    assert default["clocks"]["response"]["elapsed_seconds"] == 0


def test_a_ticket_open_when_its_customer_changes_contract_stays_on_the_contract_of_its_dispatch():
    s = Story(customer_id="cora")
    s.opened(ny("2026-11-10 09:00"), "medium", ticket_id="OPEN")
    s.contract(ny("2026-11-11 12:00"), "premium", ny("2026-11-11 12:00"))
    s.opened(ny("2026-11-12 09:00"), "medium", ticket_id="NEW")
    found = views(s, ny("2026-11-12 10:00"))
    assert found["OPEN"]["contract"] == "default"
    assert found["NEW"]["contract"] == "premium"


def test_a_backdated_contract_change_moves_the_tickets_dispatched_since_once_it_is_known():
    s = Story(customer_id="dora")
    s.opened(ny("2026-11-10 09:00"), "medium", ticket_id="D1")
    s.contract(ny("2026-11-11 12:00"), "premium", NOV_1)  # signed on the 11th, in force from the 1st
    assert views(s, ny("2026-11-10 12:00"))["D1"]["contract"] == "default"  # not known yet
    assert views(s, ny("2026-11-11 13:00"))["D1"]["contract"] == "premium"


def test_a_contract_without_a_version_in_force_is_measured_by_the_default_and_says_so():
    s = Story(customer_id="eve")
    s.contract(NOV_1, "gold", NOV_1)
    s.opened(ny("2026-11-10 09:00"), "medium", ticket_id="G1")
    view = views(s, ny("2026-11-10 10:00"))["G1"]
    assert view["contract"] == "default" and view["policy_version"] == "default-2026.1"
    assert "contract_without_version" in view["flags"]
    # premium has no version before November: a ticket of October is measured by the default too.
    s2 = Story(customer_id="bolt")
    s2.contract(ny("2026-10-01 00:00"), "premium", ny("2026-10-01 00:00"))
    s2.opened(ny("2026-10-20 09:00"), "medium", ticket_id="OCT")
    assert views(s2, ny("2026-10-20 10:00"))["OCT"]["flags"] == ["contract_without_version"]


def test_of_two_versions_in_force_from_the_same_instant_the_one_published_later_wins():
    later = Contracts(
        default_policy(),
        [published(amended_text(), "default", NOV_1, 0), published(premium_text(), "default", NOV_1, 1)],
    )
    assert later.policy_at("default", NOV_1).version == "premium-2026.1"
    assert later.policy_at("default", ny("2026-10-31 19:59")).version == "default-2026.1"  # the base


def test_the_latest_effective_contract_change_wins_and_one_not_yet_known_does_not_count():
    s = Story(customer_id="x")
    s.contract(ny("2026-11-01 00:00"), "premium", ny("2026-11-05 00:00"))
    s.contract(ny("2026-11-02 00:00"), "gold", ny("2026-11-03 00:00"))
    account = s.records
    assert contract_at(account, ny("2026-11-04 00:00")) == "gold"
    assert contract_at(account, ny("2026-11-06 00:00")) == "premium"
    assert contract_at(account, ny("2026-11-04 00:00"), known_by=ny("2026-11-01 12:00")) == "default"


def test_an_override_measures_every_ticket_and_the_view_still_names_the_contract():
    s = Story(customer_id="bolt")
    s.contract(NOV_1, "premium", NOV_1)
    s.opened(ny("2026-11-07 10:00"), "medium", ticket_id="SAT")
    what_if = Contracts(default_policy(), contracts().versions, override=default_policy())
    view = views(s, ny("2026-11-07 11:00"), what_if)["SAT"]
    assert (view["contract"], view["policy_version"]) == ("premium", "default-2026.1")


def test_a_policy_event_must_hold_a_valid_policy_with_the_digest_it_names():
    good = policy_event(premium_text(), "premium", NOV_1)
    assert version_of(good, 3).policy.contract == "premium"
    with pytest.raises(ContractError, match="digest"):
        version_of(good.model_copy(update={"digest": "sha256:" + "0" * 64}), 3)
    with pytest.raises(ContractError, match="invalid policy"):
        version_of(good.model_copy(update={"policy": "version = 1"}), 3)
    with pytest.raises(ContractError, match="version"):
        version_of(good.model_copy(update={"policy_version": "other"}), 3)


def test_the_replay_document_lists_the_versions_and_their_digest():
    s = Story(customer_id="acme")
    s.opened(ny("2026-11-13 09:00"), "medium", ticket_id="T")
    document = replay(s.records, contracts(), ny("2026-11-13 10:00"))
    assert [p["policy_version"] for p in document["policies"]] == ["premium-2026.1", "default-2026.2"]
    assert document["policies_digest"].startswith("sha256:")
    assert (
        document["policies_digest"]
        != replay(s.records, Contracts(default_policy(), contracts().versions[:1]))["policies_digest"]
    )
    # With no version, the document is what it was before contracts.
    assert "policies" not in replay(s.records, default_policy(), ny("2026-11-13 10:00"))


def test_ticket_at_with_contracts_is_the_replay_view():
    s = Story(customer_id="bolt")
    s.contract(NOV_1, "premium", NOV_1)
    s.opened(ny("2026-11-07 10:00"), "medium", ticket_id="SAT")
    account = [r for r in s.records if r.event.type.startswith("account.")]
    mine = [r for r in s.records if not r.event.type.startswith("account.")]
    state = ticket_at(mine, account, contracts(), ny("2026-11-07 11:00"))
    assert state is not None
    assert state.view().document() == views(s, ny("2026-11-07 11:00"))["SAT"]
