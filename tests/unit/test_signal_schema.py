"""The SLA signal contract (events/signals.py, docs/schemas/signals/) holds what the engine emits.

Tickets that warn, breach, escalate (by threshold and by request), settle a
charge in every status, and lose a breach and a level to a late event or to a
rebuild under another policy are settled with ``projections.signals.settle``
as a worker does, batch by batch; every payload, as the relay sends it, must
validate against its model, its type's JSON Schema and ``signal.json``, and
round-trip through the model unchanged. The schemas reject what the models
reject.
"""

import copy
import functools
import json
import time
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from jsonschema import Draft202012Validator
from pydantic import ValidationError

from events import EVENT_TYPES, RejectKind
from events.policies import POLICY_EVENT_TYPE
from events.signals import SIGNAL_ADAPTER, SIGNAL_MODELS, SIGNAL_TYPES
from projections.policy import Policy, parse_policy
from projections.signals import LATE_EVENT, REBUILD, Ledger, settle
from services.kafka.publisher import DLQ_HEADERS, H_ORIGINAL_SHA256, H_ORIGINAL_SIZE, H_TRUNCATED
from services.worker.outbox import as_sent
from services.worker.ports import Signal
from tests.engine_helpers import Story, ny, utc

DOCS = Path(__file__).resolve().parents[2] / "docs"
SCHEMAS = DOCS / "schemas" / "signals"
MON = "2026-11-02"  # a Monday
SAT = "2026-11-07"  # a Saturday: outside business hours, where an urgent ticket is an uncovered P1
NOW = datetime.fromisoformat("2026-12-01T00:00:00+00:00").timestamp()  # when the relay sends

DEFAULT_TEXT = resources.files("projections").joinpath("default_policy.toml").read_text(encoding="utf-8")
# Another policy, for a rebuild: urgent tickets get 2 h to respond instead of 1 h.
TRIAL = parse_policy(
    DEFAULT_TEXT.replace('version = "default-2026.1"', 'version = "trial-2026.2"').replace(
        'response = { target = "1h", calendar = "24x7" }', 'response = { target = "2h", calendar = "24x7" }'
    )
)


class Worker:
    """Settles each ticket's signals against its ledger, as the projector does after a batch:
    ``because`` is the ticket's events since the last settlement; the ledger goes through its
    stored form in between."""

    def __init__(self, story: Story):
        self.story = story
        self.ledgers: dict[str, bytes] = {}
        self.seen: dict[str, int] = {}
        self.signals: list[dict[str, Any]] = []

    def settle(
        self, as_of: datetime, ticket_id: str | None = None, policy: Policy | None = None, reason=LATE_EVENT
    ) -> list[dict[str, Any]]:
        ticket = ticket_id or self.story.ticket_id
        mine = [r for r in self.story.records if getattr(r.event, "ticket_id", None) == ticket]
        because = mine[self.seen.get(ticket, 0) :] if reason == LATE_EVENT else []
        self.seen[ticket] = len(mine)
        state = self.story.state(as_of, ticket, policy)
        ledger, sent = settle(Ledger.decode(self.ledgers.get(ticket)), state, as_of, because)
        self.ledgers[ticket] = ledger.encode()
        self.signals += sent
        return sent


def late_answer() -> list[dict[str, Any]]:
    """An urgent ticket breaches and is escalated; then its answer, given in time, arrives late."""
    worker = Worker(Story("U-1", "acme"))
    worker.story.opened(utc(f"{MON} 14:00"), "urgent")
    worker.settle(utc(f"{MON} 14:50"))  # the warning, before the due instant: due_at projected
    raised = worker.settle(utc(f"{MON} 16:00"))
    assert [s["type"] for s in raised] == ["sla.breached", "escalation.raised"]
    worker.story.responded(utc(f"{MON} 14:30"))
    revoked = worker.settle(utc(f"{MON} 16:00"))
    assert [s["type"] for s in revoked] == ["sla.breach_revoked", "escalation.revoked"]
    return worker.signals


