"""Names and conversation ids (protocol v1 "Names"). Pure functions, no I/O.

``d:<a>:<b>`` a direct conversation with a < b (byte order); ``g:<name>`` a group;
``r:<name>`` a room; ``sys`` system broadcasts. Names follow ``^[A-Za-z0-9_.-]{1,32}$``.
"""
from __future__ import annotations

import re

USER_RE = re.compile(r"[A-Za-z0-9_.-]{1,32}")
SYS = "sys"


def valid_user(name) -> bool:
    return isinstance(name, str) and USER_RE.fullmatch(name) is not None


def dm(a: str, b: str) -> str:
    """The DM id of two users (order does not matter)."""
    lo, hi = (a, b) if a.encode() < b.encode() else (b, a)
    return f"d:{lo}:{hi}"


def dm_users(conv: str) -> tuple[str, str]:
    _, a, b = conv.split(":")
    return a, b


def kind(conv: str) -> str:
    """'d', 'g', 'r' or 'sys'."""
    return SYS if conv == SYS else conv[0]


def valid(conv) -> bool:
    if not isinstance(conv, str):
        return False
    if conv == SYS:
        return True
    if conv.startswith(("g:", "r:")):
        return valid_user(conv[2:])
    if conv.startswith("d:"):
        parts = conv.split(":")
        return (len(parts) == 3 and valid_user(parts[1]) and valid_user(parts[2])
                and parts[1].encode() < parts[2].encode())
    return False


def is_durable(conv: str) -> bool:
    """DMs and groups: offline delivery, no drops. Rooms and sys are live only."""
    return conv.startswith(("d:", "g:"))
