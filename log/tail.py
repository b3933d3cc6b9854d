"""``zonechat log tail``: the last records of the traffic log, filtered, and ``follow``.

Records are printed one line each (secrets never shown, long values cut); ping/pong
frames are hidden unless asked for. Following looks at the files every
``FOLLOW_INTERVAL`` seconds and reads at most ``FOLLOW_BATCH`` records per look, across
rotation (an old file is finished before the next one; pruned files are skipped).
"""
from __future__ import annotations

import collections
import datetime
import os
from typing import Callable, NamedTuple

import msgpack

from log.logfile import Record, file_name, list_files, log_dir, read_from

FOLLOW_INTERVAL = 0.25          # seconds between two looks at the files while following
FOLLOW_BATCH = 10_000           # records read per look at most (whole frames: a little more)

SECRET_KEYS = ("pass", "pwd", "token", "secret")   # substrings of keys never printed
VALUE_MAX = 40
FIELDS_MAX = 12
FIRST_KEYS = ("conv", "seq", "cid", "from", "user", "to", "code", "reason")


def _field(fields: list, i: int):
    return fields[i] if len(fields) > i else None


def user_of(record: Record):
    """The user a record is about: in/out the session's user, store the sender,
    admin the target ``user`` in its args."""
    if record.kind in ("in", "out"):
        return _field(record.fields, 1)
    if record.kind == "store":
        return _field(record.fields, 2)
    if record.kind == "admin":
        args = _field(record.fields, 1)
        return args.get("user") if isinstance(args, dict) else None
    return None


def _is_secret(key) -> bool:
    low = str(key).lower()
    return any(word in low for word in SECRET_KEYS)


def _text(value, depth: int = 0) -> str:
    """A short single-line rendering: control characters and spaces never leak raw."""
    if value is None:
        return "-"
    if isinstance(value, (bool, int, float)):
        return str(value)
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, dict):
        return "{" + _pairs(value, depth + 1) + "}" if depth < 2 else f"{{{len(value)} keys}}"
    if isinstance(value, (list, tuple)):
        if depth < 2 and len(value) <= 4:
            return "[" + ",".join(_text(v, depth + 1) for v in value) + "]"
        return f"[{len(value)} items]"
    text = str(value)
    short = text[:VALUE_MAX] + ("…" if len(text) > VALUE_MAX else "")
    return short if short and short.isprintable() and " " not in short else repr(short)


def _pairs(obj: dict, depth: int = 0, first=()) -> str:
    keys = [k for k in first if k in obj] + [k for k in obj if k not in first]
    parts = [f"{_text(k, 2)}=***" if _is_secret(k) else f"{_text(k, 2)}={_text(obj[k], depth)}"
             for k in keys[:FIELDS_MAX]]
    if len(keys) > FIELDS_MAX:
        parts.append("…")
    return " ".join(parts)


def body_summary(body) -> str:
    """``send conv=d:alice:bob cid=x``: the frame's ``t`` and its fields, secrets starred."""
    if not isinstance(body, bytes):
        return _text(body)
    try:
        obj = msgpack.unpackb(body, raw=False, strict_map_key=False, unicode_errors="replace")
    except (ValueError, msgpack.UnpackException, TypeError):
        return f"<{len(body)} bytes, not msgpack>"
    if not isinstance(obj, dict):
        return f"<{len(body)} bytes, not a map>"
    rest = {k: v for k, v in obj.items() if k != "t"}
    return " ".join(filter(None, (_text(obj.get("t")), _pairs(rest, 0, FIRST_KEYS))))


def summary(record: Record) -> str:
    kind, fields = record.kind, record.fields
    if kind == "in":
        return f"{body_summary(_field(fields, 2))} sid={_text(_field(fields, 0))}"
    if kind == "out":
        return (f"{body_summary(_field(fields, 2))} sid={_text(_field(fields, 0))}"
                f" recipients={_text(_field(fields, 3))}")
    if kind == "store":
        conv, seq, _, cid = (_field(fields, i) for i in range(4))
        return f"conv={_text(conv)} seq={_text(seq)} cid={_text(cid)}"
    if kind == "admin":
        args = _field(fields, 1)
        args_text = _pairs(args) if isinstance(args, dict) else _text(args)
        return f"{_text(_field(fields, 0))} {args_text}".rstrip()
    if kind == "stats" and isinstance(_field(fields, 0), dict):
        counters = fields[0]
        return _pairs({k: counters[k] for k in sorted(counters, key=str)})
    return " ".join(_text(f) for f in fields)


def iso_ms(ts_ms: int) -> str:
    moment = datetime.datetime.fromtimestamp(ts_ms / 1000, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_ms % 1000:03d}Z"


def format_record(record: Record) -> str:
    """One readable line: time (UTC, ms), node, kind, user, summary."""
    try:
        when = iso_ms(record.ts_ms)
    except (OverflowError, OSError, ValueError):
        when = str(record.ts_ms)
    user = _text(user_of(record))
    return f"{when} {_text(record.node)} {_text(record.kind)} {user} {summary(record)}"


