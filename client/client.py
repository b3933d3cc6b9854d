"""A gevent TCP client of protocol v1: the terminal chat, the tests and Locust use it.

    from client import Client, ClientError, dm_conv
    c = Client("127.0.0.1", 7700, reconnect=True, auto_recv=True).connect()
    c.register("alice", "secret-pw")               # ok; ClientError(code, reason) on error
    welcome = c.login("alice", "secret-pw")        # or login("alice", token=...)
    ack = c.send(dm_conv("alice", "bob"), "hi")    # cid generated: ack{conv, cid, seq, ts}
    m = c.expect("msg", timeout=5, conv="r:lobby") # next matching push (others dropped)
    c.logout(); c.close()

Requests: ``request(t, timeout=None, **fields)`` gives the request a fresh ``rid`` and
returns the reply with that rid (replies may come in any order), an ``error`` reply
included. ``call`` is the same but raises ``ClientError`` (``code``, ``reason``,
``retry_ms``, ``reply``) on an error reply, and so do the helpers register, login, ping,
send, sync, join, leave, logout (groups: ``call("group_create", group=g, members=[..])``).
No reply in time raises ``RequestTimeout`` (code ``timeout``), a connection that is down
``ConnectionLost`` (``disconnected``); ``timeout=None`` is the client's default (5 s).
``recv`` and ``typing`` have no reply.

Issue 15's extensions: ``edit(conv, seq, body)`` and ``recall(conv, seq)`` are sends of
their own (a cid in the send's dedup space, ``unacked`` until the ack, resent as
themselves after a reconnect); ``presence_sub(users)`` returns the ``presence`` answer
(the list is sent again after a reconnect, its answer pushed to the app);
``set_status(text=, hidden=)``; ``join(room, mode="passive")``; ``focus(room)`` returns
the ``history`` answer. The welcome's ``unread``/``read`` maps are ``unread``/``read_seqs``.

Pushes (``msg``, ``kicked``, ``read``, ``typing``, ``presence``, ``digest``, errors
without rid) go to ``on_push(body)`` if given (it runs in the receive greenlet: spawn,
never wait for a reply there), else to the bounded queue
``pushes`` (``get_push``, ``expect``; when full the oldest is dropped). ``kicked`` sets
``kicked_reason``. Events: ``session_up`` while logged in, ``closed`` once down for good
(logout, kick, ``close()``, a drop without reconnect); a closed Client is not reused.
``on_connection(state)``, if given, hears ``"lost"`` when a drop starts a reconnect and
``"reconnected"`` once logged in again (rooms rejoined); it runs in a client greenlet, so
like ``on_push`` it must not wait for a reply.

Bookkeeping (``client.tracking``): pushes are deduplicated by seq, DM/group holes
``sync``ed and delivered in order, room/sys holes counted, in ``counters`` (with
late_replies, push_overflow, bad_frames, reconnects, resent). ``last_seen(conv)``: the
last seq the app got. ``auto_recv``: one ``recv`` per DM/group per socket read. A ``msg``
of kind edit/recall is a message like any other here. A passive room (``passive``) is
seen up to each ``digest``'s ``to_seq``; a ``focus`` answer sets it to its ``last_seq``
(before the live ``msg``s after it are tracked), as a ``joined`` does.

Sends stay in ``unacked`` (PendingSend: conv, cid, body; a PendingOp for an edit or
recall) until their ack or error reply; a timed-out one stays (send it again with its cid:
the server returns the same ack). With
``reconnect=True`` a drop that is not a logout, ``close()`` or kick (``kicked{shutdown}``
and ``kicked{moving}`` excepted) reconnects with backoff, logs in with the token (the
password if refused), resends every unacked send with its cid (a ``send`` blocked
meanwhile returns that ack), rejoins rooms, and, after a ping that follows the offline
replay, syncs each DM/group whose ``welcome.convs`` last seq is above what it saw
(``catch_up``, also at a first login where the replay stopped short).

``kicked{moving}`` (a gate is draining: docs/protocol.md §5) names the other gates: the
reconnect goes to one of them at random (``client.moving``), after a random wait within the
kick's ``retry_ms``, so a drained gate's sessions arrive elsewhere spread out; that gate
is the client's address from then on. Should it refuse, the next attempts (with backoff)
try the other named gates, then the old address.
"""
from __future__ import annotations

