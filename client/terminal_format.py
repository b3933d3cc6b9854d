"""The terminal chat's text, no I/O: message lines, tags, colours' classes, errors with the
server's reason first and the time left, the prompt text (``client/terminal.py`` prints it),
and the little pure state behind the lines: recent messages per conversation (edits and
recalls apply there), the other user's read cursor per DM, friends' presence, throttles.
"""
from __future__ import annotations

import collections
import math
import time

from client.client import ClientError
from cluster import convs


COMMANDS = ("/dm", "/reply", "/join", "/leave", "/conv", "/sync", "/who", "/edit", "/recall", "/ids",
            "/friends", "/status", "/hide", "/unhide", "/help", "/quit")
HELP = """\
* /dm USER       talk to USER (shows your last messages; unknown users are refused)
* /reply [TEXT]  answer the last direct message you got (and talk there)
* /join r:ROOM   join a room (created on first join) and talk there
* /leave [ROOM]  leave the current room (or ROOM)
* /conv CONV     talk in any conversation you belong to, e.g. g:team
* /sync [N]      show the last N messages here (default 20)
* /who           how many are in this room now (a count: the server lists no members),
                 who you are, your conversations
* /edit SEQ TEXT change your message SEQ here (a number, or "last"): shown "(edited)"
* /recall SEQ    remove your message SEQ here (or "last"): shown "message removed"
* /ids [on|off]  show message numbers (#SEQ) in front of messages, for /edit and /recall
* /friends [add|remove USER]  list your friends, online or not (or change the list)
* /status [TEXT] set the status text your friends see (no TEXT: clear it)
* /hide, /unhide appear offline to everyone, or show up again
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
    "not_found": "no such message here (or it was removed, or it is an edit itself)",
    "not_sender": "that is someone else's message",
    "too_late": "too late to change that message",
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


def dm_peer(conv, me: str) -> str | None:
    """The other user of ``me``'s DM ``conv``; None for anything else."""
    if not isinstance(conv, str) or not conv.startswith("d:") or not convs.valid(conv):
        return None
    a, b = convs.dm_users(conv)
    return b if a == me else a if b == me else None


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def body_frags(m: dict) -> list[tuple[str, str]]:
    """``: body`` as it stands now: ``message removed`` for a recall, ``(edited)`` after an edit."""
    if m.get("recalled"):
        return [("", ": "), ("class:note", "message removed")]
    frags = [("", f": {clean(m.get('body'))}")]
    if m.get("edited") not in (None, False):
        frags.append(("class:note", " (edited)"))
    return frags


def format_msg(m: dict, me: str, current: str | None = None, *, read: bool = False,
               ids: bool = False) -> list[tuple[str, str]]:
    """One message as styled fragments: ``HH:MM [tag] sender: body`` (tag only elsewhere);
    ``#SEQ`` after the time with ``ids``, `` ✓✓`` at the end when the other user ``read`` it."""
    conv, sender = m.get("conv"), clean(m.get("from"))
    seq = m.get("seq")
    stamp = hhmm(m.get("ts")) + " " + (f"#{seq} " if ids and isinstance(seq, int) else "")
    if conv == "sys":
        return [("class:broadcast", f"{stamp}[broadcast] {sender}{plain(body_frags(m))}")]
    who = "self" if sender == me else "system" if sender == "system" else "other"
    frags = [("class:time", stamp)]
    if conv != current:
        frags.append(("class:tag", f"[{conv_label(conv, me)}] "))
    frags += [(f"class:{who}", sender), *body_frags(m)]
    if read:
        frags.append(("class:read", " ✓✓"))
    return frags


def conv_badge(conv, me: str, unread=None) -> str:
    """A conversation in a list: ``@bob (3 unread)``, or just its label."""
    label = conv_label(conv, me)
    return f"{label} ({unread} unread)" if isinstance(unread, int) and unread > 0 else label


def typing_line(user) -> str:
    return f"{clean(user)} is typing…"


def read_line(user, seq: int) -> str:
    return f"{clean(user)} read up to #{seq}"


def presence_text(status, text="") -> str:
    """``online``, ``online: afk``, ``offline`` (a hidden user is offline too)."""
    state = clean(status) if status in ("online", "offline") else "unknown"
    return f"{state}: {clean(text)}" if text and state == "online" else state


