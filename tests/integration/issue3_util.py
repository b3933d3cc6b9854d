"""Helpers for the issue-3 integration tests (groups, rooms, sys, moderation, admin API,
slow consumers, room scale). Everything runs against a real cluster (``cluster`` /
``start_cluster`` fixtures); nothing of ours is mocked.

``RecordingClient`` is ``cluster.client.Client`` that also keeps every body the server
sent, in arrival order (``raw``), before the client's own bookkeeping sees it: the
tests judge the server by what it put on the wire, not by what the client repaired.
"""
from __future__ import annotations

import collections
import itertools
import os
import socket
import struct
import subprocess
import sys
import time

import gevent
import msgpack
import pytest

from cluster import admin as admin_mod
from cluster import logfile
from cluster.client import Client
from cluster.slots import SlotTable
from harness import REPO, poll_for

PASSWORD = "password123"
TIMEOUT = 10.0
WINDOW = 128                     # sends in flight per Peer.flood (the gate allows 256)
_names = itertools.count(1)


def fresh(prefix: str = "u") -> str:
    """A user/group/room name no other test (or run) uses; at most 32 characters."""
    return f"{prefix[:12]}{os.getpid() % 100000}x{next(_names)}"


# -- clients ------------------------------------------------------------------------------
class RecordingClient(Client):
    """A Client that also records every server body in ``raw``, in arrival order."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.raw: list[dict] = []
        self.arrived: dict = {}          # (conv, cid) of a msg -> time.monotonic() it arrived

    def _dispatch(self, body: dict) -> None:
        self.raw.append(body)
        if body.get("t") == "msg":
            self.arrived[(body.get("conv"), body.get("cid"))] = time.monotonic()
        super()._dispatch(body)

    def msgs(self, conv: str | None = None) -> list[dict]:
        """Every ``msg`` push received (of ``conv``), in arrival order."""
        return [b for b in self.raw if b.get("t") == "msg" and (conv is None or b.get("conv") == conv)]

    def seqs(self, conv: str) -> list[int]:
        return [m["seq"] for m in self.msgs(conv)]

    def pushed(self, t: str) -> list[dict]:
        return [b for b in self.raw if b.get("t") == t and "rid" not in b]

    def wait_msgs(self, conv: str, count: int, timeout: float = TIMEOUT) -> list[dict]:
        poll_for(lambda: len(self.msgs(conv)) >= count, timeout,
                 f"{self.user}: {count} msgs in {conv} (have {self.seqs(conv)})")
        return self.msgs(conv)

    def fence(self) -> None:
        """A ping round trip: everything the gate queued for us before it is dispatched."""
        self.ping()


class Clients:
    """Clients of one test; all closed at teardown, whatever happened."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.all: list = []

    def connect(self, gate: int = 0, **options) -> RecordingClient:
        host, port = self.cluster.gates[gate]
        options.setdefault("timeout", TIMEOUT)
        options.setdefault("ping_interval", None)
        options.setdefault("catch_up", False)
        c = RecordingClient(host, port, **options).connect()
        self.all.append(c)
        return c

    def user(self, name: str | None = None, gate: int = 0, register: bool = True,
             **options) -> RecordingClient:
        """A logged-in client (registered first unless ``register`` is False)."""
        name = name or fresh()
        c = self.connect(gate, **options)
        if register:
            c.register(name, PASSWORD)
        c.login(name, PASSWORD)
        return c

    def relogin(self, old: RecordingClient, gate: int = 0, **options) -> RecordingClient:
        """Log the user of ``old`` in again on a new connection (``old`` is closed)."""
        if not old.closed.is_set():
            old.close()
        return self.user(old.user, gate=gate, register=False, **options)

    def raw(self, gate: int = 0, rcvbuf: int | None = None) -> "RawConn":
        """A bare connection to a gate (closed at teardown too)."""
        conn = RawConn(self.cluster.gates[gate], rcvbuf)
        self.all.append(conn)
        return conn

    def register(self, name: str | None = None) -> str:
        """Register a user without keeping a session; its name."""
        name = name or fresh()
        c = self.connect()
        c.register(name, PASSWORD)
        c.close()
        return name

    def close(self) -> None:
        for c in self.all:
            try:
                c.close()
            except Exception:
                pass


@pytest.fixture
def clients(cluster):
    box = Clients(cluster)
    yield box
    box.close()


def error_code(reply: dict) -> str | None:
    return reply.get("code") if reply.get("t") == "error" else None


def expect_error(client, code: str, t: str, **fields) -> dict:
    reply = client.request(t, **fields)
    assert reply.get("t") == "error" and reply.get("code") == code, (t, fields, reply)
    return reply


def expect_ok(client, t: str, **fields) -> dict:
    reply = client.request(t, **fields)
    assert reply.get("t") == "ok", (t, fields, reply)
    return reply


