"""Groups, as their single writer (the zone owning the group's slot) sees them.

Membership is cached in memory after the first load, so a send checks it without a
Redis round trip; every change is written through to Redis before the ``ok``.

The cache is bounded (``zone.group_cache`` groups, ``cluster.lru.LruDict``): past it the
least recently used group is dropped and reloaded from Redis on its next use. That is
correct because Redis always holds the truth first: a change is written to Redis, then
to the Group object, then that object is put (back) into the cache, so an operation whose
Group was evicted meanwhile still leaves the cache right; a write that fails drops the
cached entry, and the next use reloads whatever Redis holds.

A group holds at most ``chat.group_max_members`` members, its owner included
(``too_large``; the gate checks a ``group_create`` first). An operator's roster is not
bounded by it. ``GroupWork`` bounds what group changes cost a zone per tick.
"""
from __future__ import annotations

import collections
from contextlib import contextmanager
from dataclasses import dataclass, field

from cluster.config import ChatConf, ZoneConf
from cluster.envelopes import Group as GroupReq
from cluster.lru import LruDict
from dc.store import GroupStore
from cluster.replies import Refused


@dataclass(slots=True)
class Group:
    owner: str
    members: list = field(default_factory=list)     # join order: [0] is longest-standing


class Groups:
    MISSING = None          # cached for a group that does not exist
    _UNLOADED = object()

    def __init__(self, store, max_members: int = ChatConf.group_max_members,
                 cache_size: int = ZoneConf.group_cache, epoch_of=None):
        self.db = GroupStore(store, epoch_of)
        self.cache = LruDict(cache_size)        # conv -> Group | MISSING, least recently used out
        self.max_members = max_members

    def get(self, conv: str) -> Group | None:
        g = self.cache.get(conv, self._UNLOADED)
        if g is self._UNLOADED:
            loaded = self.db.load(conv)
            g = Group(*loaded) if loaded else self.MISSING
            self.cache[conv] = g
        return g

    def peek(self, conv: str) -> Group | None:
        """The group as cached, else as Redis has it, without caching it: for readers
        beside the tick worker (zone/live.py), whose load could otherwise overwrite a
        change the tick worker cached while that load waited on Redis."""
        g = self.cache.get(conv, self._UNLOADED)
        if g is self._UNLOADED:
            loaded = self.db.load(conv)
            return Group(*loaded) if loaded else self.MISSING
        return g

    def forget(self, moved) -> int:
        """Drop the cached groups for which ``moved(conv)``: another zone wrote them (or
        may yet), so the next use reloads from Redis. How many were dropped."""
        gone = [conv for conv in self.cache if moved(conv)]
        for conv in gone:
            self.cache.pop(conv, None)
        return len(gone)

    def members(self, conv: str) -> list:
        g = self.get(conv)
        return g.members if g else []

    def is_member(self, conv: str, user: str) -> bool:
        g = self.get(conv)
        return g is not None and user in g.members

    @contextmanager
    def _writing(self, conv: str):
        """Around the Redis writes of a change: when one fails, Redis may hold part of it,
        so the cached entry goes and the next use reloads from Redis."""
        try:
            yield
        except BaseException:
            self.cache.pop(conv, None)
            raise

    def create(self, conv: str, owner: str, members: list) -> None:
        if self.get(conv) is not None:
            raise Refused("exists", f"{conv} already exists")
        ordered = [owner] + [m for m in dict.fromkeys(members) if m != owner]
        if len(ordered) > self.max_members:
            raise Refused("too_large", f"a group holds at most {self.max_members} members")
        with self._writing(conv):
            self.db.create(conv, owner, ordered)
        self.cache[conv] = Group(owner, ordered)

    def roster(self, conv: str, owner: str, members: list) -> None:
        """A game backend's roster: the group becomes exactly these members."""
        g = self.get(conv)
        if g is None:
            with self._writing(conv):
                self.db.create(conv, owner, [owner] + [m for m in dict.fromkeys(members) if m != owner])
            self.cache.pop(conv, None)
            return
        wanted = set(members) | {owner}
        with self._writing(conv):
            for user in [m for m in g.members if m not in wanted]:
                self._drop(conv, g, user)
            for user in [m for m in dict.fromkeys([owner, *members]) if m not in g.members]:
                self.db.add(conv, user)
                g.members.append(user)
            if g.owner != owner:
                self.db.set_owner(conv, owner)
                g.owner = owner
        self.cache[conv] = g

    def owned(self, conv: str, user: str) -> Group:
        g = self.get(conv)
        if g is None or user not in g.members:
            raise Refused("not_member", f"you are not a member of {conv}")
        if g.owner != user:
            raise Refused("not_owner", f"only the owner of {conv} can do that")
        return g

    def add(self, conv: str, owner: str, user: str) -> None:
        g = self.owned(conv, owner)
        if user in g.members:
            return
        if len(g.members) >= self.max_members:
            raise Refused("too_large", f"a group holds at most {self.max_members} members")
        with self._writing(conv):
            self.db.add(conv, user)
        g.members.append(user)
        self.cache[conv] = g

    def remove(self, conv: str, owner: str, user: str) -> None:
        g = self.owned(conv, owner)
        if user not in g.members:
            raise Refused("not_member", f"{user} is not in {conv}")
        self._drop(conv, g, user)

    def leave(self, conv: str, user: str) -> None:
        g = self.get(conv)
        if g is None or user not in g.members:
            raise Refused("not_member", f"you are not a member of {conv}")
        self._drop(conv, g, user)

    def _drop(self, conv: str, g: Group, user: str) -> None:
        rest = [m for m in g.members if m != user]
        new_owner = rest[0] if g.owner == user and rest else None
        with self._writing(conv):
            self.db.remove(conv, user, new_owner, empty=not rest)
        g.members = rest
        if new_owner:
            g.owner = new_owner
        self.cache[conv] = g if rest else self.MISSING


