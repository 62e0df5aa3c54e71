"""The Prometheus configuration and rules of deploy/prometheus, checked by Debian's
promtool: the config, the rules, and the rules' unit tests."""

import subprocess

from tests.deploy.helpers import (
    PROMETHEUS_CONFIG,
    PROMETHEUS_DIR,
    RULE_FILES,
    RULE_TESTS,
    load_yaml,
    rules,
    tool,
)


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [tool("promtool"), *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=60
    )


def test_config_is_valid():
    checked = promtool("check", "config", str(PROMETHEUS_CONFIG))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"{len(RULE_FILES)} rule files found" in checked.stdout  # its rule_files glob finds them all


def test_rules_are_valid():
    assert RULE_FILES
    checked = promtool("check", "rules", *map(str, RULE_FILES))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_rule_unit_tests_pass():
    assert RULE_TESTS
    tested = promtool("test", "rules", *map(str, RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_is_tested_firing_and_silent():
    """Each alert has a unit test where it fires and one where it does not."""
    firing: set[str] = set()
    silent: set[str] = set()
    for path in RULE_TESTS:
        for case in load_yaml(path)["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    alerts = {rule["alert"] for rule in rules() if "alert" in rule}
    assert alerts
    assert alerts - firing == set(), "never tested firing"
    assert alerts - silent == set(), "never tested silent"


def test_alerts_have_a_severity_and_a_summary():
    for rule in rules():
        if "alert" in rule:
            assert rule["labels"]["severity"] in {"page", "ticket"}, rule["alert"]
            assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
