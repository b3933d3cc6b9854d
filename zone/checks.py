"""Requests as a zone sees them, and the refusal a check raises."""
from __future__ import annotations

from dataclasses import dataclass


class Refused(Exception):
    def __init__(self, code: str, reason: str, **extra):
        super().__init__(reason)
        self.code, self.reason, self.extra = code, reason, extra


@dataclass(slots=True)
class SendReq:
    gate: str
    req: int
    rid: int | None
    user: str
    conv: str
    cid: str
    body: bytes          # the body, msgpack-encoded by the gate
    over_rate: bool
    deadline: int        # ms since epoch; past it the gate has answered unavailable
    prefix: bytes = b""
    pair: tuple = ()     # a DM's two users, parsed once per request (zone.handle_sends)
    blocked: bool = False  # the recipient blocks the sender (set by zone.handle_sends)


@dataclass(slots=True)
class SyncReq:
    gate: str
    req: int
    rid: int | None
    user: str
    conv: str
    after: int
    limit: int


@dataclass(slots=True)
class JoinReq:
    gate: str
    req: int
    rid: int | None
    user: str
    conv: str
    members: int          # the room's member count across gates, from center


@dataclass(slots=True)
class GroupReq:
    gate: str
    req: int
    rid: int | None
    user: str
    op: str               # create | add | remove | leave
    conv: str
    arg: object           # members (create) or the user (add, remove)


@dataclass(slots=True)
class PostReq:
    """An operator's or game backend's message, sent as ``system``."""
    gate: str | None      # the admin endpoint's node, to answer; None: no answer
    req: int | None
    conv: str
    cid: str
    body: bytes
    user: str = "system"
    rid: int | None = None
    over_rate: bool = False
    deadline: int = 2 ** 62
    prefix: bytes = b""
    pair: tuple = ()
    blocked: bool = False
