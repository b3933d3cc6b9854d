"""Shared pieces of the benchmark suite: a pinned cluster, users, lean connections, CPU.

The cluster runs under the real supervisor with every process pinned to the server core
(``taskset`` semantics through ``sched_setaffinity``, inherited by the children); the
generator pins itself to the other core. Users are provisioned straight into the store
with one precomputed password hash and log in with tokens, so no argon2 sits on the
bench path.
"""
from __future__ import annotations

import gc
import json
import os
import random
import resource
import socket
import struct
import subprocess
import sys
import time

import psutil
import yaml

from cluster import config as config_mod, runstate, tokens
from cluster.codec import FrameReader, encode_frame, unpackb

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SERVER_CORE, LOAD_CORE = 0, 1
_LEN = struct.Struct(">I")


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def bench_config(directory: str, gates: int = 2, zones: int = 2, extra: dict | None = None) -> str:
    """A config on free ports with ``gates`` gates and ``zones`` zones."""
    ports = iter(free_ports(3 * gates + zones + 6))
    nodes = {f"gate{i + 1}": {"role": "gate", "bus_port": next(ports), "tcp_port": next(ports),
                              "ws_port": next(ports)} for i in range(gates)}
    nodes.update({f"zone{i + 1}": {"role": "zone", "bus_port": next(ports)} for i in range(zones)})
    nodes.update({"login1": {"role": "login", "bus_port": next(ports)},
                  "center1": {"role": "center", "bus_port": next(ports), "admin_port": next(ports)},
                  "dc1": {"role": "dc", "bus_port": next(ports)},
                  "log1": {"role": "log", "bus_port": next(ports)}})
    doc = {"cluster": {"data_dir": os.path.join(directory, "data"), "secret": "bench-secret-0123456789"},
           "redis": {"managed": True, "port": next(ports), "appendfsync": "everysec"},
           "nodes": nodes,
           "login": {"argon2_time_cost": 1, "argon2_memory_kib": 256},
           "gate": {"max_connections": 19000, "outbox_bytes": 4 * 1024 * 1024}}
    for key, value in (extra or {}).items():
        doc.setdefault(key, {}).update(value)
    path = os.path.join(directory, "bench.yaml")
    os.makedirs(directory, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        yaml.safe_dump(doc, fh)
    return path


class BenchCluster:
    """``zonechat up`` pinned to the server core; stopped with ``zonechat down``."""

    def __init__(self, config_path: str):
        self.config_path = config_path
        self.cfg = config_mod.load(config_path)
        self.state_path = runstate.state_path(self.cfg.data_dir)
        self.proc = None

    def start(self, timeout: float = 120.0) -> "BenchCluster":
        os.makedirs(os.path.join(self.cfg.data_dir, "logs"), exist_ok=True)
        log = open(os.path.join(self.cfg.data_dir, "logs", "supervisor.log"), "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cluster.cli", "up", "-c", self.config_path], cwd=REPO,
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=lambda: os.sched_setaffinity(0, {SERVER_CORE}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            doc = runstate.read(self.state_path)
            if doc and doc.get("state") == "ready":
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("the bench cluster did not become ready")

    def stop(self) -> None:
        subprocess.run([sys.executable, "-m", "cluster.cli", "down", "-c", self.config_path],
                       cwd=REPO, capture_output=True, timeout=120)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def pids(self) -> dict:
        doc = runstate.read(self.state_path) or {"nodes": {}}
        return {name: node["pid"] for name, node in doc["nodes"].items() if node.get("pid")}

    def gates(self) -> list[tuple[str, int]]:
        return [(n.host, n.tcp_port) for n in sorted(self.cfg.nodes_of("gate"), key=lambda n: n.name)]

    def rss(self, name: str) -> int:
        return psutil.Process(self.pids()[name]).memory_info().rss


class CpuMeter:
    """Busy CPU seconds of the cluster's processes and of this generator over an interval."""

    def __init__(self, cluster: BenchCluster):
        self.procs = [psutil.Process(p) for p in cluster.pids().values()]
        self.mark()

    @staticmethod
    def _self() -> float:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return ru.ru_utime + ru.ru_stime

    def _server(self) -> float:
        total = 0.0
        for p in self.procs:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    def mark(self) -> None:
        self.t0, self.s0, self.g0 = time.monotonic(), self._server(), self._self()

    def read(self) -> dict:
        wall = time.monotonic() - self.t0
        return {"wall": wall, "server_busy": (self._server() - self.s0) / wall,
                "generator_busy": (self._self() - self.g0) / wall}


def provision(cfg, names: list[str]) -> dict:
    """Create users straight in the store; returns {name: token}."""
    from argon2 import PasswordHasher
    from dc.store import Store
    store = Store.from_config(cfg)
    pwhash = PasswordHasher(time_cost=1, memory_cost=256).hash("bench-password")
    for i in range(0, len(names), 1000):
        store.create_users(names[i:i + 1000], pwhash)
    store.close()
    return {n: tokens.mint(cfg.cluster.secret, n, 86400)[0] for n in names}


def pin_generator() -> None:
    """This process to the load core; and its garbage collector out of the way (what
    exists now is frozen, collections become rare): a collection of the generator's own
    heap would stall every probe at once and read as server latency."""
    os.sched_setaffinity(0, {LOAD_CORE})
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)


class FrameCounter:
    """Counts whole frames in a byte stream without decoding them."""

    __slots__ = ("frames", "need", "head")

    def __init__(self):
        self.frames, self.need, self.head = 0, 0, b""

    def feed(self, data: bytes) -> None:
        pos, end = 0, len(data)
        if self.head:
            data, end = self.head + data, end + len(self.head)
            self.head = b""
        need = self.need
        if need:
            if need > end:
                self.need = need - end
                return
            pos, need = need, 0
            self.frames += 1
        unpack = _LEN.unpack_from
        while end - pos >= 4:
            n = unpack(data, pos)[0]
            if pos + 4 + n > end:
                self.need = pos + 4 + n - end
                return
            pos += 4 + n
            self.frames += 1
        self.need, self.head = 0, data[pos:end]


def login_lean(sock, user: str, token: str, room: str | None = None, tries: int = 30) -> dict:
    """Log in (and join) on a plain blocking socket; returns the welcome. A login answered
    ``unavailable`` (the login role is busy) is tried again after its retry_ms."""
    reader = FrameReader(1 << 21)
    for attempt in range(tries):
        try:
            welcome = _request(sock, reader, {"t": "login", "rid": 1, "user": user, "token": token})
            break
        except ConnectionError as exc:
            if "unavailable" not in str(exc) or attempt == tries - 1:
                raise
            time.sleep(0.5 + random.random() * min(5.0, 0.5 * attempt))
    if room:
        _request(sock, reader, {"t": "join", "rid": 2, "room": room})
    return welcome


def _request(sock, reader, msg: dict) -> dict:
    sock.sendall(encode_frame(msg))
    while True:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError(f"closed during {msg['t']}")
        for body in reader.feed(data):
            reply = unpackb(body)
            if reply.get("t") == "error":
                raise ConnectionError(f"{msg['t']}: {reply}")
            if reply.get("rid") == msg["rid"]:
                return reply


def write_report(name: str, rows: list[dict], meta: dict) -> str:
    os.makedirs(os.path.join(REPO, "reports", "bench"), exist_ok=True)
    path = os.path.join(REPO, "reports", "bench", f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json")
    with open(path, "w", encoding="utf-8") as fh:
        json.dump({"bench": name, "meta": meta, "machine": machine(), "rows": rows}, fh, indent=1)
    return path


def machine() -> dict:
    """What the figures were measured on."""
    return {"cpus": os.cpu_count(), "python": sys.version.split()[0],
            "load_avg": os.getloadavg(), "server_core": SERVER_CORE, "load_core": LOAD_CORE}


def table(rows: list[dict], cols: list[str]) -> str:
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in cols}
    line = "  ".join(c.rjust(widths[c]) for c in cols)
    body = ["  ".join(_fmt(r.get(c)).rjust(widths[c]) for c in cols) for r in rows]
    return "\n".join([line, *body])


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.1f}" if abs(v) >= 10 else f"{v:.3f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, int(round(q / 100 * (len(values) - 1)))))
    return values[k]
