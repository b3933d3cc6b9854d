"""Readable names for the admin actions the operator view lists (``center/admin.py``).

An action is recorded under its endpoint's name with the request's arguments
(``Ops.action(name, args)``). Some endpoints undo as well as do, by their arguments:

* ``ban`` with an empty ``reason`` is an unban (no ``reason`` at all bans, with the
  default reason);
* ``mute`` with ``seconds: 0`` is an unmute (no ``seconds`` mutes for 600 s; an ``until``
  of 0, the zones' form of it, reads the same);
* ``room`` with ``slow: 0`` turns slow mode off, ``dups: 0`` the duplicate filter; an
  omitted one stays as it was.

Others read as what they did: ``drain`` "gate1 over 30 s", ``broadcast`` its text,
``revoke`` "revoke tokens".

``describe(name, args)`` answers ``{"what": "unban", "about": "alice"}``: a short name for
the action column and what it was about. An action it does not know keeps its name
(a route added later shows up as itself).
"""
from __future__ import annotations

import json

DEFAULT_MUTE = 600           # seconds: what /v1/mute takes without "seconds"
TEXT_SHOWN = 80              # characters of a broadcast's text in the view
PLAIN = {"kick": "kick", "revoke": "revoke tokens", "token": "new login token",
         "reload": "reload word filter"}


def duration(seconds) -> str:
    """45 s, 10 min, 1.5 h, 2 d."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            value = round(seconds / size, 1)
            return f"{value:g} {unit}"
    return f"{seconds:g} s"


def short(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= TEXT_SHOWN else text[:TEXT_SHOWN - 1] + "…"


def _number(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def ban(args: dict) -> dict:
    reason = args.get("reason", "banned by an operator")
    if reason == "" or reason is None:
        return {"what": "unban", "about": str(args.get("user", ""))}
    return {"what": "ban", "about": f"{args.get('user', '')}: {short(reason)}"}


def mute(args: dict) -> dict:
    user = str(args.get("user", ""))
    seconds = _number(args.get("seconds", DEFAULT_MUTE))
    if seconds == 0 or args.get("until") == 0:
        return {"what": "unmute", "about": user}
    return {"what": "mute", "about": f"{user} for {duration(seconds)}" if seconds else user}


def _mode(label: str, value) -> str:
    seconds = _number(value)
    return f"{label} off" if seconds == 0 else f"{label} {duration(seconds or 0)}"


def room(args: dict) -> dict:
    where = str(args.get("room", ""))
    if "slow" in args and "dups" not in args:
        what = _mode("slow mode", args["slow"])
        return {"what": what, "about": where}
    parts = [_mode(label, args[key]) for key, label in (("slow", "slow mode"), ("dups", "duplicate filter"))
             if key in args]
    return {"what": "room settings", "about": f"{where}: {', '.join(parts) or 'unchanged'}"}


def broadcast(args: dict) -> dict:
    return {"what": "broadcast", "about": short(args.get("body", args.get("text", "")))}


def post(args: dict) -> dict:
    return {"what": "post as system", "about": f"{args.get('conv', '')}: {short(args.get('body', ''))}"}


def users(args: dict) -> dict:
    names = args.get("users")
    count = len(names) if isinstance(names, list) else 0
    return {"what": "create accounts", "about": f"{count} account{'' if count == 1 else 's'}"}


def group(args: dict) -> dict:
    members = args.get("members")
    count = len(members) if isinstance(members, list) else 0
    return {"what": "set group", "about": f"{args.get('group', '')}: {count} members"}


def drain(args: dict) -> dict:
    over = _number(args.get("over"))
    node = str(args.get("node", ""))
    return {"what": "drain", "about": f"{node} over {duration(over)}" if over else node}


SPECIAL = {"ban": ban, "mute": mute, "room": room, "broadcast": broadcast, "post": post,
           "users": users, "group": group, "drain": drain}


def describe(name: str, args: dict) -> dict:
    """{"what", "about"} of one admin action (see the module docstring)."""
    args = args if isinstance(args, dict) else {}
    special = SPECIAL.get(name)
    if special is not None:
        return special(args)
    about = args.get("user") or args.get("node") or args.get("room") or ""
    return {"what": PLAIN.get(name, name), "about": short(about) if about else ""}
