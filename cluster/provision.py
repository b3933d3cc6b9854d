"""What a host needs before its nodes start: the cluster secret, the nodes' keys, Redis's password.

``make_all`` (``zonechat keys init``, and a one-host ``zonechat up`` on its first start)
generates what is missing — never overwrites — : the CURVE key pairs and ``public.yaml``
(cluster/keys.py), the secret file and the managed Redis's password (cluster/secrets.py).

``prepare(cfg, host)`` runs before the supervisor. Without ``host`` (one machine) it makes
what is missing. With ``--host`` it makes nothing: every host of a cluster must share one
secret, one ``public.yaml`` and one Redis password, so they come from the one host that ran
``keys init`` and were copied; a host that lacks any of them is refused, naming each file.
"""
from __future__ import annotations

from cluster import keys, redis_server, secrets


class ProvisionError(Exception):
    """This host lacks a file it needs; the message lists them and what to do."""


def make_all(cfg) -> list[str]:
    """Generate every missing secret and key of ``cfg``; what was made, for the operator."""
    made = [f"key pair of node {n}" for n in keys.init(cfg)]
    if secrets.ensure_secret(cfg):
        made.append(f"cluster secret in {secrets.secret_path(cfg)}")
    if cfg.redis.managed and secrets.ensure_redis_password(cfg):
        made.append(f"Redis password in {secrets.redis_pass_path(cfg)}")
    return made


def prepare(cfg, host: str | None, out=print) -> None:
    """Make (one host) or check (``host``) what this host's nodes need; ProvisionError."""
    if host is None:
        for item in make_all(cfg):
            out(f"generated {item}")
    else:
        _check_host(cfg, host)
    secrets.cluster_secret(cfg)            # a shipped or short $ZONECHAT_SECRET stops up here
    password = secrets.redis_password(cfg, required=False)
    if cfg.redis.managed and password and (host is None or cfg.redis.host == host):
        redis_server.write_auth_conf(cfg, password)


def _check_host(cfg, host: str) -> None:
    nodes = [n.name for n in cfg.nodes.values() if n.host == host]
    lacking = keys.missing(cfg, nodes)
    if cfg.redis.managed and secrets.redis_password(cfg, required=False) is None:
        lacking.append(secrets.redis_pass_path(cfg))
    try:
        secrets.cluster_secret(cfg)
    except secrets.SecretError as exc:
        lacking.append(str(exc))
    if lacking:
        raise ProvisionError(
            f"host {host} cannot start: missing " + "; ".join(lacking)
            + ". Run `zonechat keys init` once (on one host) and copy keys/public.yaml, "
              "keys/redis.pass, the secret file and each host's keys/<node>.key_secret to "
              "every host's data_dir (mode 0600), or set $ZONECHAT_SECRET.")
