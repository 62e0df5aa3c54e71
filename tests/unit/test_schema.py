"""The checked-in JSON Schemas (docs/schemas/) match the models and mean what they say."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from jsonschema import Draft202012Validator

from events import EVENT_TYPES
from events.schema import render, schema_documents
from events.signals import SIGNAL_TYPES
from services.cli.commands import main, schema_drift
from tests.samples import sample

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"


def test_checked_in_schemas_match_the_models():
    assert schema_drift(SCHEMAS) == [], "run `slatrack schema` and commit docs/schemas/"


def test_drift_is_detected(tmp_path):
    for name in ("ticket.opened.json", "event.json"):
        (tmp_path / name).write_text((SCHEMAS / name).read_text().replace('"low"', '"lowest"'))
    (tmp_path / "ticket.merged.json").write_text("{}")
    drift = schema_drift(tmp_path)
    assert "ticket.opened.json" in drift and "event.json" in drift and "ticket.merged.json" in drift
    assert "ticket.closed.json" in drift  # missing


def load(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / name).read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_samples_validate_against_their_schema(event_type):
    load(f"{event_type}.json").validate(sample(event_type))
    load("event.json").validate(sample(event_type))


@pytest.mark.parametrize(
    "change",
    [
        {"occurred_at": "2026-10-30T15:30:00"},
        {"schema_version": 2},
        {"unknown": 1},
        {"customer_id": ""},
    ],
)
def test_schema_rejects_what_the_models_reject(change):
    assert not load("ticket.opened.json").is_valid({**sample("ticket.opened"), **change})


# --- the SLA signals (docs/schemas/signals/) ---------------------------------------------


def test_the_signal_schemas_are_generated_under_signals():
    names = {name for name in schema_documents() if name.startswith("signals/")}
    assert names == {f"signals/{t}.json" for t in SIGNAL_TYPES} | {"signals/signal.json"}
    assert (SCHEMAS / "signals" / "signal.json").is_file()


def test_schema_writes_and_checks_the_signal_schemas(tmp_path):
    out = tmp_path / "schemas"
    result = CliRunner().invoke(main, ["schema", "--out", str(out)])
    assert result.exit_code == 0, result.output
    for name, document in schema_documents().items():
        assert (out / name).read_text(encoding="utf-8") == render(document)
    assert CliRunner().invoke(main, ["schema", "--out", str(out), "--check"]).exit_code == 0
    (out / "signals" / "sla.breached.json").unlink()
    (out / "signals" / "sla.merged.json").write_text("{}")
    checked = CliRunner().invoke(main, ["schema", "--out", str(out), "--check"])
    assert checked.exit_code == 1
    assert "signals/sla.breached.json" in checked.output and "signals/sla.merged.json" in checked.output
    # Writing again restores the missing file and removes the stray one.
    assert CliRunner().invoke(main, ["schema", "--out", str(out)]).exit_code == 0
    assert schema_drift(out) == []
    assert not (out / "signals" / "sla.merged.json").exists()


def test_signal_drift_is_detected(tmp_path):
    for name in schema_documents():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes((SCHEMAS / name).read_bytes())
    assert schema_drift(tmp_path) == []
    warning = tmp_path / "signals" / "sla.warning.json"
    warning.write_text(warning.read_text().replace('"urgent"', '"critical"'))
    (tmp_path / "signals" / "signal.json").unlink()
    (tmp_path / "signals" / "sla.unknown.json").write_text("{}")
    assert schema_drift(tmp_path) == [
        "signals/signal.json",
        "signals/sla.unknown.json",
        "signals/sla.warning.json",
    ]
