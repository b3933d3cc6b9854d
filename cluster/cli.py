"""The ``zonechat`` command: up, down, status here; admin, log, chat and loadtest attached.

The attached commands live with what they drive and are imported only when used (the CLI
loads without them, and without Locust): ``zonechat admin`` (cluster.admin), ``zonechat
log tail`` (log.cli), ``zonechat chat`` (client.terminal) and ``zonechat loadtest``
(tools.load.command), ``zonechat backup`` / ``restore`` (cluster.backup). Every command takes ``-c/--config`` (default ./config.yaml, or
$ZONECHAT_CONFIG).
``zonechat --version`` prints ``zonechat <version>`` (package metadata; pyproject.toml
when the package is not installed). ``up`` prints, after ``cluster ready``, the addresses
a person opens (``cluster.supervisor.address_lines``).
``status`` exits 0 when every process runs, 3 when the cluster runs degraded (a node
restarting, flapping or dead), 1 when no supervisor runs.
"""
from __future__ import annotations

import cluster  # noqa: F401  (gevent patches the standard library first)

import importlib
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from importlib import metadata

import click

from cluster import config as config_mod
from cluster import keys, output, provision, runstate, secrets
from cluster.child import PROJECT_ROOT, child_env, open_log
from cluster.redis_server import RedisServerError
from cluster.supervisor import START_ORDER, Supervisor, SupervisorError, address_lines, build_tiers

POLL = 0.1            # seconds between two looks at the state file or a pid
KILL_WAIT = 5.0       # seconds for SIGKILLed processes to disappear

config_option = click.option(
    "-c", "--config", "config_path", default="config.yaml", envvar="ZONECHAT_CONFIG",
    show_default=True, type=click.Path(dir_okay=False), help="cluster config file")
host_option = click.option("--host", default=None, help="only this host's share of a multi-host config")


def load_config(path: str):
    try:
        return config_mod.load(path)
    except config_mod.ConfigError as exc:
        raise click.ClickException(f"config error: {exc}") from None


LAZY_COMMANDS = {                           # imported on use: the CLI loads without them
    "admin": "cluster.admin:admin",
    "backup": "cluster.backup:backup_command",
    "chat": "client.terminal:chat",
    "drain": "cluster.rolling:drain",
    "loadtest": "tools.load.command:loadtest",
    "metrics": "cluster.metrics_cli:metrics",
    "migrate": "dc.cli:migrate_command",
    "log": "log.cli:log",
    "restart": "cluster.rolling:restart",
    "restore": "cluster.backup:restore_command",
}


class ZonechatGroup(click.Group):
    def list_commands(self, ctx) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(LAZY_COMMANDS))

    def get_command(self, ctx, name: str):
        if name in LAZY_COMMANDS and name not in self.commands:
            module, attr = LAZY_COMMANDS[name].split(":")
            try:
                return getattr(importlib.import_module(module), attr)
            except ModuleNotFoundError as exc:      # a package not installed: no such command
                if exc.name and (module + ".").startswith(exc.name + "."):
                    return None
                raise
        return super().get_command(ctx, name)


