"""Client requests, dispatched through one table.

Each handler validates its fields (``bad_request``), checks what the gate can check
without state it does not own (login state, conversation syntax, rate, in-flight bound,
the abuse limits of gate/limits.py: registers and failed logins per connection and per
address, rooms per session, group sizes and member names) and forwards the rest to the
role that owns it as an envelope (cluster/envelopes.py). The
rid echo and the ``unknown_type`` / ``auth_required`` / ``bad_request`` answers happen in
``dispatch`` only; replies from other roles get their rid in gate/requests.py.
"""
from __future__ import annotations

import time

from cluster import convs
from cluster.codec import packb
from cluster.envelopes import Block, Focus, Group, Join, Login, Logout, Recv, Register, RoomInfo, Send, Sync
from cluster.replies import OK, Refused, with_rid
from gate.limits import Window, address

PUBLIC = {"register", "login", "ping"}
NOTHING_BEFORE = 2 ** 53    # focus of an active room without 'after': no backfill, just last_seq


def need(msg: dict, key: str, typ, optional: bool = False):
    value = msg.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, typ) or isinstance(value, bool) and typ is not bool:
        kind = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
        raise Refused("bad_request", f"field '{key}' must be {kind}")
    return value


def need_conv(msg: dict, key: str = "conv") -> str:
    conv = need(msg, key, str)
    if not convs.valid(conv):
        raise Refused("bad_conv", f"'{conv}' is not a valid conversation id")
    return conv


def need_rid(msg: dict):
    rid = msg.get("rid")
    if rid is not None and (not isinstance(rid, int) or isinstance(rid, bool)):
        raise Refused("bad_request", "field 'rid' must be an int")
    return rid


def on_register(gate, s, msg, rid):
    user = need(msg, "user", str)
    password = need(msg, "password", str)
    take_register(gate, s)
    try:
        gate.forward(s, rid, gate.login_node(), Register, user, password, timeout=gate.login_timeout)
    except Refused:
        give_back_register(gate, s)
        raise


def take_register(gate, s) -> None:
    """One register off this connection's and this address's allowance, or rate_limited
    (nothing forwarded: every register reaching login may cost a password hash)."""
    conf = gate.conf
    if s.registers is None:
        s.registers = Window(conf.register_per_connection, conf.limit_window)
    wait = s.registers.wait_ms()
    if wait:
        raise Refused("rate_limited", "too many registrations on this connection", retry_ms=wait)
    wait = gate.registers_per_ip.take(address(s.peer))
    if wait:
        raise Refused("rate_limited", "too many registrations from your address", retry_ms=wait)
    s.registers.take()


def give_back_register(gate, s) -> None:
    """A register that cost no hash (refused before it, or not forwarded) counts for nothing."""
    s.registers.give_back()
    gate.registers_per_ip.give_back(address(s.peer))


def on_login(gate, s, msg, rid):
    if s.user is not None or s.pending_user is not None:
        raise Refused("bad_request", "this connection is already logged in")
    version = msg.get("v", 1)
    if version != 1:
        raise Refused("bad_request", "protocol version must be 1")
    user = need(msg, "user", str)
    password = need(msg, "password", str, optional=True)
    token = need(msg, "token", str, optional=True)
    if password is None and token is None:
        raise Refused("bad_request", "login needs 'password' or 'token'")
    if s.failed.count() >= gate.conf.failed_logins:
        raise Refused("rate_limited", "too many failed logins on this connection; wait a minute")
    wait = gate.failed_per_ip.wait_ms(address(s.peer))
    if wait:
        raise Refused("rate_limited", "too many failed logins from your address", retry_ms=wait)
    s.pending_user = user
    gate.logging_in[user] = s
    gate.forward(s, rid, gate.login_node(), Login, user, password, token, s.sid,
                 timeout=gate.login_timeout)


def on_ping(gate, s, msg, rid):
    gate.reply(s, with_rid(packb({"t": "pong", "ts": int(time.time() * 1000)}), rid))


def on_send(gate, s, msg, rid):
    conv, cid = need_send_fields(gate, msg)
    if "body" not in msg:
        raise Refused("bad_request", "field 'body' is missing")
    forward_send(gate, s, rid, conv, cid, packb(msg["body"]))


