"""One config file for every process: typed sections whose defaults are the documented ones.

Errors name the config path (``gate.max_frame: expected int, got 'x'``) so an operator
knows which line to fix.
"""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

ROLES = ("gate", "login", "center", "zone", "dc", "log")
MIN_USER_CACHE = 10000     # zone.user_cache: a tick's DM users (2 x 2000) and a 10,000 roster fit


class ConfigError(Exception):
    def __init__(self, msg: str, path: str = ""):
        self.path = path
        super().__init__(f"{path}: {msg}" if path else msg)


@dataclass(frozen=True)
class ClusterConf:
    """``secret``/``secret_file``: where the cluster secret is when $ZONECHAT_SECRET is not
    set (cluster/secrets.py); none is shipped, the first ``zonechat up`` generates the file."""
    name: str = "zonechat"
    secret: str | None = None
    secret_file: str | None = None        # default <data_dir>/secret
    data_dir: str = "data"
    zone_heartbeat: float = 1.0           # seconds between a zone's beats to center
    zone_timeout: float = 5.0             # a zone silent this long loses its slots to the others


@dataclass(frozen=True)
class RedisConf:
    managed: bool = True
    host: str = "127.0.0.1"
    port: int = 7379
    url: str | None = None
    appendfsync: str = "everysec"
    aof_rewrite_min_mb: int = 1024      # managed Redis: rewrite the AOF only past this size
    aof_rewrite_percentage: int = 100   # ... and once it grew this much since the last one
    mode: str = "single"                # single | cluster (Redis Cluster, managed: false)
    nodes: list = field(default_factory=list)   # cluster: seed nodes, "host:port"
    min_replicas_acked: int | None = None       # replicas a write must reach before its ack
    wait_timeout_ms: int = 1000                 # ... waited for this long (WAIT), else unavailable

    @property
    def replicas_acked(self) -> int:
        """min_replicas_acked, defaulting to 1 on Redis Cluster and 0 on a single Redis."""
        if self.min_replicas_acked is not None:
            return self.min_replicas_acked
        return 1 if self.mode == "cluster" else 0

    def seeds(self) -> list[tuple[str, int]]:
        """The cluster's seed nodes as (host, port)."""
        out = []
        for node in self.nodes:
            host, _, port = str(node).rpartition(":")
            out.append((host.strip("[]"), int(port)))
        return out


@dataclass(frozen=True)
class BusConf:
    hwm: int = 100000
    flush_window: float = 0.002
    tick_window: float = 0.005
    direct_dlv_gates: int = 8


@dataclass(frozen=True)
class GateConf:
    max_frame: int = 65536
    login_timeout: float = 10
    idle_timeout: float = 60
    outbox_bytes: int = 1048576
    send_rate: float = 20
    send_burst: int = 40
    max_inflight: int = 256
    max_connections: int = 18000
    request_timeout: float = 5
    failed_logins: int = 10
    ws_origins: list = field(default_factory=list)
    max_connections_per_ip: int = 1000   # TCP + WebSocket connections from one address
    register_per_connection: int = 3     # register requests per connection per limit_window
    register_per_ip: int = 20            # ... per client address per limit_window
    failed_logins_per_ip: int = 50       # auth_failed answers per address per limit_window
    limit_window: float = 60             # seconds: the window of the limits above
    max_rooms: int = 100                 # rooms joined at once, per session
    drain_over: float = 30               # zonechat drain: seconds its kicked{moving} are spread over


@dataclass(frozen=True)
class LoginConf:
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 65536
    argon2_parallelism: int = 1
    token_ttl: int = 86400
    failed_logins: int = 10
    failed_window: int = 60
    hash_threads: int = 2       # argon2 computations at once (login/hashing.py)
    hash_queue: int = 32        # logins/registers waiting for one; past it: unavailable


@dataclass(frozen=True)
class Retention:
    """The history Redis keeps of one kind of conversation: at most the ``count`` newest
    messages, and none older than ``age`` seconds; 0 is no bound. ``count`` None (unset):
    0 for DMs and groups, ``chat.room_history`` for rooms and ``sys`` (dc/retention.py)."""
    count: int | None = None
    age: float = 0


