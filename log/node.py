"""The log role: receives ``rec`` envelopes and appends them to rotated files.

It is only a PULL consumer, so it can never block a sender: a sender's bus queues at most
``log.queue_max`` records and drops past that (``bus.log_drops``, reported in its
``stats`` records). Here, records go into a bounded ``Backlog`` (``log.queue_max``
records and ``BACKLOG_BYTES_MAX`` bytes); the ``disk_writer`` greenlet takes the whole
backlog and writes it with one write per file in a worker thread, so a slow disk never
stops the inbox. While the disk is slow the backlog grows; past its bound new records are
dropped and counted (``dropped``) and a write that fails (disk full) drops its batch and
is counted (``write_errors``). Every ``STATS_INTERVAL`` seconds and at stop the node
appends its own ``stats`` record: received, dropped, write errors and the sum of the
``log_drops`` its senders reported (``heard_drops``).

Stop (SIGTERM): the writer finishes the batch it is writing, the rest of the backlog and a
final ``stats`` record are written, and the file is fsynced and closed. Records still in
flight on the bus when the signal arrives may be lost: stop the log role last.
"""
from __future__ import annotations

import time

import gevent
import msgpack
from gevent.event import Event

from log import logfile
from cluster.codec import array_header, packb
from cluster.envelopes import Recs
from cluster.node import Node

BACKLOG_BYTES_MAX = 64 * 1024 * 1024
STATS_MARK = b"\xa5stats"     # msgpack of the string "stats": such records are decoded
RECS_HEAD = array_header(Recs.ARITY + 1) + packb(Recs.KIND)   # how every Recs envelope starts
UINT_WIDTH = {0xcc: 1, 0xcd: 2, 0xce: 4}    # msgpack uint8/16/32 tags: bytes that follow
WRITE_EVERY = 0.25             # seconds between disk writes at most (a thread hand-off each)
STATS_INTERVAL = 10.0          # seconds between the log node's own stats records
WRITER_STOP_TIMEOUT = 5.0      # seconds to let an in-flight write finish at stop
ERROR_LOG_INTERVAL = 1.0       # at most one "cannot write" line per second


class Backlog:
    """Encoded records waiting for the disk, bounded in count and bytes. A chunk is one
    frame: a single record, or a node's ``recs`` batch of many."""

    __slots__ = ("max_records", "max_bytes", "chunks", "nbytes", "records")

    def __init__(self, max_records: int, max_bytes: int = BACKLOG_BYTES_MAX):
        self.max_records = max(1, max_records)
        self.max_bytes = max_bytes
        self.chunks: list[bytes] = []
        self.nbytes = 0
        self.records = 0

    def add(self, chunk: bytes, records: int = 1) -> bool:
        """Queue a chunk of ``records`` records; False (the caller counts them as dropped)
        when it does not fit."""
        if self.records + records > self.max_records or self.nbytes + len(chunk) > self.max_bytes:
            return False
        self.chunks.append(chunk)
        self.nbytes += len(chunk)
        self.records += records
        return True

    def take(self) -> tuple[list[bytes], int]:
        """(chunks, records) queued so far; the backlog is empty after."""
        out = (self.chunks, self.records)
        self.chunks, self.nbytes, self.records = [], 0, 0
        return out

    def __len__(self) -> int:
        return self.records


def recs_count(raw: bytes) -> int:
    """n of a ``["recs", n, node, records]`` envelope read from its first bytes (no
    decode); 0 for any other envelope."""
    start = len(RECS_HEAD) + 1
    if not raw.startswith(RECS_HEAD) or len(raw) < start:
        return 0
    tag = raw[start - 1]
    if tag < 0x80:
        return tag
    width = UINT_WIDTH.get(tag, 0)
    return int.from_bytes(raw[start:start + width], "big") if len(raw) >= start + width else 0


