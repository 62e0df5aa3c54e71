"""`slatrack policy publish`: what it checks before it sends anything (no broker: the sending is
replaced by a recorder), and what it prints."""

from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

import services.cli.commands as commands
from events.policies import PolicyVersionPublished
from projections.policy import parse_policy
from projections.timeline import whole_second
from services.cli.commands import main
from tests.samples import policy_text


@pytest.fixture
def sent(monkeypatch) -> list[PolicyVersionPublished]:
    """What publish would send (it sends nothing: offset 7 each time)."""
    events: list[PolicyVersionPublished] = []

    async def recorded(settings, event):
        events.append(event)
        return 7

    monkeypatch.setattr(commands, "_publish_policy", recorded)
    monkeypatch.delenv("SLATRACK_TOPIC_POLICIES", raising=False)
    return events


@pytest.fixture
def policy_file(tmp_path):
    path = tmp_path / "gold.toml"
    path.write_text(policy_text("gold-2027.1"), encoding="utf-8")
    return path


def publish(*args: str):
    return CliRunner().invoke(main, ["policy", "publish", *args], catch_exceptions=False)


def z(instant: datetime) -> str:
    return instant.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_publish_builds_the_event_and_says_what_it_published(sent, policy_file):
    before = whole_second(datetime.now(UTC))
    result = publish(str(policy_file), "--contract", "gold", "--effective-from", "now")
    assert result.exit_code == 0, result.output
    [event] = sent
    policy = parse_policy(policy_file.read_text())
    assert event.contract == "gold" and event.policy == policy_file.read_text()
    assert event.digest == policy.digest and event.policy_version == "gold-2027.1"
    assert event.occurred_at == event.effective_from and event.effective_from >= before
    assert not event.retroactive and len(event.event_id) == 36  # a uuid4
    assert result.stdout == (
        f"published contract gold version gold-2027.1 ({policy.digest}), effective from "
        f"{z(event.effective_from)}, to policy-versions at offset 7\n"
    )
    future = z(datetime.now(UTC) + timedelta(days=30))
    assert publish(str(policy_file), "--contract", "gold", "--effective-from", future).exit_code == 0
    assert z(sent[1].effective_from) == future


def test_an_instant_before_now_needs_retroactive(sent, policy_file):
    past = "2026-01-01T00:00:00Z"
    refused = publish(str(policy_file), "--contract", "gold", "--effective-from", past)
    assert refused.exit_code == 2 and sent == []
    [line] = refused.stderr.splitlines()
    assert line.startswith("Error: --effective-from 2026-01-01T00:00:00Z is before now (")
    assert line.endswith(
        "it would rewrite history: tickets dispatched since then under this contract are recomputed; "
        "pass --retroactive to do so"
    )
    accepted = publish(str(policy_file), "--contract", "gold", "--effective-from", past, "--retroactive")
    assert accepted.exit_code == 0, accepted.output
    assert sent[0].retroactive and z(sent[0].effective_from) == past
    assert "(retroactive)" in accepted.stdout


def test_retroactive_with_a_future_instant_is_refused(sent, policy_file):
    future = z(datetime.now(UTC) + timedelta(days=1))
    result = publish(str(policy_file), "--contract", "gold", "--effective-from", future, "--retroactive")
    assert result.exit_code == 2 and sent == []
    assert "--retroactive is for an effective instant in the past" in result.stderr


def test_a_bad_file_name_or_instant_is_one_line_and_nothing_is_sent(sent, policy_file, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('version = "x"\nsurprise = 1\n')
    result = publish(str(bad), "--contract", "gold", "--effective-from", "now")
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"Error: {bad}: invalid policy: ") and "surprise: unknown key" in line
    named = publish(str(policy_file), "--contract", "-gold", "--effective-from", "now")
    assert named.exit_code == 2 and "'-gold' is not a contract name" in named.stderr
    timed = publish(str(policy_file), "--contract", "gold", "--effective-from", "2027-01-01T00:00:00")
    assert timed.exit_code == 2 and "--effective-from" in timed.stderr
    missing = publish(str(policy_file), "--contract", "gold")
    assert missing.exit_code == 2 and "--effective-from" in missing.stderr
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe")
    unreadable = publish(str(binary), "--contract", "gold", "--effective-from", "now")
    assert unreadable.exit_code == 2 and "cannot read the file" in unreadable.stderr
    assert sent == []


def test_show_checks_the_name_and_the_instant():
    assert CliRunner().invoke(main, ["policy", "show", "no/such"]).exit_code == 2
    result = CliRunner().invoke(main, ["policy", "show", "gold", "--at", "yesterday"])
    assert result.exit_code == 2 and "--at" in result.stderr
