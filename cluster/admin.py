"""``zonechat admin ...``: a thin client of center's admin endpoint (HTTP + JSON).

The endpoint address comes from the config (the center node's host and admin_port) and
every request carries ``Authorization: Bearer <secret>``, the cluster secret as
``cluster.secrets.cluster_secret`` finds it (``zonechat admin secret`` prints it).

Answers are sentences with readable UTC times on a terminal (``alice muted until
2026-12-02 21:30:05 UTC (in 10m)``) and the endpoint's JSON when stdout is a pipe or a
file, or with ``--json`` (``--human`` forces sentences). Rooms and groups may be given by
bare name: ``slow lobby 10`` means ``r:lobby``, ``roster team ...`` means ``g:team``; a
bare conversation of ``post`` is a room.
"""
from __future__ import annotations

import datetime
import json
import re
import sys
import time
import urllib.error
import urllib.request

import click

from cluster import config as config_mod
from cluster import secrets
from cluster.convs import SYS

DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
ID_PREFIXES = ("r:", "g:", "d:")


class AdminFailed(click.ClickException):
    pass


def parse_duration(text: str) -> float:
    """'90', '90s', '10m', '2h', '1d' -> seconds."""
    match = DURATION.match(text.strip())
    if not match:
        raise click.BadParameter(f"{text!r} is not a duration like 30s, 10m, 2h")
    return float(match.group(1)) * UNITS[match.group(2)]


def conv_id(name: str, kind: str = "r") -> str:
    """A conversation id from an id (``r:``/``g:``/``d:``..., ``sys``) or a bare name,
    which becomes ``<kind>:<name>``: ``lobby`` -> ``r:lobby``; ``team``, "g" -> ``g:team``."""
    if name == SYS or name.startswith(ID_PREFIXES):
        return name
    return f"{kind}:{name}"


# -- human answers ---------------------------------------------------------------------------
def utc(ms: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)


def clock(ms: int) -> str:
    """``21:30:05 UTC``: the time of day of an epoch-ms timestamp."""
    return utc(ms).strftime("%H:%M:%S UTC")


def span(seconds: float) -> str:
    """A duration in its two largest units, rounded to the smaller: 45s, 10m, 2h 5m, 1d 3h."""
    s = round(abs(seconds))
    if s < 60:
        return f"{s}s"
    minutes = round(s / 60)
    if minutes < 60:
        return f"{minutes}m"
    if minutes < 24 * 60:
        return _two(*divmod(minutes, 60), "h", "m")
    return _two(*divmod(round(s / 3600), 24), "d", "h")


def _two(big: int, small: int, big_unit: str, small_unit: str) -> str:
    return f"{big}{big_unit}" + (f" {small}{small_unit}" if small else "")


def moment(ms: int, now: float | None = None) -> str:
    """``2026-12-02 21:30:05 UTC (in 10m)`` (or ``(3m ago)``) for an epoch-ms timestamp."""
    now = time.time() if now is None else now
    ahead = ms / 1000 - now
    when = f"in {span(ahead)}" if ahead >= 0 else f"{span(ahead)} ago"
    return f"{utc(ms):%Y-%m-%d %H:%M:%S} UTC ({when})"


def seconds_or_off(value) -> str:
    return f"{value:g}s" if value else "off"


def flat_lines(obj: dict, prefix: str = "") -> list[str]:
    """``key value`` lines of a map, nested maps as dotted keys, keys in order."""
    lines = []
    for key in sorted(obj, key=str):
        value = obj[key]
        if isinstance(value, dict) and value:
            lines += flat_lines(value, f"{prefix}{key}.")
        else:
            lines.append(f"{prefix}{key} {value}")
    return lines


def secret_of(cfg) -> str:
    """The cluster secret, or a one-line error naming where it should be."""
    try:
        return secrets.cluster_secret(cfg)
    except secrets.SecretError as exc:
        raise AdminFailed(str(exc)) from None