import itertools
import logging
import os
import random
import time

import gevent
from gevent.event import Event
from gevent.pool import Group
from gevent.queue import Empty, Full, Queue

from cluster import convs
from client.connection import ClientError, Connection, ConnectionLost, RequestTimeout
from client.moving import moving_plan
from client.tracking import PendingSend, SendBook, SeqTracker

PROTOCOL_VERSION = 1
SYNC_PAGE = 500                                  # the protocol's largest sync limit
RECONNECT_KICKS = frozenset({"shutdown", "moving"})   # kicks after which reconnect still applies
FATAL_LOGIN = frozenset({"auth_failed", "bad_request"})
CLIENT_COUNTERS = ("late_replies", "push_overflow", "bad_frames", "reconnects", "resent")

log = logging.getLogger("zonechat.client")


class PendingOp(PendingSend):
    """An edit or recall without ack yet: in ``unacked`` like a send, resent as itself."""

    __slots__ = ("t", "fields")

    def __init__(self, t: str, conv: str, cid: str, fields: dict):
        super().__init__(conv, cid, fields.get("body"))
        self.t, self.fields = t, fields


def wire(p: PendingSend) -> tuple[str, dict]:
    """The request that (re)sends ``p``: its type and fields."""
    if isinstance(p, PendingOp):
        return p.t, {"conv": p.conv, "cid": p.cid, **p.fields}
    return "send", {"conv": p.conv, "cid": p.cid, "body": p.body}


