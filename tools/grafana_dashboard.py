"""Writes docs/grafana/zonechat.json, the Grafana dashboard over zonechat's metrics.

    python -m tools.grafana_dashboard            # rewrite docs/grafana/zonechat.json
    python -m tools.grafana_dashboard --check    # exit 1 if the file differs from this

The panels are data here (PANELS) and the JSON is made from them, so a metric renamed
in the code shows up as a test failure (tests/integration/test_metrics.py checks every
name a panel uses against a live scrape), not as an empty graph on launch night.
Import it in Grafana (Dashboards > Import) and pick the Prometheus data source.
"""
from __future__ import annotations

import json
import os
import sys

PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "grafana", "zonechat.json")
DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
R = "[$__rate_interval]"

# (title, unit, [(expr, legend)], description)
PANELS = [
    ("Messages stored / s, by kind", "ops",
     [(f"sum by (kind) (rate(zonechat_zone_messages_stored_total{R}))", "{{kind}}")],
     "Messages the zones stored (DMs, groups, rooms, system broadcasts)."),
    ("Deliveries / s", "ops",
     [(f"sum(rate(zonechat_gate_deliveries_total{R}))", "deliveries"),
      (f"sum(rate(zonechat_gate_frames_in_total{R}))", "client frames in")],
     "Messages queued for clients by the gates, and client frames received."),
    ("Sessions, by gate", "short",
     [("sum by (node) (zonechat_gate_sessions)", "{{node}}"),
      ("sum(zonechat_center_online_users)", "logged in (center)")],
     "Open client connections per gate, and users logged in anywhere."),
    ("Ack latency (send -> ack)", "s",
     [(f"histogram_quantile(0.5, sum by (le) (rate(zonechat_gate_ack_seconds_bucket{R})))", "p50"),
      (f"histogram_quantile(0.99, sum by (le) (rate(zonechat_gate_ack_seconds_bucket{R})))", "p99")],
     "From a send reaching a gate to its ack leaving it: the store's round trip included."),
    ("Store call latency p99, by zone", "s",
     [(f"histogram_quantile(0.99, sum by (le, node) (rate(zonechat_zone_store_seconds_bucket{R})))", "{{node}}")],
     "One store call per zone tick (every send of the tick in one Redis round trip)."),
    ("Errors / s, by code", "ops",
     [(f"sum by (code) (rate(zonechat_gate_errors_total{R}))", "{{code}}")],
     "Error frames the gates sent to clients."),
    ("Drops / s", "ops",
     [(f"sum by (policy) (rate(zonechat_gate_dropped_total{R}))", "gate {{policy}}"),
      (f'sum by (node) (rate({{__name__=~"zonechat_.+_bus_dropped_total"}}{R}))', "bus {{node}}")],
     "live: room/sys frames a slow reader missed; held: DMs left for a fill; bus: envelopes past bus.hwm."),
    ("Kicks / s, by reason", "ops",
     [(f"sum by (reason) (rate(zonechat_gate_kicks_total{R}))", "{{reason}}")],
     "slow, idle, session_replaced, moving (drain), shutdown ..."),
    ("Logins / s, by result", "ops",
     [(f"sum by (result) (rate(zonechat_login_logins_total{R}))", "{{result}}")],
     "ok, auth_failed, rate_limited, unavailable ..."),
    ("Bus queue depth, by node", "short",
     [('sum by (node) ({__name__=~"zonechat_.+_bus_queued"})', "{{node}}")],
     "Envelopes waiting to leave a node for its peers (bounded by bus.hwm per peer)."),
    ("CPU, by process", "percentunit",
     [(f'rate(process_cpu_seconds_total{{job="zonechat"}}{R})', "{{node}}")],
     "Share of one core each process uses (Redis included)."),
    ("Memory (RSS), by process", "bytes",
     [('process_resident_memory_bytes{job="zonechat"}', "{{node}}")], ""),
    ("Restarts (15 min) and nodes down", "short",
     [("increase(zonechat_supervisor_restarts_total[15m])", "restarts {{node}}"),
      ("count(zonechat_node_up == 0) or vector(0)", "nodes not answering")],
     "A node restarted by its supervisor, or not answering the scrape."),
    ("Redis errors / s", "ops",
     [(f'sum by (node) (rate({{__name__=~"zonechat_.+_redis_errors_total"}}{R}))', "{{node}}")],
     "Redis calls that failed (zones, dc, login): their requests answer unavailable meanwhile."),
]


def panel(i: int, title: str, unit: str, targets: list, description: str) -> dict:
    return {
        "id": i + 1, "type": "timeseries", "title": title, "description": description,
        "datasource": DS, "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
        "fieldConfig": {"defaults": {"unit": unit, "custom": {"lineWidth": 1, "fillOpacity": 10}},
                        "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "none"}},
        "targets": [{"datasource": DS, "expr": expr, "legendFormat": legend, "refId": chr(65 + k)}
                    for k, (expr, legend) in enumerate(targets)],
    }


def dashboard() -> dict:
    return {
        "__inputs": [{"name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource",
                      "pluginId": "prometheus", "pluginName": "Prometheus"}],
        "__requires": [{"type": "grafana", "id": "grafana", "name": "Grafana", "version": "9.0.0"},
                       {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"}],
        "title": "zonechat", "uid": "zonechat", "tags": ["zonechat", "chat"],
        "timezone": "browser", "schemaVersion": 37, "version": 1, "editable": True,
        "refresh": "10s", "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": []}, "annotations": {"list": []},
        "panels": [panel(i, *p) for i, p in enumerate(PANELS)],
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        with open(PATH, encoding="utf-8") as fh:
            same = fh.read() == text
        print(f"{PATH} is {'up to date' if same else 'stale: run python -m tools.grafana_dashboard'}")
        return 0 if same else 1
    with open(PATH, "w", encoding="utf-8") as fh:
        fh.write(text)
    print(f"wrote {PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