@dataclass(frozen=True)
class RetentionConf:
    dm: Retention = Retention(count=0)
    group: Retention = Retention(count=0)
    room: Retention = Retention()           # count: chat.room_history
    sys: Retention = Retention()


@dataclass(frozen=True)
class ChatConf:
    slots: int = 1024
    body_max: int = 4096
    cid_max: int = 64
    sync_default: int = 100
    sync_max: int = 500
    replay_max: int = 1000
    room_history: int = 1000         # rooms' and sys' count unless chat.retention sets one
    join_recent: int = 50
    dedup_ttl: int = 86400
    group_max_members: int = 500     # a group's members, its owner included
    edit_window: float = 900         # seconds after a message its sender may edit it
    recall_window: float = 120       # seconds after a message its sender may recall it
    receipts_max_members: int = 100  # DMs and groups up to this size get read pushes
    typing_max_members: int = 50     # rooms below this size pass typing on
    typing_interval: float = 2.0     # one typing per user and conversation per this many s
    presence_max: int = 200          # names in one presence_sub
    passive_window: float = 1.0      # a passive room session gets one digest per window
    passive_recent: int = 5          # messages a digest carries
    retention: RetentionConf = RetentionConf()


@dataclass(frozen=True)
class ZoneConf:
    """The zone's in-memory caches, each bounded, least recently used evicted first
    (``cluster.lru``). Each holds only what is in Redis (the zone writes through), so an
    evicted entry is reloaded on its next use: a bound costs round trips, never data."""
    user_cache: int = 200000     # user names known to exist (at least MIN_USER_CACHE)
    group_cache: int = 50000     # groups: owner and members, or "no such group"
    block_cache: int = 100000    # users' block lists
    dup_memory: int = 100000     # slow mode's (room, user) last sends; and, as many again,
                                 # duplicate suppression's (room, user, body) entries
    group_work: int = 500        # group work per tick: one per change plus one per name it
                                 # names; the rest waits (zone/groups.py GroupWork)
    group_queue: int = 1000      # group changes waiting for a tick; past it: unavailable


@dataclass(frozen=True)
class ModerationConf:
    word_filter: list = field(default_factory=list)
    filter_action: str = "mask"


@dataclass(frozen=True)
class LogConf:
    rotate_bytes: int = 64 * 1024 * 1024
    keep_files: int = 20
    queue_max: int = 100000


@dataclass(frozen=True)
class SupervisorConf:
    graceful_timeout: float = 10
    ready_timeout: float = 30
    restart_attempts: int = 5
    restart_window: float = 60
    retry_in: float = 30


@dataclass(frozen=True)
class MetricsConf:
    """The supervisor's HTTP port on each host: /metrics, /healthz, /readyz (cluster/metrics_http.py).
    ``host`` None: 127.0.0.1 for a one-host ``up``, the host's own address with ``up --host H``."""
    host: str | None = None
    port: int = 7791
    scrape_timeout: float = 2.0     # seconds a node gets to answer the supervisor's scrape


@dataclass(frozen=True)
class NodeSpec:
    name: str
    role: str
    host: str = "127.0.0.1"
    bus_port: int = 0
    tcp_port: int | None = None
    ws_port: int | None = None
    admin_port: int | None = None
    admin_host: str = "127.0.0.1"     # the admin endpoint stays on loopback unless set
    public_tcp: str | None = None     # a gate's address as clients reach it ("host:port"),
    public_ws: str | None = None      # e.g. behind a proxy: sent in kicked{moving}; else host:port

    @property
    def bus_addr(self) -> str:
        return f"tcp://{self.host}:{self.bus_port}"


SECTIONS = {
    "cluster": ClusterConf, "redis": RedisConf, "bus": BusConf, "gate": GateConf,
    "login": LoginConf, "chat": ChatConf, "log": LogConf, "supervisor": SupervisorConf,
    "moderation": ModerationConf, "zone": ZoneConf, "metrics": MetricsConf,
}


