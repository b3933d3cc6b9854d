"""Where the cluster secret comes from, and the keys derived from it. Pure lookups.

``cluster_secret(cfg)`` is the one lookup every zonechat command, tool and test uses.
The admin API's bearer is the secret itself; login tokens are signed with
``token_key(secret)``, a key derived from it, so a token is never an admin credential.
"""
from __future__ import annotations

import hashlib
import hmac

TOKEN_KEY_LABEL = b"zonechat-token-v2"


def cluster_secret(cfg) -> str:
    """The cluster secret of ``cfg``."""
    return cfg.cluster.secret


def token_key(secret: str) -> bytes:
    """The key login tokens are signed with: HMAC(secret, "zonechat-token-v2")."""
    return hmac.new(secret.encode(), TOKEN_KEY_LABEL, hashlib.sha256).digest()
