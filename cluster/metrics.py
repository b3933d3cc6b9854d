"""Prometheus metrics and readiness of one node, read from the counters it already keeps.

Each role keeps plain integer counters for the operator view (``frames_in``, ``stored``,
kicks by reason, ...). Rather than a second set of counters bumped on every message, a
node's metrics are *read* from those at scrape time: ``Node.metrics(fam)`` adds families
to a ``Families`` builder, which makes prometheus_client's own metric families
(``CounterMetricFamily`` ...) and renders them with ``generate_latest``. The hot paths pay
nothing for Prometheus; a histogram is a ``Buckets`` (a list of ints and a bisect).

Serving: each node answers on an abstract Unix socket (``socket_name``: no file, no port
in the config, private to the host's network namespace), for its own user only
(SO_PEERCRED), one request per connection: ``metrics`` (the text format), ``ready`` (JSON
``{"ready": bool, "checks": {name: bool}}``) and ``ping``. The supervisor of the host
asks every node and serves the merged result over HTTP (cluster/metrics_http.py), adding
the ``node`` and ``role`` labels, so a node's own text carries neither.

Names follow Prometheus' conventions: ``zonechat_<role>_<what>_total`` for counters,
``_seconds`` for durations, plain names for gauges; no label takes a user, room or
conversation id (bounded label sets only: codes, reasons, kinds).
"""
from __future__ import annotations

import bisect
import hashlib
import json
import os
import socket
import struct

from gevent.server import StreamServer
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

# send -> ack at a gate, and one store call of a zone (seconds)
ACK_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STORE_BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
REQUEST_MAX = 64             # bytes of a request line
READ_TIMEOUT = 2.0           # seconds a client gets to send its request line
PEERCRED = struct.Struct("3i")


class Buckets:
    """A histogram as plain ints: ``counts[i]`` observations <= ``bounds[i]`` (and above the
    last bound in ``counts[-1]``), not cumulative; ``total`` their sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds):
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list:
        """[(le, count <= le)] with "+Inf" last, as Prometheus wants them."""
        out, running = [], 0
        for le, n in zip([*map(_le, self.bounds), "+Inf"], self.counts):
            running += n
            out.append((le, running))
        return out


def _le(bound: float) -> str:
    return repr(float(bound))


class Families:
    """Collects one node's metric families; names get ``zonechat_<role>_``."""

    def __init__(self, role: str):
        self.prefix = f"zonechat_{role}_"
        self.families: list = []

    def counter(self, what: str, doc: str, value, label: str | None = None) -> None:
        """``value``: a number, or {label value: number} with ``label`` named."""
        self._add(CounterMetricFamily, what, doc, value, label)

    def gauge(self, what: str, doc: str, value, label: str | None = None) -> None:
        self._add(GaugeMetricFamily, what, doc, value, label)

    def histogram(self, what: str, doc: str, buckets: Buckets) -> None:
        fam = HistogramMetricFamily(self.prefix + what, doc)
        fam.add_metric([], buckets.cumulative(), buckets.total)
        self.families.append(fam)

    def _add(self, cls, what: str, doc: str, value, label: str | None) -> None:
        if label is None:
            self.families.append(cls(self.prefix + what, doc, value=value))
            return
        fam = cls(self.prefix + what, doc, labels=[label])
        for key, n in sorted(value.items()):
            fam.add_metric([str(key)], n)
        self.families.append(fam)

    def collect(self):
        return iter(self.families)


def render(families: Families) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(families)
    return generate_latest(registry)


def bus_families(fam: Families, bus) -> None:
    """What every role's bus does: queued envelopes, drops, refused peers."""
    fam.gauge("bus_queued", "envelopes queued on the bus for peers, not yet sent", bus.queued)
    fam.counter("bus_dropped", "envelopes dropped past a peer's bus.hwm", bus.drops)
    fam.counter("bus_refused", "peers refused at the bus handshake (unknown key or no CURVE)",
                bus.refused)
    fam.counter("bus_records_dropped", "traffic/audit records dropped before reaching the log role",
                bus.log_drops)


def redis_answers(store) -> bool:
    """A readiness check: the node's Redis answers PING (dc.store.Store)."""
    try:
        return bool(store.ping())
    except Exception:           # StoreUnavailable, or anything redis-py raises: not ready
        return False


def socket_name(cfg, node: str) -> str:
    """The abstract socket a node answers on: from the data_dir and the node's name, so two
    clusters (or two hosts' data_dirs) on one machine never meet."""
    digest = hashlib.sha256(f"{os.path.realpath(cfg.data_dir)}\0{node}".encode()).hexdigest()[:24]
    return f"\0zonechat-metrics-{digest}"


class MetricsServer:
    """The node's end: answers ``metrics``, ``ready`` and ``ping`` (see the module doc)."""

    def __init__(self, node):
        self.node = node
        self.server = None

    def start(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(socket_name(self.node.config, self.node.name))
        sock.listen(64)
        self.server = StreamServer(sock, self._handle)
        self.server.start()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()

    def _handle(self, conn, _addr) -> None:
        try:
            if not _same_user(conn):
                return
            conn.settimeout(READ_TIMEOUT)
            what = conn.recv(REQUEST_MAX).strip()
            conn.sendall(self.answer(what))
        except OSError:
            pass
        finally:
            conn.close()

    def answer(self, what: bytes) -> bytes:
        if what == b"metrics":
            fam = Families(self.node.role)
            self.node.metrics(fam)
            return render(fam)
        if what == b"ready":
            checks = self.node.ready_checks()
            return json.dumps({"ready": all(checks.values()), "checks": checks}).encode()
        return b"pong" if what == b"ping" else b""


def _same_user(conn) -> bool:
    """Only processes of our own user (the supervisor) are answered."""
    _pid, uid, _gid = PEERCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, PEERCRED.size))
    return uid == os.getuid()
