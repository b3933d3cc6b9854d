"""Live pushes that are never stored: read receipts, typing, presence (friends lists).

Requests (``HANDLERS``, merged into the gate's table):

- ``typing{conv}``: a DM's is a ``notify`` for the other user (through center, which knows
  where users are), a group's goes to its zone (membership lives there), a room's to
  center (member counts live there). One per user and conversation per
  ``chat.typing_interval``; a quicker one is ``rate_limited``. No reply when accepted.
- ``presence_sub{users}`` / ``set_status{text?, hidden?}``: to center (center/watchers.py);
  the session keeps its list and status, sent again when center restarts (``watches``).
  Both count against one window per session (``PRESENCE_LIMIT``).
- ``recv`` moves the read cursor: in a DM or group the move is pushed to the other members
  as ``read{conv, user, seq}``, coalesced per (user, conv) to one per loop tick and only
  for seqs the session was given (or sent).

Pushes (``notify`` from center, ``rnotify`` for a room) go to the named users' sessions as
live frames: past a session's outbox bound they drop like room traffic (gate/outbox.py).
"""
from __future__ import annotations

import gevent

from cluster import convs
from cluster.codec import frame, packb
from cluster.envelopes import Notify, Read, Rnotify, Status, Typing, Watch, Watches
from cluster.replies import Refused
from gate.handlers import need, need_conv
from gate.limits import Window

PRESENCE_LIMIT = (20, 60.0)     # presence_sub + set_status per session: 20 in any 60 s
TYPING_LIMIT = (10, 1.0)        # typing per session, all conversations: 10 in any second
STATUS_MAX = 64                 # bytes of a status text
TYPED_MAX = 64                  # conversations whose last typing a session remembers


class Live:
    def __init__(self, gate):
        self.gate = gate
        self.reads: dict = {}           # (user, conv) -> seq, sent at the end of the tick
        self._scheduled = False

    def handlers(self) -> dict:
        return {Notify: self.on_notify, Rnotify: self.on_rnotify}

    # -- read receipts ----------------------------------------------------------------------
    def read_moved(self, s, conv: str, seq: int) -> None:
        if seq <= s.read_sent.get(conv, 0) or seq > s.seen.get(conv, 0):
            return
        s.read_sent[conv] = seq
        self.reads[(s.user, conv)] = seq
        if not self._scheduled:
            self._scheduled = True
            gevent.get_hub().loop.run_callback(self.flush_reads)

    def flush_reads(self) -> None:
        self._scheduled = False
        reads, self.reads = self.reads, {}
        gate = self.gate
        for (user, conv), seq in reads.items():
            if conv.startswith("d:"):
                body = packb({"t": "read", "conv": conv, "user": user, "seq": seq})
                other = [u for u in convs.dm_users(conv) if u != user]
                gate.bus.send(gate.center_node(), Notify(other, body, user))
            else:
                gate.bus.send(gate.zone_of(conv), Read(user, conv, seq))

    # -- pushes -----------------------------------------------------------------------------
    def on_notify(self, env: Notify) -> None:
        sessions = (self.gate.users.get(u) for u in env.users)
        self.push([s for s in sessions if s is not None], env.body, env.sender)

    def on_rnotify(self, env: Rnotify) -> None:
        members = self.gate.rooms.members.get(env.conv, {})
        self.push([s for s in members.values() if env.conv not in s.passive and s.user != env.sender],
                  env.body, env.sender)

    def push(self, sessions, body: bytes, sender: str) -> None:
        data, ws, count = frame(body), {}, 0
        for s in sessions:
            if s.closed or sender in s.blocked:
                continue
            s.queue_live(data if s.tcp else s.encode_cached(body, ws))
            self.gate.mark_dirty(s)
            count += 1
        if count:
            self.gate.frames_out += count
            self.gate.bus.record("out", None, None, body, count)

    def watches(self) -> Watches:
        """Every session's presence_sub list and status, for a center that restarted."""
        entries = [[user, s.sid, s.watching, *s.status] for user, s in self.gate.users.items()
                   if s.watching or s.status != ("", False)]
        return Watches(self.gate.name, entries)


# -- requests -------------------------------------------------------------------------------
def on_typing(gate, s, msg, rid):
    conv = need_conv(msg)
    kind = convs.kind(conv)
    if conv == convs.SYS or kind == "r" and conv not in s.rooms or \
            kind == "d" and s.user not in convs.dm_users(conv):
        raise Refused("not_member", f"you are not a member of {conv}")
    take_typing(gate, s, conv)
    take_window(s, "typing_limit", TYPING_LIMIT, "too many typing notices; wait")
    if kind == "d":
        other = [u for u in convs.dm_users(conv) if u != s.user]
        body = packb({"t": "typing", "conv": conv, "user": s.user})
        gate.bus.send(gate.center_node(), Notify(other, body, s.user))
    else:
        gate.bus.send(gate.zone_of(conv) if kind == "g" else gate.center_node(), Typing(s.user, conv))


def take_typing(gate, s, conv: str) -> None:
    """One typing per conversation per chat.typing_interval, or rate_limited."""
    now = gevent.get_hub().loop.now()
    interval = gate.config.chat.typing_interval
    last = s.typed.get(conv)
    if last is not None and now - last < interval:
        raise Refused("rate_limited", "typing is sent at most once per conversation per "
                      f"{interval:g} s", retry_ms=max(1, int((last + interval - now) * 1000)))
    if len(s.typed) >= TYPED_MAX:
        s.typed = {c: t for c, t in s.typed.items() if now - t < interval}
    s.typed[conv] = now


def take_presence(s) -> None:
    take_window(s, "presence_limit", PRESENCE_LIMIT, "too many presence requests; wait")


def take_window(s, slot: str, limit: tuple, reason: str) -> None:
    """One event off the session's Window in ``slot`` (made on first use), or rate_limited."""
    window = getattr(s, slot)
    if window is None:
        window = Window(*limit)
        setattr(s, slot, window)
    wait = window.wait_ms()
    if wait:
        raise Refused("rate_limited", reason, retry_ms=wait)
    window.take()


def on_presence_sub(gate, s, msg, rid):
    users = need(msg, "users", list)
    most = gate.config.chat.presence_max
    if len(users) > most:
        raise Refused("too_large", f"presence_sub watches at most {most} users")
    if not all(isinstance(u, str) and convs.valid_user(u) for u in users):
        raise Refused("bad_request", "field 'users' must be a list of user names")
    take_presence(s)
    s.watching = list(dict.fromkeys(users))
    gate.forward(s, rid, gate.center_node(), Watch, s.user, s.sid, s.watching)


def on_set_status(gate, s, msg, rid):
    text = need(msg, "text", str, optional=True)
    hidden = need(msg, "hidden", bool, optional=True)
    if text is None and hidden is None:
        raise Refused("bad_request", "set_status needs 'text' or 'hidden'")
    if text is not None and len(text.encode("utf-8")) > STATUS_MAX:
        raise Refused("bad_request", f"field 'text' must be at most {STATUS_MAX} bytes")
    take_presence(s)
    gate.forward(s, rid, gate.center_node(), Status, s.user, text, hidden)


def status_set(gate, p, rep) -> None:
    """set_status answered ok: the session's copy (sent again after a center restart)."""
    if rep.body == packb({"t": "ok"}):
        text, hidden = p.session.status
        env = p.env
        p.session.status = (text if env.text is None else env.text,
                             hidden if env.hidden is None else bool(env.hidden))


HANDLERS = {"typing": on_typing, "presence_sub": on_presence_sub, "set_status": on_set_status}