def on_edit(gate, s, msg, rid):
    """An edit of message ``seq``: checked like a send, stored as the next seq (zone/events.py)."""
    conv, cid = need_send_fields(gate, msg)
    seq = need_target(msg)
    if "body" not in msg:
        raise Refused("bad_request", "field 'body' is missing")
    forward_send(gate, s, rid, conv, cid, packb(msg["body"]), "edit", seq)


def on_recall(gate, s, msg, rid):
    conv, cid = need_send_fields(gate, msg)
    forward_send(gate, s, rid, conv, cid, packb(None), "recall", need_target(msg))


def need_target(msg: dict) -> int:
    seq = need(msg, "seq", int)
    if seq < 1:
        raise Refused("bad_request", "field 'seq' must be a message's seq (1 or more)")
    return seq


def need_send_fields(gate, msg: dict) -> tuple[str, str]:
    conv = need(msg, "conv", str)
    cid = need(msg, "cid", str)
    if len(cid.encode("utf-8")) > gate.config.chat.cid_max or not cid:
        raise Refused("bad_request", f"field 'cid' must be 1..{gate.config.chat.cid_max} bytes")
    return conv, cid


def forward_send(gate, s, rid, conv: str, cid: str, body_raw: bytes, kind=None, ref: int = 0) -> None:
    """The checks a gate can make (conv syntax, room joined, rate), then to the zone."""
    if conv != s.last_conv:             # the syntax check, once per run of sends to a conv
        if not convs.valid(conv):
            raise Refused("bad_conv", f"'{conv}' is not a valid conversation id")
        s.last_conv = conv
    if conv == "sys" or conv.startswith("r:") and conv not in s.rooms:
        raise Refused("not_member", f"you are not a member of {conv}")
    over_rate = not s.bucket.take()
    # the store refuses the message after this (Redis' clock): a margin before the gate's
    # own timeout answers unavailable, so an ack in flight still arrives in time
    deadline = int((time.time() + gate.conf.request_timeout * 0.8) * 1000)
    if kind is None:
        gate.forward(s, rid, gate.zone_of(conv), Send, s.user, conv, cid, body_raw, over_rate, deadline)
    else:
        gate.forward(s, rid, gate.zone_of(conv), Send, s.user, conv, cid, body_raw, over_rate, deadline,
                     kind, ref)


def on_recv(gate, s, msg, rid):
    conv = need_conv(msg)
    seq = need(msg, "seq", int)
    if conv.startswith(("d:", "g:")):
        gate.bus.send(gate.dc_node(), Recv(s.user, conv, seq))
        gate.live.read_moved(s, conv, seq)


def on_sync(gate, s, msg, rid):
    conv = need_conv(msg)
    after = need(msg, "after", int)
    limit = need(msg, "limit", int, optional=True)
    chat = gate.config.chat
    limit = chat.sync_default if limit is None else max(1, min(limit, chat.sync_max))
    if after < 0:
        raise Refused("bad_request", "field 'after' must be >= 0")
    if conv.startswith("r:") and conv not in s.rooms:
        raise Refused("not_member", f"join {conv} before syncing it")
    gate.forward(s, rid, gate.zone_of(conv), Sync, s.user, conv, after, limit)


def on_logout(gate, s, msg, rid):
    gate.forward(s, rid, gate.dc_node(), Logout, s.user)


def need_room(msg: dict) -> str:
    room = need(msg, "room", str)
    if not room.startswith("r:") or not convs.valid(room):
        raise Refused("bad_conv", f"'{room}' is not a room id (r:<name>)")
    return room


def need_group(msg: dict) -> str:
    group = need(msg, "group", str)
    if not group.startswith("g:") or not convs.valid(group):
        raise Refused("bad_conv", f"'{group}' is not a group id (g:<name>)")
    return group


def on_join(gate, s, msg, rid):
    room = need_room(msg)
    mode = need(msg, "mode", str, optional=True)
    if mode not in (None, "active", "passive"):
        raise Refused("bad_request", "field 'mode' must be 'active' or 'passive'")
    if room not in s.rooms and len(s.rooms) >= gate.conf.max_rooms:    # joins in flight count
        raise Refused("too_many_rooms", f"a session is in at most {gate.conf.max_rooms} rooms; leave one first")
    gate.rooms.join(s, room, passive=mode == "passive")
    if mode != "passive":
        s.room_hold.setdefault(room, [])
    gate.forward(s, rid, gate.center_node(), Join, s.user, room)