class LogNode(Node):
    role = "log"
    inline_inbox = True     # records only join the backlog; the disk write runs in a thread

    def __init__(self, config, spec):
        super().__init__(config, spec)
        directory = logfile.log_dir(config.data_dir)
        self.writer = logfile.LogWriter(directory, config.log.rotate_bytes, config.log.keep_files)
        self.backlog = Backlog(config.log.queue_max)
        self.received = 0
        self.dropped = 0
        self.malformed = 0
        self.write_errors = 0
        self.sender_drops: dict[str, int] = {}   # node -> last log_drops it reported
        self._wake = Event()
        self._writer_greenlet = None
        self._error_logged_at = float("-inf")

    def setup(self) -> str:
        self.writer.open()
        self.log.info("writing records to %s", self.writer.path)
        self.bus.on_raw(self.on_raw)
        addr = self.bus.bind()
        self._writer_greenlet = self.spawn(self.disk_writer, name="disk_writer")
        self.spawn(self.stats_reporter, name="stats_reporter")
        return addr

    # -- hot path: the inbox ------------------------------------------------------------
    def on_record(self, env: list) -> None:
        """A decoded ``Rec`` envelope, ``["rec", ts_ms, node, kind, *fields]`` -> backlog
        (encoded, not yet written); a ``stats`` record's counters are noted."""
        self.received += 1
        match env:
            case [_, int() | float() as ts, node, kind, *fields]:
                pass
            case _:
                self.malformed += 1
                return
        if kind == "stats" and fields:
            self._note_stats(node, fields[0])
        self.append([ts, node, kind, *fields])

    def on_raw(self, batch: list) -> None:
        """The hot path: envelopes go to the backlog as they came (no decode, no encode),
        one frame each; a ``recs`` batch counts as its n records. Single ``stats`` records
        are decoded for their counters."""
        for raw in batch:
            n = recs_count(raw)
            if not n and STATS_MARK in raw[:64]:
                self.on_record(msgpack.unpackb(raw, raw=False, strict_map_key=False))
                continue
            n = n or 1
            self.received += n
            if not self.backlog.add(logfile.encode_payload(raw), n):
                self.dropped += n
        if self.backlog and not self._wake.is_set():
            self._wake.set()

    def append(self, record) -> None:
        if not self.backlog.add(logfile.encode_record(record)):
            self.dropped += 1
            return
        if not self._wake.is_set():
            self._wake.set()

    def _note_stats(self, node, counters) -> None:
        if isinstance(counters, dict) and isinstance(counters.get("log_drops"), int):
            self.sender_drops[str(node)] = counters["log_drops"]

    def metrics(self, fam) -> None:
        fam.counter("records_received", "traffic and audit records received", self.received)
        fam.counter("records_dropped", "records dropped: backlog full or a failed write", self.dropped)
        fam.counter("write_errors", "file writes that failed (their batch is dropped)", self.write_errors)
        fam.gauge("backlog", "records waiting to be written", len(self.backlog))
        super().metrics(fam)

    def ready_checks(self) -> dict:
        """The log role keeps up while its backlog has room."""
        return {"backlog": len(self.backlog) < self.config.log.queue_max}

    def stats(self) -> dict:
        return {
            "received": self.received, "dropped": self.dropped, "malformed": self.malformed,
            "write_errors": self.write_errors, "backlog": len(self.backlog),
            "heard_drops": sum(self.sender_drops.values()), "log_drops": self.bus.log_drops,
            "file": self.writer.number,
        }

    # -- greenlets ----------------------------------------------------------------------
    def disk_writer(self) -> None:
        """Write the whole backlog per wake-up in a worker thread; exit when stopped."""
        pool = gevent.get_hub().threadpool
        while True:
            gevent.wait([self._wake, self.stopped], count=1)
            if self.stopped.is_set():
                return
            self._wake.clear()
            self._write(pool.apply(self._write_batch, self.backlog.take()))
            self.stopped.wait(WRITE_EVERY)      # let the next batch grow: fewer, larger writes

    def stats_reporter(self) -> None:
        while not self.stopped.wait(STATS_INTERVAL):
            self.append(self.stats_record())

    def stats_record(self) -> list:
        return [int(time.time() * 1000), self.name, "stats", self.stats()]

    # -- disk ---------------------------------------------------------------------------
    def _write_batch(self, chunks: list[bytes], records: int):
        """Runs in a worker thread: returns (records, error) instead of raising."""
        try:
            self.writer.write(chunks)
        except OSError as exc:
            return records, exc
        return records, None

    def _write(self, outcome) -> None:
        count, error = outcome
        if error is None:
            return
        self.write_errors += 1
        self.dropped += count
        now = time.monotonic()
        if now - self._error_logged_at >= ERROR_LOG_INTERVAL:   # a dead disk must not flood
            self._error_logged_at = now
            self.log.error("cannot write %d records to %s: %s (dropped; %d write errors so far)",
                           count, self.writer.path, error, self.write_errors)

    def _stop_receiving(self) -> None:
        """Stop reading the inbox first: a clean cut (all that was received gets written)."""
        self.bus.unwatch()

    def shutdown(self) -> None:
        """Stop receiving, let the in-flight write finish, write the rest and a last stats
        record, fsync."""
        self._stop_receiving()
        writer = self._writer_greenlet
        if writer is not None:
            writer.join(timeout=WRITER_STOP_TIMEOUT)
        if writer is not None and not writer.dead:
            self.log.error("disk write still running after %.0fs: %d records not written",
                           WRITER_STOP_TIMEOUT, len(self.backlog))
            return
        chunks, records = self.backlog.take()   # the last stats record goes in past the bound
        chunks.append(logfile.encode_record(self.stats_record()))
        self._write(self._write_batch(chunks, records + 1))
        try:
            self.writer.close()
        except OSError as exc:
            self.log.error("cannot close %s: %s", self.writer.path, exc)
        self.log.info("log %s: %s", self.name, self.stats())
