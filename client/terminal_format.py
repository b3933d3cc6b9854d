"""The terminal chat's text, no I/O: message lines, tags, colours' classes, errors with the
server's reason first and the time left, the prompt text (``client/terminal.py`` prints it).
"""
from __future__ import annotations

import math
import time

from client.client import ClientError
from cluster import convs


COMMANDS = ("/dm", "/reply", "/join", "/leave", "/conv", "/sync", "/who", "/help", "/quit")
HELP = """\
* /dm USER       talk to USER (shows your last messages; unknown users are refused)
* /reply [TEXT]  answer the last direct message you got (and talk there)
* /join r:ROOM   join a room (created on first join) and talk there
* /leave [ROOM]  leave the current room (or ROOM)
* /conv CONV     talk in any conversation you belong to, e.g. g:team
* /sync [N]      show the last N messages here (default 20)
* /who           how many are in this room now (a count: the server lists no members),
                 who you are, your conversations
* /quit          log out and leave (end of input or Ctrl-D does the same)
* anything else is sent to the current conversation; //text sends /text"""

ERROR_TEXT = {              # only when the server gave no reason (or the error is ours)
    "rate_limited": "rate limited: you are sending too fast, wait a moment",
    "muted": "you are muted here",
    "banned": "this account is banned",
    "too_many_rooms": "you are in too many rooms: /leave one first",
    "too_many_connections": "too many connections from your address: try again later",
    "not_member": "you are not a member of this conversation (rooms: /join first)",
    "bad_conv": "no such conversation (or no such user)",
    "too_large": "too large (a message, or a group past its member limit)",
    "unavailable": "the server could not store it: try again",
    "auth_failed": "wrong user or password",
    "user_exists": "that user exists already",
    "weak_password": "password too weak: at least 8 characters",
    "bad_name": "bad user name: 1-32 characters of A-Z a-z 0-9 _ . -",
    "timeout": "no answer from the server in time",
    "disconnected": "not connected to the server",
}

CONNECTION_TEXT = {"lost": "connection lost, reconnecting…", "reconnected": "reconnected"}

KICK_TEXT = {
    "session_replaced": "you logged in somewhere else",
    "admin": "an operator kicked you",
    "banned": "this account is banned",
    "idle": "idle for too long",
    "slow": "this terminal read too slowly",
    "shutdown": "the server is restarting",
    "moving": "this server is restarting: moving you to another one",
}


# -- formatting (pure) ----------------------------------------------------------------------
def clean(value) -> str:
    """Text safe for a terminal: other users must not send escape sequences."""
    text = value if isinstance(value, str) else repr(value)
    return "".join(ch if ch.isprintable() else "\ufffd" for ch in text)


def hhmm(ts) -> str:
    """``HH:MM`` in local time of a ``ts`` in ms since the epoch."""
    if not isinstance(ts, (int, float)) or isinstance(ts, bool):
        return "--:--"
    return time.strftime("%H:%M", time.localtime(ts / 1000))


def span(ms: float) -> str:
    """A duration for people, rounded up: ``1 second``, ``9 minutes``, ``2 hours``, ``3 days``."""
    for unit, size in (("second", 1000), ("minute", 60000), ("hour", 3600000)):
        if ms < size * (60 if unit != "hour" else 48):
            n = max(1, math.ceil(ms / size))
            return f"{n} {unit}{'s' if n != 1 else ''}"
    n = math.ceil(ms / 86400000)
    return f"{n} day{'s' if n != 1 else ''}"


def time_left(code: str, retry_ms=None, until=None, now_ms: float | None = None) -> str:
    """What the error says about time: ``muted for 9 more minutes``, ``retry in 2 seconds``."""
    now_ms = time.time() * 1000 if now_ms is None else now_ms
    if code == "muted" and isinstance(until, (int, float)) and until > now_ms:
        return f"muted for {span(until - now_ms).replace(' ', ' more ', 1)}"
    if isinstance(retry_ms, (int, float)) and not isinstance(retry_ms, bool) and retry_ms > 0:
        return f"retry in {span(retry_ms)}"
    return ""


def describe_error(code: str, reason: str = "", retry_ms=None, until=None, now_ms=None,
                   *, ours: bool = False) -> str:
    """``! <server's reason> (<time left>)``; the canned text only when there is no reason,
    or first for errors the client made itself (``ours``: timeouts, a lost connection)."""
    canned, given = ERROR_TEXT.get(code), clean(reason or "")
    text = ((canned or given) if ours else (given or canned)) or clean(code)
    extra = time_left(code, retry_ms, until, now_ms)
    return f"! {text}" + (f" ({extra})" if extra else "")


def error_line(exc: ClientError, now_ms=None) -> str:
    reply = exc.reply or {}
    return describe_error(exc.code, exc.reason, exc.retry_ms, reply.get("until"), now_ms,
                          ours=exc.reply is None)


def conv_label(conv, me: str) -> str:
    """How a conversation is named on screen: ``@bob`` for your DM with bob, else its id."""
    conv = clean(conv)
    if conv == "sys":
        return "broadcast"
    if conv.startswith("d:") and convs.valid(conv):
        a, b = convs.dm_users(conv)
        if me in (a, b):
            return f"@{b if a == me else a}"
    return conv


def format_msg(m: dict, me: str, current: str | None = None) -> list[tuple[str, str]]:
    """One message as styled fragments: ``HH:MM [tag] sender: body`` (tag only elsewhere)."""
    conv, sender, body = m.get("conv"), clean(m.get("from")), clean(m.get("body"))
    stamp = hhmm(m.get("ts")) + " "
    if conv == "sys":
        return [("class:broadcast", f"{stamp}[broadcast] {sender}: {body}")]
    who = "self" if sender == me else "system" if sender == "system" else "other"
    frags = [("class:time", stamp)]
    if conv != current:
        frags.append(("class:tag", f"[{conv_label(conv, me)}] "))
    return frags + [(f"class:{who}", sender), ("", f": {body}")]


def prompt_text(current: str | None, me: str) -> str:
    return f"[{conv_label(current, me)}] > " if current else "> "


def plain(frags) -> str:
    return "".join(text for _style, text in frags)


