"""The supervisor's HTTP port: every node's Prometheus metrics, ``/healthz`` and ``/readyz``.

One per host, on ``metrics.host``:``metrics.port`` (cluster/config.py MetricsConf; no port
per node). A request asks this host's nodes at once over their abstract sockets
(cluster/metrics.py), each within ``metrics.scrape_timeout``:

- ``GET /metrics``: the nodes' families merged, every sample labelled ``node`` and
  ``role``, parsed with prometheus_client's own parser and rendered again with its
  ``generate_latest``; plus what the supervisor knows itself: per process (the managed
  Redis included) ``process_cpu_seconds_total``, ``process_resident_memory_bytes``,
  ``process_open_fds``, ``process_start_time_seconds`` (psutil), and
  ``zonechat_supervisor_restarts_total`` and ``zonechat_node_up`` (1 = answered the scrape).
- ``GET /healthz``: 200 while the supervisor runs and each node is running and answers;
  503 otherwise. JSON: ``{"ok", "state", "nodes": {name: {"role", "state", "pid",
  "restarts", "serving"}}}``.
- ``GET /readyz`` (``?node=NAME`` for one; 404 for a name not on this host): 200 when
  every node asked can do its job, else 503. JSON: ``{"ready", "nodes": {name: {"role",
  "ready", "checks": {...}}}}``; a node's checks are its ``ready_checks()``, Redis's is
  an authenticated PING. A node that does not answer is not ready.
"""
from __future__ import annotations

import json
import socket
import urllib.parse

import gevent
import psutil
from gevent import pywsgi
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from cluster import redis_server
from cluster.metrics import socket_name

ANSWER_MAX = 8 * 1024 * 1024      # bytes of one node's answer
JSON = "application/json"


class MetricsHttpError(Exception):
    """The port cannot be served (in use, or a bad address)."""


def bind_host(cfg, host: str | None) -> str:
    return cfg.metrics.host or host or "127.0.0.1"


def ask(cfg, node: str, what: bytes, timeout: float) -> bytes | None:
    """One request to a node's metrics socket; None when it does not answer in time."""
    try:
        with gevent.Timeout(timeout), socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(socket_name(cfg, node))
            sock.sendall(what + b"\n")
            return _read_all(sock)
    except (OSError, gevent.Timeout):
        return None


def _read_all(sock) -> bytes | None:
    parts, size = [], 0
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(parts)
        size += len(chunk)
        if size > ANSWER_MAX:
            return None
        parts.append(chunk)


def merge(texts: dict) -> list:
    """{(node, role): text} -> merged families, each sample with ``node`` and ``role``."""
    merged: dict = {}
    for (node, role), text in texts.items():
        for fam in text_string_to_metric_families(text):
            into = merged.get(fam.name)
            if into is None:
                into = merged[fam.name] = Metric(fam.name, fam.documentation, fam.type, fam.unit)
            elif into.type != fam.type:
                continue                # two roles disagreeing on a name: keep the first's
            for s in fam.samples:
                into.add_sample(s.name, {"node": node, "role": role, **s.labels}, s.value)
    return list(merged.values())


class Collected:
    """A prometheus_client collector over families made beforehand."""

    def __init__(self, families):
        self.families = families

    def collect(self):
        return iter(self.families)


def process_families(children) -> list:
    """CPU, memory, open files and start time of every running child (psutil)."""
    cpu = CounterMetricFamily("process_cpu_seconds", "user + system CPU seconds", labels=["node", "role"])
    rss = GaugeMetricFamily("process_resident_memory_bytes", "resident memory", labels=["node", "role"])
    fds = GaugeMetricFamily("process_open_fds", "open file descriptors", labels=["node", "role"])
    start = GaugeMetricFamily("process_start_time_seconds", "process start (epoch seconds)",
                              labels=["node", "role"])
    for child in children:
        sample = _process_sample(child.pid) if child.alive() else None
        if sample is None:
            continue
        labels = [child.spec.name, child.spec.role]
        cpu.add_metric(labels, sample[0])
        rss.add_metric(labels, sample[1])
        fds.add_metric(labels, sample[2])
        start.add_metric(labels, sample[3])
    return [cpu, rss, fds, start]


def _process_sample(pid: int):
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            times = proc.cpu_times()
            return (times.user + times.system, proc.memory_info().rss, proc.num_fds(), proc.create_time())
    except psutil.Error:
        return None


def supervisor_families(children, up: dict) -> list:
    restarts = CounterMetricFamily("zonechat_supervisor_restarts", "restarts of a node by its supervisor",
                                   labels=["node", "role"])
    alive = GaugeMetricFamily("zonechat_node_up", "1 when the node answered this scrape",
                              labels=["node", "role"])
    for child in children:
        labels = [child.spec.name, child.spec.role]
        restarts.add_metric(labels, child.restarts)
        alive.add_metric(labels, 1 if up.get(child.spec.name) else 0)
    return [restarts, alive]


