"""The gate's abuse limits: what one connection or one client address may do. No I/O.

A gate is the only role that sees client addresses, so the limits that stop one abuser
from costing everyone live here, before anything is forwarded:

- ``Window``: at most ``limit`` events in the last ``window`` seconds (a sliding log of
  at most ``limit`` stamps). ``take`` answers how long to wait instead of counting past
  the limit, so a flood costs no memory; ``give_back`` returns the newest event (a
  ``register`` login refused before hashing cost nothing).
- ``AddressWindows``: one ``Window`` per client address (registers, failed logins). The
  table is bounded (``MAX_ADDRESSES``): an address whose window is empty is pruned, and
  past the bound the least recently used address is forgotten (it starts again from 0).
- ``AddressCounts``: connections open per address (``gate.max_connections_per_ip``);
  an address at 0 leaves the table, so it is bounded by the connections themselves.
- ``too_deep``: a request nested deeper than ``MAX_DEPTH`` is ``bad_frame``. Re-encoding
  recurses (msgpack to JSON for a WebSocket text reader): a body of 1,000 nested lists
  that one client sends must not fail the encode for everyone who reads it.
"""
from __future__ import annotations

import collections
import math
import time

MAX_ADDRESSES = 100000      # addresses remembered per limit (least recently used forgotten)
MAX_DEPTH = 32              # maps and lists inside one another in a request, itself included


def address(peer) -> str:
    """The client address of a socket peer: (host, port[, ...]) -> host."""
    return peer[0] if isinstance(peer, tuple) and peer else str(peer)


class Window:
    """At most ``limit`` events in any ``window`` seconds."""

    __slots__ = ("limit", "window", "stamps")

    def __init__(self, limit: int, window: float):
        self.limit, self.window = limit, window
        self.stamps: collections.deque = collections.deque()

    def _forget(self, now: float) -> None:
        while self.stamps and now - self.stamps[0] >= self.window:
            self.stamps.popleft()

    def count(self, now: float | None = None) -> int:
        self._forget(time.monotonic() if now is None else now)
        return len(self.stamps)

    def wait_ms(self, now: float | None = None) -> int:
        """0 while another event fits; else the ms until the oldest one leaves the window."""
        now = time.monotonic() if now is None else now
        self._forget(now)
        if len(self.stamps) < self.limit:
            return 0
        if not self.stamps:                 # a limit of 0: nothing ever fits
            return math.ceil(self.window * 1000)
        return max(1, math.ceil((self.stamps[0] + self.window - now) * 1000))

    def take(self, now: float | None = None) -> int:
        """Count one event if it fits (0), else leave the count and return ``wait_ms``."""
        now = time.monotonic() if now is None else now
        wait = self.wait_ms(now)
        if not wait:
            self.stamps.append(now)
        return wait

    def add(self, now: float | None = None) -> None:
        """Count an event that already happened (a failed login); the log stays bounded."""
        now = time.monotonic() if now is None else now
        self.stamps.append(now)
        while len(self.stamps) > max(self.limit, 1):
            self.stamps.popleft()

    def give_back(self) -> None:
        """Uncount the newest event."""
        if self.stamps:
            self.stamps.pop()

    def empty(self, now: float) -> bool:
        return not self.stamps or now - self.stamps[-1] >= self.window


class AddressWindows:
    """A ``Window`` per client address; at most ``max_addresses`` of them."""

    def __init__(self, limit: int, window: float, max_addresses: int = MAX_ADDRESSES):
        self.limit, self.window, self.max_addresses = limit, window, max_addresses
        self.windows: collections.OrderedDict = collections.OrderedDict()   # addr -> Window

    def __len__(self) -> int:
        return len(self.windows)

    def _window(self, addr: str) -> Window:
        w = self.windows.get(addr)
        if w is None:
            w = self.windows[addr] = Window(self.limit, self.window)
            if len(self.windows) > self.max_addresses:
                self.windows.popitem(last=False)
        else:
            self.windows.move_to_end(addr)
        return w

    def take(self, addr: str, now: float | None = None) -> int:
        return self._window(addr).take(now)

    def add(self, addr: str, now: float | None = None) -> None:
        self._window(addr).add(now)

    def wait_ms(self, addr: str, now: float | None = None) -> int:
        w = self.windows.get(addr)
        return 0 if w is None else w.wait_ms(now)

    def give_back(self, addr: str) -> None:
        w = self.windows.get(addr)
        if w is not None:
            w.give_back()

    def prune(self, now: float | None = None, most: int = 1000) -> None:
        """Drop addresses whose window is empty, least recently used first (at most
        ``most`` looked at: the sweep runs often, each turn stays short)."""
        now = time.monotonic() if now is None else now
        for _ in range(min(most, len(self.windows))):
            addr, w = next(iter(self.windows.items()))
            if not w.empty(now):
                return
            del self.windows[addr]


class AddressCounts:
    """Connections open per client address, at most ``limit`` each."""

    def __init__(self, limit: int):
        self.limit = limit
        self.open: dict = {}            # addr -> connections open

    def __len__(self) -> int:
        return len(self.open)

    def admit(self, addr: str) -> bool:
        """Count one more connection from ``addr``; False (not counted) past the limit."""
        n = self.open.get(addr, 0)
        if n >= self.limit:
            return False
        self.open[addr] = n + 1
        return True

    def release(self, addr: str) -> None:
        n = self.open.get(addr, 0) - 1
        if n > 0:
            self.open[addr] = n
        else:
            self.open.pop(addr, None)


def too_deep(obj, size: int, limit: int = MAX_DEPTH) -> bool:
    """Is ``obj`` (decoded from ``size`` bytes) nested more than ``limit`` deep? Each level
    takes at least a byte, so a short frame is never looked into (the usual request)."""
    if size <= limit:
        return False
    level = [obj]
    for _ in range(limit):
        inner = []
        for item in level:
            if isinstance(item, dict):
                inner.extend(item.values())
                inner.extend(k for k in item if isinstance(k, (list, dict, tuple)))
            elif isinstance(item, (list, tuple)):
                inner.extend(item)
        level = [x for x in inner if isinstance(x, (list, dict, tuple))]
        if not level:
            return False
    return True