# -- raw sockets (clients that stop reading) ------------------------------------------------
def frame(obj) -> bytes:
    body = msgpack.packb(obj, use_bin_type=True)
    return struct.pack(">I", len(body)) + body


class RawConn:
    """A bare TCP connection: we decide when (and whether) to read."""

    def __init__(self, addr, rcvbuf: int | None = None):
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(addr)
        self.buf = bytearray()
        self.pos = 0
        self.rid = 0

    def write(self, obj) -> None:
        self.sock.sendall(frame(obj))

    def write_many(self, objs) -> None:
        self.sock.sendall(b"".join(frame(o) for o in objs))

    def read_frame(self, timeout: float = TIMEOUT) -> dict | None:
        """The next body; None at EOF."""
        deadline = time.monotonic() + timeout
        while True:
            buf, pos = self.buf, self.pos
            if len(buf) - pos >= 4:
                (n,) = struct.unpack_from(">I", buf, pos)
                if len(buf) - pos - 4 >= n:
                    self.pos = pos + 4 + n
                    return msgpack.unpackb(bytes(buf[pos + 4:pos + 4 + n]), raw=False, strict_map_key=False)
            if self.pos:
                del self.buf[:self.pos]
                self.pos = 0
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no frame in time")
            self.sock.settimeout(left)
            data = self.sock.recv(1 << 20)
            if not data:
                return None
            self.buf += data

    def request(self, t: str, **fields) -> dict:
        """Send a request and read frames until its reply (frames before it are dropped)."""
        self.rid += 1
        self.write({"t": t, "rid": self.rid, **fields})
        while True:
            body = self.read_frame()
            assert body is not None, f"connection closed before the reply to {t}"
            if body.get("rid") == self.rid:
                return body

    def login(self, user: str, register: bool = True, ping: bool = True) -> dict:
        """Register (unless told not to) and log in; then a ping unless told not to."""
        if register:
            assert self.request("register", user=user, password=PASSWORD)["t"] == "ok"
        welcome = self.request("login", user=user, password=PASSWORD, v=1)
        assert welcome["t"] == "welcome", welcome
        if ping:
            assert self.request("ping")["t"] == "pong"
        return welcome

    def read_all(self, timeout: float = 30.0) -> bytes:
        """Every byte until EOF (what was buffered included); fails without EOF in time."""
        deadline = time.monotonic() + timeout
        chunks = [bytes(self.buf[self.pos:])]
        self.buf, self.pos = bytearray(), 0
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(1 << 20)
            except socket.timeout:
                break
            except ConnectionResetError:
                return b"".join(chunks)
            if not data:
                return b"".join(chunks)
            chunks.append(data)
        raise AssertionError(f"no EOF within {timeout:g}s")

    def close(self) -> None:
        self.sock.close()


def split_frames(data: bytes) -> tuple[list[dict], bytes]:
    """Parse a byte stream into bodies as a client would; the unparsed rest (a cut frame,
    or everything from the first frame that is not a msgpack map) is returned too."""
    out, pos = [], 0
    while len(data) - pos >= 4:
        (n,) = struct.unpack_from(">I", data, pos)
        if len(data) - pos - 4 < n:
            break
        try:
            body = msgpack.unpackb(data[pos + 4:pos + 4 + n], raw=False, strict_map_key=False)
        except Exception:
            break
        if not isinstance(body, dict):
            break
        out.append(body)
        pos += 4 + n
    return out, data[pos:]