def rebuilt() -> list[dict[str, Any]]:
    """An urgent ticket answered after 1 h 30: breached under the default policy, not under TRIAL."""
    worker = Worker(Story("U-2", "acme"))
    worker.story.opened(utc(f"{MON} 14:00"), "urgent")
    worker.story.responded(utc(f"{MON} 15:30"))
    assert {s["type"] for s in worker.settle(utc(f"{MON} 15:30"))} >= {"sla.breached", "escalation.raised"}
    revoked = worker.settle(utc(f"{MON} 15:30"), policy=TRIAL, reason=REBUILD)
    # TRIAL's warning comes at another instant: another warning. Its breach is gone.
    assert [s["type"] for s in revoked] == ["sla.warning", "sla.breach_revoked", "escalation.revoked"]
    assert all(s["reason"] == REBUILD for s in revoked[1:])
    return worker.signals


def never_answered() -> list[dict[str, Any]]:
    """A medium ticket nobody answers: both clocks warn and breach, all three levels are reached."""
    worker = Worker(Story("M-1", "globex"))
    worker.story.opened(ny(f"{MON} 09:00"), "medium")
    worker.settle(ny(f"{MON} 12:30"))
    worker.settle(ny("2026-11-06 17:00"))
    return worker.signals


def requested_and_reprioritised() -> list[dict[str, Any]]:
    """A customer asks for level 2; a low ticket made urgent breaches in its second cycle."""
    worker = Worker(Story("R-1", "initech"))
    worker.story.opened(ny(f"{MON} 10:00"), "low")
    worker.story.escalation_request(ny(f"{MON} 10:15"), 2, "customer")
    worker.story.priority(ny(f"{MON} 10:30"), "urgent")
    worker.settle(ny(f"{MON} 12:00"))
    return worker.signals


def charges() -> list[dict[str, Any]]:
    """Uncovered P1s (billable, waived, pending review) and an after-hours new install, settled."""
    story = Story("B-1", "acme")
    worker = Worker(story)
    story.opened(ny(f"{SAT} 02:00"), "urgent")
    story.responded(ny(f"{SAT} 02:20"))
    story.work(ny(f"{SAT} 02:30"), ny(f"{SAT} 05:00"))
    story.fault(ny(f"{SAT} 05:30"), "customer")
    worker.settle(ny(f"{SAT} 05:30"))
    story.work(ny(f"{SAT} 05:30"), ny(f"{SAT} 06:00"))  # more work: another amount, another signal
    worker.settle(ny(f"{SAT} 06:00"))

    story.opened(ny(f"{SAT} 03:00"), "urgent", ticket_id="B-2")
    story.work(ny(f"{SAT} 03:00"), ny(f"{SAT} 04:00"), ticket_id="B-2")
    story.fault(ny(f"{SAT} 04:30"), "provider", ticket_id="B-2")
    worker.settle(ny(f"{SAT} 04:30"), "B-2")

    story.opened(ny(f"{SAT} 03:00"), "urgent", ticket_id="B-3")
    story.responded(ny(f"{SAT} 03:10"), ticket_id="B-3")
    story.closed(ny(f"{SAT} 04:00"), ticket_id="B-3")
    worker.settle(ny(f"{SAT} 04:00"), "B-3")

    story.opened(
        ny(f"{MON} 09:00"),
        "medium",
        ticket_id="N-1",
        category="new_install",
        after_hours_requested=True,
        install_date="2026-11-20",
    )
    story.responded(ny(f"{MON} 09:30"), ticket_id="N-1")
    story.work(ny(f"{MON} 18:00"), ny(f"{MON} 21:00"), ticket_id="N-1")
    story.resolved(ny(f"{MON} 21:00"), ticket_id="N-1")
    story.closed(ny(f"{MON} 21:05"), ticket_id="N-1")
    worker.settle(ny(f"{MON} 21:05"), "N-1")
    return worker.signals