def named_users(r: GroupReq) -> list:
    """The user names a group change must find existing (members, or the one user)."""
    if r.op in ("create", "roster"):
        return list(r.arg)
    return [r.arg] if r.op in ("add", "remove") else []


class GroupWork:
    """What group changes may cost one zone tick, so they cannot starve the sends.

    A change costs one plus a name per user it names (each name is a Redis lookup until
    cached; a ``group_create`` names up to ``chat.group_max_members``). A tick takes
    changes, in arrival order, while their cost fits ``budget`` (the first always fits,
    however large); the others are held, in order, and go first in the next tick. So
    that each conversation keeps its order, a request on a group that has one held (a
    send, a sync) is held behind it. At most ``limit`` requests are held: past that a
    request is refused (``take`` returns it, the zone answers ``unavailable``).
    """

    def __init__(self, budget: int = ZoneConf.group_work, limit: int = ZoneConf.group_queue):
        self.budget, self.limit = budget, limit
        self.spent = 0
        self.held: collections.deque = collections.deque()
        self.held_convs: collections.Counter = collections.Counter()   # conv -> held requests

    def __len__(self) -> int:
        return len(self.held)

    @staticmethod
    def cost(r) -> int:
        return 1 + len(named_users(r)) if isinstance(r, GroupReq) else 0

    def new_tick(self) -> list:
        """The held requests, in order, to go before the tick's new ones; the budget is whole again."""
        held = list(self.held)
        self.held.clear()
        self.held_convs.clear()
        self.spent = 0
        return held

    def take(self, batch: list) -> tuple[list, list]:
        """(the requests to handle now, those refused because the hold is full)."""
        if not self.held_convs and not any(type(r) is GroupReq for r in batch):
            return batch, []            # the usual batch: sends and syncs only
        now, refused = [], []
        for r in batch:
            is_group = type(r) is GroupReq
            conv = r.group if is_group else getattr(r, "conv", None)
            if conv in self.held_convs:
                self._hold(r, conv, refused)
            elif is_group:
                cost = self.cost(r)
                if self.spent and self.spent + cost > self.budget:
                    self._hold(r, conv, refused)
                else:
                    self.spent += cost
                    now.append(r)
            else:
                now.append(r)
        return now, refused

    def _hold(self, r, conv: str, refused: list) -> None:
        if len(self.held) >= self.limit:
            refused.append(r)
            return
        self.held.append(r)
        self.held_convs[conv] += 1
