"""The integration tests' helper kit: clients, raw connections, fences, Redis and admin.

Everything runs against a real cluster (the ``cluster`` / ``start_cluster`` fixtures of
tests/conftest.py); nothing of ours is mocked. The ``clients`` fixture (tests/integration/
conftest.py) hands out ``Clients``.

Three kinds of client, for three kinds of question:

- ``Raw`` (with ``Users``): a deliberately dumb TCP client of protocol v1. It writes
  exactly the bytes it is given and hands back every body the server sends, in order,
  with no bookkeeping (no dedup by seq, no automatic sync or recv, no reconnect): for
  tests where what the server sends must be seen as it is (duplicates, echoes, replay
  order, the close).
- ``RecordingClient`` (with ``Clients``): ``client.Client`` that also keeps every body the
  server sent, in arrival order (``raw``), before the client's own bookkeeping sees it:
  the tests judge the server by what it put on the wire, not by what the client repaired.
  Plain ``client.Client`` is used where its bookkeeping is the point (reconnect + resend).
- ``RawConn`` (with ``Peer``): a bare socket the test reads when (and whether) it wants:
  slow consumers, floods, thousands of members.

Fences: "nothing more will arrive" is shown by a request whose reply must come after
everything that could still be on its way, not by a quiet window. ``Raw.fence`` and
``RecordingClient.fence`` explain which deliveries their reply is ordered after.
"""
from __future__ import annotations

import collections
import itertools
import socket
import struct
import subprocess
import sys
import time
import uuid
from urllib.parse import urlsplit

import gevent
import msgpack
import redis
from gevent.event import AsyncResult
from redis.cluster import ClusterNode, RedisCluster

from client import Client, ClientError
from cluster import admin as admin_mod
from cluster.codec import MAX_SERVER_FRAME, FrameReader, encode_frame, unpackb
from cluster.convs import dm
from cluster import slots as slots_mod
from cluster.slots import SlotTable
from dc import keys
from harness import REPO, poll_for
from log import logfile

PASSWORD = "password123"
TIMEOUT = 10.0                   # seconds any single expected reply or push may take
WAIT = TIMEOUT
WINDOW = 128                     # sends in flight per Peer.flood (the gate allows 256)


def fresh(prefix: str = "u") -> str:
    """A user/group/room name no other test (or run) uses: valid ([A-Za-z0-9_.-]) and at
    most 32 characters (the prefix is cut to 20)."""
    return f"{prefix[:20]}{uuid.uuid4().hex[:12]}"


# -- Raw: every body as the server sent it ---------------------------------------------------
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

    def fence(self, conv: str | None = None, timeout: float = WAIT) -> list[dict]:
        """Every body that arrived before a fence's reply (they leave the backlog; bodies
        after the reply stay in it).

        Without ``conv`` the fence is a ``ping``. The gate answers it on this session's
        ordered queue of replies and DM/group frames, so whatever the gate had queued for
        us comes first: a true fence for what has reached our gate (the sender's own
        gate gets its ack and that gate's deliveries in one envelope, so after an ack
        there, an echo or a delivery to a session on the same gate would be in).

        With ``conv`` (a DM or group we are in) it is a ``sync`` of it: the reply comes from
        the conversation's zone down the same zone -> gate pipe as its deliveries (a zone
        sends DM and group deliveries to each gate itself while there are at most
        ``bus.direct_dlv_gates`` gates: 2 here, 8 by default), and the gate queues them for
        us in pipe order. So after the sender's ack, every delivery of the acked messages
        to our gate, whichever gate that is, comes before the reply. Room and ``sys`` frames
        travel through center, and with ``direct_dlv_gates: 0`` DMs do too: neither fence
        covers them."""
        rid = self.begin("sync", conv=conv, after=0, limit=1) if conv else self.begin("ping")
        deadline = time.monotonic() + timeout
        while True:
            at = next((i for i, b in enumerate(self.backlog) if b.get("rid") == rid), None)
            if at is not None:
                before, reply, self.backlog = self.backlog[:at], self.backlog[at], self.backlog[at + 1:]
                assert reply.get("t") != "error", reply
                return before
            self._read_more(deadline)

    def drain(self, quiet: float = 0.3) -> list[dict]:
        """Everything that arrives until the server has been quiet for ``quiet`` seconds:
        only where no fence covers what could still come (see ``fence``)."""
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


TRANSIENT = ("unavailable", "timeout", "disconnected", "connect_failed")   # worth a resend