@functools.cache
def produced() -> tuple[dict[str, Any], ...]:
    """Every payload the scenarios produce, as recorded in the outbox."""
    return tuple(
        signal
        for scenario in (late_answer, rebuilt, never_answered, requested_and_reprioritised, charges)
        for signal in scenario()
    )


def sent(payload: dict[str, Any]) -> bytes:
    """The message value the relay sends for a recorded payload."""
    recorded = Signal(payload["signal_id"], payload["customer_id"], orjson.dumps(payload))
    return as_sent(recorded, NOW).body


def ids(payload: dict[str, Any]) -> str:
    return f"{payload['type']}-{payload['ticket_id']}-{payload['signal_id'][:6]}"


@functools.cache
def validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def errors(name: str, document: Any) -> list[str]:
    return [error.message for error in validator(name).iter_errors(document)]


# --- what the engine produces validates ------------------------------------------------


def test_the_scenarios_produce_every_type_and_variant():
    signals = produced()
    assert {s["type"] for s in signals} == set(SIGNAL_TYPES)
    variants = {
        (s["type"], s.get("status") or s.get("reason") or s.get("cause") or s["clock"], s["cycle"])
        for s in signals
    }
    assert {("billing.finalized", status, None) for status in ("billable", "waived", "pending_review")} <= (
        variants
    )
    assert {("sla.breach_revoked", "late_event", 1), ("sla.breach_revoked", "rebuild", 1)} <= variants
    assert ("escalation.raised", "requested_by_customer", None) in variants
    assert ("escalation.raised", "resolution_150_percent", 1) in variants
    assert ("sla.breached", "response", 2) in variants  # a second cycle
    assert {s["rule"] for s in signals if s["type"] == "billing.finalized"} == {"uncovered_p1", "new_install"}
    warnings = [s for s in signals if s["type"] == "sla.warning"]
    assert warnings and all(s["due_at"] > s["at"] for s in warnings)  # projected from the warning
    assert len({s["signal_id"] for s in signals}) == len(signals)


@pytest.mark.parametrize("payload", produced(), ids=ids)
def test_every_payload_validates_against_its_model_and_round_trips(payload):
    body = sent(payload)
    document = orjson.loads(body)
    assert document == {**payload, "late_by_seconds": document["late_by_seconds"]}  # the relay adds only it
    model = SIGNAL_MODELS[payload["type"]]
    for parsed in (
        model.model_validate(document),
        model.model_validate_json(body),
        SIGNAL_ADAPTER.validate_python(document),
        SIGNAL_ADAPTER.validate_json(body),
    ):
        assert type(parsed) is model
        assert parsed.model_dump(mode="json") == document  # nothing lost, added or reshaped


@pytest.mark.parametrize("payload", produced(), ids=ids)
def test_every_payload_validates_against_the_json_schemas(payload):
    document = orjson.loads(sent(payload))
    assert errors(f"{payload['type']}.json", document) == []
    assert errors("signal.json", document) == []


@pytest.mark.parametrize("payload", produced()[:3], ids=ids)
def test_a_recorded_payload_is_not_yet_a_message(payload):
    """The outbox's payload lacks `late_by_seconds`, which every message carries."""
    assert "late_by_seconds" not in payload
    assert errors("signal.json", payload)
    with pytest.raises(ValidationError):
        SIGNAL_ADAPTER.validate_python(payload)


def test_late_by_seconds_counts_from_at():
    payload = produced()[0]
    at = datetime.fromisoformat(payload["at"]).timestamp()
    assert orjson.loads(sent(payload))["late_by_seconds"] == int(NOW - at)
    recorded = Signal(payload["signal_id"], payload["customer_id"], orjson.dumps(payload))
    assert orjson.loads(as_sent(recorded, at - 5).body)["late_by_seconds"] == 0  # never negative
    assert orjson.loads(as_sent(recorded, time.time()).body)["late_by_seconds"] > 0


# --- what the schemas reject -----------------------------------------------------------


