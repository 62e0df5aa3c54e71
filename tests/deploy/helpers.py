"""What the deployment tests share: paths, the Debian tools they call, and the
metric names that PromQL expressions use."""

import re
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import unavailable

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / "deploy" / "env.example"
DOCKERFILE = ROOT / "Dockerfile"
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
GRAFANA_DIR = ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA_DIR / "dashboards").glob("*.json"))

# What .ci/run installs; the tests name it when a tool is missing.
DEBIAN_PACKAGES = {"promtool": "prometheus", "prometheus": "prometheus", "docker-compose": "docker-compose"}


def tool(name: str) -> str:
    """The path of a Debian-packaged tool; in CI its absence fails the test, elsewhere it skips."""
    path = shutil.which(name)
    if path is None:
        unavailable(
            name,
            f"apt-get install --no-install-recommends {DEBIAN_PACKAGES[name]} (what .ci/run does)",
        )
    assert path is not None
    return path


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def rules() -> Iterator[dict[str, Any]]:
    """Every rule of every rule file (recording and alerting), with its group's name as "group"."""
    for path in RULE_FILES:
        for group in load_yaml(path)["groups"]:
            for rule in group["rules"]:
                yield {**rule, "group": group["name"]}


# --- metric names in PromQL ---------------------------------------------------------
# Not a PromQL parser: it removes what cannot be a metric name (strings, label
# matchers, ranges, grouping labels, Grafana variables, numbers, keywords) and
# takes every identifier left that is not called like a function.

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_VARIABLES = re.compile(r"\$\{[^}]*\}|\$\w+")
_IDENTIFIERS = re.compile(r"(?<![\w.:$])([A-Za-z_:][\w:]*)(\s*\()?")
_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "offset", "bool", "inf", "nan", "atan2",
}  # fmt: skip
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(.*?)\s*(?:,\s*\w+\s*)?\)\s*$", re.S)


def metric_names(expr: str) -> set[str]:
    """The metric names (and recorded rule names) an expression reads."""
    text = _STRINGS.sub(" ", expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _VARIABLES.sub(" ", text)
    return {name for name, call in _IDENTIFIERS.findall(text) if not call and name.lower() not in _KEYWORDS}


def grafana_query_names(query: str) -> set[str]:
    """Metric names of a Grafana query: PromQL, or a variable's ``label_values(metric, label)``."""
    found = _LABEL_VALUES.match(query)
    return metric_names(found.group(1)) if found else metric_names(query)


def dashboard_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, query) for every panel target and every query variable of a dashboard."""

    def panels(items: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if "expr" in target:
                yield f"panel {panel['title']!r} target {target.get('refId')}", target["expr"]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            yield f"variable {variable['name']!r}", query["query"] if isinstance(query, dict) else query
