"""Every bus envelope, named once: its fields, who sends it to whom, and what it is for.

On the wire an envelope is a msgpack array ``[kind, field, ...]`` (``pack``); a role
registers a handler per envelope type (``Bus.on(Send, handler)``) and the bus hands it
the typed record (``decode``). Client bodies inside travel as opaque, already encoded
bytes (``body``, ``record``). Request envelopes carry the gate's request number ``req``;
the answer (``Rep``, ``Welcome``, ``Sent``, ``Resumed``) names it, and the gate, which
keeps the client's ``rid`` per ``req``, adds the rid to what it sends the client.

A record may arrive with fields it does not know yet (a newer peer during a rolling
restart): they are ignored. One with too few fields is malformed and dropped (counted in
the bus log). The table in ``docs/architecture.md`` is generated from this module
(``python -m cluster.envelopes``) and a unit test keeps the two equal.
"""
from __future__ import annotations

import sys
from typing import Any, NamedTuple

from cluster.codec import packb

_new_tuple = tuple.__new__


def envelope(kind: str, sender: str, receiver: str):
    """Give a NamedTuple its wire kind and its roles (``sender`` → ``receiver``)."""
    def wrap(cls):
        cls.KIND = kind
        cls.SENDER = sender
        cls.RECEIVER = receiver
        cls.ARITY = len(cls._fields)
        return cls
    return wrap


# -- accounts and sessions ---------------------------------------------------------------
@envelope("register", "gate", "login")
class Register(NamedTuple):
    """A client creates an account."""
    gate: str
    req: int
    user: str
    password: str


@envelope("login", "gate", "login")
class Login(NamedTuple):
    """A client logs in with a password or a token."""
    gate: str
    req: int
    user: str
    password: str | None
    token: str | None
    sid: int


@envelope("welcome", "login", "gate")
class Welcome(NamedTuple):
    """A login succeeded: the welcome body, the offline replay and the user's blocks."""
    req: int
    user: str
    body: bytes
    replay: list        # [[conv, seq, record], ...]
    blocked: list


@envelope("bind", "login", "center")
class Bind(NamedTuple):
    """Make this session the user's one session (center kicks the one it replaces)."""
    user: str
    gate: str
    sid: int
    login: str
    bind_id: int
    status: Any = None  # [text, hidden] kept with the account (presence_sub, set_status)


@envelope("bound", "center", "login")
class Bound(NamedTuple):
    """The bind is applied: login may read the welcome state."""
    bind_id: int


@envelope("unbind", "gate", "center")
class Unbind(NamedTuple):
    """A logged-in session closed."""
    user: str
    gate: str
    sid: int


@envelope("presence", "gate", "center")
class Presence(NamedTuple):
    """A gate's sessions as of id ``last`` (full list) and its room member counts."""
    gate: str
    users: list         # [[user, sid], ...]
    rooms: dict         # room -> local member count
    base: int           # the first id of this gate incarnation
    last: int           # the last id it issued
    pending: list       # [[user, sid], ...] logins in flight


@envelope("hello", "center", "gate")
class Hello(NamedTuple):
    """Center (re)started: the gate answers with its ``Presence``."""
    incarnation: int


@envelope("kick", "center", "gate")
class Kick(NamedTuple):
    """Close a session with ``kicked{reason}``."""
    sid: int
    reason: str


@envelope("resume", "gate", "center → login")
class Resume(NamedTuple):
    """After a center restart: what the session may have missed above what it has."""
    gate: str
    req: int
    user: str
    seen: dict          # conv -> highest seq pushed


@envelope("resumed", "login", "gate")
class Resumed(NamedTuple):
    """The replay a ``Resume`` asked for."""
    req: int
    replay: list        # [[conv, seq, record], ...]


# -- replies -----------------------------------------------------------------------------
@envelope("rep", "any", "gate, center")
class Rep(NamedTuple):
    """The answer to request ``req``: one encoded server body (no rid: the gate adds it)."""
    req: int
    body: bytes
    last_seq: int | None = None     # a join's: room frames above it are released


