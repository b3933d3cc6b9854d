"""The load users' client: client.Client wrapped to fire Locust's events.request.

Like locust's ``examples/custom_xmlrpc_client`` and ``contrib/socketio.py``: a thin
wrapper that times each call and reports it, plus a receive side (the Client's receive
greenlet calls ``_on_push``) that times every delivery end to end from the sender's
timestamp in the body ``{"ts": time.time_ns(), "text": ...}``.

Reported names (request_type ``zc``): ``login`` / ``relogin``, ``join``, ``send→ack``,
``send→msg`` and ``sys→msg`` (delivered live), ``replay→msg`` (sent before this login,
pushed after it). Correctness problems are failures of request_type ``check``: the
client's counters (``client.dups``...) and our own seq check (``seq.gap``...). Counted
events of request_type ``info``: ``session open`` / ``session closed`` (a login answered,
its session ended: the report counts who is logged in at each second), ``redelivered``
(a seq pushed again after a new login), ``earlier msg`` (pushed by the first login's
replay, from before it), ``own msg`` (a push of the user's own message), ``send cut`` (a
send the user was stopped in: its ack is never counted, yet the message may be stored and
delivered).
"""
from __future__ import annotations

import itertools
import os
import time

import gevent

from client import Client, ClientError
from cluster import admin
from tools.load.report import CHECK, CUT, EARLIER, INFO, OWN, REDELIVERED, REQ, SESSION_CLOSED, SESSION_OPEN
from tools.load.seqcheck import FAILURES, SeqCheck

PASSWORD = "zonechat-load-pw"
CLIENT_CHECKS = ("dups", "gaps", "missed", "out_of_order", "lost", "fill_failed", "bad_frames")
TIMEOUT = 10.0
TRIES = 6                                    # attempts at a register or token mint
RETRY = frozenset({"unavailable", "disconnected", "timeout", "connect_failed", "rate_limited"})


class Failure(Exception):
    """A failed call; ``str()`` is its code alone, so Locust groups errors by code."""

    def __init__(self, code: str):
        super().__init__(code)
        self.code = code

    def __repr__(self) -> str:                  # Locust's error tables show repr()
        return self.code


def fire_info(fire, name: str) -> None:
    """Count one event (request_type ``info``, never a failure)."""
    fire(request_type=INFO, name=name, response_time=0, response_length=0, exception=None, context={})


def fire_call(fire, kind: str, name: str, started: float, code: str | None = None, length: int = 0) -> None:
    """Report one timed call (``started`` from perf_counter) to Locust."""
    fire(request_type=kind, name=name, response_time=(time.perf_counter() - started) * 1000.0,
         response_length=length, exception=Failure(code) if code else None, context={})