def digest_line(d: dict, me: str) -> str:
    """A passive room's summary: ``r:lobby: 7 new messages (#12-#18)``."""
    count = d.get("count")
    many = "" if count == 1 else "s"
    return f"{conv_label(d.get('conv'), me)}: {clean(count)} new message{many} (#{clean(d.get('from_seq'))}-" \
           f"#{clean(d.get('to_seq'))})"


def prompt_text(current: str | None, me: str) -> str:
    return f"[{conv_label(current, me)}] > " if current else "> "


def plain(frags) -> str:
    return "".join(text for _style, text in frags)




# -- parsing commands (pure) ----------------------------------------------------------------
STATUS_MAX = 64             # bytes of UTF-8 in a status text (the server's limit)


def parse_seq(arg: str, last_own: int | None, usage: str) -> int:
    """``12``, ``#12`` or ``last`` (your last message here); ValueError(usage) otherwise."""
    if arg == "last":
        if last_own is None:
            raise ValueError("no message of yours here yet (give its number: /ids shows them)")
        return last_own
    digits = arg[1:] if arg.startswith("#") else arg
    if not digits.isdigit() or int(digits) < 1:
        raise ValueError(usage)
    return int(digits)


def parse_edit(arg: str, last_own: int | None) -> tuple[int, str]:
    usage = "usage: /edit SEQ TEXT (SEQ: a number, or last)"
    seq, _, text = arg.partition(" ")
    if not text.strip():
        raise ValueError(usage)
    return parse_seq(seq, last_own, usage), text.strip()


def parse_status(arg: str) -> str:
    if len(arg.encode("utf-8")) > STATUS_MAX:
        raise ValueError(f"status text too long: at most {STATUS_MAX} bytes")
    return arg


# -- what the session remembers (pure) ------------------------------------------------------
LOG_MAX = 500               # messages remembered per conversation (edits/recalls apply to them)
LOG_CONVS = 200             # conversations remembered (the least recently used go)
FRIENDS_MAX = 200           # the server's presence_max
EVENT_KINDS = ("edit", "recall")


def apply_event(rec: dict, event: dict) -> bool:
    """Apply an edit/recall ``event`` to the message ``rec`` as shown; False when it changes
    nothing (recalled already, an older edit, the same body: history shows the current state)."""
    if rec.get("recalled"):
        return False
    if event.get("kind") == "recall":
        rec.update(body=None, recalled=True)
        return True
    ts, edited = event.get("ts"), rec.get("edited")
    if _number(ts) and _number(edited) and ts < edited:
        return False
    if edited not in (None, False) and rec.get("body") == event.get("body"):
        return False
    rec.update(body=event.get("body"), edited=ts if _number(ts) else True)
    return True


class ConvLog:
    """The last messages shown per conversation, by seq, as they stand now."""

    def __init__(self, per_conv: int = LOG_MAX, convs_max: int = LOG_CONVS):
        self.per_conv, self.convs_max = per_conv, convs_max
        self.convs: collections.OrderedDict[str, dict[int, dict]] = collections.OrderedDict()

    def _msgs(self, conv: str) -> dict[int, dict]:
        msgs = self.convs.pop(conv, None)
        self.convs[conv] = msgs = {} if msgs is None else msgs
        while len(self.convs) > self.convs_max:
            self.convs.popitem(last=False)
        return msgs

    def _put(self, conv: str, rec: dict) -> dict:
        msgs = self._msgs(conv)
        msgs[rec["seq"]] = rec
        while len(msgs) > self.per_conv:
            del msgs[min(msgs)]
        return rec

    def add(self, m: dict) -> None:
        conv, seq = m.get("conv"), m.get("seq")
        if isinstance(conv, str) and isinstance(seq, int) and m.get("kind") not in EVENT_KINDS:
            self._put(conv, dict(m))

    def get(self, conv: str, seq: int) -> dict | None:
        return (self.convs.get(conv) or {}).get(seq)

    def apply(self, event: dict) -> tuple[dict | None, bool]:
        """An edit/recall event: (its target as it stands now, whether that changed). A target
        not remembered is made up from the event (its sender and time)."""
        conv, ref = event.get("conv"), event.get("ref")
        if not isinstance(conv, str) or not isinstance(ref, int) or isinstance(ref, bool):
            return None, False
        rec = self.get(conv, ref) or self._put(conv, {"conv": conv, "seq": ref, "from": event.get("from"),
                                                      "ts": event.get("ts"), "body": None})
        changed = apply_event(rec, event)
        return dict(rec), changed

    def own(self, conv: str, me: str, after: int = 0, upto: float = math.inf) -> list[int]:
        """Seqs of ``me``'s messages in ``conv`` within (after, upto], not removed, in order."""
        msgs = self.convs.get(conv) or {}
        return sorted(seq for seq, rec in msgs.items()
                      if after < seq <= upto and rec.get("from") == me and not rec.get("recalled"))

    def last_own(self, conv: str, me: str) -> int | None:
        seqs = self.own(conv, me)
        return seqs[-1] if seqs else None


