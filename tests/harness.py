"""Test harness: a whole zonechat cluster on free ports, run by the real supervisor.

Plain helpers, importable from any test module (``from harness import poll_for``);
the fixtures that use them (``cluster``, ``start_cluster``) live in tests/conftest.py.
Kept out of conftest.py because several conftest.py files exist under tests/ and
``from conftest import ...`` would pick whichever was loaded last.
"""
from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import yaml

from cluster import config as config_mod
from cluster import runstate, secrets
from cluster.child import die_with_parent
from tools.redis_cluster import free_ports  # noqa: F401  (tests import it from here)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START_TIMEOUT = 90.0
STOP_TIMEOUT = 60.0

NODES = {
    "gate1": {"role": "gate", "ports": ("bus_port", "tcp_port", "ws_port")},
    "gate2": {"role": "gate", "ports": ("bus_port", "tcp_port", "ws_port")},
    "login1": {"role": "login", "ports": ("bus_port",)},
    "center1": {"role": "center", "ports": ("bus_port", "admin_port")},
    "zone1": {"role": "zone", "ports": ("bus_port",)},
    "zone2": {"role": "zone", "ports": ("bus_port",)},
    "dc1": {"role": "dc", "ports": ("bus_port",)},
    "log1": {"role": "log", "ports": ("bus_port",)},
}
TEST_DEFAULTS = {
    "cluster": {"data_dir": "data"},
    "redis": {"managed": True, "host": "127.0.0.1", "appendfsync": "everysec"},
    # cheap hashes, so a test's burst of 100 parallel registers fits the hash queue
    "login": {"argon2_time_cost": 1, "argon2_memory_kib": 256, "argon2_parallelism": 1, "hash_queue": 1000},
    # every test client comes from 127.0.0.1: the per-address limits would count a whole
    # module's users as one abuser (tests/integration/test_gate_abuse.py sets its own)
    "gate": {"register_per_ip": 100000, "failed_logins_per_ip": 100000, "max_connections_per_ip": 100000},
    "supervisor": {"graceful_timeout": 5, "ready_timeout": 30, "restart_attempts": 5,
                   "restart_window": 60, "retry_in": 5},
}


def missing(why: str):
    """A test cannot run without something the machine lacks: a skip saying what to
    install, or a failure under CI (``CI`` set), which must install it (.ci/run)."""
    import pytest
    if os.environ.get("CI"):
        pytest.fail(why + " — CI must install it (.ci/run)", pytrace=False)
    pytest.skip(why)


def need_tool(tool: str, install: str) -> str:
    """The path of ``tool`` (PATH, /usr/sbin, /sbin), else ``missing`` naming ``install``."""
    import shutil
    path = shutil.which(tool, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    return path or missing(f"{tool} not found: install Debian's {install} (apt-get install -y {install})")


def poll_for(predicate, timeout: float, what: str, interval: float = 0.05):
    """Call ``predicate`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def http_request(url: str, headers: dict | None = None, data: bytes | None = None,
                 method: str | None = None, timeout: float = 10) -> tuple:
    """(status, headers, body bytes) of one HTTP request; an error status is returned too."""
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def output_of(proc: subprocess.Popen, timeout: float) -> str:
    """All of ``proc``'s stdout once it exits; killed (and reaped) if it is not done in time."""
    try:
        return proc.communicate(timeout=timeout)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def make_config(directory: str, overrides: dict | None = None) -> str:
    """Write a test config.yaml into ``directory`` (free ports, cheap argon2); its path."""
    wanted = sum(len(n["ports"]) for n in NODES.values()) + 2
    ports = iter(free_ports(wanted))
    nodes = {}
    for name, node in NODES.items():
        nodes[name] = {"role": node["role"], "host": "127.0.0.1"}
        nodes[name].update({key: next(ports) for key in node["ports"]})
    raw = _merge(TEST_DEFAULTS, {"nodes": nodes, "redis": {"port": next(ports)},
                               "metrics": {"port": next(ports)}})
    raw = _merge(raw, overrides)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "config.yaml")
    with open(path, "w", encoding="utf-8") as fh:
        yaml.safe_dump(raw, fh, sort_keys=False)
    return path


def zonechat(*args: str, config: str, timeout: float = STOP_TIMEOUT) -> subprocess.CompletedProcess:
    """Run the real CLI (``python -m cluster.cli``) and capture its output."""
    return subprocess.run([sys.executable, "-m", "cluster.cli", *args, "-c", config],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout)


