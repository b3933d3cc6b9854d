"""The requests a gate forwarded and waits on, and what each kind does when it ends.

Every request the gate forwards gets a fresh ``req`` and a deadline; the client's ``rid``
stays here, with the session. The answer (``Rep``, or ``Welcome`` / ``Sent`` /
``Resumed``) pops the request and the gate adds the rid to what the client gets. A
request with no answer by its deadline answers ``unavailable`` (a late answer is then
dropped). What differs between kinds is in one table, ``KINDS``, not in switches.
"""
from __future__ import annotations

import collections
import time
from typing import Callable, NamedTuple

from cluster.codec import unpackb
from cluster.replies import Refused, error, with_rid
from gate import handlers, live
from gate.limits import address

RETRY_MS = 1000
FREE_REGISTERS = frozenset({"bad_name", "weak_password", "unavailable"})   # cost no hash (or undone)


class Pending(NamedTuple):
    session: object
    rid: int | None
    env: tuple              # the envelope as forwarded
    at: float               # time.monotonic() when forwarded (ack latency: gate/stats.py)


class RequestKind(NamedTuple):
    before_reply: Callable | None = None    # (gate, pending, rep), even for a closed session
    after_reply: Callable | None = None     # (gate, pending, rep), once the client has it
    on_timeout: Callable | None = None      # (gate, pending), before `unavailable`
    silent: bool = False                    # asked by the gate itself: the client hears nothing


def _login_refused(gate, p: Pending, rep) -> None:
    gate.login_failed(p.session)
    p.session.failed.add()
    if unpackb(rep.body).get("code") == "auth_failed":
        gate.failed_per_ip.add(address(p.session.peer))


def _registered(gate, p: Pending, rep) -> None:
    """A register that login refused before hashing does not count against the limits."""
    if unpackb(rep.body).get("code") in FREE_REGISTERS:
        handlers.give_back_register(gate, p.session)


def _login_timed_out(gate, p: Pending) -> None:
    gate.login_failed(p.session)


def _logged_out(gate, p: Pending, rep) -> None:
    if unpackb(rep.body).get("t") == "ok":
        gate.close_now(p.session)


def _joined(gate, p: Pending, rep) -> None:
    if rep.last_seq is None:
        gate.rooms.leave(p.session, p.env.room)
    else:
        gate.rooms.joined(p.session, p.env.room, rep.last_seq)


def _join_timed_out(gate, p: Pending) -> None:
    gate.rooms.leave(p.session, p.env.room)


def _focused(gate, p: Pending, rep) -> None:
    """The backfill went out: live messages above its last_seq follow. A focus that
    failed leaves a passive viewer passive where it was (its retry starts there)."""
    s, room = p.session, p.env.conv
    position = s.focus_from.pop(room, None)
    answer = unpackb(rep.body)
    if answer.get("t") == "history" and isinstance(answer.get("last_seq"), int):
        gate.rooms.joined(s, room, answer["last_seq"])
    elif position is not None and room in s.rooms:
        gate.rooms.back_to_passive(s, room, position)
    else:
        gate.rooms.joined(s, room, 0)


def _focus_timed_out(gate, p: Pending) -> None:
    position = p.session.focus_from.pop(p.env.conv, None)
    if position is not None and p.env.conv in p.session.rooms:
        gate.rooms.back_to_passive(p.session, p.env.conv, position)
    else:
        gate.rooms.joined(p.session, p.env.conv, 0)


def _resume_over(gate, p: Pending, rep=None) -> None:
    gate.delivery.start_replay(p.session, [])


PLAIN = RequestKind()
KINDS = {
    "login": RequestKind(before_reply=_login_refused, on_timeout=_login_timed_out),
    "register": RequestKind(before_reply=_registered),
    "logout": RequestKind(after_reply=_logged_out),
    "join": RequestKind(after_reply=_joined, on_timeout=_join_timed_out),
    "focus": RequestKind(after_reply=_focused, on_timeout=_focus_timed_out),
    "resume": RequestKind(before_reply=_resume_over, on_timeout=_resume_over, silent=True),
    "status": RequestKind(after_reply=live.status_set),
}


class Requests:
    """Pending requests by number, and their deadlines: one FIFO per timeout length, so
    each is in deadline order and a request costs an append, not a heap push."""

    def __init__(self, gate):
        self.gate = gate
        self.pending: dict = {}         # req -> Pending
        self.deadlines: dict = collections.defaultdict(collections.deque)

    def __len__(self) -> int:
        return len(self.pending)

    def forward(self, s, rid, peer: str, cls, *fields, timeout: float | None = None) -> None:
        """Send ``cls(gate, req, *fields)`` to ``peer`` for session ``s``."""
        gate = self.gate
        if s.inflight >= gate.conf.max_inflight:
            raise Refused("rate_limited", "too many requests in flight; wait for replies")
        req = gate.new_id()
        env = cls(gate.name, req, *fields)
        s.inflight += 1
        now = time.monotonic()
        self.pending[req] = Pending(s, rid, env, now)
        timeout = timeout or gate.conf.request_timeout
        self.deadlines[timeout].append((now + timeout, req))
        gate.bus.send(peer, env)

    def take(self, req: int) -> Pending | None:
        p = self.pending.pop(req, None)
        if p is not None:
            p.session.inflight -= 1
        return p

    def answer(self, rep) -> None:
        """A ``Rep``: the reply to the client with its rid, and the kind's own steps."""
        p = self.take(rep.req)
        if p is None:
            return
        if p.env.KIND == "send":
            self.gate.ack_seconds.observe(time.monotonic() - p.at)
        kind = KINDS.get(p.env.KIND, PLAIN)
        if kind.before_reply is not None:
            kind.before_reply(self.gate, p, rep)
        if kind.silent or p.session.closed:
            return
        self.gate.reply(p.session, with_rid(rep.body, p.rid))
        if kind.after_reply is not None:
            kind.after_reply(self.gate, p, rep)

    def expire(self, now: float) -> None:
        """Requests with no answer by their deadline answer ``unavailable``."""
        for req in self._due(now):
            p = self.take(req)
            if p is not None:
                self._time_out(p)

    def _due(self, now: float) -> list:
        """Requests whose deadline passed (answered ones included: take() skips them)."""
        due = []
        for fifo in self.deadlines.values():
            while fifo and fifo[0][0] <= now:
                due.append(fifo.popleft()[1])
        return due

    def _time_out(self, p: Pending) -> None:
        self.gate.stats["timeouts"] += 1
        kind = KINDS.get(p.env.KIND, PLAIN)
        if kind.on_timeout is not None:
            kind.on_timeout(self.gate, p)
        if not kind.silent and not p.session.closed:
            body = error("unavailable", f"no answer to '{p.env.KIND}' in time; retry later",
                         retry_ms=RETRY_MS)
            self.gate.reply(p.session, with_rid(body, p.rid))