def call(cfg, path: str, payload: dict | None = None, timeout: float = 10.0) -> dict:
    center = cfg.nodes_of("center")[0]
    if not center.admin_port:
        raise AdminFailed("the center node has no admin_port in the config")
    host = "127.0.0.1" if center.admin_host in ("0.0.0.0", "") else center.admin_host
    url = f"http://{host}:{center.admin_port}{path}"
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, headers={
        "Authorization": f"Bearer {secret_of(cfg)}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read() or b"{}")
        except ValueError:
            body = {}
        raise AdminFailed(f"{body.get('error', exc.code)}: {body.get('reason', '')}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise AdminFailed(f"cannot reach the admin endpoint at {url}: {exc}") from None


def show(result: dict, as_json: bool | None, human) -> None:
    """JSON (``--json``, or stdout not a terminal), else the lines ``human(result)`` says."""
    if as_json is None:
        as_json = not sys.stdout.isatty()
    if as_json:
        click.echo(json.dumps(result, indent=2, sort_keys=True))
        return
    lines = human(result)
    click.echo("\n".join([lines] if isinstance(lines, str) else lines))


def output_option(func):
    return click.option("--json/--human", "as_json", default=None,
                        help="JSON (the default when stdout is not a terminal) or sentences")(func)


def posted(result: dict) -> str:
    return f"sent to {result['conv']}: seq {result['seq']} at {clock(result['ts'])}"


@click.group("admin")
@click.option("-c", "--config", "config_path", envvar="ZONECHAT_CONFIG", default="config.yaml",
              show_default=True, help="cluster config")
@click.pass_context
def admin(ctx, config_path):
    """Operate a running cluster: broadcasts, moderation, tokens.

    Answers are sentences on a terminal and JSON in a pipe or file (or with --json).
    ROOM and GROUP take a bare name (lobby means r:lobby, team means g:team) or an id.
    """
    try:
        ctx.obj = config_mod.load(config_path)
    except config_mod.ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@admin.command()
@click.argument("text")
@output_option
@click.pass_obj
def broadcast(cfg, text, as_json):
    """Send TEXT to every online session (conversation sys)."""
    show(call(cfg, "/v1/broadcast", {"text": text}), as_json, posted)


@admin.command()
@click.argument("conv")
@click.argument("text")
@output_option
@click.pass_obj
def post(cfg, conv, text, as_json):
    """Post TEXT to any conversation as `system`.

    CONV is an id (r:ROOM, g:GROUP, d:USER1:USER2, sys) or a bare name, which is taken
    as a room: `post lobby hi` posts to r:lobby.
    """
    show(call(cfg, "/v1/post", {"conv": conv_id(conv), "body": text}), as_json, posted)


@admin.command()
@click.argument("conv")
@click.argument("seq", type=click.IntRange(min=1))
@output_option
@click.pass_obj
def recall(cfg, conv, seq, as_json):
    """Remove message SEQ of CONV for everyone ("message removed"), whoever sent it.

    Stored as a recall event from `system` (the next seq of CONV); the message's record
    keeps no body. CONV as for `post`.
    """
    show(call(cfg, "/v1/recall", {"conv": conv_id(conv), "seq": seq}), as_json,
         lambda r: f"recalled {r['conv']} #{r['ref']} (event #{r['seq']})")


@admin.command()
@click.argument("user")
@output_option
@click.pass_obj
def kick(cfg, user, as_json):
    """Disconnect USER's session (kicked{admin})."""
    show(call(cfg, "/v1/kick", {"user": user}), as_json,
         lambda r: f"{user} kicked" if r["kicked"] else f"{user} is not online: nobody kicked")


@admin.command()
@click.argument("user")
@click.option("--for", "duration", default="10m", show_default=True, help="e.g. 30s, 10m, 2h")
@output_option
@click.pass_obj
def mute(cfg, user, duration, as_json):
    """Refuse USER's sends with `muted` for a while."""
    show(call(cfg, "/v1/mute", {"user": user, "seconds": parse_duration(duration)}), as_json,
         lambda r: f"{user} muted until {moment(r['until'])}" if r["until"] else f"{user} unmuted")


@admin.command()
@click.argument("user")
@output_option
@click.pass_obj
def unmute(cfg, user, as_json):
    """Let USER send again."""
    show(call(cfg, "/v1/mute", {"user": user, "seconds": 0}), as_json, lambda r: f"{user} unmuted")


@admin.command()
@click.argument("user")
@click.option("--reason", default="banned by an operator", show_default=True)
@output_option
@click.pass_obj
def ban(cfg, user, reason, as_json):
    """Kick USER and refuse their logins (auth_failed with the reason)."""
    show(call(cfg, "/v1/ban", {"user": user, "reason": reason}), as_json,
         lambda r: f"{user} banned: {reason}" if r["banned"] else f"{user} unbanned")


@admin.command()
@click.argument("user")
@output_option
@click.pass_obj
def unban(cfg, user, as_json):
    """Let USER log in again."""
    show(call(cfg, "/v1/ban", {"user": user, "reason": ""}), as_json, lambda r: f"{user} unbanned")


@admin.command()
@click.argument("user")
@output_option
@click.pass_obj
def revoke(cfg, user, as_json):
    """Void every login token of USER (and kick its session): it logs in with its password."""
    show(call(cfg, "/v1/revoke", {"user": user}), as_json,
         lambda r: f"{user}'s tokens revoked" + (", session kicked" if r["kicked"] else ""))


@admin.command()
@click.pass_obj
def secret(cfg):
    """Print the cluster secret (the admin API's bearer; the /ops page asks for it)."""
    click.echo(secret_of(cfg))


def room_modes(result: dict) -> str:
    return (f"{result['room']}: slow mode {seconds_or_off(result['slow'])}, "
            f"duplicate suppression {seconds_or_off(result['dups'])}")


@admin.command()
@click.argument("room")
@click.argument("seconds", type=float)
@output_option
@click.pass_obj
def slow(cfg, room, seconds, as_json):
    """Slow mode: one message per SECONDS per user in ROOM (0 turns it off)."""
    show(call(cfg, "/v1/room", {"room": conv_id(room), "slow": seconds}), as_json, room_modes)


@admin.command()
@click.argument("room")
@click.argument("seconds", type=float)
@output_option
@click.pass_obj
def dups(cfg, room, seconds, as_json):
    """Duplicate suppression: the same text from a user in ROOM within SECONDS is refused."""
    show(call(cfg, "/v1/room", {"room": conv_id(room), "dups": seconds}), as_json, room_modes)


@admin.command()
@click.argument("user")
@click.option("--quiet", is_flag=True, help="print only the token")
@output_option
@click.pass_obj
def token(cfg, user, quiet, as_json):
    """Mint a login token for USER (game backends: players log in without a password)."""
    result = call(cfg, "/v1/token", {"user": user})
    if quiet:
        click.echo(result["token"])
        return
    show(result, as_json, lambda r: [r["token"], f"login token for {user}, expires {moment(r['expires'])}"])


@admin.command()
@click.argument("group")
@click.argument("owner")
@click.argument("members", nargs=-1)
@output_option
@click.pass_obj
def roster(cfg, group, owner, members, as_json):
    """Make GROUP exactly OWNER plus MEMBERS (created if missing); `team` means g:team."""
    show(call(cfg, "/v1/group", {"group": conv_id(group, "g"), "owner": owner, "members": list(members)}),
         as_json, lambda r: f"{r['group']}: owner {r['owner']}, members {', '.join(r['members']) or 'none'}")


@admin.command()
@output_option
@click.pass_obj
def stats(cfg, as_json):
    """Counters of the running cluster."""
    show(call(cfg, "/v1/stats"), as_json, flat_lines)


@admin.command()
@output_option
@click.pass_obj
def reload(cfg, as_json):
    """Make every zone re-read moderation.word_filter from its config file."""
    show(call(cfg, "/v1/reload", {}), as_json,
         lambda r: f"word filter reloaded on {r['reloaded']} zone" + ("" if r["reloaded"] == 1 else "s"))
