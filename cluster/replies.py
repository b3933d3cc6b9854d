"""Server replies, built in one place: ``ok``, ``error`` and the ``Refused`` a check raises.

Roles answer a request number with a body and never see the client's ``rid``: the gate
keeps it per request and adds it to the encoded body it sends (``with_rid``), so a reply
costs no decode and re-encode on its way out.
"""
from __future__ import annotations

import struct

from cluster.codec import packb

OK = packb({"t": "ok"})
_RID = packb("rid")


class Refused(Exception):
    """A request the server will not carry out: answered as ``error{code, reason, ...}``,
    the connection stays. ``extra`` holds fields such as ``retry_ms`` or ``until``."""

    def __init__(self, code: str, reason: str, **extra):
        super().__init__(reason)
        self.code, self.reason, self.extra = code, reason, extra

    def body(self) -> bytes:
        return error(self.code, self.reason, **self.extra)


def error(code: str, reason: str, **extra) -> bytes:
    return packb({"t": "error", "code": code, "reason": reason, **extra})


_ERROR_HEAD = packb("t") + packb("error") + packb("code")


def error_code(body: bytes) -> str | None:
    """The code of an encoded ``error`` body (as ``error`` builds them), else None: a
    prefix compare, so a gate can count the errors it sends without decoding replies."""
    if body[1:1 + len(_ERROR_HEAD)] != _ERROR_HEAD:
        return None
    at = 1 + len(_ERROR_HEAD)
    head = body[at] if len(body) > at else 0
    if 0xa0 <= head <= 0xbf:
        return body[at + 1:at + 1 + (head & 0x1f)].decode("utf-8", "replace")
    return "other"


def unavailable(reason: str, retry_ms: int = 1000) -> bytes:
    """Nothing was done; the client may retry after ``retry_ms``."""
    return error("unavailable", reason, retry_ms=retry_ms)


def with_rid(body: bytes, rid) -> bytes:
    """``body`` (an encoded map) with ``rid`` added as its last key; unchanged for None."""
    if rid is None:
        return body
    head = body[0]
    if 0x80 <= head <= 0x8e:
        return bytes((head + 1,)) + body[1:] + _RID + packb(rid)
    if head == 0x8f:
        return b"\xde\x00\x10" + body[1:] + _RID + packb(rid)
    if head == 0xde:
        (n,) = struct.unpack_from(">H", body, 1)
        if n < 0xFFFF:
            return b"\xde" + struct.pack(">H", n + 1) + body[3:] + _RID + packb(rid)
        return b"\xdf" + struct.pack(">I", n + 1) + body[3:] + _RID + packb(rid)
    if head == 0xdf:
        (n,) = struct.unpack_from(">I", body, 1)
        return b"\xdf" + struct.pack(">I", n + 1) + body[5:] + _RID + packb(rid)
    raise ValueError("a reply body must be an encoded map")
