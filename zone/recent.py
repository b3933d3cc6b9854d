"""Which DMs and groups a zone stored into lately, in a small file of its own.

A zone SIGKILLed between its store call and its deliveries leaves messages that are stored
but that no online member got. When the zone restarts, it reads this file, and
``ZoneNode.redeliver_recent`` delivers again what those conversations stored in the last
moments. The gates drop the seqs a session already has.

Before each store call the zone appends one line per durable conversation of the batch,
``<ms> <conv>\\n``, where ``ms`` is the ts the batch's messages get. It is one
``write(2)`` and no fsync: the data only has to outlive the process, and the kernel's page
cache outlives a SIGKILL. A machine crash loses the lines, but the gates' hole fill
(gate/fills.py) still covers every hole that a later message shows up.

Bounds: past MAX_BYTES the file is renamed to ``<path>.1`` (the older ``.1`` goes) and a
new file starts, so at most 2 x MAX_BYTES are kept and read. A write that fails (a full
disk) is logged once and the zone goes on without the journal.
"""
from __future__ import annotations

import logging
import os

from cluster import convs

MAX_BYTES = 1 << 20

log = logging.getLogger("zonechat.zone.recent")


def journal_path(cfg, zone: str) -> str:
    """Where zone ``zone`` keeps its journal: ``<data_dir>/zone/<zone>.recent``."""
    return os.path.join(cfg.data_dir, "zone", f"{zone}.recent")


def parse(lines) -> list[tuple[int, str]]:
    """(ms, conv) of each well-formed line (bytes), in file order; anything else is
    skipped (a line cut short, a foreign byte)."""
    out = []
    for line in lines:
        parts = line.split(b" ")
        if len(parts) != 2 or not parts[0].isdigit():
            continue
        try:
            conv = parts[1].decode("utf-8")
        except UnicodeDecodeError:
            continue
        if convs.valid(conv) and convs.is_durable(conv):
            out.append((int(parts[0]), conv))
    return out


def pick_recent(entries, window_ms: int, max_convs: int, not_before: int = 0) -> list[tuple[str, int]]:
    """(conv, since_ms) per conversation written within ``window_ms`` of the newest entry:
    ``since_ms`` is its first entry in that window. At most ``max_convs`` of them, the ones
    written last first. None if the newest entry is older than ``not_before``: what a zone
    stored long ago was delivered, or brought by the members' logins since."""
    newest = max((ms for ms, _ in entries), default=0)
    if not entries or newest < not_before:
        return []
    since: dict = {}
    last: dict = {}
    for i, (ms, conv) in enumerate(entries):
        if ms >= newest - window_ms:
            since[conv] = min(since.get(conv, ms), ms)
            last[conv] = i
    order = sorted(last, key=last.get, reverse=True)[:max_convs]
    return [(conv, since[conv]) for conv in order]


class Journal:
    """The append side and the reading side of one zone's file."""

    def __init__(self, path: str, max_bytes: int = MAX_BYTES):
        self.path = path
        self.max_bytes = max_bytes
        self._fd = None
        self._size = 0
        self._broken = False

    def read(self) -> list[tuple[int, str]]:
        """Every entry of the two generations, oldest first (none from a file that cannot
        be read: the zone starts anyway)."""
        entries = []
        for path in (self.path + ".1", self.path):
            try:
                with open(path, "rb") as fh:
                    entries.extend(parse(fh.read().split(b"\n")))
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("journal %s not read (%s): nothing is delivered again", path, exc)
        return entries

    def recent(self, window_ms: int, max_convs: int, not_before: int = 0) -> list[tuple[str, int]]:
        """``pick_recent`` of what the file holds."""
        return pick_recent(self.read(), window_ms, max_convs, not_before)

    def note(self, ms: int, conv_ids) -> None:
        """Record that ``conv_ids`` are about to get messages of ts ``ms``."""
        if self._broken:
            return
        data = b"".join(b"%d %s\n" % (ms, c.encode()) for c in dict.fromkeys(conv_ids))
        if not data:
            return
        try:
            if self._fd is None or self._size >= self.max_bytes:
                self._open()
            os.write(self._fd, data)
            self._size += len(data)
        except OSError as exc:
            self._broken = True
            log.warning("journal %s not written (%s): a restart will not deliver again", self.path, exc)

    def _open(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            os.replace(self.path, self.path + ".1")
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._size = os.fstat(self._fd).st_size

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
