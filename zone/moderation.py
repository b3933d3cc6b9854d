"""Moderation a zone enforces: bans, mutes, room slow mode, duplicate suppression.

State lives in Redis (``dc.keys.MUTES``, ``ROOM_MODES``) and is loaded at start; center
pushes every change to every zone as a ``mod`` envelope, so a change holds on every zone
within a tick. Slow mode and duplicate suppression are off until an operator sets them.

A ban reaches the zones as a ``mod`` envelope too, and center's admin API answers the
ban only once every zone has it (``center/admin.py``): from then on the banned user's
sends are refused here (``banned``) even if they reach a zone before the kick closes the
session. ``bans`` keeps the last ``BANS_KEPT`` bans pushed since the zone started, oldest
out: it covers the moments between a ban and its kick; after them a banned user has no
session (logins are refused from Redis), so a restarted zone starts with none.

Three bounded caches (``cluster.lru.LruDict``, least recently used out; sizes from the
``zone`` config section):

- ``blocks`` (``zone.block_cache`` users): a user's block list. An evicted one is read
  from Redis again on its next use; correct, since dc writes a block to Redis before it
  announces the change (which updates only the lists cached here).
- ``last_sent`` and ``recent`` (``zone.dup_memory`` entries each): slow mode's last send
  per (room, user) and duplicate suppression's (room, user, body). An evicted entry is
  forgotten, so that user's next message in that room is not held back by it.
"""
from __future__ import annotations

import re

from cluster.codec import packb, unpackb
from cluster.config import ZoneConf
from cluster.lru import LruDict

from dc.store import ModerationStore
from cluster.replies import Refused

BANS_KEPT = 10000

class Moderation:
    def __init__(self, store, block_cache: int = ZoneConf.block_cache,
                 dup_memory: int = ZoneConf.dup_memory):
        self.db = ModerationStore(store)
        self.mutes: dict = self.db.mutes()
        self.rooms: dict = self.db.room_modes()        # room -> (slow seconds, dup window)
        self.last_sent = LruDict(dup_memory)           # (room, user) -> ms of the last send
        self.recent = LruDict(dup_memory)              # (room, user, body) -> ms
        self.blocks = LruDict(block_cache)             # user -> set of users they block
        self.bans = LruDict(BANS_KEPT)                 # user -> ban reason, as pushed by center

    def on_change(self, env) -> None:
        what, key, value = env      # a Mod envelope
        if what == "mute":
            if value:
                self.mutes[key] = value
            else:
                self.mutes.pop(key, None)
        elif what == "block":
            other, on = value
            if key in self.blocks:
                (self.blocks[key].add if on else self.blocks[key].discard)(other)
        elif what == "ban":
            if value:
                self.bans[key] = value
            else:
                self.bans.pop(key, None)
        elif what == "room":
            if value and any(value):
                self.rooms[key] = tuple(value)
            else:
                self.rooms.pop(key, None)

    def check_muted(self, user: str, now_ms: int) -> None:
        """A banned or muted sender is refused (the send checks' step 7)."""
        if user in self.bans:
            raise Refused("banned", "this account is banned")
        until = self.mutes.get(user)
        if until and until > now_ms:
            raise Refused("muted", "you are muted", until=until)

    def load_blocks(self, users) -> None:
        """Cache the block lists of these users, one round trip for those not cached."""
        missing = list({u for u in users if u not in self.blocks})
        if missing:
            self.blocks.update(self.db.blocks_many(missing))

    def is_blocked(self, sender: str, recipient: str) -> bool:
        blocked = self.blocks.get(recipient)
        if blocked is None:
            self.load_blocks([recipient])
            blocked = self.blocks.get(recipient)
        return sender in blocked

    def check_room(self, room: str, user: str, body: bytes, now_ms: int) -> None:
        mode = self.rooms.get(room)
        if not mode:
            return
        slow, dups = mode
        if slow:
            last = self.last_sent.get((room, user), 0)
            if now_ms - last < slow * 1000:
                raise Refused("rate_limited", f"slow mode: one message every {slow:g} s in {room}")
            self.last_sent[(room, user)] = now_ms
        if dups:
            key = (room, user, body)
            seen = self.recent.get(key)
            if seen is not None and now_ms - seen < dups * 1000:
                raise Refused("rate_limited", f"you just said that in {room}")
            self.recent[key] = now_ms


class WordFilter:
    """Patterns from ``moderation.word_filter``: masked or refused, as configured."""

    def __init__(self, patterns, action: str):
        self.action = action
        self.regex = re.compile("|".join(f"(?:{p})" for p in patterns), re.I) if patterns else None

    def apply(self, body_raw: bytes) -> bytes:
        """The body to store: unchanged, masked, or Refused('filtered')."""
        if self.regex is None:
            return body_raw
        body = unpackb(body_raw)
        if not isinstance(body, str) or not self.regex.search(body):
            return body_raw
        if self.action == "refuse":
            raise Refused("filtered", "your message contains words this server does not allow")
        return packb(self.regex.sub(lambda m: "*" * len(m.group(0)), body))
