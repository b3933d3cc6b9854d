"""HMAC-signed login tokens: ``<user>.<expires_ms>.<hex sha256 mac>``. Pure functions.

The secret comes from ``cluster.secret``; verification compares in constant time and a
token is never logged.
"""
from __future__ import annotations

import hashlib
import hmac
import time


def _mac(secret: str, user: str, expires: int) -> str:
    msg = f"{user}.{expires}".encode()
    return hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()


def mint(secret: str, user: str, ttl: int, now: float | None = None) -> tuple[str, int]:
    """A token for ``user`` valid ``ttl`` seconds; returns (token, expires_ms)."""
    now = time.time() if now is None else now
    expires = int((now + ttl) * 1000)
    return f"{user}.{expires}.{_mac(secret, user, expires)}", expires


def verify(secret: str, token: str, user: str, now: float | None = None) -> str | None:
    """None when the token is good for ``user``, else the reason it is not."""
    parts = token.rsplit(".", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return "malformed token"
    name, expires_s, mac = parts
    expires = int(expires_s)
    if not hmac.compare_digest(mac.encode(), _mac(secret, name, expires).encode()):
        return "bad token signature"
    if not hmac.compare_digest(name.encode(), user.encode()):
        return "token is for another user"
    now = time.time() if now is None else now
    if expires <= now * 1000:
        return "token expired"
    return None
