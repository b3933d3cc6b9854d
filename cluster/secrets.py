"""Where the cluster secret and the Redis password come from, and the keys derived from them.

``cluster_secret(cfg)`` is the one lookup every zonechat command, tool and test uses:
``$ZONECHAT_SECRET``, else ``cluster.secret`` of the config, else the file
``cluster.secret_file`` (default ``<data_dir>/secret``), which the first ``zonechat up``
generates (``ensure_secret``, mode 0600). Nothing is shipped: a configured secret shorter
than ``MIN_SECRET`` characters, or equal to a string an earlier release shipped, is
refused naming where it came from.

The admin API's bearer is the secret itself; login tokens are signed with
``token_key(secret)``, a key derived from it, so a token is never an admin credential.

The managed Redis gets a generated password in ``<data_dir>/keys/redis.pass`` (0600);
``redis_url(cfg)`` is the URL every client of ours connects with (an external Redis's
``redis.url`` carries its own credentials).
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets as _random
from urllib.parse import quote

TOKEN_KEY_LABEL = b"zonechat-token-v2"
MIN_SECRET = 32
SHIPPED = frozenset({"zonechat-dev-secret-change-me", "bench-secret-0123456789"})
ENV = "ZONECHAT_SECRET"


class SecretError(Exception):
    """No usable secret: the message names the setting or file to fix."""


def check(value: str, where: str) -> str:
    """``value`` if it may sign anything, else SecretError naming ``where`` it came from."""
    if value in SHIPPED:
        raise SecretError(f"{where}: this secret was shipped with zonechat and is public; "
                          "remove it (zonechat up generates one) or set your own")
    if len(value) < MIN_SECRET:
        raise SecretError(f"{where}: must be at least {MIN_SECRET} characters")
    return value


def secret_path(cfg) -> str:
    """The file the secret lives in when neither $ZONECHAT_SECRET nor cluster.secret is set."""
    configured = cfg.cluster.secret_file
    if not configured:
        return os.path.join(cfg.data_dir, "secret")
    if os.path.isabs(configured):
        return configured
    base = os.path.dirname(os.path.abspath(cfg.path)) if cfg.path else os.getcwd()
    return os.path.join(base, configured)


def cluster_secret(cfg, environ=None) -> str:
    """The cluster secret of ``cfg``: $ZONECHAT_SECRET, cluster.secret, or its file."""
    environ = os.environ if environ is None else environ
    if environ.get(ENV):
        return check(environ[ENV], f"${ENV}")
    if cfg.cluster.secret:
        return check(cfg.cluster.secret, "cluster.secret")
    path = secret_path(cfg)
    try:
        with open(path, encoding="utf-8") as fh:
            value = fh.read().strip()
    except FileNotFoundError:
        raise SecretError(f"cluster.secret_file: {path} does not exist; `zonechat up` "
                          "generates it, or set $ZONECHAT_SECRET") from None
    except OSError as exc:
        raise SecretError(f"cluster.secret_file: cannot read {path}: {exc.strerror}") from None
    return check(value, f"cluster.secret_file ({path})")


def write_private(path: str, text: str) -> bool:
    """Create ``path`` with ``text``, mode 0600, only if it does not exist; True if made."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text + "\n")
    return True


def ensure_secret(cfg) -> bool:
    """Generate the secret file when no secret is configured and none exists; True if made."""
    if os.environ.get(ENV) or cfg.cluster.secret:
        return False
    return write_private(secret_path(cfg), _random.token_urlsafe(48))


def token_key(secret: str) -> bytes:
    """The key login tokens are signed with: HMAC(secret, "zonechat-token-v2")."""
    return hmac.new(secret.encode(), TOKEN_KEY_LABEL, hashlib.sha256).digest()


# -- Redis ------------------------------------------------------------------------------
def redis_pass_path(cfg) -> str:
    return os.path.join(cfg.data_dir, "keys", "redis.pass")


def ensure_redis_password(cfg) -> bool:
    """Generate the managed Redis's password file if it is missing; True if made."""
    return write_private(redis_pass_path(cfg), _random.token_hex(32))


def redis_password(cfg, required: bool = True) -> str | None:
    """The managed Redis's password; None for an external Redis (its URL has its own).
    ``required``: a managed Redis without its password file is SecretError."""
    if not cfg.redis.managed:
        return None
    try:
        with open(redis_pass_path(cfg), encoding="utf-8") as fh:
            return fh.read().strip()
    except FileNotFoundError:
        if not required:
            return None
        raise SecretError(f"{redis_pass_path(cfg)} does not exist: run `zonechat keys init` "
                          "(zonechat up does it on first start)") from None


def redis_url(cfg) -> str:
    """The URL our Redis clients use: an external ``redis.url`` as configured, the managed
    Redis with its generated password. On Redis Cluster without ``redis.url`` (which
    then carries only the credentials), the first seed node without any."""
    if cfg.redis.url and not cfg.redis.managed:
        return cfg.redis.url
    if cfg.redis.mode == "cluster":
        host, port = cfg.redis.seeds()[0]
        return f"redis://{host}:{port}/0"
    password = quote(redis_password(cfg), safe="")
    return f"redis://:{password}@{cfg.redis.host}:{cfg.redis.port}/0"
