"""The traffic/audit log files: format, a rotating writer, a reader, ``tail`` and ``follow``.

Layout: ``<data_dir>/log/traffic-00000001.log``, ``traffic-00000002.log``, ... The number
only grows, so "oldest to newest" is numeric order and a reader never sees a file renamed
under it. The writer appends to the highest number and starts the next one once a file
has passed ``rotate_bytes``; past ``keep_files`` files the oldest are deleted.

File format (version 1)::

    file   := MAGIC record*
    MAGIC  := b"ZCLOG1\\n\\0"                      (8 bytes)
    record := length:u32be crc32(payload):u32be payload
    payload:= msgpack array [ts_ms, node, kind, *fields]                 (one record)
            | msgpack array ["recs", n, node, [[ts_ms, kind, *fields] * n]]  (n records)

A node sends its records as one ``recs`` bus envelope per flush and the log role writes
that envelope as it came: one frame (and one CRC) for many records.

``kind`` and ``fields`` are those of the bus ``rec`` envelope (``cluster.bus.Bus.record``):

=========  =========================================================
kind       fields
=========  =========================================================
``in``     sid, user or None, body (msgpack bytes, secrets redacted)
``out``    sid or None, user or None, body, recipient count
``store``  conv, seq, sender, cid, ts
``admin``  action, args (map)
``stats``  counters (map, including ``log_drops``)
other      stored as they came
=========  =========================================================

The length prefix and CRC make a torn write visible: a reader stops a file at the first
record that is short, too long or fails its CRC (the tail of a file the writer is still
appending to, or one cut by a crash) and goes on with the next file. On open the writer
truncates such a torn tail, so appending never buries a bad record mid-file.
"""
from __future__ import annotations

import collections
import datetime
import os
import re
import struct
import zlib
from typing import Callable, Iterator, NamedTuple

import msgpack

MAGIC = b"ZCLOG1\n\0"
MAX_RECORD = 8 * 1024 * 1024        # a longer length prefix is corruption, not a record
FILE_RE = re.compile(r"^traffic-(\d{8,})\.log$")
_HEAD = struct.Struct(">II")
FOLLOW_INTERVAL = 0.25          # seconds between two looks at the files while following
FOLLOW_BATCH = 10_000           # records read per look at most (whole frames: a little more)


class Record(NamedTuple):
    ts_ms: int
    node: str
    kind: str
    fields: list


def log_dir(data_dir: str) -> str:
    return os.path.join(data_dir, "log")


def file_name(number: int) -> str:
    return f"traffic-{number:08d}.log"


def encode_record(record) -> bytes:
    """One framed record from ``[ts_ms, node, kind, *fields]``."""
    return encode_payload(msgpack.packb(list(record), use_bin_type=True))


def encode_payload(payload: bytes) -> bytes:
    """Frame an already encoded record: the log role writes bus envelopes
    ``["rec", ts_ms, node, kind, *fields]`` as they came, without decoding them."""
    return _HEAD.pack(len(payload), zlib.crc32(payload)) + payload