def one_of_each() -> list[dict[str, Any]]:
    """One sent message of each type."""
    first: dict[str, dict[str, Any]] = {}
    for payload in produced():
        first.setdefault(payload["type"], orjson.loads(sent(payload)))
    return [first[t] for t in SIGNAL_TYPES]


def rejected_everywhere(document: dict[str, Any], signal_type: str) -> None:
    assert errors(f"{signal_type}.json", document), "the type's schema accepts it"
    assert errors("signal.json", document), "signal.json accepts it"
    with pytest.raises(ValidationError):
        SIGNAL_MODELS[signal_type].model_validate(document)
    with pytest.raises(ValidationError):
        SIGNAL_ADAPTER.validate_json(orjson.dumps(document))


@pytest.mark.parametrize("document", one_of_each(), ids=lambda d: d["type"])
def test_a_missing_field_is_rejected(document):
    for field in document:
        rejected_everywhere({k: v for k, v in document.items() if k != field}, document["type"])
    if "revoked" in document:
        for field in document["revoked"]:
            broken = copy.deepcopy(document)
            del broken["revoked"][field]
            rejected_everywhere(broken, document["type"])


@pytest.mark.parametrize("document", one_of_each(), ids=lambda d: d["type"])
def test_an_unknown_type_is_rejected(document):
    for other in ("sla.unknown", "SLA.BREACHED", "", None):
        rejected_everywhere({**document, "type": other}, document["type"])
    # Another known type: the type's own schema refuses it (the union may take it as that type:
    # a breach relabelled a warning has a warning's fields).
    for other in SIGNAL_TYPES:
        if other != document["type"]:
            assert errors(f"{document['type']}.json", {**document, "type": other})


@pytest.mark.parametrize(
    "change",
    [
        {"unknown": 1},
        {"late_by_seconds": -1},
        {"late_by_seconds": 1.5},
        {"late_by_seconds": "3"},
        {"at": "2026-11-02T15:00:01+00:00"},
        {"at": "2026-11-02T15:00:01.5Z"},
        {"at": "2026-11-02 15:00:01Z"},
        {"signal_id": "43D0AA4BD66969459EEF83831F0532D8"},
        {"signal_id": "43d0aa4b"},
        {"policy_digest": "7f670878dd1b25a0447f7b4ca9997d09f6092ce636e9f2c422d8b4900e8b728e"},
        {"customer_id": ""},
        {"ticket_id": "T\n1"},
    ],
)
@pytest.mark.parametrize("document", one_of_each(), ids=lambda d: d["type"])
def test_other_mistakes_are_rejected(document, change):
    rejected_everywhere({**document, **change}, document["type"])


@pytest.mark.parametrize(
    ("signal_type", "change"),
    [
        ("sla.warning", {"clock": "reply"}),
        ("sla.warning", {"clock": None}),
        ("sla.breached", {"cycle": 0}),
        ("sla.breached", {"cycle": "1"}),
        ("sla.breached", {"due_at": None}),
        ("sla.breached", {"priority": "p1"}),
        ("sla.breached", {"target_seconds": None}),
        ("escalation.raised", {"level": 4}),
        ("escalation.raised", {"cause": "because"}),
        ("billing.finalized", {"clock": "response"}),
        ("billing.finalized", {"status": "none"}),
        ("billing.finalized", {"rule": None}),
        ("billing.finalized", {"amount_cents": -1}),
        ("billing.finalized", {"month": "2026-13"}),
        ("sla.breach_revoked", {"reason": "changed_mind"}),
        ("sla.breach_revoked", {"revokes": "x"}),
        ("sla.breach_revoked", {"because": [{"event_id": "e-1", "type": "ticket.opened"}]}),
        (
            "sla.breach_revoked",
            {
                "because": [
                    {"event_id": "e-1", "type": "ticket.merged", "occurred_at": "2026-11-02T14:30:00Z"}
                ]
            },
        ),
        (
            "sla.breach_revoked",
            {
                "revoked": {
                    "type": "sla.warning",
                    "clock": "response",
                    "cycle": 1,
                    "at": "2026-11-02T15:00:01Z",
                }
            },
        ),
        (
            "escalation.revoked",
            {
                "revoked": {
                    "type": "escalation.raised",
                    "clock": None,
                    "cycle": None,
                    "at": "2026-11-02T15:00:01Z",
                }
            },
        ),
    ],
)
def test_a_field_of_a_type_is_checked(signal_type, change):
    document = next(d for d in one_of_each() if d["type"] == signal_type)
    assert set(change) <= set(document)
    rejected_everywhere({**document, **change}, signal_type)


