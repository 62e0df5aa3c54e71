"""Debian's Prometheus scraping a real `slatrack serve`, with the scrape jobs and
the rule files of deploy/prometheus: the target is up, the service's series
arrive, and every rule group loads and evaluates against them without error."""

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from projections.policy import PRIORITIES
from services.kafka.embedded import free_port
from tests.deploy.helpers import PROMETHEUS_CONFIG, RULE_FILES, load_yaml, tool
from tests.deploy.test_dockerfile import run_healthcheck
from tests.integration.test_serve import Served, post, start_serve, stop_serve
from tests.samples import sample

pytestmark = pytest.mark.broker

NEVER = "0001-01-01T00:00:00Z"  # Prometheus's lastEvaluation of a rule not evaluated yet


@dataclass
class RunningPrometheus:
    process: subprocess.Popen
    url: str
    log: Path

    def api(self, path: str, **params: str) -> Any:
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=5)
        response.raise_for_status()
        body = response.json()
        assert body["status"] == "success", body
        return body["data"]


def config_for(tmp_path: Path, target: str, listen: str) -> Path:
    """deploy/prometheus as it is, but scraping `target` every second and evaluating every
    second. Groups lose their own `interval` (the 30-day one evaluates every 5 minutes),
    so that every rule is evaluated within the test; their expressions are untouched."""
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    for path in RULE_FILES:
        document = load_yaml(path)
        for group in document["groups"]:
            group.pop("interval", None)
        (rules_dir / path.name).write_text(yaml.safe_dump(document))
    config = load_yaml(PROMETHEUS_CONFIG)
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(rules_dir / "*.yml")]
    for job in config["scrape_configs"]:
        job.pop("dns_sd_configs", None)
        job["static_configs"] = [{"targets": [listen if job["job_name"] == "prometheus" else target]}]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[Served]:
    served = start_serve(tmp_path_factory.mktemp("serve"))
    yield served
    stop_serve(served)


@pytest.fixture(scope="module")
def prometheus(served: Served, tmp_path_factory) -> Iterator[RunningPrometheus]:
    binary = tool("prometheus")
    tmp_path = tmp_path_factory.mktemp("prometheus")
    listen = f"127.0.0.1:{free_port()}"
    config = config_for(tmp_path, served.url.removeprefix("http://"), listen)
    log = tmp_path / "prometheus.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address={listen}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    running = RunningPrometheus(process, f"http://{listen}", log)
    try:
        wait_for(lambda: _ready(running), 30, "Prometheus ready", running)
        yield running
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _ready(prometheus: RunningPrometheus) -> bool:
    assert prometheus.process.poll() is None, f"prometheus exited: {prometheus.log.read_text()}"
    try:
        return httpx.get(f"{prometheus.url}/-/ready", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def wait_for(condition: Callable[[], Any], timeout: float, what: str, prometheus: RunningPrometheus) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        assert prometheus.process.poll() is None, f"prometheus exited: {prometheus.log.read_text()}"
        assert time.monotonic() < deadline, (
            f"timed out waiting for {what}; log:\n{prometheus.log.read_text()}"
        )
        time.sleep(0.25)


def test_the_slatrack_targets_are_up(prometheus, served):
    def targets() -> list[dict[str, Any]] | None:
        active = prometheus.api("targets", state="active")["activeTargets"]
        ours = [t for t in active if t["labels"]["job"].startswith("slatrack-")]
        return ours if ours and all(t["health"] == "up" for t in ours) else None

    up = wait_for(targets, 30, "the slatrack targets up", prometheus)
    assert {t["labels"]["job"] for t in up} == {"slatrack-worker", "slatrack-api"}
    assert {t["scrapeUrl"] for t in up} == {f"{served.url}/metrics"}


def test_the_service_series_arrive(prometheus, served):
    assert post(served, sample("ticket.opened", event_id="scraped-1")).status_code == 202

    def consumed() -> list[dict[str, Any]]:
        result = prometheus.api("query", query="sum(slatrack_events_consumed_total)")["result"]
        return result if result and float(result[0]["value"][1]) >= 1 else []

    wait_for(consumed, 60, "the event counted in slatrack_events_consumed_total", prometheus)
    by_type = prometheus.api("query", query='slatrack_events_consumed_total{job="slatrack-worker"}')["result"]
    assert {series["metric"]["type"] for series in by_type} >= {"ticket.opened", "ticket.resolved"}


def test_every_rule_loads_and_evaluates(prometheus):
    expected = {group["name"]: group for path in RULE_FILES for group in load_yaml(path)["groups"]}

    def evaluated() -> list[dict[str, Any]] | None:
        groups = prometheus.api("rules")["groups"]
        done = all(rule["lastEvaluation"] != NEVER for group in groups for rule in group["rules"])
        return groups if len(groups) == len(expected) and done else None

    groups = wait_for(evaluated, 30, "every rule evaluated", prometheus)
    assert {group["name"] for group in groups} == set(expected)
    for group in groups:
        names = [rule["name"] for rule in group["rules"]]
        assert names == [r.get("record") or r.get("alert") for r in expected[group["name"]]["rules"]]
        for rule in group["rules"]:
            assert rule["health"] == "ok" and not rule.get("lastError"), (group["name"], rule)


def test_the_recording_rules_see_the_real_series(prometheus):
    """One attainment series per clock and priority (summed across the two jobs)."""

    def attainment() -> list[dict[str, Any]]:
        return prometheus.api("query", query="clock_priority:slatrack_sla_attainment:ratio_rate5m")["result"]

    series = wait_for(attainment, 30, "the attainment recording rule", prometheus)
    assert {(s["metric"]["clock"], s["metric"]["priority"]) for s in series} == {
        (clock, priority) for clock in ("response", "resolution") for priority in PRIORITIES
    }


def test_the_image_health_check_passes_against_serve(served):
    assert run_healthcheck(int(served.url.rsplit(":", 1)[1])) == 0