def on_focus(gate, s, msg, rid):
    """A passive viewer turns active: every room message after ``after`` (default: the
    last seq its digests covered), then live ones; those are held until the answer."""
    room = need_room(msg)
    after = need(msg, "after", int, optional=True)
    if after is not None and after < 0:
        raise Refused("bad_request", "field 'after' must be >= 0")
    if room not in s.rooms:
        raise Refused("not_member", f"join {room} before focusing it")
    if not s.bucket.take():                 # a backfill costs like a send
        raise Refused("rate_limited", "too many requests; slow down")
    position = gate.rooms.activate(s, room)
    if position is not None:
        s.focus_from[room] = position       # passive again there if the focus fails
    if after is None:
        after = position if position is not None else NOTHING_BEFORE
    s.room_hold.setdefault(room, [])
    gate.forward(s, rid, gate.zone_of(room), Focus, s.user, room, after, gate.config.chat.room_history)


def on_leave(gate, s, msg, rid):
    gate.rooms.leave(s, need_room(msg))
    gate.reply(s, with_rid(OK, rid))


def on_room_info(gate, s, msg, rid):
    gate.forward(s, rid, gate.center_node(), RoomInfo, s.user, need_room(msg))


def on_group_create(gate, s, msg, rid):
    group = need_group(msg)
    members = need_members(gate, s, msg)
    gate.forward(s, rid, gate.zone_of(group), Group, s.user, "create", group, members)


def need_members(gate, s, msg: dict) -> list:
    """``members`` without duplicates and without the creator: names only (bad_request),
    and the group, its creator included, within ``chat.group_max_members`` (too_large).
    Counted before the names are checked: a huge list costs one pass, not a regex each."""
    members = need(msg, "members", list)
    if not all(isinstance(m, str) for m in members):
        raise Refused("bad_request", "field 'members' must be a list of user names")
    unique = [m for m in dict.fromkeys(members) if m != s.user]
    most = gate.config.chat.group_max_members
    if len(unique) + 1 > most:
        raise Refused("too_large", f"a group holds at most {most} members, its owner included")
    for m in unique:
        if not convs.valid_user(m):
            raise Refused("bad_request", f"'{m[:40]}' is not a user name")
    return unique


def group_op(op: str):
    def handler(gate, s, msg, rid):
        group = need_group(msg)
        user = need(msg, "user", str) if op in ("add", "remove") else None
        if op == "add" and not convs.valid_user(user):
            raise Refused("bad_request", "field 'user' must be a user name")
        gate.forward(s, rid, gate.zone_of(group), Group, s.user, op, group, user)
    handler.__name__ = f"on_group_{op}"
    return handler


def block_op(on: bool):
    def handler(gate, s, msg, rid):
        other = need(msg, "user", str)
        if not convs.valid_user(other) or other == s.user:
            raise Refused("bad_request", "field 'user' must name another user")
        (s.blocked.add if on else s.blocked.discard)(other)
        gate.forward(s, rid, gate.dc_node(), Block, s.user, other, on)
    handler.__name__ = "on_block" if on else "on_unblock"
    return handler


HANDLERS = {
    "register": on_register,
    "login": on_login,
    "ping": on_ping,
    "send": on_send,
    "edit": on_edit,
    "recall": on_recall,
    "recv": on_recv,
    "sync": on_sync,
    "logout": on_logout,
    "join": on_join,
    "focus": on_focus,
    "leave": on_leave,
    "room_info": on_room_info,
    "group_create": on_group_create,
    "group_add": group_op("add"),
    "group_remove": group_op("remove"),
    "group_leave": group_op("leave"),
    "block": block_op(True),
    "unblock": block_op(False),
}


def dispatch(gate, s, msg: dict) -> None:
    """Run the handler for ``msg['t']``; every refusal becomes one error reply."""
    t = msg["t"]
    rid = msg.get("rid")
    try:
        handler = gate.handlers.get(t)
        if handler is None:
            raise Refused("unknown_type", f"unknown message type '{t}'")
        rid = need_rid(msg)
        if t not in PUBLIC and s.user is None:
            raise Refused("auth_required", f"log in before '{t}'")
        handler(gate, s, msg, rid)
    except Refused as exc:
        safe_rid = rid if isinstance(rid, int) and not isinstance(rid, bool) else None
        gate.reply(s, with_rid(exc.body(), safe_rid))