@dataclass(frozen=True)
class Config:
    cluster: ClusterConf
    redis: RedisConf
    bus: BusConf
    gate: GateConf
    login: LoginConf
    chat: ChatConf
    log: LogConf
    supervisor: SupervisorConf
    moderation: ModerationConf
    zone: ZoneConf
    metrics: MetricsConf
    nodes: dict
    path: str = ""

    @property
    def data_dir(self) -> str:
        base = os.path.dirname(os.path.abspath(self.path)) if self.path else os.getcwd()
        return os.path.join(base, self.cluster.data_dir)

    @property
    def redis_url(self) -> str:
        """Where Redis is, without credentials (our clients use cluster.secrets.redis_url)."""
        if self.redis.url and not self.redis.managed:
            return self.redis.url
        return f"redis://{self.redis.host}:{self.redis.port}/0"

    def nodes_of(self, role: str) -> list[NodeSpec]:
        return [n for n in self.nodes.values() if n.role == role]

    def node(self, name: str) -> NodeSpec:
        if name not in self.nodes:
            raise ConfigError(f"no node named {name!r} (known: {', '.join(self.nodes)})", "nodes")
        return self.nodes[name]


def _coerce(value: Any, typ: Any, path: str) -> Any:
    """Check ``value`` against a dataclass field annotation (given as a string)."""
    typ = str(typ)
    if value is None:
        if "None" in typ:
            return None
        raise ConfigError(f"must not be empty (expected {typ})", path)
    if typ.startswith("bool"):
        if isinstance(value, bool):
            return value
    elif typ.startswith("int"):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif typ.startswith("float"):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif typ.startswith("str"):
        if isinstance(value, str):
            return value
    elif typ.startswith("list"):
        if isinstance(value, list):
            return list(value)
    else:
        return value
    raise ConfigError(f"expected {typ.split(' ')[0]}, got {value!r}", path)


NESTED = {"RetentionConf": RetentionConf, "Retention": Retention}   # sections within a section


def _section(cls: type, raw: Any, path: str, extra: dict | None = None):
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"expected a mapping, got {type(raw).__name__}", path)
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = dict(extra or {})
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"unknown key (known: {', '.join(sorted(known))})", f"{path}.{key}")
        nested = NESTED.get(str(known[key].type))
        kwargs[key] = (_section(nested, value, f"{path}.{key}") if nested
                       else _coerce(value, known[key].type, f"{path}.{key}"))
    return cls(**kwargs)


def _nodes(raw: Any) -> dict:
    if not isinstance(raw, dict) or not raw:
        raise ConfigError("expected a mapping of node name -> {role, host, bus_port, ...}", "nodes")
    nodes = {}
    for name, spec in raw.items():
        path = f"nodes.{name}"
        node = _section(NodeSpec, spec, path, extra={"name": str(name)})
        if node.role not in ROLES:
            raise ConfigError(f"unknown role {node.role!r} (roles: {', '.join(ROLES)})", f"{path}.role")
        if node.role == "gate" and node.tcp_port is None:
            raise ConfigError("a gate needs tcp_port", path)
        nodes[str(name)] = node
    for role in ROLES:
        if not any(n.role == role for n in nodes.values()):
            raise ConfigError(f"no node has role {role!r}", "nodes")
    return nodes


def _validate_redis(rc: RedisConf) -> None:
    if rc.mode not in ("single", "cluster"):
        raise ConfigError("must be single or cluster", "redis.mode")
    if rc.mode == "single" and not rc.managed and not rc.url:
        raise ConfigError("with managed: false, set redis.url", "redis.url")
    if rc.mode == "cluster":
        if rc.managed:
            raise ConfigError("a Redis Cluster is run by you, not by zonechat up: set managed: false",
                              "redis.managed")
        if not rc.nodes:
            raise ConfigError("with mode: cluster, list seed nodes as host:port", "redis.nodes")
    for i, node in enumerate(rc.nodes):
        host, sep, port = str(node).rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"expected host:port, got {node!r}", f"redis.nodes[{i}]")
    if rc.min_replicas_acked is not None and rc.min_replicas_acked < 0:
        raise ConfigError("must be 0 (no wait) or more", "redis.min_replicas_acked")
    if rc.wait_timeout_ms < 1:
        raise ConfigError("must be at least 1", "redis.wait_timeout_ms")


