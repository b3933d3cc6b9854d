"""Issue 13, points 1 and 2: every node's Prometheus metrics and the health checks, served
by the real supervisor on the metrics port, against a real cluster with real traffic.

The scrape is parsed with prometheus_client's own parser; the checks are the ones a load
balancer or Kubernetes would make: /healthz, /readyz and /readyz?node=NAME, with a real
fault (Redis stopped by SIGSTOP: the zones cannot store, so they are not ready).

A real Prometheus server (Debian's ``prometheus``) scrapes the same cluster from the config
``zonechat metrics scrape-config`` prints, and rates of our counters come back through its
query API; without the binary that test skips, saying what to install, and under CI (``CI``
set) it fails instead: .ci/run installs it. The shipped alert rules are checked by promtool.
"""
from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from client import Client, dm_conv
from harness import REPO, free_ports, http_request, need_tool, poll_for

PASSWORD = "password123"
WAIT = 20.0
PROMETHEUS_WAIT = 45.0
_names = itertools.count(1)
ROLES = {"gate1": "gate", "gate2": "gate", "login1": "login", "center1": "center",
         "zone1": "zone", "zone2": "zone", "dc1": "dc", "log1": "log"}
FORBIDDEN_LABELS = {"user", "room", "conv", "conversation", "sid", "group"}


@pytest.fixture(scope="module")
def cluster(start_cluster):
    """A cluster whose supervisor waits 4 s before restarting a dead node (a first exit
    counts as flapping), so a test sees the cluster without that node for a while."""
    return start_cluster({"supervisor": {"restart_attempts": 0, "retry_in": 4}})


def fresh(prefix: str) -> str:
    return f"{prefix}{os.getpid() % 1000}m{next(_names)}"


def http_get(cluster, path: str):
    return http_request(f"http://127.0.0.1:{cluster.cfg.metrics.port}{path}", timeout=15)


