"""Each command's --help lists every setting it reads; an unreachable broker is one line in time.

The commands run in-process, against the session broker, while every read of a
Settings field is recorded (reads by Settings' own validators excepted: they
check every variable, for every command).
"""

import os
import threading
import time
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

import services.dev.demo
from services.cli.commands import main
from services.config import Settings, env_name
from tests.samples import policy_text, sample

REPO = Path(__file__).resolve().parents[2]


def environment(**variables: str | None) -> dict[str, str | None]:
    """Only these SLATRACK_ variables (the others unset)."""
    return {k: None for k in os.environ if k.upper().startswith("SLATRACK_")} | variables


def cli(args: list[str], env: dict[str, str | None]):
    return CliRunner().invoke(main, args, env=env, catch_exceptions=False)


class Reads:
    """Which Settings fields are read, in any thread, outside Settings' own construction."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.fields: set[str] = set()
        self._building = threading.local()
        fields = set(Settings.model_fields)
        read, build = Settings.__getattribute__, Settings.__init__

        def recording_read(instance: Settings, name: str):
            if name in fields and not getattr(self._building, "depth", 0):
                self.fields.add(name)
            return read(instance, name)

        def building(instance: Settings, *args, **kwargs) -> None:
            self._building.depth = getattr(self._building, "depth", 0) + 1
            try:
                build(instance, *args, **kwargs)
            finally:
                self._building.depth -= 1

        monkeypatch.setattr(Settings, "__getattribute__", recording_read)
        monkeypatch.setattr(Settings, "__init__", building)

    def take(self) -> set[str]:
        taken, self.fields = self.fields, set()
        return taken


def listed(command: list[str]) -> set[str]:
    """The SLATRACK_ variables a command's --help names."""
    text = CliRunner().invoke(main, [*command, "--help"], catch_exceptions=False).stdout
    return {env_name(name) for name in Settings.model_fields if env_name(name) in text}


@pytest.mark.broker
def test_help_lists_every_setting_each_command_reads(kafka_settings, tmp_path, monkeypatch):
    events = tmp_path / "events.jsonl"
    events.write_bytes(
        b"\n".join(orjson.dumps(sample(t, event_id=t)) for t in ("ticket.opened", "ticket.responded")) + b"\n"
    )
    policy = tmp_path / "gold.toml"
    policy.write_text(policy_text("gold-1"), encoding="utf-8")
    env = environment(
        SLATRACK_KAFKA_BOOTSTRAP=kafka_settings.bootstrap(),
        SLATRACK_TOPIC_EVENTS=kafka_settings.topic_events,
        SLATRACK_TOPIC_DLQ=kafka_settings.topic_dlq,
        SLATRACK_TOPIC_SIGNALS=kafka_settings.topic_signals,
        SLATRACK_TOPIC_POLICIES=kafka_settings.topic_policies,
        SLATRACK_KAFKA_GROUP_ID=kafka_settings.kafka_group_id,
        SLATRACK_DATA_DIR=str(tmp_path / "data"),
    )
    # The demo without its live part (it would go on for days), still sending a small history.
    demo = services.dev.demo.run_demo
    monkeypatch.setattr(services.dev.demo, "run_demo", lambda *a, **kw: demo(*a, **{**kw, "live": False}))
    commands = [
        ["publish", str(events)],
        ["topics", "create", "--wait", "10"],
        ["export", "--out", str(tmp_path / "export.jsonl")],
        ["rebuild"],
        ["explain", "T-1"],
        ["explain", "T-1", "--events", str(events)],
        ["report", "--customer", "cust-1", "--month", "2026-10"],
        ["report", "--customer", "cust-1", "--month", "2026-10", "--events", str(events)],
        ["replay", "--events", str(events)],
        ["calendar", "between", "2026-11-02T09:00:00Z", "2026-11-02T10:00:00Z"],
        ["schema", "--check", "--out", str(REPO / "docs" / "schemas")],
        ["demo", "--customers", "1", "--tickets", "1", "--days", "1"],
        ["policy", "publish", str(policy), "--contract", "gold", "--effective-from", "now"],
        ["policy", "list"],
        ["policy", "show", "default"],
    ]
    reads = Reads(monkeypatch)
    seen: dict[str, set[str]] = {}
    for command in commands:
        result = cli(command, env)
        assert result.exit_code == 0, (command, result.output)
        name = " ".join(command[:2] if command[0] in ("topics", "policy") else command[:1])
        read = {env_name(field) for field in reads.take()}
        seen[name] = seen.get(name, set()) | read
        helped = listed(command[:2] if command[0] in ("topics", "calendar", "policy") else command[:1])
        assert read <= helped, f"{name} reads {sorted(read - helped)}, its --help does not say so"
    # The recording sees the reads (this test would pass vacuously otherwise).
    assert "SLATRACK_DATA_DIR" in seen["explain"] and "SLATRACK_KAFKA_BOOTSTRAP" in seen["publish"]
    assert "SLATRACK_DATA_DIR" in seen["report"]
    assert "SLATRACK_TOPIC_POLICIES" in seen["policy list"] and "SLATRACK_TOPIC_POLICIES" in seen["export"]
    assert seen["schema"] == seen["calendar"] == set()


def test_serve_says_so_when_the_broker_is_unreachable(tmp_path):
    env = environment(
        SLATRACK_KAFKA_BOOTSTRAP="127.0.0.1:1",
        SLATRACK_KAFKA_REQUEST_TIMEOUT_MS="5000",
        SLATRACK_HTTP_PORT="0",
        SLATRACK_DATA_DIR=str(tmp_path / "data"),
    )
    started = time.monotonic()
    result = CliRunner().invoke(main, ["serve"], env=env)
    assert time.monotonic() - started < 15  # the configured 5 s, not a fixed 30
    assert result.exit_code == 1, result.output
    [line] = result.stderr.splitlines()[-1:]
    assert line.startswith("Error: Kafka at 127.0.0.1:1 not reachable after 5 s: "), result.stderr
    assert "Traceback" not in result.output