class RunningCluster:
    """A cluster started by the real supervisor (``zonechat up``) as a child of pytest.

    Attributes: ``cfg`` (cluster.config.Config), ``config_path``, ``data_dir``,
    ``gates`` [(host, tcp_port)] and ``gate_addrs`` {name: (host, tcp_port)} in name order,
    ``ws_addrs`` {name: (host, ws_port)}, ``admin_addr`` (host, port) of the center,
    ``redis_url``, ``proc`` (the supervisor's Popen).
    """

    def __init__(self, config_path: str):
        self.config_path = config_path
        self.cfg = config_mod.load(config_path)
        self.data_dir = self.cfg.data_dir
        gates = sorted(self.cfg.nodes_of("gate"), key=lambda n: n.name)
        self.gate_addrs = {g.name: (g.host, g.tcp_port) for g in gates}
        self.gates = list(self.gate_addrs.values())
        self.ws_addrs = {g.name: (g.host, g.ws_port) for g in gates}
        center = self.cfg.nodes_of("center")[0]
        self.admin_addr = (center.admin_host, center.admin_port)
        self.state_path = runstate.state_path(self.data_dir)
        self.proc = None
        self._seen: dict = {}      # pid -> create_time of every process this cluster ran

    # -- lifecycle --------------------------------------------------------------------
    def start(self, detach: bool = False) -> "RunningCluster":
        """``zonechat up`` in the foreground as our child (SIGKILLed if pytest dies), or
        with ``detach`` through ``zonechat up --detach`` (the supervisor outlives the CLI)."""
        if detach:
            out = zonechat("up", "--detach", config=self.config_path, timeout=START_TIMEOUT)
            assert out.returncode == 0, out.stdout + out.stderr + self.log_text("supervisor")
            assert "cluster ready" in out.stdout
            self.state()
            return self
        os.makedirs(os.path.join(self.data_dir, "logs"), exist_ok=True)
        with open(os.path.join(self.data_dir, "logs", "supervisor.log"), "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cluster.cli", "up", "-c", self.config_path],
                cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent(os.getpid()))
        self._seen[self.proc.pid] = runstate.create_time(self.proc.pid)
        poll_for(self._ready_or_dead, START_TIMEOUT, "cluster ready")
        if self.proc.poll() is not None:
            raise AssertionError(f"zonechat up exited with {self.proc.returncode}:\n{self.log_text('supervisor')}")
        return self

    def _ready_or_dead(self) -> bool:
        if self.proc.poll() is not None:
            return True
        doc = self.state()
        return bool(doc) and doc.get("state") == "ready"

    def stop(self) -> None:
        """``zonechat down``, then SIGKILL whatever this cluster ever ran that still lives."""
        self.state()
        try:
            zonechat("down", config=self.config_path)
        finally:
            if self.proc is not None:
                try:
                    self.proc.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            for pid in self.living():
                os.kill(pid, signal.SIGKILL)

    def living(self) -> list[int]:
        """Every pid this cluster ran (supervisor included) that still runs."""
        return [pid for pid, ct in self._seen.items() if runstate.alive(pid, ct)]

    # -- looking ----------------------------------------------------------------------
    @property
    def secret(self) -> str:
        """The cluster secret (the admin API's bearer), found the way every command finds it."""
        return secrets.cluster_secret(self.cfg)

    @property
    def redis_url(self) -> str:
        """The managed Redis's URL with its generated password (made by the first ``up``)."""
        return secrets.redis_url(self.cfg)

    @property
    def redis_password(self) -> str | None:
        return secrets.redis_password(self.cfg)

    def state(self) -> dict | None:
        """The supervisor's state file (see cluster/runstate.py), None when absent."""
        doc = runstate.read(self.state_path)
        if doc:
            self._seen.update({pid: ct for _, pid, ct in runstate.processes(doc)})
        return doc

    def node(self, name: str) -> dict:
        doc = self.state()
        assert doc is not None, "the cluster is not running"
        return doc["nodes"][name]

    def pid(self, name: str) -> int:
        return self.node(name)["pid"]

    def log_text(self, name: str) -> str:
        try:
            with open(os.path.join(self.data_dir, "logs", f"{name}.log"), encoding="utf-8",
                      errors="replace") as fh:
                return fh.read()
        except FileNotFoundError:
            return ""

    # -- acting -----------------------------------------------------------------------
    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` to node ``name`` (not through the supervisor); its pid."""
        pid = self.pid(name)
        os.kill(pid, sig)
        return pid

    def wait_ready(self, name: str, old_pid: int | None = None, timeout: float = 60.0) -> dict:
        """Wait until ``name`` runs (with a pid other than ``old_pid``); its state entry."""
        def ready():
            node = self.node(name)
            fresh = old_pid is None or node["pid"] != old_pid
            ok = fresh and node["state"] == "running" and runstate.alive(node["pid"], node["create_time"])
            return node if ok else None
        return poll_for(ready, timeout, f"{name} running again")

    def restart(self, name: str, timeout: float = 60.0) -> dict:
        """SIGKILL node ``name`` and wait until the supervisor has it running again."""
        return self.wait_ready(name, old_pid=self.kill(name), timeout=timeout)

    def status(self) -> dict:
        """``zonechat status --json`` through the real CLI."""
        out = zonechat("status", "--json", config=self.config_path)
        assert out.returncode in (0, 3), out.stdout + out.stderr
        return json.loads(out.stdout)