# -- choosing records -------------------------------------------------------------------
KINDS = ("in", "out", "store", "admin", "stats")    # what nodes record (others are kept as they came)
KEEPALIVE = ("ping", "pong")                       # client frames hidden unless asked for
KEEPALIVE_MAX = 64                                 # bytes: a longer body is no ping or pong


def is_keepalive(record: Record) -> bool:
    """A client's ``ping`` (an ``in`` record) or the gate's ``pong`` (an ``out`` record)."""
    body = _field(record.fields, 2)
    if record.kind not in ("in", "out") or not isinstance(body, bytes) or len(body) > KEEPALIVE_MAX:
        return False
    try:
        obj = msgpack.unpackb(body, raw=False, strict_map_key=False, unicode_errors="replace")
    except (ValueError, msgpack.UnpackException, TypeError):
        return False
    return isinstance(obj, dict) and obj.get("t") in KEEPALIVE


def record_filter(user=None, kinds=(), keepalive: bool = False) -> Callable[[Record], bool]:
    """Which records to show: about ``user`` (any if None), of ``kinds`` (any if empty),
    ping/pong frames only with ``keepalive``."""
    kinds = frozenset(kinds)

    def keep(record: Record) -> bool:
        return ((user is None or user_of(record) == user)
                and (not kinds or record.kind in kinds)
                and (keepalive or not is_keepalive(record)))
    return keep


# -- tail and follow ----------------------------------------------------------------------
class Cursor(NamedTuple):
    number: int          # the log file being read
    offset: int          # just past the last whole record read from it (0: its start)


def last_records(directory: str, user=None, n: int = 20, keep=None) -> list[Record]:
    """The last ``n`` records (about ``user`` if given, or those ``keep`` accepts; ping and
    pong hidden), oldest first."""
    if n <= 0:
        return []
    return last_with_cursor(directory, keep or record_filter(user), n)[0]


def last_with_cursor(directory: str, keep, n: int) -> tuple[list[Record], Cursor]:
    """The last ``n`` records ``keep`` accepts, oldest first, and the cursor just past the
    last record read: following from it misses nothing and repeats nothing. Files are read
    newest first; reading stops once ``n`` are found."""
    found: list[Record] = []
    cursor = Cursor(0, 0)
    for i, (number, path) in enumerate(reversed(list_files(directory))):
        matches = collections.deque(maxlen=max(0, n - len(found)))
        end = 0
        for end, records in read_from(path):
            matches.extend(r for r in records if keep(r))
        if i == 0:
            cursor = Cursor(number, end)
        found[:0] = matches
        if len(found) >= n:
            break
    return found, cursor


class Follower:
    """The records written after a cursor, in order, across rotation and pruning.

    The writer appends only to the newest file: once a newer one exists, the current file
    is read to its end one last time and the follower moves to the next file there is.
    """

    def __init__(self, directory: str, cursor: Cursor):
        self.directory = directory
        self.cursor = cursor

    def poll(self, limit: int = FOLLOW_BATCH) -> list[Record]:
        """What was written since the last call, at most about ``limit`` records (whole frames)."""
        found = self._read(limit)
        while len(found) < limit:
            following = [num for num, _ in list_files(self.directory) if num > self.cursor.number]
            if not following:
                break
            found += self._read(limit - len(found))
            if len(found) >= limit:
                break
            self.cursor = Cursor(following[0], 0)
            found += self._read(limit - len(found))
        return found

    def _read(self, limit: int) -> list[Record]:
        number, offset = self.cursor
        found: list[Record] = []
        frames = read_from(os.path.join(self.directory, file_name(number)), offset)
        for offset, records in frames:
            found += records
            if len(found) >= limit:
                break
        frames.close()
        self.cursor = Cursor(number, offset)
        return found


def follow(directory: str, cursor: Cursor, keep, out, stop, interval: float = FOLLOW_INTERVAL) -> None:
    """Print every record ``keep`` accepts written after ``cursor`` until ``stop`` (an
    Event) is set, looking at the files every ``interval`` seconds while idle."""
    follower = Follower(directory, cursor)
    while not stop.is_set():
        batch = follower.poll()
        for record in batch:
            if keep(record):
                out(format_record(record))
        if len(batch) < FOLLOW_BATCH and stop.wait(interval):
            return


def tail(data_dir: str, user=None, n: int = 20, out=print, kinds=(), keepalive: bool = False,
         stop=None) -> int:
    """Print the last ``n`` records under ``data_dir`` (``zonechat log tail``); return the count.

    ``kinds`` and ``keepalive`` as in ``record_filter``; with ``stop`` (an Event), go on
    printing new records (``--follow``) until it is set.
    """
    keep = record_filter(user, kinds, keepalive)
    records, cursor = last_with_cursor(log_dir(data_dir), keep, max(0, n))
    for record in records:
        out(format_record(record))
    if stop is not None:
        follow(log_dir(data_dir), cursor, keep, out, stop)
    return len(records)