class Peer:
    """A member on a bare connection: a greenlet reads and sorts everything that comes back
    (cheaply: the test process hosts every client); sends are pipelined, no waiting."""

    def __init__(self, conn, user: str):
        self.conn, self.user = conn, user
        self.sent = 0
        self.acks: list = []
        self.errors: list = []
        self.seqs: dict = {}            # conv -> [seq, ...] of msgs, in arrival order
        self.arrived: dict = {}         # cid -> time.monotonic() of its msg
        self.kicked = None
        self._cids = itertools.count()
        self.reader = gevent.spawn(self._read)

    def _read(self) -> None:
        while True:
            try:
                body = self.conn.read_frame(timeout=300)
            except OSError:
                return
            if body is None:
                return
            t = body.get("t")
            if t == "msg":
                self.seqs.setdefault(body["conv"], []).append(body["seq"])
                self.arrived[body["cid"]] = time.monotonic()
            elif t == "ack":
                self.acks.append(body)
            elif t == "error":
                self.errors.append(body)
            elif t == "kicked":
                self.kicked = body.get("reason")

    @property
    def answered(self) -> int:
        return len(self.acks) + len(self.errors)

    def send(self, conv: str, body, cid: str | None = None) -> str:
        cid = cid or f"{self.user}-{next(self._cids)}"
        self.sent += 1
        self.conn.write({"t": "send", "rid": self.sent, "conv": conv, "cid": cid, "body": body})
        return cid

    def flood(self, conv: str, count: int, body, rate: float | None = None) -> None:
        """``count`` sends, at most WINDOW unanswered, paced to ``rate`` per second if given."""
        self.flood_items([(conv, body)] * count, rate)

    def flood_items(self, items: list, rate: float | None = None) -> None:
        """Send each (conv, body) in order, pipelined; wait for every reply."""
        start, began, tick, i = self.sent, time.monotonic(), 0.01, 0
        while i < len(items):
            while self.sent - self.answered >= WINDOW:
                gevent.sleep(0.0005)
            n = min(WINDOW // 4, len(items) - i, WINDOW - (self.sent - self.answered))
            if rate is not None:
                due = began + (self.sent - start) / rate
                if due > time.monotonic():
                    gevent.sleep(due - time.monotonic())
                n = min(n, max(1, int(rate * tick)))
            self.conn.write_many({"t": "send", "rid": self.sent + k + 1, "conv": conv,
                                  "cid": f"{self.user}-{next(self._cids)}", "body": body}
                                 for k, (conv, body) in enumerate(items[i:i + n]))
            self.sent += n
            i += n
        wait_for(lambda: self.answered >= self.sent, f"{self.user}: replies to {self.sent} sends", timeout=120)
        assert not self.errors, self.errors[:3]

    def stop(self) -> None:
        self.reader.kill()


def peers(clients, gate: int, count: int, room: str | None = None, prefix: str = "peer") -> list["Peer"]:
    """``count`` logged-in Peers on ``gate`` (joined to ``room`` if given)."""
    out = []
    for _ in range(count):
        conn = clients.raw(gate=gate)
        user = fresh(prefix)
        conn.login(user)
        if room is not None:
            assert conn.request("join", room=room)["t"] == "joined"
        out.append(Peer(conn, user))
    return out


# -- admin ----------------------------------------------------------------------------------
def admin(cluster, path: str, payload: dict | None = None) -> dict:
    """Center's admin endpoint, through cluster.admin.call (the CLI's own client)."""
    return admin_mod.call(cluster.cfg, path, payload)


def admin_cli(cluster, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``zonechat admin -c CFG ARGS...`` as a subprocess."""
    out = subprocess.run([sys.executable, "-m", "cluster.cli", "admin", "-c", cluster.config_path, *args],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    if check:
        assert out.returncode == 0, f"zonechat admin {' '.join(args)}: {out.stdout}{out.stderr}"
    return out


# -- routing and logs -----------------------------------------------------------------------
def zone_names(cluster) -> list[str]:
    return sorted(n.name for n in cluster.cfg.nodes_of("zone"))


def conv_on_zone(cluster, zone: str, make) -> str:
    """The first ``make(i)`` (i = 0, 1, ...) whose conversation the zone ``zone`` owns."""
    table = SlotTable.initial(zone_names(cluster), cluster.cfg.chat.slots)
    for i in itertools.count():
        conv = make(i)
        if table.zone_of(conv) == zone:
            return conv


def log_records(cluster, kind: str | None = None) -> list:
    return [r for r in logfile.iter_records(logfile.log_dir(cluster.data_dir))
            if kind is None or r.kind == kind]


def wait_for(predicate, what: str, timeout: float = TIMEOUT, interval: float = 0.02):
    return poll_for(predicate, timeout, what, interval)


def gate_pid(cluster, gate: str) -> int:
    return cluster.pid(gate)


def rx_queued(port: int) -> int:
    """Bytes waiting, unread, in the TCP connections to local ``port`` (/proc/net/tcp): what
    has reached a process that does not read (SIGSTOPped, say)."""
    total = 0
    with open("/proc/net/tcp") as fh:
        next(fh)
        for line in fh:
            cols = line.split()
            local, state, queues = cols[1], cols[3], cols[4]
            if state == "01" and int(local.split(":")[1], 16) == port:
                total += int(queues.split(":")[1], 16)
    return total


def vm_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def out_records_of(cluster, conv: str) -> dict:
    """{seq: [(gate, recipients), ...]} from the gates' ``out`` records of room deliveries."""
    found = collections.defaultdict(list)
    for rec in log_records(cluster, "out"):
        sid, _user, body, count = (list(rec.fields) + [None] * 4)[:4]
        if sid is not None or not isinstance(body, bytes):
            continue
        try:
            msg = msgpack.unpackb(body, raw=False)
        except Exception:
            continue
        if isinstance(msg, dict) and msg.get("conv") == conv:
            found[msg["seq"]].append((rec.node, count))
    return found
