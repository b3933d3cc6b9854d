"""Edits and recalls: sequenced events that change an earlier message.

An ``edit`` or ``recall`` is stored like any message of its conversation (the next seq,
the same dedup of its cid, the same delivery and replay), with ``kind`` and ``ref`` (the
target's seq). The store call that stores it also rewrites the target's record
(``StoreItem.replaced``), so history, ``join.recent`` and offline replay show the current
state. Here: the target is loaded and checked (not_found, not_sender, too_late), and both
records are built. The sender of the target may edit it within ``chat.edit_window`` and
recall it within ``chat.recall_window``; ``system`` (an operator) may recall any message.
"""
from __future__ import annotations

from cluster.codec import event_prefix, msg_prefix, packb, unpackb
from cluster.replies import Refused

KINDS = ("edit", "recall")


def prepare(zone, reqs: list, now_ms: int) -> list:
    """The sends of ``reqs`` that may be stored: each event's target is loaded (one
    pipeline) and checked; a refused one is answered. Two events of one target in a run
    build on each other."""
    events = [r for r in reqs if r.kind]
    if not events:
        return reqs
    records = zone.store.records([(r.conv, r.ref) for r in events])
    current, first = {}, {}
    refused = set()
    for r, raw in zip(events, records):
        again = first.get((r.conv, r.user, r.cid))
        if again is not None:           # a resend in the same run: the store's dedup answers it
            r.replaced = again.replaced
            continue
        key = (r.conv, r.ref)
        target = current.get(key) or (unpackb(raw) if raw is not None else None)
        try:
            updated = apply(r, target, now_ms, zone.chat)
        except Refused as exc:
            zone.refuse(r, exc)
            refused.add(id(r))
            continue
        current[key] = updated
        r.replaced = packb(updated)
        first[(r.conv, r.user, r.cid)] = r
    return [r for r in reqs if id(r) not in refused]


def apply(r, target: dict | None, now_ms: int, chat) -> dict:
    """The target as it is after event ``r``, or Refused."""
    if not isinstance(target, dict) or target.get("kind") or target.get("recalled"):
        raise Refused("not_found", f"no message {r.ref} to {r.kind} in {r.conv}")
    operator = r.user == "system"
    if not operator and target.get("from") != r.user:
        raise Refused("not_sender", f"message {r.ref} is not yours")
    window = chat.edit_window if r.kind == "edit" else chat.recall_window
    if not operator and now_ms - int(target.get("ts", 0)) > window * 1000:
        raise Refused("too_late", f"messages can be {r.kind}ed for {window:g} s after they are sent")
    if r.kind == "edit":
        return dict(target, body=unpackb(r.body), edited=now_ms)
    return dict(target, body=None, recalled=True)


def prefix(r, now_ms: int) -> bytes:
    """The stored record of ``r`` up to its seq: a message, or an event with kind and ref."""
    if r.kind:
        return event_prefix(r.conv, r.user, now_ms, r.cid, r.body, r.kind, r.ref)
    return msg_prefix(r.conv, r.user, now_ms, r.cid, r.body)