def test_every_field_is_described():
    undocumented = []

    def visit(path: str, schema: Any) -> None:
        if isinstance(schema, dict):
            for name, sub in schema.get("properties", {}).items():
                if "description" not in sub:
                    undocumented.append(f"{path}.{name}")
            for key, sub in schema.items():
                visit(f"{path}/{key}", sub)
        elif isinstance(schema, list):
            for i, sub in enumerate(schema):
                visit(f"{path}[{i}]", sub)

    for signal_type in SIGNAL_TYPES:
        visit(signal_type, json.loads((SCHEMAS / f"{signal_type}.json").read_text(encoding="utf-8")))
    assert undocumented == []


# --- the AsyncAPI document (docs/asyncapi.yaml) ------------------------------------------

PAYLOAD_FORMAT = "application/schema+json;version=draft-2020-12"


class AsyncApi:
    """docs/asyncapi.yaml, read as a consumer's tooling would: local references followed,
    message traits applied, payload references resolved to the JSON Schema files."""

    def __init__(self, path: Path = DOCS / "asyncapi.yaml"):
        self.path = path
        self.document = yaml.safe_load(path.read_text(encoding="utf-8"))

    def pointer(self, ref: str) -> Any:
        assert ref.startswith("#/"), ref
        node = self.document
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def follow(self, node: Any) -> Any:
        while isinstance(node, dict) and set(node) == {"$ref"}:
            node = self.pointer(node["$ref"])
        return node

    def channel(self, address: str) -> tuple[str, dict[str, Any]]:
        found = [(k, c) for k, c in self.document["channels"].items() if c["address"] == address]
        assert len(found) == 1, f"one channel for {address}"
        return found[0]

    def messages(self, channel_id: str) -> dict[str, dict[str, Any]]:
        """The channel's messages by key, with their traits applied (the message's own fields win)."""
        out = {}
        for key, ref in self.document["channels"][channel_id]["messages"].items():
            message = copy.deepcopy(self.follow(ref))
            for trait in message.pop("traits", []):
                for field, value in self.follow(trait).items():
                    message.setdefault(field, copy.deepcopy(value))
            out[key] = message
        return out

    def payload_file(self, message: dict[str, Any]) -> Path | None:
        """The JSON Schema file of a message's payload (None: an inline schema)."""
        payload = message["payload"]
        if "schemaFormat" not in payload:
            return None
        assert payload["schemaFormat"] == PAYLOAD_FORMAT
        path = (self.path.parent / payload["schema"]["$ref"]).resolve()
        assert path.is_file(), f"{payload['schema']['$ref']} does not exist"
        return path

    def payload_validator(self, message: dict[str, Any]) -> Draft202012Validator:
        path = self.payload_file(message)
        schema = message["payload"] if path is None else json.loads(path.read_text(encoding="utf-8"))
        Draft202012Validator.check_schema(schema)
        return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)

    def headers_validator(self, message: dict[str, Any]) -> Draft202012Validator:
        schema = message.get("headers", {"type": "object"})
        Draft202012Validator.check_schema(schema)
        return Draft202012Validator(schema)