class MetricsHttp:
    """Serves the port for one supervisor (``cluster.supervisor.Supervisor``)."""

    def __init__(self, supervisor):
        self.sup = supervisor
        self.cfg = supervisor.cfg
        self.addr = (bind_host(self.cfg, supervisor.host), self.cfg.metrics.port)
        self.server = None

    def start(self) -> None:
        try:
            self.server = pywsgi.WSGIServer(self.addr, self.app, log=None, error_log=None)
            self.server.start()
        except OSError as exc:
            raise MetricsHttpError(f"cannot serve metrics on {self.addr[0]}:{self.addr[1]}: "
                                   f"{exc.strerror or exc}; stop what holds it or change metrics.port") from None

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(timeout=1)

    # -- asking the nodes ---------------------------------------------------------------
    def nodes(self) -> list:
        """This host's zonechat nodes (the managed Redis is asked by PING instead)."""
        return [c for c in self.sup.children() if c.spec.role != "redis"]

    def ask_all(self, children, what: bytes) -> dict:
        """{name: answer or None}, every node asked at once."""
        timeout = self.cfg.metrics.scrape_timeout
        jobs = {c.spec.name: gevent.spawn(ask, self.cfg, c.spec.name, what, timeout)
                for c in children if c.alive()}
        gevent.joinall(list(jobs.values()), timeout=timeout + 1)
        return {name: job.value for name, job in jobs.items()}

    def scrape(self) -> bytes:
        children = self.nodes()
        answers = self.ask_all(children, b"metrics")
        texts = {(c.spec.name, c.spec.role): answers[c.spec.name].decode("utf-8", "replace")
                 for c in children if answers.get(c.spec.name)}
        families = merge(texts)
        families += process_families(self.sup.children())
        families += supervisor_families(children, {n: bool(a) for n, a in answers.items()})
        registry = CollectorRegistry(auto_describe=False)
        registry.register(Collected(families))
        return generate_latest(registry)

    def health(self) -> tuple[bool, dict]:
        children = self.nodes()
        answers = self.ask_all(children, b"ping")
        nodes = {}
        for c in self.sup.children():
            serving = c.alive() and (c.spec.role == "redis" or answers.get(c.spec.name) == b"pong")
            nodes[c.spec.name] = {"role": c.spec.role, "state": c.state, "pid": c.pid,
                                  "restarts": c.restarts, "serving": serving}
        ok = self.sup.state == "ready" and all(n["serving"] and n["state"] == "running" for n in nodes.values())
        return ok, {"ok": ok, "state": self.sup.state, "nodes": nodes}

    def readiness(self, only: str | None = None) -> tuple[bool, dict]:
        children = [c for c in self.sup.children() if only is None or c.spec.name == only]
        answers = self.ask_all([c for c in children if c.spec.role != "redis"], b"ready")
        nodes = {c.spec.name: self._node_ready(c, answers.get(c.spec.name)) for c in children}
        ready = all(n["ready"] for n in nodes.values())
        return ready, {"ready": ready, "nodes": nodes}

    def _node_ready(self, child, answer: bytes | None) -> dict:
        if child.spec.role == "redis":
            host, port, password = child.spec.probe
            checks = {"ping": child.alive() and redis_server.ping(host, port, password)}
        else:
            checks = _checks(answer)
        checks["running"] = child.state == "running" and child.alive()
        return {"role": child.spec.role, "ready": all(checks.values()), "checks": checks}

    # -- HTTP -------------------------------------------------------------------------
    def app(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return _reply(start_response, "405 Method Not Allowed", JSON, {"error": "GET only"})
        if path == "/metrics":
            return _reply(start_response, "200 OK", CONTENT_TYPE_LATEST, self.scrape())
        if path == "/healthz":
            ok, body = self.health()
            return _reply(start_response, "200 OK" if ok else "503 Service Unavailable", JSON, body)
        if path == "/readyz":
            return self._readyz(environ, start_response)
        return _reply(start_response, "404 Not Found", JSON,
                      {"error": "not found: /metrics, /healthz, /readyz[?node=NAME]"})

    def _readyz(self, environ, start_response):
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        only = (query.get("node") or [None])[0]
        if only is not None and only not in {c.spec.name for c in self.sup.children()}:
            return _reply(start_response, "404 Not Found", JSON, {"error": f"no node {only!r} on this host"})
        ready, body = self.readiness(only)
        return _reply(start_response, "200 OK" if ready else "503 Service Unavailable", JSON, body)


def _checks(answer: bytes | None) -> dict:
    try:
        checks = json.loads(answer)["checks"]
        return {str(k): bool(v) for k, v in checks.items()}
    except (TypeError, ValueError, KeyError, AttributeError):
        return {"answers": False}


def _reply(start_response, status: str, ctype: str, body) -> list:
    data = body if isinstance(body, bytes) else json.dumps(body, sort_keys=True).encode()
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(data))),
                            ("Cache-Control", "no-store")])
    return [data]
