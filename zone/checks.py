"""Requests as a zone sees them, and the refusal a check raises."""
from __future__ import annotations

from dataclasses import dataclass


class Refused(Exception):
    def __init__(self, code: str, reason: str):
        super().__init__(reason)
        self.code, self.reason = code, reason


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


@dataclass(slots=True)
class SyncReq:
    gate: str
    req: int
    rid: int | None
    user: str
    conv: str
    after: int
    limit: int
