"""Helpers for the account / DM / fault integration tests (test_protocol_framing.py,
test_accounts.py, test_direct_messages.py, test_dm_guarantees.py, test_faults.py).

``Raw`` is a deliberately dumb TCP client of protocol v1: it writes exactly the bytes it is
given and hands back every body the server sends, in order, with no bookkeeping (no
dedup by seq, no automatic sync or recv, no reconnect). The tests use it wherever what the
server sends must be seen as it is (duplicates, echoes, replay order, the close).
``cluster.client.Client`` is used where its bookkeeping is the point (reconnect + resend).
"""
from __future__ import annotations

import itertools
import socket
import struct
import time
import uuid

import redis

from cluster.codec import MAX_SERVER_FRAME, FrameReader, encode_frame, unpackb
from cluster.convs import dm
from dc import keys
from harness import poll_for

PASSWORD = "password-123"
WAIT = 10.0          # seconds any single expected reply or push may take


def fresh(prefix: str = "u") -> str:
    """A user name no other test uses (valid: [A-Za-z0-9_.-], at most 32 chars)."""
    return f"{prefix}{uuid.uuid4().hex[:12]}"


class Closed(Exception):
    """The server closed the connection."""


class Raw:
    """One TCP connection; ``bodies`` read but not consumed yet wait in ``self.backlog``."""

    def __init__(self, addr, timeout: float = WAIT):
        self.addr = addr
        self.sock = socket.create_connection(addr, timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = FrameReader(MAX_SERVER_FRAME)
        self.backlog: list[dict] = []
        self.rids = itertools.count(1)
        self.last_rid = None
        self.arrivals: list = []      # the type of every body received, in arrival order
        self.eof = False
        self.user = None
        self.welcome = None

    # -- writing -------------------------------------------------------------------------
    def write_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def write(self, body: dict) -> None:
        self.sock.sendall(encode_frame(body))

    def begin(self, t: str, **fields) -> int:
        """Write a request with a fresh rid (pipelining); ``reply(rid)`` reads its answer."""
        rid = self.last_rid = next(self.rids)
        self.write({"t": t, "rid": rid, **fields})
        return rid

    # -- reading -------------------------------------------------------------------------
    def _read_more(self, deadline: float) -> None:
        if self.eof:
            raise Closed("connection closed by the server")
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("nothing from the server in time")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(1 << 20)
        except socket.timeout as exc:
            raise TimeoutError("nothing from the server in time") from exc
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            raise Closed("connection closed by the server")
        for body in self.reader.feed(data):
            obj = unpackb(body)
            self.backlog.append(obj)
            self.arrivals.append(obj.get("t") if isinstance(obj, dict) else None)

    def take(self, pred, timeout: float = WAIT) -> dict:
        """The first body (backlog first) for which ``pred`` is true; it leaves the backlog."""
        deadline = time.monotonic() + timeout
        while True:
            for i, body in enumerate(self.backlog):
                if pred(body):
                    return self.backlog.pop(i)
            self._read_more(deadline)

    def next(self, timeout: float = WAIT) -> dict:
        return self.take(lambda b: True, timeout)

    def reply(self, rid: int, timeout: float = WAIT) -> dict:
        return self.take(lambda b: b.get("rid") == rid, timeout)

    def request(self, t: str, timeout: float = WAIT, **fields) -> dict:
        return self.reply(self.begin(t, **fields), timeout)

    def expect(self, t: str, timeout: float = WAIT, **match) -> dict:
        return self.take(lambda b: b.get("t") == t and all(b.get(k) == v for k, v in match.items()),
                         timeout)

    def drain(self, quiet: float = 0.3) -> list[dict]:
        """Everything that arrives until the server has been quiet for ``quiet`` seconds."""
        out = []
        while True:
            try:
                out.append(self.next(timeout=quiet))
            except (TimeoutError, Closed):
                return out

    def msgs(self, conv: str, count: int, timeout: float = WAIT) -> list[dict]:
        """The next ``count`` ``msg`` pushes of ``conv``, in arrival order."""
        deadline = time.monotonic() + timeout
        return [self.take(lambda b: b.get("t") == "msg" and b.get("conv") == conv,
                          max(0.01, deadline - time.monotonic())) for _ in range(count)]

    def wait_closed(self, timeout: float = WAIT) -> list[dict]:
        """Read to the end of the stream; the bodies that came before the close."""
        deadline = time.monotonic() + timeout
        got = []
        while True:
            try:
                self._read_more(deadline)
            except Closed:
                got, self.backlog = self.backlog, []
                return got

    def is_open(self, timeout: float = WAIT) -> bool:
        """A ping answers: the connection is up (leaves other bodies in the backlog)."""
        try:
            return self.request("ping", timeout)["t"] == "pong"
        except (Closed, OSError, TimeoutError):
            return False

    # -- chat ----------------------------------------------------------------------------
    def register(self, user: str, password: str = PASSWORD) -> dict:
        return self.request("register", user=user, password=password)

    def login(self, user: str, password: str | None = PASSWORD, token: str | None = None, **extra) -> dict:
        fields = {"user": user, "v": 1, **extra}
        if token is not None:
            fields["token"] = token
        elif password is not None:
            fields["password"] = password
        reply = self.request("login", **fields)
        if reply.get("t") == "welcome":
            self.user, self.welcome = user, reply
        return reply

    def send(self, conv: str, body, cid: str | None = None, timeout: float = WAIT) -> dict:
        return self.request("send", timeout, conv=conv, cid=cid or uuid.uuid4().hex, body=body)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Users:
    """Connections opened by one test, all closed at the end (``with Users(c) as u``)."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.conns: list[Raw] = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for conn in self.conns:
            conn.close()

    def connect(self, gate: int = 0) -> Raw:
        conn = Raw(self.cluster.gates[gate])
        self.conns.append(conn)
        return conn

    def new(self, prefix: str = "u", gate: int = 0, login: bool = True) -> Raw:
        """A registered user (fresh name), logged in on gate ``gate`` unless ``login=False``."""
        conn = self.connect(gate)
        name = fresh(prefix)
        reply = conn.register(name)
        assert reply == {"t": "ok", "rid": 1}, reply
        conn.user = name
        if login:
            welcome = conn.login(name)
            assert welcome["t"] == "welcome", welcome
        return conn

    def relogin(self, user: str, gate: int = 0, **kw) -> Raw:
        conn = self.connect(gate)
        welcome = conn.login(user, **kw)
        assert welcome["t"] == "welcome", welcome
        return conn


def register(cluster, name: str | None = None, gate: int = 0, password: str = PASSWORD) -> str:
    """Register a fresh user on its own short connection; its name."""
    name = name or fresh()
    with Raw(cluster.gates[gate]) as conn:
        reply = conn.register(name, password)
        assert reply["t"] == "ok", reply
    return name


def pair(users: Users, gates=(0, 1)):
    """Two logged-in users on the given gates and their DM id."""
    a, b = users.new("a", gates[0]), users.new("b", gates[1])
    return a, b, dm(a.user, b.user)


def redis_client(cluster) -> redis.Redis:
    return redis.Redis.from_url(cluster.redis_url, socket_timeout=5)


def stored_seqs(r: redis.Redis, conv: str) -> list[int]:
    """Every seq stored for ``conv``, sorted."""
    return sorted(int(k) for k in r.hkeys(keys.messages(conv)))


def stored_records(r: redis.Redis, conv: str) -> dict[int, dict]:
    return {int(k): unpackb(v) for k, v in r.hgetall(keys.messages(conv)).items()}


def frame_with_length(n: int, body: bytes) -> bytes:
    return struct.pack(">I", n) + body


def resend_until_acked(conn: Raw, conv: str, cid: str, body, timeout: float, interval: float) -> dict:
    """Send the same cid again until it is acked (a client retrying after `unavailable`)."""
    def attempt():
        reply = conn.send(conv, body, cid=cid)
        return reply if reply["t"] == "ack" else None
    return poll_for(attempt, timeout, f"an ack for {cid}", interval=interval)