def _seq(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def dm_conv(a: str, b: str) -> str:
    """The DM of two users: ``d:<a>:<b>`` with a < b in byte order."""
    if a == b or not (convs.valid_user(a) and convs.valid_user(b)):
        raise ValueError(f"no DM between {a!r} and {b!r}")
    return convs.dm(a, b)


class Client:
    def __init__(self, host: str = "127.0.0.1", port: int = 7700, *, timeout: float = 5.0,
                 reconnect: bool = False, auto_recv: bool = False, catch_up: bool = True,
                 on_push=None, push_queue: int | None = 10000, ping_interval: float | None = 20.0,
                 backoff: tuple[float, float] = (0.1, 5.0), on_connection=None,
                 source: str | None = None):
        self.addr = (host, port)
        self.source = source            # local address to connect from (load tools spread theirs)
        self.timeout, self.reconnect, self.auto_recv, self.catch_up = timeout, reconnect, auto_recv, catch_up
        self.on_push, self.ping_interval, self.backoff = on_push, ping_interval, backoff
        self.on_connection = on_connection
        self.pushes: Queue = Queue(push_queue)
        self.sends = SendBook()
        self.track = SeqTracker(self._deliver, lambda st: self._spawn(self._fill_worker, st),
                                lambda conv: bool(self.sends.to(conv)))
        self.counters = self.track.counters
        self.counters.update(dict.fromkeys(CLIENT_COUNTERS, 0))
        self.user = self.token = self.welcome = self.kicked_reason = None
        self.rooms: set[str] = set()
        self.passive: set[str] = set()             # joined rooms in mode passive (digests)
        self.presence_users: list[str] = []        # the last presence_sub list
        self._focusing: dict[int, str] = {}        # rid of a focus in flight -> room
        self.closed, self.session_up = Event(), Event()
        self._conn: Connection | None = None
        self._password = self._reconnector = self._pinger = None
        self._cids, self._cid_prefix = itertools.count(1), os.urandom(6).hex()
        self._recv_dirty: set[str] = set()
        self._group = Group()
        self._stopping = Event()                   # close() was called
        self._deliberate = False                   # logout or kick: no reconnect
        self._moving = None                        # kicked{moving}: (wait, addresses to try)

    # -- connection ----------------------------------------------------------------------
    def connect(self) -> "Client":
        """Open the connection (ClientError ``connect_failed`` if refused); returns self."""
        self._open()
        if self.ping_interval and self._pinger is None:
            self._pinger = self._spawn(self._ping_worker)
        return self

    def close(self) -> None:
        """Close for good: no reconnect; waiting requests and sends get ConnectionLost."""
        self._deliberate = True
        self._stopping.set()
        if self._conn is not None:
            self._conn.close()
        me = gevent.getcurrent()
        for g in list(self._group):
            if g is not me:
                g.kill(block=False)
        self._finish()

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def _open(self) -> None:
        self._conn = Connection(self.addr, self.timeout, self.counters, self._spawn, self.source,
                                self._dispatch, self._flush_recv, self._lost).open()

    def _spawn(self, fn, *args):
        g = self._group.spawn(fn, *args)
        g.link_exception(lambda dead: log.error("client greenlet %s crashed: %r", fn.__name__, dead.exception))
        return g

    def _lost(self, conn: Connection) -> None:
        """``conn`` ended (its requests failed already): reconnect or finish."""
        if conn is not self._conn:
            return
        self._conn = None
        self.session_up.clear()
        if self._reconnector is not None or self._stopping.is_set():
            return
        if self.reconnect and self.token and not self._deliberate:
            self._reconnector = self._spawn(self._reconnect_worker)
            self._notify("lost")
        else:
            self._finish()

    def _finish(self) -> None:
        self._stopping.set()                       # ends the ping worker
        self.sends.wake_all(ConnectionLost())
        self.closed.set()

    def _current(self) -> Connection:
        if self._conn is None:
            raise ConnectionLost("not connected")
        return self._conn

    # -- requests ------------------------------------------------------------------------
    def request(self, t: str, timeout: float | None = None, **fields) -> dict:
        """Send ``{t, rid, **fields}``; return the reply with that rid (errors included)."""
        return self._current().request(t, timeout, **fields)

    def call(self, t: str, timeout: float | None = None, **fields) -> dict:
        """``request``, raising ClientError on an ``error`` reply."""
        reply = self.request(t, timeout, **fields)
        if reply.get("t") == "error":
            raise ClientError.from_reply(reply)
        return reply

    def register(self, user: str, password: str, timeout: float | None = None) -> dict:
        return self.call("register", timeout, user=user, password=password)

    def login(self, user: str, password: str | None = None, token: str | None = None,
              timeout: float | None = None) -> dict:
        """Log in; returns ``welcome``. Token and password are kept for reconnects."""
        fields = {"user": user, "v": PROTOCOL_VERSION}
        fields.update({k: v for k, v in (("password", password), ("token", token)) if v is not None})
        self.user, self._deliberate = user, False
        welcome = self.call("login", timeout, **fields)
        self._password = password or self._password
        return welcome

    def ping(self, timeout: float | None = None) -> dict:
        return self.call("ping", timeout)

    def send(self, conv: str, body, cid: str | None = None, timeout: float | None = None) -> dict:
        """Send and return the ``ack``; until then the send is in ``unacked``."""
        return self._submit("send", conv, cid, {"body": body}, timeout)

    def edit(self, conv: str, seq: int, body, cid: str | None = None, timeout: float | None = None) -> dict:
        """Replace the body of own message ``seq``; the ``ack`` (its seq: the edit event's)."""
        return self._submit("edit", conv, cid, {"seq": seq, "body": body}, timeout)

    def recall(self, conv: str, seq: int, cid: str | None = None, timeout: float | None = None) -> dict:
        """Remove own message ``seq``; the ``ack`` (its seq: the recall event's)."""
        return self._submit("recall", conv, cid, {"seq": seq}, timeout)

    def _submit(self, t: str, conv: str, cid: str | None, fields: dict, timeout: float | None) -> dict:
        """A send, edit or recall: pending (resent by a reconnect) until its ack or error."""
        cid = cid if cid is not None else f"{self._cid_prefix}-{next(self._cids)}"
        if t == "send":
            p = self.sends.add(conv, cid, fields["body"])
        else:
            p = self.sends.pending.setdefault((conv, cid), PendingOp(t, conv, cid, fields))
        timeout = self.timeout if timeout is None else timeout
        deadline, done = time.monotonic() + timeout, p.done
        if self._reconnector is None:              # else the reconnect resends it
            try:
                kind, body = wire(p)
                self.sends.settle(p, self.request(kind, timeout, **body))
            except ConnectionLost:
                if self._reconnector is None:
                    raise
        done.wait(max(0.0, deadline - time.monotonic()))
        if not done.ready():
            raise RequestTimeout(f"no ack for cid {cid} in {conv}")
        reply = done.get()
        if reply.get("t") == "error":
            raise ClientError.from_reply(reply)
        return reply

    @property
    def unacked(self) -> list[PendingSend]:
        return list(self.sends.pending.values())

    def recv(self, conv: str, seq: int) -> None:
        """Tell the server the user has ``conv`` up to ``seq`` (no reply)."""
        self._current().write({"t": "recv", "conv": conv, "seq": seq})

    def typing(self, conv: str) -> None:
        """Tell the others in ``conv`` the user is typing (no reply; errors come as pushes)."""
        self._current().write({"t": "typing", "conv": conv})

    def presence_sub(self, users, timeout: float | None = None) -> dict:
        """Watch ``users`` (replaces the list; [] clears it): the ``presence`` answer."""
        users = list(users)
        answer = self.call("presence_sub", timeout, users=users)
        self.presence_users = users
        return answer

    def set_status(self, text: str | None = None, hidden: bool | None = None,
                   timeout: float | None = None) -> dict:
        """Set the status text and/or hide (only the fields given are sent): ``ok``."""
        fields = {k: v for k, v in (("text", text), ("hidden", hidden)) if v is not None}
        return self.call("set_status", timeout, **fields)

    def sync(self, conv: str, after: int, limit: int | None = None, timeout: float | None = None) -> dict:
        """The ``history`` reply (the bookkeeping is not touched)."""
        extra = {} if limit is None else {"limit": limit}
        return self.call("sync", timeout, conv=conv, after=after, **extra)

    def join(self, room: str, mode: str | None = None, timeout: float | None = None) -> dict:
        """Join (``mode`` "active"/"passive" only when given); the ``joined`` reply."""
        joined = self.call("join", timeout, room=room, **({} if mode is None else {"mode": mode}))
        self.rooms.add(room)
        if mode == "passive":                      # digests follow: no recent pushed
            self.passive.add(room)
            self._seen_upto(room, joined.get("last_seq"))
        else:
            self.passive.discard(room)
            self.track.on_join({"conv": room, **joined})
        return joined

    def focus(self, room: str, after: int | None = None, timeout: float | None = None) -> dict:
        """Make a passive room active again: the ``history`` answer (msgs after ``after``)."""
        conn = self._current()
        rid, waiter = conn.begin("focus", {"room": room, **({} if after is None else {"after": after})})
        self._focusing[rid] = room                 # _dispatch tracks the answer before later msgs
        try:
            reply = conn.wait(rid, waiter, timeout)
        finally:
            self._focusing.pop(rid, None)
        if reply.get("t") == "error":
            raise ClientError.from_reply(reply)
        self.passive.discard(room)
        self._on_focused(room, reply)              # again, should the answer have come first
        return reply

    def leave(self, room: str, timeout: float | None = None) -> dict:
        self.rooms.discard(room)
        self.passive.discard(room)
        self.track.forget(room)
        return self.call("leave", timeout, room=room)

    def logout(self, timeout: float | None = None) -> dict:
        """Log out: the server answers ``ok`` and closes; no reconnect follows."""
        self._deliberate = True
        return self.call("logout", timeout)

    def last_seen(self, conv: str) -> int | None:
        return self.track.last_seen(conv)

    @property
    def unread(self) -> dict:
        """``welcome.unread`` of the last login: {conv: messages not read}."""
        return self._welcome_map("unread")

    @property
    def read_seqs(self) -> dict:
        """``welcome.read`` of the last login: {conv: the user's own read cursor}."""
        return self._welcome_map("read")

    def _welcome_map(self, key: str) -> dict:
        value = (self.welcome or {}).get(key)
        return dict(value) if isinstance(value, dict) else {}

    # -- pushes --------------------------------------------------------------------------
    def get_push(self, timeout: float | None = None) -> dict | None:
        try:
            return self.pushes.get(timeout=timeout)
        except Empty:
            return None

    def expect(self, t: str, timeout: float | None = None, **match) -> dict:
        """The next queued push of type ``t`` whose fields equal ``match``; drops the others."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while (left := deadline - time.monotonic()) > 0:
            body = self.get_push(left)
            if body is not None and body.get("t") == t and all(body.get(k) == v for k, v in match.items()):
                return body
        raise RequestTimeout(f"no {t} push matching {match}")

    def _push(self, body: dict) -> None:
        if self.on_push is not None:
            try:
                self.on_push(body)
            except Exception:                      # the app's bug must not end the connection
                log.exception("on_push failed")
            return
        try:
            self.pushes.put_nowait(body)
        except Full:
            self.pushes.get_nowait()
            self.pushes.put_nowait(body)
            self.counters["push_overflow"] += 1

    def _dispatch(self, body: dict) -> None:
        """Every body from the server, before its rid (if any) wakes the request."""
        t = body["t"]
        if t == "msg":
            if not self.track.on_msg(body):
                self._push(body)
        elif t == "ack":
            self.sends.acked(body)
            self.track.on_ack(body.get("conv"), body.get("seq"))
            if self.auto_recv and convs.is_durable(str(body.get("conv"))):
                self._recv_dirty.add(body["conv"])  # own messages move the cursor too
        elif t == "welcome":
            self._on_welcome(body)
        elif t == "digest":
            self._seen_upto(body.get("conv"), body.get("to_seq"), body.get("from_seq"))
        elif t == "history" and body.get("rid") in self._focusing:
            self._on_focused(self._focusing[body["rid"]], body)
        elif t == "kicked":
            self.kicked_reason = body.get("reason")
            self._deliberate = self._deliberate or self.kicked_reason not in RECONNECT_KICKS
            if self.kicked_reason == "moving":
                self._moving = moving_plan(body, self.addr)
        if "rid" not in body and t not in ("msg", "pong"):
            self._push(body)

    def _on_welcome(self, body: dict) -> None:
        self.user, self.token, self.welcome = body.get("user", self.user), body.get("token"), body
        known = self.track.on_welcome()
        self.session_up.set()
        if self.catch_up:
            last_seqs = body.get("convs")
            self._spawn(self._catch_up_worker, dict(last_seqs) if isinstance(last_seqs, dict) else {}, known)

    def _on_focused(self, room: str, history: dict) -> None:
        msgs = history.get("msgs") or []
        first = history.get("first_seq")
        if not _seq(first) and msgs and isinstance(msgs[0], dict):
            first = msgs[0].get("seq")
        self._seen_upto(room, history.get("last_seq"), first)

    def _seen_upto(self, conv, to_seq, first=None) -> None:
        """The app has ``conv`` up to ``to_seq`` (a digest, a focus, a passive join): move
        ``last`` there, counting a hole before ``first`` as missed; own seqs and held pushes
        at or below it are done with."""
        if not isinstance(conv, str) or not _seq(to_seq):
            return
        st = self.track.conv(conv)
        if st.last is not None and _seq(first) and first <= to_seq:
            self.track.skip(st, first)
        st.last = to_seq if st.last is None else max(st.last, to_seq)
        st.top = max(st.top, st.last)
        st.own = {seq for seq in st.own if seq > st.last}
        for seq in [seq for seq in st.held if seq <= st.last]:
            del st.held[seq]
        self.track.absorb(st)

    # -- bookkeeping I/O -----------------------------------------------------------------
    def _deliver(self, st, m: dict) -> None:
        if self.auto_recv and st.durable:
            self._recv_dirty.add(st.conv)
        self._push(m)

    def _flush_recv(self) -> None:
        while self._recv_dirty and self._conn is not None:
            conv = self._recv_dirty.pop()
            try:
                if last := self.track.last_seen(conv):
                    self.recv(conv, last)
            except ConnectionLost:
                return

    def _fill_worker(self, st) -> None:
        """Let our acks in flight land (they may close the hole), then sync the rest."""
        keep = False
        try:
            deadline = time.monotonic() + self.timeout
            for p in self.sends.to(st.conv):
                p.done.wait(max(0.0, deadline - time.monotonic()))
            self.track.absorb(st)
            while (need := self.track.fill_need(st)) > (st.last or 0):
                history = self.sync(st.conv, after=st.last, limit=min(SYNC_PAGE, need - st.last))
                if not self.track.synced(st, history.get("msgs") or ()):
                    break
        except ClientError as exc:
            self.counters["fill_failed"] += 1
            keep = isinstance(exc, ConnectionLost) and self._reconnector is not None
        finally:
            self.track.end_fill(st, keep_held=keep)  # kept: refilled after the reconnect
            self._flush_recv()

    def _catch_up_worker(self, welcome_convs: dict, known: set) -> None:
        try:
            self.ping()                            # answered after the offline replay
        except ClientError:
            return
        durable = self.track.catch_up(welcome_convs, known)
        if self.auto_recv:                         # own sends since login move the cursor too
            self._recv_dirty.update(durable)
            self._flush_recv()

    # -- reconnect and keepalive -----------------------------------------------------------
    def _reconnect_worker(self) -> None:
        delay = self.backoff[0]
        moving, self._moving = self._moving, None
        wait, targets = moving or (delay * random.uniform(0.5, 1.0), [])
        if moving is None:                         # the first backoff step is this wait
            delay = min(delay * 2, self.backoff[1])
        attempt = 0
        try:
            while not self._stopping.wait(wait):   # backoff (a move's own wait first), or close()
                if targets:                        # moving: the named gates in turn, then the old one
                    self.addr = targets[attempt % len(targets)]
                attempt += 1
                wait = delay * random.uniform(0.5, 1.0)
                delay = min(delay * 2, self.backoff[1])
                try:
                    self._open()
                    self._relogin()
                except ClientError as exc:
                    log.info("reconnect to %s:%s failed: %s", *self.addr, exc)
                    if exc.code in FATAL_LOGIN or self._deliberate:
                        return
                    if self._conn is not None:
                        self._conn.close()
                    continue
                self.counters["reconnects"] += 1
                self._reconnector = None
                self._after_reconnect()
                self._notify("reconnected")
                return
        finally:
            if self._reconnector is gevent.getcurrent():   # gave up
                if self._conn is not None:
                    self._conn.close()
                self._reconnector = None
                self._finish()

    def _relogin(self) -> None:
        try:
            self.login(self.user, token=self.token)
        except ClientError as exc:
            if exc.code != "auth_failed" or self._password is None:
                raise
            self.login(self.user, password=self._password)

    def _after_reconnect(self) -> None:
        """Resend unacked sends (pipelined, in order, same cids), rejoin rooms (passive ones
        passive), watch the presence list again (its answer goes to the app as a push)."""
        try:
            conn, started = self._current(), []
            for p in list(self.sends.pending.values()):
                started.append((p, *conn.begin(*wire(p))))
                self.counters["resent"] += 1
            for p, rid, waiter in started:
                self.sends.settle(p, conn.wait(rid, waiter))
        except ClientError as exc:
            log.info("resending after a reconnect: %s", exc)
        for room in list(self.rooms):
            try:
                self.join(room, "passive" if room in self.passive else None)
            except ClientError as exc:
                log.info("rejoining %s after a reconnect: %s", room, exc)
        if self.presence_users:
            try:
                self._push(self.presence_sub(self.presence_users))
            except ClientError as exc:
                log.info("watching presence after a reconnect: %s", exc)
        if not self.catch_up:                      # else the catch-up refills, after the replay
            self.track.refill_held()

    def _notify(self, state: str) -> None:
        if self.on_connection is not None:
            try:
                self.on_connection(state)
            except Exception:                      # the app's bug must not stop the reconnect
                log.exception("on_connection failed")

    def _ping_worker(self) -> None:
        while not self._stopping.wait(self.ping_interval):
            try:
                self.request("ping")
            except ClientError:                    # down or slow: the receive side notices
                pass


def connect(host: str = "127.0.0.1", port: int = 7700, **options) -> Client:
    """A connected Client (options as for Client)."""
    return Client(host, port, **options).connect()