# -- direct messages, groups, history ----------------------------------------------------
@envelope("send", "gate", "zone")
class Send(NamedTuple):
    """A client's message to check, store, ack and deliver."""
    gate: str
    req: int
    user: str
    conv: str
    cid: str
    body: bytes         # msgpack-encoded by the gate
    over_rate: bool
    deadline: int       # ms since epoch: past it the gate has answered unavailable
    kind: str | None = None     # "edit" or "recall" of message ``ref``; None: a new message
    ref: int = 0


@envelope("sent", "zone", "the sender's gate")
class Sent(NamedTuple):
    """A stored DM or group message: the sender's ack and this gate's delivery in one."""
    req: int
    body: bytes         # the ack
    users: list
    conv: str
    seq: int
    record: bytes


@envelope("dlv", "zone (past `bus.direct_dlv_gates`: zone → center)", "gate")
class Dlv(NamedTuple):
    """A stored DM or group message for the recipients a gate holds."""
    users: list
    conv: str
    seq: int
    record: bytes


@envelope("sync", "gate", "zone")
class Sync(NamedTuple):
    """A page of history after ``after``."""
    gate: str
    req: int
    user: str
    conv: str
    after: int
    limit: int


@envelope("group", "gate, center", "zone")
class Group(NamedTuple):
    """A group change: create, add, remove, leave, or an operator's roster."""
    gate: str
    req: int
    user: str
    op: str
    group: str
    arg: Any            # members (create, roster), the user (add, remove), None


@envelope("post", "center", "zone")
class Post(NamedTuple):
    """An operator's or game backend's message, sent as ``system``."""
    node: str
    req: int
    conv: str
    cid: str
    body: bytes
    kind: str | None = None     # "recall" of message ``ref`` (an operator's)
    ref: int = 0


@envelope("recv", "gate", "dc")
class Recv(NamedTuple):
    """A user's delivered cursor moves."""
    user: str
    conv: str
    seq: int


@envelope("logout", "gate", "dc")
class Logout(NamedTuple):
    """Answered once every earlier ``Recv`` of the session is stored."""
    gate: str
    req: int
    user: str


@envelope("block", "gate", "dc")
class Block(NamedTuple):
    """A user blocks (``on``) or unblocks another."""
    gate: str
    req: int
    user: str
    other: str
    on: bool


@envelope("mod", "center, dc", "zone")
class Mod(NamedTuple):
    """A moderation change every zone applies: mute, room, block, reload."""
    what: str
    key: str
    value: Any


@envelope("read", "gate", "zone")
class Read(NamedTuple):
    """A group member's read cursor moved: pushed to the other members (small groups)."""
    user: str
    conv: str
    seq: int


@envelope("typing", "gate", "zone (groups), center (rooms)")
class Typing(NamedTuple):
    """A member is typing in ``conv``: pushed to the other online members, not stored."""
    user: str
    conv: str


@envelope("notify", "gate, zone, center", "center → gate")
class Notify(NamedTuple):
    """A live push (read, typing, presence) for ``users``' sessions; not to one blocking ``sender``."""
    users: list
    body: bytes
    sender: str


@envelope("watch", "gate", "center")
class Watch(NamedTuple):
    """A session's presence_sub: the users whose logins and logouts it is told of."""
    gate: str
    req: int
    user: str
    sid: int
    users: list


@envelope("status", "gate", "center")
class Status(NamedTuple):
    """set_status: the user's status text and whether it is hidden (kept with the account)."""
    gate: str
    req: int
    user: str
    text: str | None
    hidden: bool | None


@envelope("watches", "gate", "center")
class Watches(NamedTuple):
    """After a center restart: every session's presence_sub list, ``[[user, sid, users], ...]``."""
    gate: str
    entries: list


# -- rooms and broadcasts ----------------------------------------------------------------
@envelope("join", "gate → center", "zone")
class Join(NamedTuple):
    """A room join; center adds the member count after subscribing the gate."""
    gate: str
    req: int
    user: str
    room: str
    members: int = 0


