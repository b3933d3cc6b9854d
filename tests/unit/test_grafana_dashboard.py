"""docs/grafana/zonechat.json is what tools/grafana_dashboard.py makes, and sound JSON for
Grafana: unique panel ids, every target a Prometheus expression on the imported data source.
(That every series it names exists is checked against a live scrape: test_metrics.py.)"""
from __future__ import annotations

import json

from tools import grafana_dashboard


def test_the_committed_dashboard_is_up_to_date():
    with open(grafana_dashboard.PATH, encoding="utf-8") as fh:
        assert fh.read() == grafana_dashboard.render(), "run: python -m tools.grafana_dashboard"


def test_panels_are_well_formed():
    doc = json.loads(grafana_dashboard.render())
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids)) >= 10
    assert doc["__inputs"][0]["name"] == "DS_PROMETHEUS"
    for p in doc["panels"]:
        assert p["targets"] and p["datasource"]["uid"] == "${DS_PROMETHEUS}"
        for t in p["targets"]:
            assert t["expr"].count("(") == t["expr"].count(")"), t["expr"]
