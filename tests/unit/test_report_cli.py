"""`slatrack report --events FILE`: the monthly report from an exported log, as the API computes it."""

from datetime import UTC, datetime

import orjson
import pytest
from click.testing import CliRunner

from events.policies import encode_policy_event
from projections.contracts import Contracts, version_of
from projections.policy import default_policy
from projections.report import monthly_report
from projections.report_render import render
from services.cli.commands import main
from tests.unit.test_report import november, premium_version

ENV = {"SLATRACK_POLICY_FILE": None, "SLATRACK_DATABASE_URL": None}


def run(*args: str):
    return CliRunner().invoke(main, list(args), env=ENV, catch_exceptions=False)


@pytest.fixture
def log_file(tmp_path):
    """The story as `slatrack export --customer` would write it: a policy event first (an export
    starts with them), then the events, one a line, in recording order."""
    story = november()
    path = tmp_path / "log.jsonl"
    lines = [encode_policy_event(premium_version("2026-11-16T05:00:00Z").event)]
    lines += [orjson.dumps(event) for event in story.dicts]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return story, path


@pytest.mark.parametrize("form", ["json", "csv", "html"])
def test_report_from_an_exported_log(log_file, form):
    story, path = log_file
    args = ["report", "--events", str(path), "--customer", "acme", "--month", "2026-11", "--format", form]
    result = run(*args)
    assert result.exit_code == 0, result.output
    # The same bytes as the pure report of the same events (numbered otherwise: by line), measured
    # with the file's policy event (at line 1: its position).
    contracts = Contracts(default_policy(), [version_of(premium_version("2026-11-16T05:00:00Z").event, 1)])
    expected = monthly_report(story.records, contracts, "acme", "2026-11", datetime.now(UTC))
    assert result.stdout_bytes == render(expected, form)
    assert run(*args).stdout_bytes == result.stdout_bytes  # and again
    assert result.stderr == ""
    if form == "csv":
        assert result.stdout_bytes.count(b"\r\n") == result.stdout_bytes.count(b"\n")
    if form == "json":
        document = orjson.loads(result.stdout_bytes)
        assert document["billing"]["total_cents"] == 43_750 and document["complete"] is True
        assert (
            document["reproduce"]["report"]
            == "slatrack report --events log.jsonl --customer acme --month 2026-11"
        )


def test_the_json_is_the_default_and_the_month_is_checked(log_file):
    _, path = log_file
    default = run("report", "--events", str(path), "--customer", "acme", "--month", "2026-11")
    assert default.exit_code == 0 and orjson.loads(default.stdout_bytes)["month"] == "2026-11"
    for month in ("2026-13", "2026-1", "1969-12", "november"):
        result = CliRunner().invoke(
            main, ["report", "--events", str(path), "--customer", "acme", "--month", month], env=ENV
        )
        assert result.exit_code == 2, (month, result.output)
        assert "--month" in result.stderr


def test_an_unknown_customer_is_an_error(log_file):
    _, path = log_file
    result = CliRunner().invoke(
        main, ["report", "--events", str(path), "--customer", "nobody", "--month", "2026-11"], env=ENV
    )
    assert result.exit_code == 1
    assert f"unknown customer 'nobody': no event of it in {path}" in result.stderr
    assert result.stdout_bytes == b""


def test_a_policy_file_measures_the_default_contract(log_file, tmp_path):
    _, path = log_file
    text = default_policy().text
    assert text is not None
    other = tmp_path / "other.toml"
    other.write_text(text.replace('version = "default-2026.1"', 'version = "other-1"'))
    result = run(
        "report", "--events", str(path), "--customer", "acme", "--month", "2026-11", "--policy", str(other)
    )
    assert result.exit_code == 0, result.output
    document = orjson.loads(result.stdout_bytes)
    assert [v["policy_version"] for v in document["contract_versions"]] == ["other-1"]
