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
