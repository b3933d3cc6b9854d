"""Messages to store, as a zone works on them: one mutable record per ``Send`` or
``Post`` envelope (``cluster/envelopes.py``).

Each is built from its envelope (``SendReq(*send)``), whose fields come first in the same
order; the fields after them are what the zone works out while it checks the message (a
DM's users, the encoded prefix, the filtered body). Syncs, joins and group changes are
read as the envelopes themselves: the zone changes nothing in them.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class SendReq:
    gate: str
    req: int
    user: str
    conv: str
    cid: str
    body: bytes          # the body, msgpack-encoded by the gate
    over_rate: bool
    deadline: int        # ms since epoch; past it the gate has answered unavailable
    kind: str | None = None  # "edit" or "recall" of message ``ref`` (zone/events.py)
    ref: int = 0
    prefix: bytes = b""
    pair: tuple = ()     # a DM's two users, parsed once per request (zone.handle_sends)
    blocked: bool = False  # the recipient blocks the sender (set by zone.handle_sends)
    replaced: bytes = b""  # an event's target as it is stored after it (zone/events.py)


@dataclass(slots=True)
class PostReq:
    """An operator's or game backend's message, sent as ``system``."""
    gate: str | None      # the admin endpoint's node, to answer; None: no answer
    req: int | None
    conv: str
    cid: str
    body: bytes
    kind: str | None = None
    ref: int = 0
    user: str = "system"
    over_rate: bool = False
    deadline: int = 2 ** 62
    prefix: bytes = b""
    pair: tuple = ()
    blocked: bool = False
    replaced: bytes = b""
