"""JSON Schema of the contract, for upstream publishers and signal consumers (``docs/schemas/``).

``slatrack schema`` writes these texts to files; a test fails when the
checked-in files and the models drift apart. The events slatrack reads are at
the top (``<type>.json``, ``event.json``); the SLA signals it sends are under
``signals/`` (``signals/<type>.json``, ``signals/signal.json``).
"""

import json
from typing import Any

from events.models import EVENT_ADAPTER, EVENT_MODELS, SCHEMA_VERSION
from events.policies import POLICY_EVENT_TYPE, PolicyVersionPublished
from events.signals import SIGNAL_ADAPTER, SIGNAL_MODELS

DIALECT = "https://json-schema.org/draft/2020-12/schema"
SIGNALS_DIR = "signals"
POLICIES_DIR = "policies"


def schema_documents() -> dict[str, dict[str, Any]]:
    """Every schema, keyed by its path under ``docs/schemas/`` (``/``-separated).

    One per event type and ``event.json`` for any event; one per signal type
    and ``signals/signal.json`` for any signal.
    """
    documents: dict[str, dict[str, Any]] = {}
    for event_type, model in EVENT_MODELS.items():
        schema = model.model_json_schema()
        schema["title"] = f"{event_type} (schema version {SCHEMA_VERSION})"
        documents[f"{event_type}.json"] = {"$schema": DIALECT, **schema}
    union = EVENT_ADAPTER.json_schema()
    union["title"] = f"slatrack event (schema version {SCHEMA_VERSION})"
    documents["event.json"] = {"$schema": DIALECT, **union}
    documents.update(signal_schema_documents())
    policy = PolicyVersionPublished.model_json_schema()
    policy["title"] = f"{POLICY_EVENT_TYPE} (the policy topic, schema version {SCHEMA_VERSION})"
    documents[f"{POLICIES_DIR}/{POLICY_EVENT_TYPE}.json"] = {"$schema": DIALECT, **policy}
    return documents


def signal_schema_documents() -> dict[str, dict[str, Any]]:
    """The schemas of the SLA signals on ``sla-signals``, keyed by ``signals/<file name>``."""
    documents: dict[str, dict[str, Any]] = {}
    for signal_type, model in SIGNAL_MODELS.items():
        schema = model.model_json_schema()
        schema["title"] = f"{signal_type} (SLA signal)"
        documents[f"{SIGNALS_DIR}/{signal_type}.json"] = {"$schema": DIALECT, **schema}
    union = SIGNAL_ADAPTER.json_schema()
    union["title"] = "slatrack SLA signal"
    union["description"] = "Any message value of sla-signals: one of the signal types, by `type`."
    documents[f"{SIGNALS_DIR}/signal.json"] = {"$schema": DIALECT, **union}
    return documents


def render(schema: dict[str, Any]) -> str:
    """Stable text for a schema file: sorted keys, two-space indent, final newline."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