def send_until_acked(client: Client, conv: str, cid: str, body, patience: float, retry: float = 0.2,
                     who: str = "") -> int:
    """Send ``body`` with ``cid`` and resend it with the same cid after every transient error
    (what an app does after ``unavailable`` or a reconnect) until it is acked; its seq. A
    refusal, or no ack within ``patience`` seconds, is an AssertionError naming ``who``."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return client.send(conv, body, cid=cid)["seq"]
        except ClientError as exc:
            if exc.code not in TRANSIENT:
                raise AssertionError(f"{who}{cid} refused: {exc}") from exc
            if time.monotonic() > deadline:
                raise AssertionError(f"{who}no ack for {cid} in {patience:g}s: {exc}") from exc
        gevent.sleep(retry)


class TaggedRedis(redis.Redis):
    """A client of the cluster's Redis that knows its key layout (``r.layout.seq(conv)``)."""

    layout: keys.Layout


class TaggedRedisCluster(RedisCluster):
    """The same on Redis Cluster (``redis.mode: cluster``)."""

    layout: keys.Layout


def redis_client(cluster) -> TaggedRedis | TaggedRedisCluster:
    rc = cluster.cfg.redis
    if rc.mode == "cluster":
        client = TaggedRedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in rc.seeds()],
                                    password=urlsplit(rc.url).password, socket_timeout=5)
    else:
        client = TaggedRedis.from_url(cluster.redis_url, socket_timeout=5)
    client.layout = keys.Layout(cluster.cfg.chat.slots)
    return client


def stored_seqs(r: TaggedRedis, conv: str) -> list[int]:
    """Every seq stored for ``conv``, sorted."""
    return sorted(int(k) for k in r.hkeys(r.layout.messages(conv)))


def stored_records(r: TaggedRedis, conv: str) -> dict[int, dict]:
    return {int(k): unpackb(v) for k, v in r.hgetall(r.layout.messages(conv)).items()}


def frame_with_length(n: int, body: bytes) -> bytes:
    return struct.pack(">I", n) + body


def resend_until_acked(conn: Raw, conv: str, cid: str, body, timeout: float, interval: float) -> dict:
    """Send the same cid again until it is acked (a client retrying after `unavailable`)."""
    def attempt():
        reply = conn.send(conv, body, cid=cid)
        return reply if reply["t"] == "ack" else None
    return poll_for(attempt, timeout, f"an ack for {cid}", interval=interval)


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
        """A ping round trip: everything the gate queued for us before it is dispatched
        (the frames of one read are dispatched before the waiting ping returns). It covers
        what has reached our gate, not what is still on its way there: see ``Raw.fence``."""
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
        self._asks = itertools.count(1 << 30)   # rids far above the sends' 1, 2, 3...
        self._pending: dict = {}        # rid -> AsyncResult of an ``ask`` (not a send)
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
            if body.get("rid") in self._pending:     # an ``ask``'s reply, errors included
                self._pending.pop(body["rid"]).set(body)
            elif t == "msg":
                self.seqs.setdefault(body["conv"], []).append(body["seq"])
                self.arrived[body["cid"]] = time.monotonic()
            elif t == "ack":
                self.acks.append(body)
            elif t == "error":
                self.errors.append(body)
            elif t == "kicked":
                self.kicked = body.get("reason")

    def ask(self, t: str, timeout: float = TIMEOUT, **fields) -> dict:
        """A request other than ``send`` (ping, room_info...): its reply, which the reader
        hands over (it is not counted in ``answered``)."""
        rid = next(self._asks)
        result = self._pending[rid] = AsyncResult()
        self.conn.write({"t": t, "rid": rid, **fields})
        try:
            return result.get(timeout=timeout)
        except gevent.Timeout:
            raise AssertionError(f"{self.user}: no reply to {t} within {timeout:g}s") from None
        finally:
            self._pending.pop(rid, None)

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


def slot_table(cluster) -> SlotTable:
    """The slot table now: center's in Redis after a handover, else the initial one."""
    r = redis_client(cluster)
    try:
        raw = r.hgetall(keys.SLOT_TABLE)
    finally:
        r.close()
    saved = (int(raw[b"version"]), msgpack.unpackb(raw[b"owners"]), msgpack.unpackb(raw[b"epochs"])) if raw else None
    return slots_mod.from_saved(saved, zone_names(cluster), cluster.cfg.chat.slots)


def zone_of(cluster, conv: str) -> str:
    """The zone that owns ``conv`` now."""
    return slot_table(cluster).zone_of(conv)


def conv_on_zone(cluster, zone: str, make) -> str:
    """The first ``make(i)`` (i = 0, 1, ...) whose conversation the zone ``zone`` owns."""
    table = slot_table(cluster)
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
