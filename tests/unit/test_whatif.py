"""What-if (`projections.compare`, `slatrack replay --compare`): what a policy change changes."""

from importlib import resources

import orjson
import pytest
from click.testing import CliRunner, Result

from projections.compare import compare
from projections.policy import default_policy, parse_policy
from projections.replay import replay
from services.cli.commands import main
from tests.engine_helpers import Story, ny

DEFAULT_TEXT = resources.files("projections").joinpath("default_policy.toml").read_text(encoding="utf-8")
# Urgent tickets get 2 h to respond instead of 1 h, and an hour costs 150.00 instead of 125.00.
TRIAL_TEXT = (
    DEFAULT_TEXT.replace('version = "default-2026.1"', 'version = "trial-2026.2"')
    .replace(
        'response = { target = "1h", calendar = "24x7" }', 'response = { target = "2h", calendar = "24x7" }'
    )
    .replace("rate_cents_per_hour = 12500", "rate_cents_per_hour = 15000")
)
AS_OF = ny("2026-11-09 12:00")


def history() -> Story:
    s = Story("U-1", "acme")
    # acme: urgent, Saturday 10:00 (uncovered P1), answered after 1 h 30: breached at 1 h, not at 2 h.
    s.opened(ny("2026-11-07 10:00"), "urgent")
    s.fault(ny("2026-11-07 10:10"), "customer")
    s.work(ny("2026-11-07 10:00"), ny("2026-11-07 12:00"))  # 7,200 s after hours
    s.responded(ny("2026-11-07 11:30"))
    # beta: urgent, answered after 2 h 30: breached either way, one hour later with 2 h; no fault yet.
    s.opened(ny("2026-11-07 10:00"), "urgent", ticket_id="U-2", customer_id="beta")
    s.responded(ny("2026-11-07 12:30"), ticket_id="U-2", customer_id="beta")
    # gamma: a medium ticket answered in time: nothing changes.
    s.opened(ny("2026-11-09 09:00"), "medium", ticket_id="M-1", customer_id="gamma")
    s.responded(ny("2026-11-09 09:30"), ticket_id="M-1", customer_id="gamma")
    return s


def what_if(old_text: str, new_text: str) -> dict:
    records = history().records
    old, new = parse_policy(old_text), parse_policy(new_text)
    return compare(replay(records, old, AS_OF, breaches=True), replay(records, new, AS_OF, breaches=True))


def test_a_known_breach_disappears_and_amounts_change_by_exact_cents():
    document = what_if(DEFAULT_TEXT, TRIAL_TEXT)
    assert document == {
        "as_of": "2026-11-09T17:00:00Z",
        "old_policy_version": "default-2026.1",
        "new_policy_version": "trial-2026.2",
        "summary": "customers affected: 2; breaches changed: 2; ticket charges changed: 1; "
        "amounts: +5000 cents in all",
        "customers": [
            {
                "customer_id": "acme",
                "breaches": [
                    {
                        "ticket_id": "U-1",
                        "clock": "response",
                        "cycle": 1,
                        "change": "removed",
                        "old_at": "2026-11-07T16:00:01Z",  # 10:00 EST + 1 h + 1 s
                        "new_at": None,
                    }
                ],
                "tickets": [
                    {
                        "ticket_id": "U-1",
                        "month": "2026-11",
                        "old": {
                            "rule": "uncovered_p1",
                            "status": "billable",
                            "billable_seconds": 7200,
                            "amount_cents": 25000,
                        },
                        "new": {
                            "rule": "uncovered_p1",
                            "status": "billable",
                            "billable_seconds": 7200,
                            "amount_cents": 30000,  # 2 h at 150.00
                        },
                        "delta_cents": 5000,
                    }
                ],
                "months": [
                    {
                        "month": "2026-11",
                        "old": {"amount_cents": 25000, "billable_seconds": 7200},
                        "new": {"amount_cents": 30000, "billable_seconds": 7200},
                        "delta_cents": 5000,
                    }
                ],
            },
            {
                "customer_id": "beta",
                "breaches": [
                    {
                        "ticket_id": "U-2",
                        "clock": "response",
                        "cycle": 1,
                        "change": "moved",
                        "old_at": "2026-11-07T16:00:01Z",
                        "new_at": "2026-11-07T17:00:01Z",
                    }
                ],
                "tickets": [],  # pending review: 0 under both policies
                "months": [],
            },
        ],
    }


