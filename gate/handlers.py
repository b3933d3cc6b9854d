"""Client requests, dispatched through one table.

Each handler validates its fields (``bad_request``), checks what the gate can check
without state it does not own (login state, conversation syntax, rate, in-flight bound)
and forwards the rest to the role that owns it as an envelope (cluster/envelopes.py). The
rid echo and the ``unknown_type`` / ``auth_required`` / ``bad_request`` answers happen in
``dispatch`` only; replies from other roles get their rid in gate/requests.py.
"""
from __future__ import annotations

import time

from cluster import convs
from cluster.codec import packb
from cluster.envelopes import Block, Group, Join, Login, Logout, Recv, Register, RoomInfo, Send, Sync
from cluster.replies import OK, Refused, with_rid

PUBLIC = {"register", "login", "ping"}


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
    gate.forward(s, rid, gate.login_node(), Register, user, password, timeout=gate.login_timeout)


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
    s.pending_user = user
    gate.logging_in[user] = s
    gate.forward(s, rid, gate.login_node(), Login, user, password, token, s.sid,
                 timeout=gate.login_timeout)


def on_ping(gate, s, msg, rid):
    gate.reply(s, with_rid(packb({"t": "pong", "ts": int(time.time() * 1000)}), rid))


def on_send(gate, s, msg, rid):
    conv = need(msg, "conv", str)
    cid = need(msg, "cid", str)
    if "body" not in msg:
        raise Refused("bad_request", "field 'body' is missing")
    if len(cid.encode("utf-8")) > gate.config.chat.cid_max or not cid:
        raise Refused("bad_request", f"field 'cid' must be 1..{gate.config.chat.cid_max} bytes")
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
    gate.forward(s, rid, gate.zone_of(conv), Send, s.user, conv, cid, packb(msg["body"]),
                 over_rate, deadline)


def on_recv(gate, s, msg, rid):
    conv = need_conv(msg)
    seq = need(msg, "seq", int)
    if conv.startswith(("d:", "g:")):
        gate.bus.send(gate.dc_node(), Recv(s.user, conv, seq))


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
    gate.rooms.join(s, room)
    s.room_hold.setdefault(room, [])
    gate.forward(s, rid, gate.center_node(), Join, s.user, room)


def on_leave(gate, s, msg, rid):
    gate.rooms.leave(s, need_room(msg))
    gate.reply(s, with_rid(OK, rid))


def on_room_info(gate, s, msg, rid):
    gate.forward(s, rid, gate.center_node(), RoomInfo, s.user, need_room(msg))


def on_group_create(gate, s, msg, rid):
    group = need_group(msg)
    members = need(msg, "members", list)
    if not all(isinstance(m, str) for m in members):
        raise Refused("bad_request", "field 'members' must be a list of user names")
    gate.forward(s, rid, gate.zone_of(group), Group, s.user, "create", group, members)


def group_op(op: str):
    def handler(gate, s, msg, rid):
        group = need_group(msg)
        user = need(msg, "user", str) if op in ("add", "remove") else None
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
    "recv": on_recv,
    "sync": on_sync,
    "logout": on_logout,
    "join": on_join,
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