def scrape(cluster) -> dict:
    """{sample name: [(labels, value)]} of one /metrics scrape."""
    status, headers, body = http_get(cluster, "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    samples: dict = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return samples


def declared(cluster) -> set:
    """Every series name /metrics declares (a labelled counter may have no sample yet)."""
    _, _, body = http_get(cluster, "/metrics")
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    return {fam.name + suffix for fam in text_string_to_metric_families(body.decode())
            for suffix in suffixes.get(fam.type, ("",))}


def value(samples: dict, name: str, **labels) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(v for lab, v in samples.get(name, []) if labels.items() <= lab.items())


@pytest.fixture
def traffic(cluster):
    """Two users on two gates, a DM each way and a room message; their names."""
    made = []
    names = [fresh("met"), fresh("met")]
    for (host, port), name in zip(cluster.gates, names):
        c = Client(host, port, timeout=10, ping_interval=None).connect()
        made.append(c)
        c.register(name, PASSWORD)
        c.login(name, PASSWORD)
    a, b = made
    room = f"r:{fresh('mhall')}"
    a.join(room)
    a.send(dm_conv(a.user, b.user), "hello b")
    b.send(dm_conv(a.user, b.user), "hello a")
    a.send(room, "hello room")
    yield names + [room[2:]]
    for c in made:
        c.close()


def test_every_node_is_scraped_with_node_and_role_labels(cluster, traffic):
    def counted():
        s = scrape(cluster)
        done = (value(s, "zonechat_gate_ack_seconds_count") >= 3
                and value(s, "zonechat_log_records_received_total") > 0)   # records travel per 100 ms
        return s if done else None
    samples = poll_for(counted, WAIT, "three acks in the gates' histograms, records at the log role")
    for node, role in ROLES.items():
        assert value(samples, "zonechat_node_up", node=node, role=role) == 1, node
        assert value(samples, f"zonechat_{role}_bus_queued", node=node) >= 0
        assert samples.get(f"zonechat_{role}_bus_dropped_total"), role
        for what in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"):
            assert value(samples, what, node=node, role=role) > 0, (what, node)
        assert value(samples, "zonechat_supervisor_restarts_total", node=node) >= 0
    assert value(samples, "process_resident_memory_bytes", node="redis", role="redis") > 0
    assert value(samples, "zonechat_gate_frames_in_total") >= 8
    assert value(samples, "zonechat_gate_frames_out_total") > value(samples, "zonechat_gate_deliveries_total") > 0
    assert value(samples, "zonechat_gate_sessions") >= 2 and value(samples, "zonechat_gate_users") >= 2
    assert value(samples, "zonechat_zone_messages_stored_total", kind="dm") >= 2
    assert value(samples, "zonechat_zone_messages_stored_total", kind="room") >= 1
    assert value(samples, "zonechat_zone_store_seconds_count") >= 2
    assert value(samples, "zonechat_gate_ack_seconds_bucket", le="+Inf") == \
        value(samples, "zonechat_gate_ack_seconds_count")
    assert value(samples, "zonechat_login_logins_total", result="ok") >= 2
    assert value(samples, "zonechat_login_registers_total", result="ok") >= 2
    assert value(samples, "zonechat_log_records_received_total") > 0
    assert value(samples, "zonechat_center_online_users") >= 2


def test_no_label_names_a_user_room_or_conversation(cluster, traffic):
    samples = scrape(cluster)
    ids = set(traffic)
    for name, rows in samples.items():
        for labels, _ in rows:
            assert not FORBIDDEN_LABELS & set(labels), (name, labels)
            assert not any(i in str(v) for v in labels.values() for i in ids), (name, labels)


def test_errors_and_kicks_are_counted_by_code_and_reason(cluster):
    host, port = cluster.gates[0]
    before = scrape(cluster)
    c = Client(host, port, timeout=10, ping_interval=None).connect()
    try:
        with pytest.raises(Exception):
            c.login(fresh("nobody"), "wrong-password-1")
    finally:
        c.close()
    poll_for(lambda: value(scrape(cluster), "zonechat_gate_errors_total", code="auth_failed")
             > value(before, "zonechat_gate_errors_total", code="auth_failed"), WAIT, "an auth_failed counted")
    after = scrape(cluster)
    assert value(after, "zonechat_login_logins_total", result="auth_failed") > \
        value(before, "zonechat_login_logins_total", result="auth_failed")


def test_healthz_and_readyz_when_all_is_well(cluster):
    status, _, body = http_get(cluster, "/healthz")
    doc = json.loads(body)
    assert status == 200 and doc["ok"] and doc["state"] == "ready"
    assert set(doc["nodes"]) == set(ROLES) | {"redis"}
    assert all(n["serving"] for n in doc["nodes"].values())
    answers = []        # readiness is live: a node busy past the scrape timeout counts as not ready

    def ready():
        status, _, body = http_get(cluster, "/readyz")
        answers.append((status, json.loads(body)))
        return status == 200
    try:
        poll_for(ready, 15, "/readyz to answer 200", interval=0.5)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: last answers {answers[-3:]}") from None
    doc = answers[-1][1]
    assert doc["ready"] and set(doc["nodes"]) == set(ROLES) | {"redis"}
    assert doc["nodes"]["gate1"]["checks"] == {"center": True, "zones": True, "accepting": True, "running": True}
    assert doc["nodes"]["zone1"]["checks"]["slots"] and doc["nodes"]["zone1"]["checks"]["redis"]
    status, _, body = http_get(cluster, "/readyz?node=gate2")
    assert status == 200 and list(json.loads(body)["nodes"]) == ["gate2"]
    assert http_get(cluster, "/readyz?node=nosuch")[0] == 404
    assert http_get(cluster, "/nothing")[0] == 404


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
        poll_for(lambda: _status(base + "/-/ready") == 200 or proc.poll() is not None, PROMETHEUS_WAIT,
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
        return http_request(url, timeout=5)[0]
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
        poll_for(stored_rate, PROMETHEUS_WAIT, "a DM store rate above 0 in Prometheus", interval=0.2)
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


def test_a_stopped_redis_makes_the_zones_unready_and_healthz_stays(cluster):
    pid = cluster.pid("redis")
    os.kill(pid, signal.SIGSTOP)
    try:
        def unready():
            status, _, body = http_get(cluster, "/readyz?node=zone1")
            doc = json.loads(body)
            return status == 503 and doc["nodes"]["zone1"]["checks"].get("redis") is not True and doc
        poll_for(unready, WAIT, "zone1 not ready while Redis is stopped")
        status, _, body = http_get(cluster, "/readyz")
        assert status == 503 and not json.loads(body)["ready"]
        assert http_get(cluster, "/readyz?node=gate1")[0] == 200     # a gate does not need Redis
    finally:
        os.kill(pid, signal.SIGCONT)
    poll_for(lambda: http_get(cluster, "/readyz")[0] == 200, WAIT, "ready again after SIGCONT")


def test_a_gate_without_its_zone_is_not_ready(cluster):
    """zone2 killed: the gates' links to it drop, so they are not ready (and /healthz
    says zone2 is not serving) until the supervisor's restart, 4 s later, is back."""
    old = cluster.pid("zone2")
    os.kill(old, signal.SIGKILL)

    def unready():
        status, _, body = http_get(cluster, "/readyz?node=gate1")
        return status == 503 and json.loads(body)["nodes"]["gate1"]["checks"]
    checks = poll_for(unready, WAIT, "gate1 not ready without zone2")
    assert checks["zones"] is False and checks["center"] is True
    status, _, body = http_get(cluster, "/healthz")
    assert status == 503 and not json.loads(body)["nodes"]["zone2"]["serving"]
    cluster.wait_ready("zone2", old_pid=old)
    poll_for(lambda: http_get(cluster, "/readyz?node=gate1")[0] == 200, WAIT, "gate1 ready again")


def metric_names_in(text: str) -> set:
    """Every zonechat_*/process_* series a PromQL text names (regex matchers expanded by
    the caller), histogram suffixes left on."""
    return set(re.findall(r"\b((?:zonechat|process)_[a-z_]+)\b", text))


def test_every_series_the_dashboard_and_alerts_use_exists(cluster, traffic):
    with open(os.path.join(REPO, "docs", "grafana", "zonechat.json"), encoding="utf-8") as fh:
        exprs = [t["expr"] for p in json.load(fh)["panels"] for t in p["targets"]]
    with open(os.path.join(REPO, "docs", "prometheus", "alerts.yml"), encoding="utf-8") as fh:
        exprs += [r["expr"] for g in yaml.safe_load(fh)["groups"] for r in g["rules"]]
    scraped = declared(cluster)
    for expr in exprs:
        for pattern in re.findall(r'__name__=~"([^"]+)"', expr):
            assert any(re.fullmatch(pattern, name) for name in scraped), (pattern, expr)
        for name in metric_names_in(re.sub(r'\{__name__=~"[^"]+"\}', "", expr)):
            assert name in scraped, (name, expr)
