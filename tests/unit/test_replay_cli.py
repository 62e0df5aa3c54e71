"""`slatrack replay` and `slatrack calendar`: the auditor's and the policy author's tools."""

import random

import orjson
import pytest
from click.testing import CliRunner

from services.cli.commands import main
from services.dev.simulator import Helpdesk


@pytest.fixture(scope="module")
def history_file(tmp_path_factory):
    events = list(Helpdesk(seed=3, customers=20, days=20).history(150))
    path = tmp_path_factory.mktemp("replay") / "events.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(e) for e in events) + b"\n")
    return path, events


def run(*args: str):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result


def test_replay_is_byte_for_byte_deterministic(history_file, tmp_path):
    path, events = history_file
    first = run("replay", "--events", str(path))
    assert first.exit_code == 0, first.output
    assert run("replay", "--events", str(path)).stdout == first.stdout
    document = orjson.loads(first.stdout)
    assert document["rejected"] == 0
    assert len(document["tickets"]) == 150
    assert document["as_of"] == max(orjson.loads(orjson.dumps(e))["occurred_at"] for e in events)

    # The same history shuffled, with duplicates recorded after the originals.
    lines = [orjson.dumps(e) for e in events]
    random.Random(1).shuffle(lines)
    again = lines + random.Random(2).sample(lines, 200)
    shuffled = tmp_path / "shuffled.jsonl"
    shuffled.write_bytes(b"\n".join(again) + b"\n")
    assert run("replay", "--events", str(shuffled)).stdout == first.stdout


def test_replay_reports_rejected_lines_and_goes_on(tmp_path):
    good = {
        "event_id": "e1",
        "type": "ticket.opened",
        "schema_version": 1,
        "customer_id": "c",
        "ticket_id": "T",
        "occurred_at": "2026-11-02T14:00:00Z",
        "data": {"priority": "low"},
    }
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"not json\n" + orjson.dumps(good) + b"\n" + orjson.dumps({**good, "type": "x"}) + b"\n")
    result = run("replay", "--events", str(path), "--as-of", "2026-11-02T15:00:00Z")
    assert result.exit_code == 0
    assert f"{path}:1: invalid_json" in result.stderr
    assert f"{path}:3: unknown_type" in result.stderr
    document = orjson.loads(result.stdout)
    assert document["rejected"] == 2
    assert document["as_of"] == "2026-11-02T15:00:00Z"
    assert document["tickets"][0]["clocks"]["response"]["elapsed_seconds"] == 3600


def test_replay_table_and_policy_errors(history_file, tmp_path):
    path, _ = history_file
    table = run("replay", "--events", str(path), "--format", "table")
    assert table.exit_code == 0
    assert "T-0000000" in table.stdout and "customer" in table.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('version = "x"\nsurprise = 1\n')
    result = run("replay", "--events", str(path), "--policy", str(bad))
    assert result.exit_code == 2  # the user's mistake
    [line] = result.stderr.splitlines()  # one line naming the file and each problem
    assert line.startswith(f"Error: {bad}: invalid policy: ") and "surprise: unknown key" in line
    assert run("replay", "--events", str(path), "--as-of", "2026-11-02T15:00:00").exit_code == 2


def test_calendar_questions():
    between = run("calendar", "between", "2026-10-30T15:30:00-04:00", "2026-11-02T09:45:00-05:00")
    assert orjson.loads(between.stdout) == {"seconds": 8100}
    add = run("calendar", "add", "2026-10-30T15:30:00-04:00", "14400")
    assert orjson.loads(add.stdout) == {"at": "2026-11-02T16:30:00Z"}
    # Landing exactly on a closing time gives the closing time.
    closing = run("calendar", "add", "2026-10-30T15:30:00-04:00", "5400")
    assert orjson.loads(closing.stdout) == {"at": "2026-10-30T21:00:00Z"}
    always = run(
        "calendar", "--calendar", "24x7", "between", "2026-11-01T00:00:00-04:00", "2026-11-02T00:00:00-05:00"
    )
    assert orjson.loads(always.stdout) == {"seconds": 25 * 3600}
    assert run("calendar", "--calendar", "nope", "add", "2026-10-30T15:30:00Z", "1").exit_code == 2


def test_without_policy_lines_the_output_is_the_one_policys_byte_for_byte(history_file, tmp_path):
    """--policy FILE on a file with no policy line: the document of that one policy, as before
    contracts (no "policies" keys, its policy_version)."""
    from events import decode_event
    from projections.policy import default_policy, parse_policy
    from projections.replay import replay
    from projections.timeline import Recorded
    from tests.samples import policy_text

    path, events = history_file
    records = [Recorded(n, decode_event(orjson.dumps(e))) for n, e in enumerate(events, start=1)]
    trial = tmp_path / "trial.toml"
    trial.write_text(policy_text("trial-2026.9", "3h"))
    for args, policy in (([], default_policy()), (["--policy", str(trial)], parse_policy(trial.read_text()))):
        result = run("replay", "--events", str(path), *args)
        assert result.exit_code == 0, result.output
        expected = orjson.dumps(replay(records, policy), option=orjson.OPT_INDENT_2) + b"\n"
        assert result.stdout_bytes == expected
        assert b'"policies"' not in result.stdout_bytes


def test_policy_lines_are_versions_and_bad_ones_are_reported_and_counted(tmp_path):
    """The policy lines of a file (an export writes them first) measure its tickets; a bad one
    is reported with its line and why, counted, and stops nothing; a copy is skipped."""
    from tests.feed import event
    from tests.samples import policy_sample

    good = orjson.dumps(policy_sample(effective_from="2026-11-03T00:00:00Z"))
    bad = orjson.dumps(policy_sample(event_id="pol-2", digest="sha256:" + "1" * 64))
    tickets = [
        event("a-1", "ticket.opened", "2026-11-02T14:00:00Z", "acme", "EARLY", priority="urgent"),
        event("a-2", "ticket.opened", "2026-11-03T14:00:00Z", "acme", "LATE", priority="urgent"),
    ]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join([bad, good, good, *(orjson.dumps(e) for e in tickets)]) + b"\n")
    result = run("replay", "--events", str(path))
    assert result.exit_code == 0, result.output
    [error] = result.stderr.splitlines()
    assert error.startswith(f"{path}:1: invalid_policy: policy event at position 1")
    document = orjson.loads(result.stdout)
    assert document["rejected"] == 1  # the copy on line 3 is a duplicate, not a rejection
    assert [p["position"] for p in document["policies"]] == [2]
    versions = {t["ticket_id"]: t["policy_version"] for t in document["tickets"]}
    assert versions == {"EARLY": "default-2026.1", "LATE": "amended-2026.2"}
