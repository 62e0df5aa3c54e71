"""Contracts end to end (issue 13): versions published to the policy topic of a real broker, a
worker that follows it, the HTTP API, and ``slatrack export`` + ``slatrack replay`` of the same
log giving the same views; then a retroactive version published with ``slatrack policy
publish --retroactive``, recomputing the one ticket it can change, and the export and replay
agreeing again."""

import asyncio
import time

import orjson
import pytest

from services.kafka.policies import publish_policy
from tests.contracts_helpers import amended_text, default_text, policy_event, premium_text
from tests.integration.live_api import LiveApi, auth, fresh_settings
from tests.integration.test_contracts_worker import AMENDED_FROM, NOV_1, the_log
from tests.integration.test_policy_cli import cli

pytestmark = pytest.mark.broker

KEYS = [("acme", "BEFORE"), ("acme", "AFTER"), ("bolt", "SAT"), ("cora", "OPEN"), ("cora", "NEW")]


def views(api: LiveApi) -> dict[tuple[str, str], tuple[dict, str]]:
    """Each ticket's stored view, and the instant it is as of."""
    found = {}
    for customer, ticket in KEYS:
        response = api.client.get(
            f"/v1/tickets/{ticket}", params={"customer_id": customer}, headers=auth("reader")
        )
        assert response.status_code == 200, response.text
        found[customer, ticket] = (response.json(), response.headers["x-slatrack-evaluated-at"])
    return found


def replayed(settings, tmp_path, name: str, as_of: str) -> dict[tuple[str, str], dict]:
    log = tmp_path / f"{name}.jsonl"
    exported = cli(settings, "export", "--out", str(log))
    assert exported.exit_code == 0, exported.output
    lines = log.read_bytes().splitlines()
    assert b"policy.version_published" in lines[0]  # the policy events first
    result = cli(settings, "replay", "--events", str(log), "--as-of", as_of)
    assert result.exit_code == 0, result.output
    document = orjson.loads(result.stdout)
    return {(t["customer_id"], t["ticket_id"]): t for t in document["tickets"]}


def assert_live_equals_replay(api: LiveApi, tmp_path, name: str) -> dict:
    live = views(api)
    for key, (view, at) in live.items():
        assert replayed(api.settings, tmp_path, f"{name}-{key[1]}", at)[key] == view, key
    return live


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_contracts_from_the_policy_topic_to_the_api_and_back_through_export_and_replay(
    kafka_bootstrap, tmp_path
):
    settings = fresh_settings(kafka_bootstrap, data_dir=tmp_path / "data")
    # Published before the worker starts: it reads the topic in full before projecting.
    asyncio.run(publish_policy(settings, policy_event(premium_text(), "premium", NOV_1)))
    asyncio.run(publish_policy(settings, policy_event(amended_text(), "default", AMENDED_FROM)))
    api = LiveApi(settings, policies=True)
    try:
        api.start_worker()
        story = the_log()
        response = api.client.post("/v1/events", content=orjson.dumps(story.dicts), headers=auth("publisher"))
        assert response.status_code == 202, response.text
        api.wait_applied(len(story.dicts))
        live = assert_live_equals_replay(api, tmp_path, "first")
        assert {key: (v["contract"], v["policy_version"]) for key, (v, _) in live.items()} == {
            ("acme", "BEFORE"): ("default", "default-2026.1"),
            ("acme", "AFTER"): ("default", "default-2026.2"),
            ("bolt", "SAT"): ("premium", "premium-2026.1"),
            ("cora", "OPEN"): ("default", "default-2026.1"),
            ("cora", "NEW"): ("premium", "premium-2026.1"),
        }
        assert live["acme", "AFTER"][0]["clocks"]["response"]["breached"] is True

        # The default contract loosened again, from the amendment's own instant: in the past.
        loosened = tmp_path / "loosened.toml"
        loosened.write_text(
            default_text().replace('version = "default-2026.1"', 'version = "default-2026.3"', 1)
        )
        when = "2026-11-16T05:00:00Z"
        refused = cli(
            settings, "policy", "publish", str(loosened), "--contract", "default", "--effective-from", when
        )
        assert refused.exit_code == 2 and "--retroactive" in refused.output
        published = cli(
            settings,
            "policy",
            "publish",
            str(loosened),
            "--contract",
            "default",
            "--effective-from",
            when,
            "--retroactive",
        )
        assert published.exit_code == 0, published.output

        def recomputed() -> bool:
            return views(api)["acme", "AFTER"][0]["policy_version"] == "default-2026.3"

        wait_until(recomputed, 60, "the retroactive version to reach AFTER")
        after = assert_live_equals_replay(api, tmp_path, "second")
        assert after["acme", "AFTER"][0]["clocks"]["response"]["breached"] is False
        assert after["acme", "AFTER"][1] == live["acme", "AFTER"][1]  # recomputed as of the same instant
        for key in KEYS:
            if key != ("acme", "AFTER"):
                assert after[key] == live[key], key  # not touched: same view, same instant
        # The report of November names the versions in force, measured the same way.
        report = api.client.get(
            "/v1/customers/acme/report", params={"month": "2026-11"}, headers=auth("reader")
        )
        assert report.status_code == 200, report.text
        versions = [v["policy_version"] for v in report.json()["contract_versions"]]
        assert "default-2026.3" in versions and "default-2026.1" in versions
    finally:
        api.close()
