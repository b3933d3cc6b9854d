"""The dataset's key layout: the version key, the check every node makes, the migration.

``zc:layout`` (a hash: ``version``, ``slots``) says which layout of ``dc/keys.py`` a Redis
holds and with how many zonechat slots its conversation keys were tagged. Every process
that opens the store checks it first (``check``): an empty Redis gets the current one;
a dataset of another version, or tagged for another ``chat.slots``, is refused with what
to do, before anything is written into it.

``zonechat migrate`` turns a version-1 dataset (the same key names without hash tags, on
one Redis) into version 2: every key renamed (RENAMENX: TTLs kept, nothing overwritten),
then the version key written. Run it while the nodes are stopped or refusing: ``zonechat
up`` starts the managed Redis, the nodes refuse the old layout (and are restarted with
back-off), ``zonechat migrate`` renames, and the next restart of each node goes on.
"""
from __future__ import annotations

from dc import keys

USER_PREFIXES = ("u", "lf", "ucv", "cur", "blk")
CONV_PREFIXES = ("seq", "m", "mt", "gi", "gm")
RENAME_BATCH = 500


class LayoutError(Exception):
    """The dataset's layout is not the one this release reads; the message says what to do."""


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def dedup_conv(rest: str) -> str:
    """The conversation of a version-1 dedup key's ``<conv>:<sender>:<cid>``."""
    if rest.startswith("sys:"):
        return "sys"
    parts = rest.split(":")
    return ":".join(parts[:3] if rest.startswith("d:") else parts[:2])


def v2_name(old: str, layout: keys.Layout) -> str | None:
    """The version-2 name of a version-1 key; None for a key that keeps its name."""
    prefix, sep, rest = old.partition(":")
    if not sep or not rest or rest.startswith("{"):
        return None
    if prefix in USER_PREFIXES:
        return f"{prefix}:{{{rest}}}"
    if prefix in CONV_PREFIXES:
        return f"{prefix}:{layout.tag(rest)}{rest}"
    if prefix == "dd":
        return f"dd:{layout.tag(dedup_conv(rest))}{rest}"
    return None


def check(r, slots: int) -> dict:
    """Refuse a dataset this release cannot read; write the version key into an empty one."""
    doc = {_text(k): _text(v) for k, v in r.hgetall(keys.LAYOUT).items()}
    if not doc:
        if _first_v1_key(r, keys.Layout(slots)) is not None:
            raise LayoutError("this Redis holds a version-1 dataset (keys without hash tags): "
                              "run `zonechat migrate` (docs/operations.md, 'Key layout')")
        r.hsetnx(keys.LAYOUT, "version", keys.VERSION)
        r.hsetnx(keys.LAYOUT, "slots", slots)
        doc = {_text(k): _text(v) for k, v in r.hgetall(keys.LAYOUT).items()}
    if doc.get("version") != str(keys.VERSION):
        raise LayoutError(f"this Redis holds layout version {doc.get('version')}; this release reads "
                          f"version {keys.VERSION}")
    if doc.get("slots") != str(slots):
        raise LayoutError(f"this dataset's conversations are tagged for chat.slots {doc.get('slots')}; "
                          f"the config says {slots}: set chat.slots back to {doc.get('slots')}")
    return doc


def _first_v1_key(r, layout: keys.Layout) -> str | None:
    for key in r.scan_iter(count=1000):
        if v2_name(_text(key), layout) is not None:
            return _text(key)
    return None


def migrate(r, slots: int, out=print) -> int:
    """Rename a version-1 dataset to version 2; the number of keys renamed."""
    doc = {_text(k): _text(v) for k, v in r.hgetall(keys.LAYOUT).items()}
    if doc:
        out(f"already layout version {doc.get('version')} (chat.slots {doc.get('slots')}): nothing to do")
        return 0
    layout, batch, renamed = keys.Layout(slots), [], 0
    for key in r.scan_iter(count=1000):
        new = v2_name(_text(key), layout)
        if new is not None:
            batch.append((key, new))
        if len(batch) >= RENAME_BATCH:
            renamed += _rename(r, batch)
            batch = []
    renamed += _rename(r, batch)
    r.hset(keys.LAYOUT, mapping={"version": keys.VERSION, "slots": slots})
    out(f"renamed {renamed} keys; layout version {keys.VERSION}, chat.slots {slots}")
    return renamed


def _rename(r, batch: list) -> int:
    if not batch:
        return 0
    pipe = r.pipeline(transaction=False)
    for old, new in batch:
        pipe.renamenx(old, new)
    return sum(1 for done in pipe.execute() if done)
