"""Issue 13, point 1: a real Prometheus server (Debian's ``prometheus``) scrapes a running
cluster from the config ``zonechat metrics scrape-config`` prints, and a rate of our
counters is queried back through its HTTP API.

Without the ``prometheus`` binary the test skips, saying what to install; under CI
(``CI`` set) it fails instead: .ci/run installs it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

import pytest

from client import Client, dm_conv
from harness import REPO, free_ports, need_tool, poll_for

PASSWORD = "password123"
WAIT = 45.0


def prometheus_binary(name: str = "prometheus") -> str:
    return need_tool(name, "prometheus")


@pytest.fixture
def prometheus(cluster, tmp_path):
    """A Prometheus server scraping ``cluster`` every second; its base URL."""
    binary = prometheus_binary()
    conf = subprocess.run([sys.executable, "-m", "cluster.cli", "metrics", "scrape-config",
                           "-c", cluster.config_path, "--interval", "1s"],
                          cwd=REPO, capture_output=True, text=True, timeout=30, check=True).stdout
    (tmp_path / "prometheus.yml").write_text(conf)
    port = free_ports(1)[0]
    log = open(tmp_path / "prometheus.log", "wb")
    proc = subprocess.Popen([binary, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        poll_for(lambda: _status(base + "/-/ready") == 200 or proc.poll() is not None, WAIT,
                 "Prometheus ready")
        assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status
    except (urllib.error.URLError, OSError):
        return None


def query(base: str, promql: str) -> list:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as resp:
        doc = json.loads(resp.read())
    assert doc["status"] == "success", doc
    return doc["data"]["result"]


def scalar(result: list) -> float:
    return sum(float(r["value"][1]) for r in result)


def test_prometheus_scrapes_the_cluster_and_a_rate_comes_back(cluster, prometheus):
    a_host, a_port = cluster.gates[0]
    a = Client(a_host, a_port, timeout=10, ping_interval=None).connect()
    b = Client(*cluster.gates[1], timeout=10, ping_interval=None).connect()
    try:
        for c, name in ((a, f"prom{os.getpid()}a"), (b, f"prom{os.getpid()}b")):
            c.register(name, PASSWORD)
            c.login(name, PASSWORD)
        conv = dm_conv(a.user, b.user)

        def stored_rate():
            a.send(conv, "tick")           # keep traffic flowing while Prometheus scrapes
            return scalar(query(prometheus, 'sum(rate(zonechat_zone_messages_stored_total{kind="dm"}[5s]))')) > 0
        poll_for(stored_rate, WAIT, "a DM store rate above 0 in Prometheus", interval=0.2)
        assert scalar(query(prometheus, "sum(rate(zonechat_gate_frames_in_total[5s]))")) > 0
        ups = query(prometheus, 'up{job="zonechat"}')
        assert ups and all(r["value"][1] == "1" for r in ups)
        nodes = query(prometheus, "zonechat_node_up == 1")
        assert {r["metric"]["node"] for r in nodes} == set(cluster.cfg.nodes)
        p99 = query(prometheus, "histogram_quantile(0.99, sum by (le) (rate(zonechat_gate_ack_seconds_bucket[10s])))")
        assert p99 and 0 < float(p99[0]["value"][1]) < 10
    finally:
        a.close()
        b.close()


def test_the_shipped_alert_rules_load_in_prometheus():
    """docs/prometheus/alerts.yml is a valid rule file (promtool, from the same package)."""
    done = subprocess.run([prometheus_binary("promtool"), "check", "rules",
                           os.path.join(REPO, "docs", "prometheus", "alerts.yml")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "SUCCESS" in done.stdout, done.stdout + done.stderr