@envelope("focus", "gate", "zone")
class Focus(NamedTuple):
    """A passive room session turns active: the room's messages after ``after``."""
    gate: str
    req: int
    user: str
    conv: str
    after: int
    limit: int


@envelope("rnotify", "center", "gate")
class Rnotify(NamedTuple):
    """A live push (typing) to a room's active members, once to each gate that has some."""
    conv: str
    body: bytes
    sender: str


@envelope("room_info", "gate", "center")
class RoomInfo(NamedTuple):
    """A room's member count across gates."""
    gate: str
    req: int
    user: str
    room: str


@envelope("roomcount", "gate", "center")
class RoomCount(NamedTuple):
    """A gate's local member count of a room changed."""
    gate: str
    room: str
    count: int


@envelope("rdlv", "zone → center", "gate")
class Rdlv(NamedTuple):
    """A room or ``sys`` message, once to each gate that has members (``sys``: all)."""
    conv: str
    seq: int
    record: bytes
    sender: str


# -- slot ownership ----------------------------------------------------------------------
@envelope("beat", "zone", "center")
class Beat(NamedTuple):
    """A zone is alive, holding slot table ``version``; an older one is answered with ``Table``."""
    zone: str
    version: int


@envelope("table", "center", "gate, zone")
class Table(NamedTuple):
    """The slot table (cluster/slots.py): a newer ``version`` replaces the one held."""
    version: int
    owners: list        # zone per slot
    epochs: list        # fence per slot, as in Redis (the store script checks it)


# -- operations --------------------------------------------------------------------------
@envelope("stats", "gate, zone, dc", "center")
class Stats(NamedTuple):
    """A node's counters for the operator view, once a second."""
    node: str
    role: str
    counters: dict


@envelope("drain", "center", "gate")
class Drain(NamedTuple):
    """``zonechat drain``: stop accepting, move every session away over ``over`` s, exit."""
    node: str           # center: the answer (``Rep``) goes there
    req: int
    over: float


@envelope("recs", "any", "log")
class Recs(NamedTuple):
    """A node's traffic and audit records of one flush, written as they came."""
    n: int
    node: str
    records: list       # [[ts_ms, kind, field, ...], ...]


@envelope("rec", "any", "log")
class Rec(NamedTuple):
    """A single record (a node's ``stats``), decoded by the log role."""
    ts: int
    node: str
    kind: str
    data: Any


ENVELOPES = (
    Register, Login, Welcome, Bind, Bound, Unbind, Presence, Hello, Kick, Resume, Resumed,
    Rep, Send, Sent, Dlv, Sync, Group, Post, Recv, Logout, Block, Mod,
    Read, Typing, Notify, Watch, Status, Watches,
    Join, Focus, Rnotify, RoomInfo, RoomCount, Rdlv, Beat, Table, Stats, Drain, Recs, Rec,
)
BY_KIND = {cls.KIND: cls for cls in ENVELOPES}


class Malformed(ValueError):
    """An envelope of an unknown kind or with too few fields."""


def pack(env) -> bytes:
    """The wire bytes of a record: ``[kind, *fields]`` (a tuple concatenation is the
    cheapest way there: this runs a few times per message)."""
    return packb((env.KIND,) + env)


def decode(cls, raw: list):
    """The record of type ``cls`` from a decoded ``[kind, *fields]`` list. Extra fields
    are ignored; missing ones take their defaults or raise ``Malformed``."""
    env = _new_tuple(cls, raw[1:cls.ARITY + 1])
    if len(env) == cls.ARITY:
        return env
    try:
        return cls(*raw[1:])
    except TypeError as exc:
        raise Malformed(f"{cls.KIND}: {exc}") from None


def markdown_table() -> str:
    """The bus table of ``docs/architecture.md``."""
    rows = ["| kind | from → to | fields | for |", "|---|---|---|---|"]
    for cls in ENVELOPES:
        fields = ", ".join(cls._fields)
        rows.append(f"| `{cls.KIND}` | {cls.SENDER} → {cls.RECEIVER} | {fields} | {cls.__doc__} |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.stdout.write(markdown_table() + "\n")