def list_files(directory: str) -> list[tuple[int, str]]:
    """(number, path) of every log file in ``directory``, oldest first."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = [(int(m.group(1)), name) for name in names if (m := FILE_RE.match(name))]
    return [(num, os.path.join(directory, name)) for num, name in sorted(found)]


# -- writing ----------------------------------------------------------------------------
class LogWriter:
    """Appends batches of encoded records to rotated files; one ``write`` per batch and file.

    Not thread-safe and blocking: the log role calls it from one worker at a time.
    """

    def __init__(self, directory: str, rotate_bytes: int, keep_files: int):
        self.directory = directory
        self.rotate_bytes = max(1, rotate_bytes)
        self.keep_files = max(1, keep_files)
        self.number = 0
        self.size = 0
        self._fd: int | None = None
        self._torn = False

    @property
    def path(self) -> str:
        return os.path.join(self.directory, file_name(self.number))

    def open(self) -> None:
        """Continue the newest file (after cutting a torn tail) or start a new one."""
        os.makedirs(self.directory, exist_ok=True)
        files = list_files(self.directory)
        if files:
            number, path = files[-1]
            end = valid_end(path)
            if end is not None and end < self.rotate_bytes:
                self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
                os.ftruncate(self._fd, end)
                self.number, self.size = number, end
                return
        self._start(files[-1][0] + 1 if files else 1)

    def _start(self, number: int) -> None:
        self.number, self._torn = number, False
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
        self.size = 0
        try:
            self._append(MAGIC)
        except OSError:
            os.close(self._fd)   # a file without its magic is skipped by readers
            self._fd = None
            raise
        self._prune()

    def write(self, chunks: list[bytes]) -> None:
        """Append encoded records; rotate once the current file passed ``rotate_bytes``.

        On an error (disk full...) the file is cut back to its last whole record and the
        OSError propagates: the caller counts the batch as dropped.
        """
        if self._torn or self._fd is None:   # a failed rotation or cut-back: start afresh
            self.rotate()
        start = 0
        while start < len(chunks):
            room, end = self.rotate_bytes - self.size, start
            while end < len(chunks) and (room > 0 or end == start):
                room -= len(chunks[end])
                end += 1
            self._append(b"".join(chunks[start:end]))
            start = end
            if self.size >= self.rotate_bytes:
                self.rotate()

    def _append(self, data: bytes) -> None:
        view, done = memoryview(data), 0
        try:
            while done < len(data):
                done += os.write(self._fd, view[done:])
        except OSError:
            if done:
                self._cut_back()
            raise
        self.size += done

    def _cut_back(self) -> None:
        try:
            os.ftruncate(self._fd, self.size)
        except OSError:
            self._torn = True      # never append after a torn record: next write rotates

    def rotate(self) -> None:
        try:
            self._close_fd()
        finally:
            self._start(self.number + 1)

    def _prune(self) -> None:
        files = list_files(self.directory)
        for _, path in files[:max(0, len(files) - self.keep_files)]:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def _close_fd(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def close(self) -> None:
        """fsync and close; the writer can be ``open``ed again."""
        self._close_fd()


# -- reading ----------------------------------------------------------------------------
def _frames(fh, pos: int = len(MAGIC)) -> Iterator[tuple[int, bytes]]:
    """(end offset, payload) of each whole, CRC-checked record from ``pos`` (where ``fh``
    stands); stops at the first bad one."""
    while True:
        head = fh.read(_HEAD.size)
        if len(head) < _HEAD.size:
            return
        length, crc = _HEAD.unpack(head)
        if length > MAX_RECORD:
            return
        payload = fh.read(length)
        if len(payload) < length or zlib.crc32(payload) != crc:
            return
        pos += _HEAD.size + length
        yield pos, payload


def valid_end(path: str) -> int | None:
    """Offset just past the last whole record, or None when the file is not ours."""
    with open(path, "rb") as fh:
        magic = fh.read(len(MAGIC))
        if magic != MAGIC:
            return None
        end = len(MAGIC)
        for end, _ in _frames(fh):
            pass
        return end


def read_file(path: str) -> Iterator[Record]:
    """Records of one file in order; a missing or foreign file yields nothing."""
    for _, records in read_from(path):
        yield from records


def _decode(payload: bytes) -> list[Record]:
    """The records of one frame: one, or the n of a ``recs`` batch (malformed: none)."""
    try:
        obj = msgpack.unpackb(payload, raw=False, strict_map_key=False, unicode_errors="replace")
    except (ValueError, msgpack.UnpackException, TypeError):
        return []
    if isinstance(obj, list) and len(obj) == 4 and obj[0] == "recs" and isinstance(obj[3], list):
        node = str(obj[2])
        return [r for item in obj[3] if (r := _record([item[0], node, *item[1:]] if isinstance(item, list) and item else None))]
    if isinstance(obj, list) and obj and obj[0] == "rec":
        obj = obj[1:]
    record = _record(obj)
    return [record] if record else []


def _record(obj) -> Record | None:
    if not isinstance(obj, list) or len(obj) < 3 or not isinstance(obj[0], (int, float)):
        return None
    return Record(int(obj[0]), str(obj[1]), str(obj[2]), obj[3:])


def read_from(path: str, offset: int = 0) -> Iterator[tuple[int, list[Record]]]:
    """(end offset, records) of each whole frame of one file past ``offset`` (0: from the
    start); a missing or foreign file yields nothing."""
    try:
        fh = open(path, "rb")
    except FileNotFoundError:  # deleted by rotation since it was listed
        return
    with fh:
        if fh.read(len(MAGIC)) != MAGIC:
            return
        offset = max(offset, len(MAGIC))
        fh.seek(offset)
        for end, payload in _frames(fh, offset):
            yield end, _decode(payload)


def iter_records(directory: str) -> Iterator[Record]:
    """Every record in ``directory``, oldest file first."""
    for _, path in list_files(directory):
        yield from read_file(path)


# -- tail -------------------------------------------------------------------------------
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