class LoadClient:
    """One session of a load user; a closed LoadClient is not reused (make a new one)."""

    def __init__(self, addr: tuple[str, int], fire, check: SeqCheck, bases: dict | None = None,
                 source: str | None = None):
        self.fire, self.check, self.bases = fire, check, dict(bases or {})
        self.client = Client(addr[0], addr[1], timeout=TIMEOUT, auto_recv=True,
                             on_push=self._on_push, ping_interval=20.0, source=source)
        self.since_ns = 0
        self.user, self.opened = "", False        # logged in as, a session open counted
        self.error, self.retry_ms = "", None      # of a failed login
        self.interrupted: dict[str, int] = {}   # sends acked while the user was being stopped
        self._cid_prefix, self._cids = os.urandom(6).hex(), itertools.count(1)
        self._based = False
        self._reported = dict.fromkeys(CLIENT_CHECKS, 0)

    # -- calls -------------------------------------------------------------------------
    def login(self, user: str, token: str, name: str = "login") -> dict | None:
        """Connect and log in by token; the welcome, or None (reported) on failure."""
        self.check.new_session()
        started, self.since_ns = time.perf_counter(), time.time_ns()
        try:
            self.client.connect()
            welcome = self.client.login(user, token=token)
        except ClientError as exc:
            fire_call(self.fire, REQ, name, started, exc.code)
            self.error, self.retry_ms = exc.code, exc.retry_ms
            return None
        fire_call(self.fire, REQ, name, started)
        self.user, self.opened = user, True
        fire_info(self.fire, SESSION_OPEN)
        self._apply_bases()
        return welcome

    def join(self, room: str) -> bool:
        started = time.perf_counter()
        try:
            joined = self.client.join(room)
        except ClientError as exc:
            fire_call(self.fire, REQ, "join", started, exc.code)
            return False
        self.check.base(room, joined.get("last_seq", 0))
        fire_call(self.fire, REQ, "join", started)
        return True

    def send(self, conv: str, text: str) -> dict | None:
        """Send ``{"ts", "text"}``; the ack, or None (reported) on an error reply."""
        started, cid = time.perf_counter(), f"{self._cid_prefix}-{next(self._cids)}"
        try:
            ack = self.client.send(conv, {"ts": time.time_ns(), "text": text}, cid=cid)
        except ClientError as exc:
            fire_call(self.fire, REQ, "send→ack", started, exc.code)
            return None
        except BaseException:                   # the user is being stopped (GreenletExit)
            if (conv, cid) not in self.client.sends.pending:
                self.interrupted[conv] = self.interrupted.get(conv, 0) + 1   # acked, seq unknown here
            fire_info(self.fire, CUT)
            raise
        fire_call(self.fire, REQ, "send→ack", started)
        if isinstance(ack.get("seq"), int):
            self.check.on_ack(conv, ack["seq"])
        return ack

    def close(self, logout: bool = True) -> None:
        """Log out (the server stores the cursors first) or just drop the connection."""
        try:
            if logout and self.client.connected:
                try:
                    self.client.logout(timeout=3.0)
                except ClientError:
                    pass
            self.client.close()
        finally:
            if self.opened:
                self.opened = False
                fire_info(self.fire, SESSION_CLOSED)

    @property
    def alive(self) -> bool:
        return self.client.connected and not self.client.closed.is_set()

    # -- checks ------------------------------------------------------------------------
    def poll_checks(self, final: bool = False) -> None:
        """Report what the client's counters and our seq check found since the last poll."""
        for name in CLIENT_CHECKS:
            now = self.client.counters.get(name, 0)
            self.fail(f"client.{name}", now - self._reported[name])
            self._reported[name] = now
        if final:
            unacked = dict(self.interrupted)
            for p in self.client.unacked:
                unacked[p.conv] = unacked.get(p.conv, 0) + 1
            self.fail("seq.gap", self.check.finish(unacked))
        else:
            sending = {p.conv for p in self.client.unacked}
            self.fail("seq.gap", self.check.sweep(time.monotonic(), sending))

    def fail(self, name: str, count: int = 1) -> None:
        for _ in range(max(0, count)):
            self.fire(request_type=CHECK, name=name, response_time=0, response_length=0,
                      exception=Failure(name), context={})

    # -- receive side (runs in the client's receive greenlet: never blocks) --------------
    def _apply_bases(self) -> None:
        """DM/group/sys bases from welcome.convs (0 for a conversation without messages)."""
        if self._based or self.client.welcome is None:
            return
        self._based = True
        last = self.client.welcome.get("convs") or {}
        for conv, default in self.bases.items():
            self.check.base(conv, last.get(conv, default))
        if isinstance(last.get("sys"), int):
            self.check.base("sys", last["sys"])

    def _on_push(self, body: dict) -> None:
        t = body.get("t")
        if t == "msg":
            self._on_msg(body)
        elif t == "kicked":
            self.fail("kicked")
        elif t == "error":
            self.fail(f"push.{body.get('code')}")

    def _on_msg(self, m: dict) -> None:
        self._apply_bases()
        conv, seq = m.get("conv"), m.get("seq")
        if isinstance(conv, str) and isinstance(seq, int):
            code = self.check.on_msg(conv, seq)
            if code in FAILURES:
                self.fail(f"seq.{code}")
            elif code == "redelivered":
                fire_info(self.fire, REDELIVERED)
            elif code == "earlier":
                fire_info(self.fire, EARLIER)
        if self.user and m.get("from") == self.user:
            fire_info(self.fire, OWN)
        body = m.get("body")
        ts = body.get("ts") if isinstance(body, dict) else None
        if not isinstance(ts, int):
            return
        if ts < self.since_ns:
            name = "replay→msg"
        else:
            name = "sys→msg" if conv == "sys" else "send→msg"
        self.fire(request_type=REQ, name=name, response_time=max(0.0, (time.time_ns() - ts) / 1e6),
                  response_length=0, exception=None, context={})