class ReadMarks:
    """The other user's read cursor per DM (``read`` pushes, ``sync``'s ``history.read``)."""

    def __init__(self):
        self.seqs: dict[str, int] = {}

    def read(self, conv, seq) -> bool:
        return isinstance(seq, int) and seq <= self.seqs.get(conv, 0)

    def move(self, conv: str, seq) -> int | None:
        """Raise the cursor to ``seq``: the one before, or None when it did not move."""
        before = self.seqs.get(conv, 0)
        if not isinstance(seq, int) or isinstance(seq, bool) or seq <= before:
            return None
        self.seqs[conv] = seq
        return before


class Throttle:
    """``due(key, now)`` at most once per ``every`` seconds per key; ``reset(key)`` re-arms it."""

    def __init__(self, every: float, keys_max: int = 1000):
        self.every, self.keys_max = every, keys_max
        self.last: dict = {}

    def due(self, key, now: float) -> bool:
        if now - self.last.get(key, -math.inf) < self.every:
            return False
        if len(self.last) >= self.keys_max:
            self.last = {k: t for k, t in self.last.items() if now - t < self.every}
        self.last[key] = now
        return True

    def reset(self, key) -> None:
        self.last.pop(key, None)


class Friends:
    """The users watched with ``presence_sub`` (in order) and what is known of each."""

    def __init__(self, limit: int = FRIENDS_MAX):
        self.limit = limit
        self.names: list[str] = []
        self.state: dict[str, tuple[str, str]] = {}    # name -> (status, text)

    def add(self, name: str) -> bool:
        """False if ``name`` is a friend already; ValueError when the list is full."""
        if name in self.names:
            return False
        if len(self.names) >= self.limit:
            raise ValueError(f"at most {self.limit} friends: /friends remove one first")
        self.names.append(name)
        return True

    def remove(self, name: str) -> bool:
        if name not in self.names:
            return False
        self.names.remove(name)
        self.state.pop(name, None)
        return True

    def update(self, name, status, text=None) -> str | None:
        """A friend's presence: the line to show (``bob is online``, ``bob's status: afk``),
        None when it is no friend or nothing changed."""
        if name not in self.names or status not in ("online", "offline"):
            return None
        text = clean(text) if isinstance(text, str) and status == "online" else ""
        before = self.state.get(name)
        self.state[name] = (status, text)
        if before is None or before[0] != status:
            return f"{name} is {presence_text(status, text)}"
        if before[1] != text:
            return f"{name}'s status: {text}" if text else f"{name} cleared the status text"
        return None

    def take_answer(self, answer: dict) -> list[str]:
        """A ``presence`` answer: the lines of the friends whose state changed."""
        users, texts = answer.get("users"), answer.get("texts")
        users = users if isinstance(users, dict) else {}
        texts = texts if isinstance(texts, dict) else {}
        lines = (self.update(name, users.get(name), texts.get(name)) for name in self.names)
        return [line for line in lines if line]

    def listing(self) -> list[str]:
        """``/friends``: a count, then one line per friend."""
        if not self.names:
            return ["no friends yet: /friends add USER"]
        online = sum(1 for name in self.names if self.state.get(name, ("",))[0] == "online")
        return [f"friends: {online} of {len(self.names)} online"] + [
            f"  {name} {presence_text(*self.state.get(name, ('unknown', '')))}" for name in self.names]
