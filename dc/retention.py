"""How much history Redis keeps per conversation kind (``chat.retention``). Pure: no I/O.

Each kind (``dm``, ``group``, ``room``, ``sys``) has a ``count`` (keep the newest that many
messages) and an ``age`` (seconds: keep none older); 0 is no bound. Unset counts are 0 for
DMs and groups (everything kept: every member's offline delivery holds however long it
was away) and ``chat.room_history`` for rooms and ``sys`` (1,000, as before).

The store trims in the same script call that stores (dc/keys.py STORE_SCRIPT), never by a
scan of the keyspace:

- ``count``: storing seq s deletes seq s - count.
- ``age``: the conversation keeps a short list of checkpoints ``mt:<conv>`` ("seq:ts", one
  whenever ``bucket_ms(age)`` has passed since the last, so at most ~64 of them); once the
  second checkpoint is older than the cutoff, every message before it is, and those are
  deleted (at most TRIM_MAX per call; the rest on the next ones). A message lives at most
  ``age`` plus one bucket. Each store also sets the history's expiry to that, so a
  conversation nobody writes to any more loses its whole history after ``age`` without a
  scanner; its ``seq:`` counter stays, so seqs are never reused.

Readers floor what they ask for at ``first_seq`` (the oldest seq still kept), and ``sync``
answers it as ``history.first_seq`` when it asked below it.
"""
from __future__ import annotations

from typing import NamedTuple

from cluster import convs

BUCKETS = 64            # checkpoints per age window, about
MIN_BUCKET_MS = 1000    # a checkpoint a second at most
TRIM_MAX = 1000         # messages one store call deletes by age at most


class Bounds(NamedTuple):
    count: int          # newest messages kept; 0: no bound
    age_ms: int         # milliseconds a message is kept; 0: no bound


def kind_of(conv: str) -> str:
    if conv == convs.SYS:
        return "sys"
    return {"d:": "dm", "g:": "group", "r:": "room"}.get(conv[:2], "room")


def bounds_of(chat, kind: str) -> Bounds:
    """The retention of ``kind`` under ChatConf ``chat``."""
    keep = getattr(chat.retention, kind)
    count = keep.count
    if count is None:
        count = chat.room_history if kind in ("room", "sys") else 0
    return Bounds(int(count), int(round(keep.age * 1000)))


def all_bounds(chat) -> dict:
    """{kind: Bounds} for every kind."""
    return {kind: bounds_of(chat, kind) for kind in ("dm", "group", "room", "sys")}


def bucket_ms(age_ms: int) -> int:
    """The time between two checkpoints of a conversation kept ``age_ms``."""
    return max(MIN_BUCKET_MS, age_ms // BUCKETS)


def first_seq(last: int, bounds: Bounds, checkpoint: bytes | None, history_exists: bool) -> int:
    """The oldest seq a conversation still keeps (``last`` + 1 when it keeps none).

    ``checkpoint``: its oldest age checkpoint ("seq:ts", None if it has none);
    ``history_exists``: its ``m:`` hash is there (an age-kept conversation without either
    has had everything expire)."""
    first = 1
    if bounds.count > 0:
        first = max(first, last - bounds.count + 1)
    if bounds.age_ms > 0:
        if checkpoint is not None:
            first = max(first, int(checkpoint.split(b":", 1)[0]))
        elif not history_exists:
            first = last + 1
    return min(first, last + 1)
