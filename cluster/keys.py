"""The nodes' CURVE key pairs: ``<data_dir>/keys/<node>.key_secret`` and ``keys/public.yaml``.

``zonechat keys init`` (and a one-host ``zonechat up`` on first start) makes one key pair
per node of the config with pyzmq's ``zmq.auth.create_certificates`` — its certificate
file format, secret files mode 0600 in a 0700 directory — and writes every node's public
key into ``public.yaml`` ({nodes: {name: z85 public key}}). A multi-host deployment runs
``keys init`` once and copies ``public.yaml`` to every host, and each host the secret files
of its own nodes (``missing`` says what a host lacks; ``up --host`` refuses without it).

A node loads its own secret key and the public keys of every peer (``load``); the bus
trusts exactly those keys (cluster/zap.py).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import yaml
import zmq.auth

PUBLIC_FILE = "public.yaml"


class KeyFileError(Exception):
    """A key file is missing or unreadable: the message says which and what to run."""


@dataclass(frozen=True)
class NodeKeys:
    name: str
    public: bytes                 # z85
    secret: bytes                 # z85
    peers: dict                   # node name -> z85 public key (every node, self included)

    def peer(self, name: str) -> bytes:
        try:
            return self.peers[name]
        except KeyError:
            raise KeyFileError(f"no public key for node {name!r} in {PUBLIC_FILE}: "
                               "run `zonechat keys init` again and copy public.yaml to every host") from None


def keys_dir(cfg) -> str:
    return os.path.join(cfg.data_dir, "keys")


def secret_file(cfg, node: str) -> str:
    return os.path.join(keys_dir(cfg), f"{node}.key_secret")


def public_file(cfg) -> str:
    return os.path.join(keys_dir(cfg), PUBLIC_FILE)


def read_public(cfg) -> dict:
    """{node name: z85 public key} from public.yaml ({} when it does not exist)."""
    try:
        with open(public_file(cfg), encoding="utf-8") as fh:
            raw = yaml.safe_load(fh) or {}
    except FileNotFoundError:
        return {}
    except (OSError, yaml.YAMLError) as exc:
        raise KeyFileError(f"cannot read {public_file(cfg)}: {exc}") from None
    nodes = raw.get("nodes") if isinstance(raw, dict) else None
    if not isinstance(nodes, dict):
        raise KeyFileError(f"{public_file(cfg)}: expected a mapping 'nodes: {{name: key}}'")
    return {str(name): str(key).encode() for name, key in nodes.items()}


def _make_pair(directory: str, node: str) -> bytes:
    """A new key pair for ``node``: the secret file stays, its public half is returned."""
    old = os.umask(0o077)
    try:
        public_path, secret_path = zmq.auth.create_certificates(directory, node)
    finally:
        os.umask(old)
    os.chmod(secret_path, 0o600)
    os.unlink(public_path)                 # public.yaml is the one list of public keys
    public, _secret = zmq.auth.load_certificate(secret_path)
    return public


def init(cfg) -> list[str]:
    """Make the key pairs this config lacks and rewrite public.yaml; the nodes made."""
    directory = keys_dir(cfg)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    public = read_public(cfg)
    made = []
    for node in cfg.nodes:
        if os.path.exists(secret_file(cfg, node)) and node in public:
            continue
        public[node] = _make_pair(directory, node)
        made.append(node)
    if made or set(public) - set(cfg.nodes):
        _write_public(cfg, {n: public[n] for n in cfg.nodes})
    return made


def _write_public(cfg, public: dict) -> None:
    doc = {"nodes": {name: key.decode() for name, key in public.items()}}
    text = ("# zonechat nodes' CURVE public keys (zonechat keys init). Not secret: copy this\n"
            "# file to every host of the cluster.\n" + yaml.safe_dump(doc, sort_keys=True))
    path = public_file(cfg)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def missing(cfg, nodes) -> list[str]:
    """What a host that runs ``nodes`` lacks to start them (file paths), [] when all there."""
    public = read_public(cfg)
    lacking = []
    if not os.path.exists(public_file(cfg)):
        lacking.append(public_file(cfg))
    else:
        lacking += [f"{public_file(cfg)}: node {n}" for n in cfg.nodes if n not in public]
    lacking += [secret_file(cfg, n) for n in nodes if not os.path.exists(secret_file(cfg, n))]
    return lacking


def load(cfg, node: str) -> NodeKeys:
    """``node``'s key pair and every node's public key."""
    path = secret_file(cfg, node)
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"cannot load the key of node {node} from {path} ({exc}): "
                           "run `zonechat keys init`") from None
    if secret is None:
        raise KeyFileError(f"{path} holds no secret key: run `zonechat keys init`")
    return NodeKeys(node, public, secret, read_public(cfg))
