"""``zonechat admin ...``: a thin client of center's admin endpoint (HTTP + JSON).

The endpoint address comes from the config (the center node's host and admin_port) and
every request carries ``Authorization: Bearer <cluster.secret>``.
"""
from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

import click

from cluster import config as config_mod

DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class AdminFailed(click.ClickException):
    pass


def parse_duration(text: str) -> float:
    """'90', '90s', '10m', '2h', '1d' -> seconds."""
    match = DURATION.match(text.strip())
    if not match:
        raise click.BadParameter(f"{text!r} is not a duration like 30s, 10m, 2h")
    return float(match.group(1)) * UNITS[match.group(2)]


def call(cfg, path: str, payload: dict | None = None, timeout: float = 10.0) -> dict:
    center = cfg.nodes_of("center")[0]
    if not center.admin_port:
        raise AdminFailed("the center node has no admin_port in the config")
    host = "127.0.0.1" if center.admin_host in ("0.0.0.0", "") else center.admin_host
    url = f"http://{host}:{center.admin_port}{path}"
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, headers={
        "Authorization": f"Bearer {cfg.cluster.secret}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read() or b"{}")
        raise AdminFailed(f"{body.get('error', exc.code)}: {body.get('reason', '')}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise AdminFailed(f"cannot reach the admin endpoint at {url}: {exc}") from None


def _show(result: dict) -> None:
    click.echo(json.dumps(result, indent=2, sort_keys=True))


@click.group("admin")
@click.option("-c", "--config", "config_path", envvar="ZONECHAT_CONFIG", default="config.yaml",
              show_default=True, help="cluster config")
@click.pass_context
def admin(ctx, config_path):
    """Operate a running cluster: broadcasts, moderation, tokens."""
    try:
        ctx.obj = config_mod.load(config_path)
    except config_mod.ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@admin.command()
@click.argument("text")
@click.pass_obj
def broadcast(cfg, text):
    """Send TEXT to every online session (conversation sys)."""
    _show(call(cfg, "/v1/broadcast", {"text": text}))


@admin.command()
@click.argument("conv")
@click.argument("text")
@click.pass_obj
def post(cfg, conv, text):
    """Post TEXT to any conversation as `system`."""
    _show(call(cfg, "/v1/post", {"conv": conv, "body": text}))


@admin.command()
@click.argument("user")
@click.pass_obj
def kick(cfg, user):
    """Disconnect USER's session (kicked{admin})."""
    _show(call(cfg, "/v1/kick", {"user": user}))


@admin.command()
@click.argument("user")
@click.option("--for", "duration", default="10m", show_default=True, help="e.g. 30s, 10m, 2h")
@click.pass_obj
def mute(cfg, user, duration):
    """Refuse USER's sends with `muted` for a while."""
    _show(call(cfg, "/v1/mute", {"user": user, "seconds": parse_duration(duration)}))


@admin.command()
@click.argument("user")
@click.pass_obj
def unmute(cfg, user):
    _show(call(cfg, "/v1/mute", {"user": user, "seconds": 0}))


@admin.command()
@click.argument("user")
@click.option("--reason", default="banned by an operator", show_default=True)
@click.pass_obj
def ban(cfg, user, reason):
    """Kick USER and refuse their logins (auth_failed with the reason)."""
    _show(call(cfg, "/v1/ban", {"user": user, "reason": reason}))


@admin.command()
@click.argument("user")
@click.pass_obj
def unban(cfg, user):
    _show(call(cfg, "/v1/ban", {"user": user, "reason": ""}))


@admin.command()
@click.argument("room")
@click.argument("seconds", type=float)
@click.pass_obj
def slow(cfg, room, seconds):
    """Slow mode: one message per SECONDS per user in ROOM (0 turns it off)."""
    _show(call(cfg, "/v1/room", {"room": room, "slow": seconds}))


@admin.command()
@click.argument("room")
@click.argument("seconds", type=float)
@click.pass_obj
def dups(cfg, room, seconds):
    """Duplicate suppression: the same text from a user in ROOM within SECONDS is refused."""
    _show(call(cfg, "/v1/room", {"room": room, "dups": seconds}))


@admin.command()
@click.argument("user")
@click.option("--quiet", is_flag=True, help="print only the token")
@click.pass_obj
def token(cfg, user, quiet):
    """Mint a login token for USER (game backends: players log in without a password)."""
    result = call(cfg, "/v1/token", {"user": user})
    click.echo(result["token"]) if quiet else _show(result)


@admin.command()
@click.argument("group")
@click.argument("owner")
@click.argument("members", nargs=-1)
@click.pass_obj
def roster(cfg, group, owner, members):
    """Make GROUP exactly OWNER plus MEMBERS (created if missing)."""
    _show(call(cfg, "/v1/group", {"group": group, "owner": owner, "members": list(members)}))


@admin.command()
@click.pass_obj
def stats(cfg):
    """Counters of the running cluster."""
    _show(call(cfg, "/v1/stats"))


@admin.command()
@click.pass_obj
def reload(cfg):
    """Make every zone re-read moderation.word_filter from its config file."""
    _show(call(cfg, "/v1/reload", {}))