# -- users and tokens through the admin endpoint -------------------------------------------
def backoff(attempt: int, retry_ms=None) -> None:
    gevent.sleep(retry_ms / 1000.0 if retry_ms else min(8.0, 0.5 * 2 ** attempt))


def mint_token(cfg, user: str) -> str | None:
    """A login token for ``user``; None when no such user exists. An endpoint too busy to
    answer is asked again (TRIES times in all)."""
    for attempt in range(TRIES):
        try:
            return admin.call(cfg, "/v1/token", {"user": user})["token"]
        except admin.AdminFailed as exc:
            if str(exc.message).startswith("no_such_user"):
                return None
            if attempt == TRIES - 1:
                raise
        backoff(attempt)
    return None


def register(addr: tuple[str, int], user: str, source: str | None = None) -> None:
    """Register ``user`` with the load password (``user_exists`` is fine). What the server
    asks to retry (a busy login role, a connection the gate closed at its login timeout
    while the password was hashed) is tried again, TRIES times in all."""
    for attempt in range(TRIES):
        client = Client(addr[0], addr[1], timeout=TIMEOUT, ping_interval=None, source=source)
        try:
            client.connect()
            client.register(user, PASSWORD)
            return
        except ClientError as exc:
            if exc.code == "user_exists":
                return
            if exc.code not in RETRY or attempt == TRIES - 1:
                raise
            retry_ms = exc.retry_ms
        finally:
            client.close()
        backoff(attempt, retry_ms)


def ensure_user(cfg, addr: tuple[str, int], user: str, source: str | None = None) -> str:
    """The user's token, registering it once first if it does not exist yet."""
    token = mint_token(cfg, user)
    if token is None:
        register(addr, user, source)
        token = mint_token(cfg, user)
    if token is None:
        raise RuntimeError(f"{user} still does not exist after register")
    return token


def prepare(cfg, addrs: list, users: list[str], rosters: dict, log, chunk: int = 2000) -> None:
    """Make every load user exist and every guild have its roster (idempotent). The users
    are token-only accounts made through the admin API, as a game backend makes them: no
    password hash on the load path."""
    started = time.monotonic()
    for i in range(0, len(users), chunk):
        admin.call(cfg, "/v1/users", {"users": users[i:i + chunk]})
    for group, members in rosters.items():
        admin.call(cfg, "/v1/group", {"group": group, "owner": members[0], "members": members[1:]})
    log(f"prepare: {len(users)} users and {len(rosters)} guilds ready in {time.monotonic() - started:.1f}s")


def is_loopback(host: str) -> bool:
    return host == "localhost" or host.startswith("127.")


def gate_addrs(cfg) -> list[tuple[str, int]]:
    """Every gate's TCP address, in node-name order; only loopback ones are allowed."""
    gates = sorted(cfg.nodes_of("gate"), key=lambda n: n.name)
    addrs = [(g.host, g.tcp_port) for g in gates if g.tcp_port]
    far = [h for h, _ in addrs if not is_loopback(h)]
    if far or not addrs:
        raise RuntimeError(f"load tests only target loopback gates (config has {far or 'no gates'})")
    return addrs
