"""The wire: length-prefixed msgpack frames. No I/O here.

A client frame is a 4-byte big-endian length N (1 <= N <= max_frame) and N bytes holding
one msgpack map whose keys are all strings and which has a string ``t``. Anything else is
``bad_frame`` and the connection closes. Decode never trusts the peer.
"""
from __future__ import annotations

import json
import struct

import msgpack

MAX_FRAME = 65536
MAX_SERVER_FRAME = 1024 * 1024
_LEN = struct.Struct(">I")


class ProtocolError(Exception):
    """One error type for everything a peer can get wrong; ``code`` is the wire error code.

    ``frames`` holds the good frames that came before the error in the same read: they
    are requests like any other and are answered before the bad frame closes the stream.
    """

    def __init__(self, code: str, reason: str, frames: list | None = None):
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.frames = frames or []


# msgpack.packb builds a Packer per call (half its cost for a small envelope); one Packer
# keeps no state between calls (autoreset). Called from the gevent thread only: worker
# threads (argon2, log writes) never encode.
_PACK = msgpack.Packer(use_bin_type=True).pack


def packb(obj) -> bytes:
    return _PACK(obj)


def unpackb(data: bytes):
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def frame(body: bytes) -> bytes:
    """Prefix an encoded body with its length."""
    return _LEN.pack(len(body)) + body


def encode_frame(obj) -> bytes:
    return frame(packb(obj))


class FrameReader:
    """Splits a byte stream into frame bodies; raises ProtocolError('bad_frame') on a bad length."""

    __slots__ = ("max_frame", "_buf")

    def __init__(self, max_frame: int = MAX_FRAME):
        self.max_frame = max_frame
        self._buf = b""

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf + data if self._buf else data
        out = []
        pos, end = 0, len(buf)
        while end - pos >= 4:
            (n,) = _LEN.unpack_from(buf, pos)
            if n == 0 or n > self.max_frame:
                self._buf = b""
                raise ProtocolError("bad_frame", f"frame length {n} outside 1..{self.max_frame}", out)
            if end - pos - 4 < n:
                break
            out.append(buf[pos + 4:pos + 4 + n])
            pos += 4 + n
        self._buf = buf[pos:]
        return out

    @property
    def pending(self) -> int:
        return len(self._buf)


def check_body(obj, what: str = "frame") -> dict:
    """A decoded body must be a map with string keys and a string ``t``."""
    if not isinstance(obj, dict):
        raise ProtocolError("bad_frame", f"{what} is not a map")
    for key in obj:
        if not isinstance(key, str):
            raise ProtocolError("bad_frame", f"{what} has a non-string key")
    if not isinstance(obj.get("t"), str):
        raise ProtocolError("bad_frame", f"{what} has no string 't'")
    return obj


def decode_body(body: bytes) -> dict:
    """Decode one msgpack frame body strictly (exactly one map, nothing after it)."""
    try:
        obj = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except msgpack.ExtraData as exc:
        raise ProtocolError("bad_frame", "bytes left after the map") from exc
    except (ValueError, msgpack.UnpackException, TypeError) as exc:
        raise ProtocolError("bad_frame", f"not msgpack: {exc.__class__.__name__}") from exc
    return check_body(obj)


def decode_json(text: str) -> dict:
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise ProtocolError("bad_frame", "not JSON") from exc
    return check_body(obj)


def _map_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x80 | n,))
    if n < 0x10000:
        return b"\xde" + struct.pack(">H", n)
    return b"\xdf" + struct.pack(">I", n)


def array_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    if n < 0x10000:
        return b"\xdc" + struct.pack(">H", n)
    return b"\xdd" + struct.pack(">I", n)


def pack_map_with_raw(fields: dict, raw_key: str, raw_items: list[bytes]) -> bytes:
    """Pack ``fields`` plus ``raw_key: [item, ...]`` where each item is already msgpack.

    History and join replies embed stored messages without decoding them again.
    """
    parts = [_map_header(len(fields) + 1)]
    for key, value in fields.items():
        parts.append(packb(key))
        parts.append(packb(value))
    parts.append(packb(raw_key))
    parts.append(array_header(len(raw_items)))
    parts.extend(raw_items)
    return b"".join(parts)


_MSG_HEAD = _map_header(7) + b"".join(map(packb, ("t", "msg", "conv")))
_K_FROM, _K_TS, _K_CID, _K_BODY, _K_SEQ = map(packb, ("from", "ts", "cid", "body", "seq"))


def msg_prefix(conv: str, sender: str, ts: int, cid: str, body_raw: bytes) -> bytes:
    """A ``msg`` map without the value of its last key, ``seq``.

    The store appends the seq it assigns, so the stored record, the live push and the
    history entry are the same bytes, encoded once. The keys are encoded once, here.
    """
    return b"".join((
        _MSG_HEAD, packb(conv), _K_FROM, packb(sender), _K_TS, packb(ts),
        _K_CID, packb(cid), _K_BODY, body_raw, _K_SEQ,
    ))


_EVENT_HEAD = _map_header(9) + b"".join(map(packb, ("t", "msg", "conv")))
_K_KIND, _K_REF = map(packb, ("kind", "ref"))


def event_prefix(conv: str, sender: str, ts: int, cid: str, body_raw: bytes, kind: str, ref: int) -> bytes:
    """``msg_prefix`` of an edit or recall of message ``ref``: two keys more, ``kind`` and
    ``ref``, before ``seq``."""
    return b"".join((
        _EVENT_HEAD, packb(conv), _K_FROM, packb(sender), _K_TS, packb(ts),
        _K_CID, packb(cid), _K_BODY, body_raw, _K_KIND, packb(kind), _K_REF, packb(ref), _K_SEQ,
    ))


def msg_record(prefix: bytes, seq: int) -> bytes:
    return prefix + packb(seq)


def to_json_text(body: bytes) -> str:
    """Re-encode a msgpack body for a WebSocket client that speaks JSON."""
    return json.dumps(unpackb(body), separators=(",", ":"), default=_json_default)


def _json_default(obj):
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")
    raise TypeError(f"cannot encode {type(obj).__name__} as JSON")
