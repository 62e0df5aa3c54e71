"""JSON Schema of the contract, for upstream publishers (``docs/schemas/``).

``slatrack schema`` writes these texts to files; a test fails when the
checked-in files and the models drift apart.
"""

import json
from typing import Any

from events.models import EVENT_ADAPTER, EVENT_MODELS, SCHEMA_VERSION

DIALECT = "https://json-schema.org/draft/2020-12/schema"


def schema_documents() -> dict[str, dict[str, Any]]:
    """Every schema, keyed by its file name: one per event type, and ``event.json`` for any event."""
    documents: dict[str, dict[str, Any]] = {}
    for event_type, model in EVENT_MODELS.items():
        schema = model.model_json_schema()
        schema["title"] = f"{event_type} (schema version {SCHEMA_VERSION})"
        documents[f"{event_type}.json"] = {"$schema": DIALECT, **schema}
    union = EVENT_ADAPTER.json_schema()
    union["title"] = f"slatrack event (schema version {SCHEMA_VERSION})"
    documents["event.json"] = {"$schema": DIALECT, **union}
    return documents


def render(schema: dict[str, Any]) -> str:
    """Stable text for a schema file: sorted keys, two-space indent, final newline."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
