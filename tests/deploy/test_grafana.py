"""The Grafana provisioning and dashboard of deploy/grafana, read: the dashboard
queries the provisioned datasource, and its panels fit the grid."""

import json

from tests.deploy.helpers import DASHBOARDS, GRAFANA_DIR, PROMETHEUS_CONFIG, dashboard_queries, load_yaml


def datasource() -> dict:
    (only,) = load_yaml(GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    return only


def test_the_datasource_is_the_stacks_prometheus():
    source = datasource()
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert source["jsonData"]["timeInterval"] == load_yaml(PROMETHEUS_CONFIG)["global"]["scrape_interval"]


def test_the_dashboard():
    assert [path.name for path in DASHBOARDS] == ["slatrack.json"]
    dashboard = json.loads(DASHBOARDS[0].read_text(encoding="utf-8"))
    assert dashboard["uid"] and dashboard["title"]
    uid = datasource()["uid"]
    panels = dashboard["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    occupied: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {(grid["x"] + dx, grid["y"] + dy) for dx in range(grid["w"]) for dy in range(grid["h"])}
        assert not cells & occupied, f"{panel['title']!r} overlaps another panel"
        occupied |= cells
        for target in panel.get("targets", []):
            assert panel["datasource"]["uid"] == target["datasource"]["uid"] == uid, panel["title"]
    queries = dict(dashboard_queries(dashboard))
    assert len(queries) >= 20
    # What the issue asks the dashboard to show, each somewhere.
    for metric in (
        "slatrack_sla_attainment",
        "slatrack_sla_clocks",
        "slatrack_sla_breaches_total",
        "slatrack_escalations_total",
        "slatrack_billable_seconds_total",
        "slatrack_projector_lag_events",
        "slatrack_dlq_messages_total",
    ):
        assert any(metric in query for query in queries.values()), metric