def test_no_differences():
    same = what_if(DEFAULT_TEXT, DEFAULT_TEXT)
    assert (same["summary"], same["customers"]) == ("no differences", [])
    # A change that touches nothing in this history: still none, though the versions differ.
    relabelled = what_if(DEFAULT_TEXT, DEFAULT_TEXT.replace('"default-2026.1"', '"relabelled"'))
    assert (relabelled["summary"], relabelled["new_policy_version"]) == ("no differences", "relabelled")


def test_breaches_per_cycle_and_the_fallback_without_them():
    records = history().records
    plain = replay(records, default_policy(), AS_OF)
    assert "breaches" not in plain  # the replay document is unchanged unless asked
    detailed = replay(records, default_policy(), AS_OF, breaches=True)
    assert {k: v for k, v in detailed.items() if k != "breaches"} == plain
    assert detailed["breaches"] == [
        {
            "ticket_id": "U-1",
            "customer_id": "acme",
            "clock": "response",
            "cycle": 1,
            "at": "2026-11-07T16:00:01Z",
        },
        {
            "ticket_id": "U-2",
            "customer_id": "beta",
            "clock": "response",
            "cycle": 1,
            "at": "2026-11-07T16:00:01Z",
        },
    ]
    # Plain documents: per clock only, and a moved breach is not visible.
    fallback = compare(plain, replay(records, parse_policy(TRIAL_TEXT), AS_OF))
    assert [(b["ticket_id"], b["cycle"], b["change"]) for b in fallback["customers"][0]["breaches"]] == [
        ("U-1", None, "removed")
    ]
    assert [c["customer_id"] for c in fallback["customers"]] == ["acme"]  # beta's move is not seen


def test_different_instants_are_refused():
    records = history().records
    with pytest.raises(ValueError, match="different instants"):
        compare(
            replay(records, default_policy(), AS_OF),
            replay(records, default_policy(), ny("2026-11-09 13:00")),
        )


@pytest.fixture
def files(tmp_path):
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(orjson.dumps(d) for d in history().dicts) + b"\n")
    old, new = tmp_path / "old.toml", tmp_path / "new.toml"
    old.write_text(DEFAULT_TEXT)
    new.write_text(TRIAL_TEXT)
    return events, old, new


def run(*args) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_cli_json_and_table(files):
    events, old, new = files
    result = run(
        "replay",
        "--events",
        events,
        "--policy",
        new,
        "--compare",
        old,
        "--as-of",
        "2026-11-09T12:00:00-05:00",
    )
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout) == what_if(DEFAULT_TEXT, TRIAL_TEXT)

    table = run("replay", "--events", events, "--policy", new, "--compare", old, "--format", "table")
    assert table.exit_code == 0
    lines = table.stdout.splitlines()
    assert lines[0].endswith("policy default-2026.1 -> trial-2026.2")
    assert "  breach  U-1 response cycle 1: removed (2026-11-07T16:00:01Z -> -)" in lines
    assert "  breach  U-2 response cycle 1: moved (2026-11-07T16:00:01Z -> 2026-11-07T17:00:01Z)" in lines
    assert (
        "  ticket  U-1 2026-11: 25000 -> 30000 cents (+5000), 7200 -> 7200 s, billable -> billable" in lines
    )
    assert "  month   2026-11: 25000 -> 30000 cents (+5000)" in lines
    assert "customer gamma" not in lines


def test_cli_no_differences(files):
    events, old, _ = files
    for output in ("json", "table"):
        result = run("replay", "--events", events, "--compare", old, "--format", output)
        assert result.exit_code == 0
        assert "no differences" in result.stdout