def test_asyncapi_describes_the_four_topics_and_what_slatrack_does_on_each():
    api = AsyncApi()
    assert api.document["asyncapi"] == "3.0.0"
    addresses = {c["address"] for c in api.document["channels"].values()}
    assert addresses == {"ticket-events", "ticket-events.dlq", "sla-signals", "policy-versions"}
    done = {
        (api.follow(op["channel"])["address"], op["action"]) for op in api.document["operations"].values()
    }
    assert {("ticket-events", "receive"), ("ticket-events.dlq", "send"), ("sla-signals", "send")} <= done
    assert {("policy-versions", "send"), ("policy-versions", "receive")} <= done
    policies = api.document["channels"][api.channel("policy-versions")[0]]["bindings"]["kafka"]
    assert policies["partitions"] == 1 and policies["topicConfiguration"]["retention.ms"] == -1
    for op in api.document["operations"].values():
        channel_id = op["channel"]["$ref"].removeprefix("#/channels/")
        channel_messages = api.document["channels"][channel_id]["messages"]
        for ref in op["messages"]:  # a subset of the channel's messages
            prefix = f"#/channels/{channel_id}/messages/"
            assert ref["$ref"].startswith(prefix) and ref["$ref"].removeprefix(prefix) in channel_messages
    servers = api.document["servers"]
    assert (
        servers["development"]["host"] == "127.0.0.1:9092" and servers["development"]["protocol"] == "kafka"
    )
    assert servers["production"]["protocol"] == "kafka-secure"
    for scheme in servers["production"]["security"]:
        assert api.follow(scheme)["type"] in {"plain", "scramSha256", "scramSha512"}


@pytest.mark.parametrize(
    ("address", "types", "directory"),
    [
        ("ticket-events", EVENT_TYPES, DOCS / "schemas"),
        ("sla-signals", SIGNAL_TYPES, SCHEMAS),
        ("policy-versions", (POLICY_EVENT_TYPE,), DOCS / "schemas" / "policies"),
    ],
)
def test_asyncapi_has_a_message_per_type_with_its_schema_file(address, types, directory):
    api = AsyncApi()
    channel_id, _ = api.channel(address)
    messages = api.messages(channel_id)
    assert sorted(m["name"] for m in messages.values()) == sorted(types)
    for message in messages.values():
        assert api.payload_file(message) == directory / f"{message['name']}.json"
        assert message["contentType"] == "application/json"
        assert message["bindings"]["kafka"]["key"]["type"] == "string"


def test_asyncapi_dead_letter_headers_are_the_publishers():
    api = AsyncApi()
    channel_id, _ = api.channel("ticket-events.dlq")
    (message,) = api.messages(channel_id).values()
    headers = message["headers"]
    assert set(headers["required"]) == set(DLQ_HEADERS)
    # Only on a dead letter cut to fit (services.kafka.publisher.fit_dead_letter).
    assert set(headers["properties"]) - set(DLQ_HEADERS) == {H_TRUNCATED, H_ORIGINAL_SIZE, H_ORIGINAL_SHA256}
    assert headers["properties"]["slatrack-dlq-reason"]["enum"] == [str(kind) for kind in RejectKind]
    assert api.payload_file(message) is None and message["payload"]["format"] == "binary"


def test_asyncapi_examples_are_valid_and_real():
    api = AsyncApi()
    checked = 0
    for channel_id in api.document["channels"]:
        for message in api.messages(channel_id).values():
            for example in message.get("examples", []):
                if "payload" in example:
                    assert list(api.payload_validator(message).iter_errors(example["payload"])) == []
                assert list(api.headers_validator(message).iter_errors(example.get("headers", {}))) == []
                checked += 1
    assert checked >= 3
    # The signal examples are what the engine sends for the late answer of late_answer().
    real = {s["signal_id"]: s for s in late_answer()}
    channel_id, _ = api.channel("sla-signals")
    for message in api.messages(channel_id).values():
        for example in message.get("examples", []):
            payload = example["payload"]
            assert {k: v for k, v in payload.items() if k != "late_by_seconds"} == real[payload["signal_id"]]
            assert example["headers"]["slatrack-signal-id"] == payload["signal_id"]
