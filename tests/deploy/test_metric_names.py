"""Every metric the dashboard and the Prometheus rules query is one the service
really exports (or one the rules record): a misspelt or renamed metric fails here
instead of drawing an empty panel or an alert that can never fire."""

import json

import pytest

import services.serve  # noqa: F401 - imports every module that defines metrics
from services.metrics import REGISTRY
from tests.deploy.helpers import DASHBOARDS, dashboard_queries, grafana_query_names, metric_names, rules

# Series Prometheus itself adds to every scrape.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_series_added"}

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}


def exported_names() -> set[str]:
    """Names of the series at /metrics: each sample's name, and the names each family
    exports once it has a child (a labelled family exports nothing before)."""
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.update(sample.name for sample in family.samples)
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
    return names


def recorded_names() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def queries() -> list[tuple[str, str, set[str]]]:
    """(where, query, names) of every rule expression and every dashboard query."""
    found = [
        (
            f"{rule['group']}: {rule.get('record') or rule.get('alert')}",
            rule["expr"],
            metric_names(rule["expr"]),
        )
        for rule in rules()
    ]
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        for where, query in dashboard_queries(dashboard):
            found.append((f"{path.name}: {where}", query, grafana_query_names(query)))
    return found


def unknown_names(names: set[str], exported: set[str], recorded: set[str]) -> set[str]:
    return {name for name in names if name not in (recorded if ":" in name else exported | PROMETHEUS_SERIES)}


def test_every_query_names_a_metric_the_service_exports():
    exported, recorded = exported_names(), recorded_names()
    checked = queries()
    assert len(checked) > 20 and all(names for _, _, names in checked)
    missing: dict[str, list[str]] = {}
    for where, _, names in checked:
        for name in unknown_names(names, exported, recorded):
            missing.setdefault(name, []).append(where)
    assert not missing, "not exported by services.metrics.REGISTRY (nor recorded by a rule):\n" + "\n".join(
        f"  {name}: {', '.join(places)}" for name, places in sorted(missing.items())
    )


def test_the_check_catches_a_misspelt_name():
    exported, recorded = exported_names(), recorded_names()
    assert "slatrack_events_consumed_total" in exported
    for wrong in (
        "sum(rate(slatrack_event_consumed_total[5m]))",
        "slatrak_events_consumed_total",
        "clock_priority:slatrack_sla_attainment:ratio_rate2h",
        'up{job="x"} == 0 or slatrack_events_consumed',
    ):
        assert unknown_names(metric_names(wrong), exported, recorded), wrong


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (clock, priority) (rate(a_total{clock="by (x)", le=~"1|2"}[5m]))', {"a_total"}),
        ("histogram_quantile(0.95, sum by (le) (rate(b_bucket[$__rate_interval])))", {"b_bucket"}),
        (
            "(1 - x:y:z) > (14.4 * (1 - 0.95)) and on (clock) group_left (rule) w unless v offset 5m",
            {"x:y:z", "w", "v"},
        ),
        ("time() - max(c_seconds) > bool 1e3", {"c_seconds"}),
        ("absent(up{job='w'} == 1)", {"up"}),
        ("sum(increase(d_total[${__range}])) / 3600", {"d_total"}),
    ],
)
def test_names_in_promql(expr, names):
    assert metric_names(expr) == names


def test_names_in_a_grafana_variable():
    assert grafana_query_names("label_values(slatrack_sla_clocks, priority)") == {"slatrack_sla_clocks"}
    assert grafana_query_names('label_values(m{job="a"}, clock)') == {"m"}


def test_the_stage_histogram_has_its_four_stages_from_the_start():
    from services.metrics import PROJECTOR_STAGES
    from services.worker import stages  # noqa: F401 - creates each stage's series

    found = {
        sample.labels["stage"]
        for family in REGISTRY.collect()
        if family.name == "slatrack_projector_stage_duration_seconds"
        for sample in family.samples
    }
    assert found == set(PROJECTOR_STAGES) == {"decode", "engine", "store", "other"}