def _validate(cfg: Config) -> None:
    if cfg.redis.appendfsync not in ("always", "everysec", "no"):
        raise ConfigError("must be always, everysec or no", "redis.appendfsync")
    if cfg.redis.aof_rewrite_min_mb < 1 or cfg.redis.aof_rewrite_percentage < 0:
        raise ConfigError("aof_rewrite_min_mb must be >= 1 and aof_rewrite_percentage >= 0",
                          "redis.aof_rewrite_min_mb")
    _validate_redis(cfg.redis)
    if not 0 < cfg.metrics.port < 65536:
        raise ConfigError("must be a port number (1-65535)", "metrics.port")
    if cfg.chat.slots < 1:
        raise ConfigError("must be at least 1", "chat.slots")
    if cfg.moderation.filter_action not in ("mask", "refuse"):
        raise ConfigError("must be mask or refuse", "moderation.filter_action")
    for i, pattern in enumerate(cfg.moderation.word_filter):
        try:
            re.compile(pattern)
        except (re.error, TypeError) as exc:
            raise ConfigError(f"not a valid regular expression: {exc}", f"moderation.word_filter[{i}]")
    if cfg.zone.user_cache < MIN_USER_CACHE:
        raise ConfigError(f"must be at least {MIN_USER_CACHE}", "zone.user_cache")
    for key in ("group_cache", "block_cache", "dup_memory"):
        if getattr(cfg.zone, key) < 1:
            raise ConfigError("must be at least 1", f"zone.{key}")
    for key in ("hash_threads", "hash_queue"):
        if getattr(cfg.login, key) < 1:
            raise ConfigError("must be at least 1", f"login.{key}")
    for section, key in (("gate", "max_connections_per_ip"), ("gate", "max_rooms"),
                         ("zone", "group_work"), ("zone", "group_queue")):
        if getattr(getattr(cfg, section), key) < 1:
            raise ConfigError("must be at least 1", f"{section}.{key}")
    for key in ("register_per_connection", "register_per_ip", "failed_logins_per_ip"):
        if getattr(cfg.gate, key) < 0:
            raise ConfigError("must be 0 (none allowed) or more", f"gate.{key}")
    if cfg.gate.limit_window <= 0:
        raise ConfigError("must be more than 0 seconds", "gate.limit_window")
    for kind in ("dm", "group", "room", "sys"):
        keep = getattr(cfg.chat.retention, kind)
        if (keep.count is not None and keep.count < 0) or keep.age < 0:
            raise ConfigError("count and age must be 0 (no bound) or more", f"chat.retention.{kind}")
    if not 0 < cfg.cluster.zone_heartbeat < cfg.cluster.zone_timeout:
        raise ConfigError("zone_heartbeat must be more than 0 and less than zone_timeout",
                          "cluster.zone_heartbeat")
    if cfg.log.keep_files < 0:
        raise ConfigError("must be 0 (keep every file: the complete archive) or more", "log.keep_files")
    if cfg.log.rotate_bytes < 1:
        raise ConfigError("must be at least 1", "log.rotate_bytes")
    if cfg.chat.room_history < 0:
        raise ConfigError("must be 0 (keep all) or more", "chat.room_history")
    if cfg.chat.group_max_members < 2:
        raise ConfigError("must be at least 2 (the owner and one member)", "chat.group_max_members")
    if cfg.cluster.secret is not None:
        from cluster import secrets          # config stays importable on its own
        try:
            secrets.check(cfg.cluster.secret, "cluster.secret")
        except secrets.SecretError as exc:
            raise ConfigError(str(exc).split(": ", 1)[1], "cluster.secret") from None


def from_dict(raw: dict, path: str = "") -> Config:
    if not isinstance(raw, dict):
        raise ConfigError("the config file must be a mapping")
    unknown = set(raw) - set(SECTIONS) - {"nodes"}
    if unknown:
        raise ConfigError(f"unknown section(s): {', '.join(sorted(unknown))}")
    sections = {name: _section(cls, raw.get(name), name) for name, cls in SECTIONS.items()}
    cfg = Config(nodes=_nodes(raw.get("nodes")), path=path, **sections)
    _validate(cfg)
    return cfg


def load(path: str) -> Config:
    try:
        with open(path, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config: {exc.strerror}", path) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", path) from exc
    return from_dict(raw or {}, os.path.abspath(path))