def package_version(dist: str = "zonechat") -> str:
    """The installed version from the package metadata; pyproject.toml's only without it."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return pyproject_version(os.path.join(PROJECT_ROOT, "pyproject.toml"))


def pyproject_version(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            return str(tomllib.load(fh)["project"]["version"])
    except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError):
        return "unknown"


def _print_version(ctx, _param, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(f"zonechat {package_version()}")
        ctx.exit()


@click.group(cls=ZonechatGroup)
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="print zonechat's version and exit")
def main() -> None:
    """zonechat: a sharded, game-server-style chat cluster."""


# -- up ---------------------------------------------------------------------------------
@main.command()
@config_option
@host_option
@click.option("--detach", is_flag=True, help="run the supervisor in the background; return once ready")
def up(config_path: str, host: str | None, detach: bool) -> None:
    """Start the cluster (foreground: Ctrl-C stops everything). One host: the secret, the
    nodes' keys and Redis's password are generated on first start; with --host they must
    have been copied here (zonechat keys init)."""
    cfg = load_config(config_path)
    try:
        if detach:
            provision.prepare(cfg, host, out=click.echo)
            build_tiers(cfg, host)          # a config that cannot run fails here, not in the background
            _up_detached(cfg, host)
            return
        code = _up_foreground(cfg, host)
    except (SupervisorError, RedisServerError, runstate.AlreadyRunning, provision.ProvisionError,
            secrets.SecretError, keys.KeyFileError) as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(code)


def _up_foreground(cfg, host: str | None) -> int:
    """Run the supervisor here. Its lines (and provisioning's) go to supervisor.log with a
    timestamp and to stdout best-effort (cluster.output): a closed stdout (``make up | tee``
    and Ctrl-C) must not stop the ordered stop."""
    output.ignore_sigpipe()
    with output.SupervisorOutput(output.log_path(cfg.data_dir, host), output.stdout_fd()) as out:
        provision.prepare(cfg, host, out=out)
        return Supervisor(cfg, host, out=out).run()


# -- keys -------------------------------------------------------------------------------
@main.group("keys")
def keys_group() -> None:
    """The nodes' CURVE keys, the cluster secret and Redis's password (docs/security.md)."""


@keys_group.command("init")
@config_option
def keys_init(config_path: str) -> None:
    """Generate what is missing under <data_dir> (never overwrites): a key pair per node,
    keys/public.yaml, the secret file and keys/redis.pass. Copy them to the other hosts."""
    cfg = load_config(config_path)
    try:
        made = provision.make_all(cfg)
    except (OSError, keys.KeyFileError) as exc:
        raise click.ClickException(str(exc)) from None
    for item in made:
        click.echo(f"generated {item}")
    click.echo(f"keys in {keys.keys_dir(cfg)}" + ("" if made else " (nothing was missing)"))


def _up_detached(cfg, host: str | None) -> None:
    path = runstate.state_path(cfg.data_dir, host)
    doc = runstate.read(path)
    if doc and runstate.alive(doc.get("pid"), doc.get("create_time")):
        raise click.ClickException(f"already running (supervisor pid {doc['pid']})")
    log_path = output.log_path(cfg.data_dir, host)      # the supervisor writes it (cluster.output)
    out_path = log_path[:-len(".log")] + ".out"          # its console: plain lines, tracebacks
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    argv = [sys.executable, "-m", "cluster.cli", "up", "-c", cfg.path] + (["--host", host] if host else [])
    with open_log(out_path) as console:
        offset = console.tell()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=PROJECT_ROOT, env=child_env())
    timeout = cfg.supervisor.ready_timeout * (len(START_ORDER) + 1) + 30
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = runstate.read(path)
        if doc and doc.get("pid") == proc.pid and doc.get("state") == "ready":
            click.echo(f"cluster ready (supervisor pid {proc.pid}, log {log_path})")
            for line in address_lines(cfg, host):
                click.echo(line)
            return
        if proc.poll() is not None:
            click.echo(_read_from(out_path, offset), err=True, nl=False)
            raise click.ClickException(f"the supervisor exited with code {proc.returncode}; see {log_path}")
        time.sleep(POLL)
    proc.send_signal(signal.SIGTERM)
    raise click.ClickException(f"cluster not ready after {timeout:g}s; stopping it; see {log_path}")


def _read_from(path: str, offset: int, limit: int = 8192) -> str:
    with open(path, "rb") as fh:
        fh.seek(max(offset, os.path.getsize(path) - limit))
        return fh.read().decode("utf-8", "replace")


# -- down -------------------------------------------------------------------------------
@main.command()
@config_option
@host_option
def down(config_path: str, host: str | None) -> None:
    """Stop the cluster: wait for every process to end, SIGKILL what hangs."""
    cfg = load_config(config_path)
    path = runstate.state_path(cfg.data_dir, host)
    doc = runstate.read(path)
    if doc is None:
        click.echo("cluster not running")
        return
    left = _stop(path, doc, cfg.supervisor.graceful_timeout)
    for name, pid in left:
        click.echo(f"{name} (pid {pid}) still running after SIGKILL", err=True)
    runstate.remove(path)
    if left:
        sys.exit(1)
    click.echo("cluster stopped")


def _stop(path: str, doc: dict, graceful: float) -> list[tuple[str, int]]:
    """SIGTERM the supervisor (or, if it is gone, its nodes), wait, SIGKILL leftovers."""
    seen = {pid: (name, ct) for name, pid, ct in runstate.processes(doc)}
    sup = (doc.get("pid"), doc.get("create_time"))
    if runstate.alive(*sup):
        _kill([sup[0]], signal.SIGTERM)
        timeout = graceful * (len(START_ORDER) + 1) + 10
    else:
        _kill([pid for pid in _living(seen)], signal.SIGTERM)
        timeout = graceful + 5
    deadline = time.monotonic() + timeout
    while _living(seen) and time.monotonic() < deadline:
        newer = runstate.read(path)
        if newer and newer.get("pid") == sup[0]:   # a node restarted meanwhile: watch it too
            seen.update({pid: (name, ct) for name, pid, ct in runstate.processes(newer)})
        time.sleep(POLL)
    stuck = _living(seen)
    for pid in stuck:
        click.echo(f"{seen[pid][0]} (pid {pid}) did not stop: SIGKILL")
    _kill(stuck, signal.SIGKILL)
    deadline = time.monotonic() + KILL_WAIT
    while _living(seen) and time.monotonic() < deadline:
        time.sleep(POLL)
    return [(seen[pid][0], pid) for pid in _living(seen)]


def _living(seen: dict) -> list[int]:
    return [pid for pid, (_, ct) in seen.items() if runstate.alive(pid, ct)]


def _kill(pids, sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


# -- status -----------------------------------------------------------------------------
@main.command()
@config_option
@host_option
@click.option("--json", "as_json", is_flag=True, help="print the state file, with live pids checked")
def status(config_path: str, host: str | None, as_json: bool) -> None:
    """Show every process: role, node, pid, state, uptime, restarts."""
    cfg = load_config(config_path)
    path = runstate.state_path(cfg.data_dir, host)
    doc = runstate.read(path)
    if doc is None or not runstate.alive(doc.get("pid"), doc.get("create_time")):
        click.echo("cluster not running" + (f" (stale state file {path})" if doc else ""))
        sys.exit(1)
    for node in doc["nodes"].values():
        if node["state"] == "running" and not runstate.alive(node["pid"], node["create_time"]):
            node["state"] = "dead"
    if as_json:
        click.echo(json.dumps(doc, indent=1))
    else:
        _print_table(cfg, doc)
    healthy = doc["state"] == "ready" and all(n["state"] == "running" for n in doc["nodes"].values())
    sys.exit(0 if healthy else 3)


def _print_table(cfg, doc: dict) -> None:
    now = time.time()
    click.echo(f"cluster {cfg.cluster.name} {doc['state']}: supervisor pid {doc['pid']}, "
               f"up {_age(now - doc['started_at'])}, config {doc['config']}")
    rows = [("ROLE", "NODE", "PID", "STATE", "UPTIME", "RESTARTS")]
    for name, node in doc["nodes"].items():
        up_for = _age(now - node["started_at"]) if node["state"] == "running" else "-"
        rows.append((node["role"], name, str(node["pid"] or "-"), node["state"], up_for, str(node["restarts"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def _age(seconds: float) -> str:
    s = int(max(0, seconds))
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


if __name__ == "__main__":
    main()
