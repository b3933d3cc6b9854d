"""Bounded in-memory caches: one policy, least recently used out.

``LruDict`` and ``LruSet`` hold at most ``maxsize`` entries. A read through ``get`` or
``[]`` and every write touch the key (it becomes the most recently used); inserting past
``maxsize`` evicts the least recently used entries. ``in``, ``len`` and iteration never
touch: they are the plain dict operations underneath (both are ``OrderedDict``s), so a
membership test on a hot path costs what a dict's does. A caller whose hits are
membership tests touches them in bulk (``LruSet.missing``, ``LruSet.touch``).

A cache here only ever holds what is also stored elsewhere (Redis, for the zone's caches),
so an eviction costs a reload, never data.
"""
from __future__ import annotations

from collections import OrderedDict, deque
from itertools import filterfalse
from typing import Iterable

_ABSENT = object()
_drain = deque(maxlen=0).extend      # runs an iterator to its end, in C
# the base methods, called directly: a super() lookup would double a hit's cost
_get, _getitem, _setitem = OrderedDict.get, OrderedDict.__getitem__, OrderedDict.__setitem__


def _check(maxsize: int) -> int:
    if not isinstance(maxsize, int) or isinstance(maxsize, bool) or maxsize < 1:
        raise ValueError(f"maxsize must be a positive int, got {maxsize!r}")
    return maxsize


class LruDict(OrderedDict):
    """A mapping of at most ``maxsize`` entries, the least recently used evicted first.

    ``d[key]``, ``get`` and ``d[key] = value`` touch; ``key in d`` does not. Iteration
    runs from the least to the most recently used.
    """

    __slots__ = ("maxsize",)

    def __init__(self, maxsize: int):
        super().__init__()
        self.maxsize = _check(maxsize)

    def __getitem__(self, key):
        value = _getitem(self, key)
        self.move_to_end(key)
        return value

    def get(self, key, default=None):
        """The value (touched), or ``default`` when not held."""
        value = _get(self, key, _ABSENT)
        if value is _ABSENT:
            return default
        self.move_to_end(key)
        return value

    def __setitem__(self, key, value) -> None:
        _setitem(self, key, value)
        self.move_to_end(key)
        if len(self) > self.maxsize:
            self.popitem(last=False)

    def update(self, items=(), /) -> None:
        """Insert a mapping's (or pairs') entries in order, then evict down to maxsize."""
        move = self.move_to_end
        for key, value in (items.items() if hasattr(items, "items") else items):
            _setitem(self, key, value)
            move(key)
        while len(self) > self.maxsize:
            self.popitem(last=False)

    def copy(self) -> "LruDict":
        out = LruDict(self.maxsize)
        out.update(self.items())
        return out

    def __repr__(self) -> str:
        return f"LruDict(maxsize={self.maxsize}, len={len(self)})"


class LruSet(OrderedDict):
    """A set of at most ``maxsize`` members, the least recently used evicted first.

    An ``OrderedDict`` of member -> None underneath: ``in`` and ``len`` are dict speed and
    do not touch; ``add``, ``update``, ``touch`` and ``missing`` do. ``s & other`` and
    ``other & s`` give a plain set. Iteration runs from the least to the most recently used.
    """

    __slots__ = ("maxsize",)

    def __init__(self, maxsize: int, members: Iterable = ()):
        super().__init__()
        self.maxsize = _check(maxsize)
        self.update(members)

    def add(self, member) -> None:
        _setitem(self, member, None)
        self.move_to_end(member)
        if len(self) > self.maxsize:
            self.popitem(last=False)

    def update(self, members: Iterable = (), /) -> None:
        """Add members in order (the last ends most recent), then evict down to maxsize."""
        move = self.move_to_end
        for m in members:
            _setitem(self, m, None)
            move(m)
        while len(self) > self.maxsize:
            self.popitem(last=False)

    def discard(self, member) -> None:
        self.pop(member, None)

    def touch(self, members: Iterable) -> None:
        """Make the held ones among ``members`` the most recently used."""
        _drain(map(self.move_to_end, filter(self.__contains__, members)))

    def missing(self, members: Iterable) -> set:
        """The distinct ``members`` not held; the held ones are touched. For the zone's
        per-tick lookup: the loops run in C, one dict lookup and one move per name."""
        members = members if isinstance(members, (set, frozenset)) else set(members)
        unknown = set(filterfalse(self.__contains__, members))
        _drain(map(self.move_to_end, members - unknown if unknown else members))
        return unknown

    def __and__(self, other: Iterable) -> set:
        """A plain set: the members of ``other`` held here (no touch)."""
        return set(filter(self.__contains__, other))

    __rand__ = __and__

    def copy(self) -> "LruSet":
        return LruSet(self.maxsize, self)

    def __repr__(self) -> str:
        return f"LruSet(maxsize={self.maxsize}, len={len(self)})"
