"""The checked-in JSON Schemas (docs/schemas/) match the models and mean what they say."""

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from events import EVENT_TYPES
from services.cli import schema_drift
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
