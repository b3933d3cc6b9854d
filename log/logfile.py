"""The traffic/audit log files: format, a rotating writer and a reader (``tail`` and
``follow``, the reading side of ``zonechat log tail``, are in ``log/tail.py``).

Layout: ``<data_dir>/log/traffic-00000001.log``, ``traffic-00000002.log``, ... The number
only grows, so "oldest to newest" is numeric order and a reader never sees a file renamed
under it. The writer appends to the highest number and starts the next one once a file
has passed ``rotate_bytes``; past ``keep_files`` files the oldest are deleted (``keep_files:
0`` deletes nothing: the log is then the complete archive ``zonechat log export`` reads).

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
``store``  conv, seq, sender, cid, ts, record (the stored ``msg`` map, msgpack bytes;
           absent in files written before it was added)
``admin``  action, args (map)
``stats``  counters (map, including ``log_drops``)
other      stored as they came
=========  =========================================================

The files hold every client frame (secrets redacted, bodies not) and every admin action:
they are the operator's alone. The directory is made (and kept) mode 0700 and every file
is created 0600 (``os.open`` with the mode, not the umask's default); a file left by an
earlier release with wider bits is narrowed to 0600 when the writer continues it.

The length prefix and CRC make a torn write visible: a reader stops a file at the first
record that is short, too long or fails its CRC (the tail of a file the writer is still
appending to, or one cut by a crash) and goes on with the next file. On open the writer
truncates such a torn tail, so appending never buries a bad record mid-file.
"""
from __future__ import annotations

import os
import re
import struct
import zlib
from typing import Iterator, NamedTuple

import msgpack

MAGIC = b"ZCLOG1\n\0"
MAX_RECORD = 8 * 1024 * 1024        # a longer length prefix is corruption, not a record
FILE_RE = re.compile(r"^traffic-(\d{8,})\.log$")
_HEAD = struct.Struct(">II")
DIR_MODE = 0o700
FILE_MODE = 0o600


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
        self.keep_files = max(0, keep_files)      # 0: keep every file
        self.number = 0
        self.size = 0
        self._fd: int | None = None
        self._torn = False

    @property
    def path(self) -> str:
        return os.path.join(self.directory, file_name(self.number))

    def open(self) -> None:
        """Continue the newest file (after cutting a torn tail) or start a new one."""
        os.makedirs(self.directory, mode=DIR_MODE, exist_ok=True)
        os.chmod(self.directory, DIR_MODE)          # one made before this release, too
        files = list_files(self.directory)
        if files:
            number, path = files[-1]
            end = valid_end(path)
            if end is not None and end < self.rotate_bytes:
                self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
                os.fchmod(self._fd, FILE_MODE)
                os.ftruncate(self._fd, end)
                self.number, self.size = number, end
                return
        self._start(files[-1][0] + 1 if files else 1)

    def _start(self, number: int) -> None:
        self.number, self._torn = number, False
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, FILE_MODE)
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
        if not self.keep_files:
            return
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
