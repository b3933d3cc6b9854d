"""``zonechat log export CONV``: one conversation's archived messages as JSON lines.

The traffic log is the archive: every message a zone stores is recorded as a ``store``
record that carries the stored ``msg`` map itself (the bytes clients get), so an export
needs no Redis and holds what retention has since trimmed from it. It is complete from the
oldest file kept: with ``log.keep_files: 0`` nothing is ever deleted.

One line per stored message, in seq order, each seq once (the first record of it: a
resend logs its message again)::

    {"conv": "d:alice:bob", "seq": 7, "from": "alice", "ts": 1764871234567,
     "cid": "c-41", "body": "hi", "logged": 1764871234570, "node": "zone1"}

``body`` is null for a record written before the log carried bodies (``archived: false``).
"""
from __future__ import annotations

import json
from typing import Callable, Iterable, Iterator

import msgpack

from log import logfile
from log.logfile import Record


def _field(fields: list, i: int):
    return fields[i] if len(fields) > i else None


def _stored(raw) -> dict | None:
    """The stored ``msg`` map of a store record, or None when it is absent or unreadable."""
    if not isinstance(raw, bytes):
        return None
    try:
        obj = msgpack.unpackb(raw, raw=False, strict_map_key=False, unicode_errors="replace")
    except (ValueError, msgpack.UnpackException, TypeError):
        return None
    return obj if isinstance(obj, dict) else None


def line_of(record: Record) -> dict:
    """The export line of one ``store`` record."""
    conv, seq, sender, cid, ts = (_field(record.fields, i) for i in range(5))
    stored = _stored(_field(record.fields, 5))
    line = {"conv": conv, "seq": seq, "from": sender, "ts": ts, "cid": cid,
            "body": None, "logged": record.ts_ms, "node": record.node}
    if stored is None:
        line["archived"] = False
        return line
    line.update({key: stored[key] for key in ("from", "ts", "cid", "body") if key in stored})
    extra = {k: v for k, v in stored.items() if k not in line and k not in ("t", "seq")}
    line.update(extra)
    return line


def lines(records: Iterable[Record], conv: str, since_ms: int | None = None,
          until_ms: int | None = None) -> Iterator[dict]:
    """The export lines of ``conv`` among ``records``, each seq once (the first logged)."""
    seen: set = set()
    for record in records:
        if record.kind != "store" or _field(record.fields, 0) != conv:
            continue
        seq = _field(record.fields, 1)
        if seq in seen:
            continue
        line = line_of(record)
        ts = line["ts"] if isinstance(line["ts"], int) else record.ts_ms
        if (since_ms is not None and ts < since_ms) or (until_ms is not None and ts >= until_ms):
            continue
        seen.add(seq)
        yield line


def _json_default(obj):
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")
    return str(obj)


def export(data_dir: str, conv: str, out: Callable[[str], None], since_ms: int | None = None,
           until_ms: int | None = None) -> int:
    """Write ``conv``'s archived messages under ``data_dir`` to ``out``, one JSON text per
    call; the number written."""
    records = logfile.iter_records(logfile.log_dir(data_dir))
    found = sorted(lines(records, conv, since_ms, until_ms),
                   key=lambda line: line["seq"] if isinstance(line["seq"], int) else -1)
    for line in found:        # seq order: two zones' records interleave around a handover
        out(json.dumps(line, ensure_ascii=False, separators=(",", ":"), default=_json_default))
    return len(found)
