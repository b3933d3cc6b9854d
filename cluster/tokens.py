"""HMAC-signed login tokens: ``<user>.<epoch>.<expires_ms>.<hex sha256 mac>``. Pure functions.

The key is ``cluster.secrets.token_key(secret)`` (``key_of(cfg)``), never the cluster
secret itself: the secret is the admin API's bearer, so a key that is not the secret
makes a token useless as an admin credential, and a token signed with the raw secret (or
any other key) fails its signature. ``mint`` and ``verify`` take the key as bytes and
refuse a ``str``, so passing the secret by mistake is an error, not a weak token.

``epoch`` is the user's ``ep`` field in Redis (``u:<name>``, 0 when absent). A ban, an
unban and ``zonechat admin revoke`` bump it, so every token minted before is refused as
revoked. Tokens of the earlier 3-part format (``<user>.<expires_ms>.<mac>``) are refused
as malformed or by their signature: after the upgrade every client logs in with its
password (or a fresh admin-minted token) once.

Verification compares in constant time; a token is never logged.
"""
from __future__ import annotations

import hashlib
import hmac
import time

from cluster import secrets


def key_of(cfg) -> bytes:
    """The token-signing key of a cluster config."""
    return secrets.token_key(secrets.cluster_secret(cfg))


def epoch_of(record: dict) -> int:
    """A user's token epoch from its ``u:<name>`` record (0 for accounts made before it)."""
    try:
        return int(record.get("ep", 0))
    except (TypeError, ValueError):
        return -1           # no token's epoch: every token refused as revoked


def _need_key(key: bytes) -> bytes:
    if not isinstance(key, bytes):
        raise TypeError("tokens are signed with secrets.token_key(secret), not the secret itself")
    return key


def _mac(key: bytes, user: str, epoch: int, expires: int) -> str:
    msg = f"{user}.{epoch}.{expires}".encode()
    return hmac.new(_need_key(key), msg, hashlib.sha256).hexdigest()


def mint(key: bytes, user: str, epoch: int, ttl: int, now: float | None = None) -> tuple[str, int]:
    """A token for ``user`` at ``epoch`` valid ``ttl`` seconds; returns (token, expires_ms)."""
    now = time.time() if now is None else now
    expires = int((now + ttl) * 1000)
    epoch = int(epoch)
    return f"{user}.{epoch}.{expires}.{_mac(key, user, epoch, expires)}", expires


def verify(key: bytes, token: str, user: str, epoch: int, now: float | None = None) -> str | None:
    """None when the token is good for ``user`` at its current ``epoch``, else the reason."""
    _need_key(key)
    parts = token.rsplit(".", 3) if token.isascii() else ()
    if len(parts) != 4 or not all(_is_number(p) for p in parts[1:3]):
        return "malformed token"
    name, epoch_s, expires_s, mac = parts
    token_epoch, expires = int(epoch_s), int(expires_s)
    if not hmac.compare_digest(mac.encode(), _mac(key, name, token_epoch, expires).encode()):
        return "bad token signature"
    if not hmac.compare_digest(name.encode(), user.encode()):
        return "token is for another user"
    if token_epoch != int(epoch):
        return "token revoked"
    now = time.time() if now is None else now
    if expires <= now * 1000:
        return "token expired"
    return None


def _is_number(text: str) -> bool:
    """ASCII digits only, at most 19 (``str.isdigit`` also takes other scripts' digits)."""
    return 0 < len(text) <= 19 and text.isascii() and text.isdigit()
