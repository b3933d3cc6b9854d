"""The operator view's history: cluster-wide series of the last 15 minutes, one point a second.

``History`` is a ``deque`` of ``HISTORY_SECONDS`` rows (fixed memory, the oldest falls off),
one per second of center's wall clock: ``(t, *SERIES values)``. Center has no timer of its
own for it: ``Ops`` offers a row on every report it receives (several per second, one per
node) and on every ``GET /v1/ops``; ``due(now)`` takes at most one per whole second. A
second in which center saw nothing at all (no report, no poll: center was blocked or every
node was down) becomes a row of ``None`` (a gap in the graph), so ``t`` stays one second
apart. A clock that steps back more than ``CLOCK_STEP`` seconds starts the history anew.

A row is made from each node's *latest* report (``center/ops.py`` keeps them): the sum of
its per-second rates over the nodes that are not stale. Summing rates rather than raw
counter deltas keeps the line smooth when a node's report lands just before or just after
a second boundary. The ack p99 merges every live gate's ack-latency bucket *deltas* between
its last two reports (about one second of sends) and interpolates within a bucket like
Prometheus' ``histogram_quantile``.

Counters only grow, except when their node restarts: ``counter_delta`` then takes the new
value as what was counted since (like ``rates()``), and so does ``bucket_deltas``.
"""
from __future__ import annotations

import collections

HISTORY_SECONDS = 900        # 15 minutes at one point a second
CLOCK_STEP = 5               # seconds the wall clock may step back before the history restarts
SERIES = ("msgs_per_s", "deliveries_per_s", "sessions", "errors_per_s", "refusals_per_s",
          "ack_p99_ms")


def counter_delta(prev, cur, restarted: bool = False):
    """How much a cumulative counter grew: ``cur`` itself when it went down or its node
    restarted (it started again from zero)."""
    if restarted or cur < prev:
        return cur
    return cur - prev


def bucket_deltas(prev, cur, restarted: bool = False) -> list:
    """Per-bucket growth of a histogram's (non-cumulative) counts between two reports."""
    if prev is None or restarted or len(prev) != len(cur) or any(c < p for p, c in zip(prev, cur)):
        return list(cur)
    return [c - p for p, c in zip(prev, cur)]


def merge(count_lists) -> list | None:
    """The element-wise sum of same-length bucket lists (None for none)."""
    total = None
    for counts in count_lists:
        if counts is None:
            continue
        total = list(counts) if total is None else [a + b for a, b in zip(total, counts)]
    return total


def quantile(q: float, bounds, counts) -> float | None:
    """The ``q`` quantile of non-cumulative ``counts`` (the last one above ``bounds[-1]``),
    linear within the bucket it falls in, from 0 for the first bucket; the last bound when
    it falls above it (Prometheus' ``histogram_quantile``). None without observations."""
    total = sum(counts or ())
    if total <= 0:
        return None
    rank, below = q * total, 0
    for i, n in enumerate(counts):
        if n and below + n >= rank:
            if i >= len(bounds):
                return float(bounds[-1])
            lower = bounds[i - 1] if i else 0.0
            return lower + (bounds[i] - lower) * (rank - below) / n
        below += n
    return float(bounds[-1])


def sum_known(values) -> float | None:
    """The sum of the known values; None when none is known."""
    known = [v for v in values if v is not None]
    return round(sum(known), 1) if known else None


class History:
    """The last ``seconds`` rows of SERIES, one per second (see the module docstring)."""

    def __init__(self, seconds: int = HISTORY_SECONDS):
        self.rows: collections.deque = collections.deque(maxlen=seconds)
        self.last: int | None = None

    def due(self, now: float) -> bool:
        """A new second began since the last row (or the clock stepped back: start anew)."""
        second = int(now)
        if self.last is not None and second < self.last - CLOCK_STEP:
            self.rows.clear()
            self.last = None
        return self.last is None or second > self.last

    def add(self, now: float, values: dict) -> None:
        """The row of second ``int(now)``; the seconds skipped since the last are gaps."""
        second = int(now)
        if not self.due(now):
            return
        if self.last is not None:
            first_missing = max(self.last + 1, second - self.rows.maxlen + 1)
            for gap in range(first_missing, second):
                self.rows.append((gap, *(None for _ in SERIES)))
        self.rows.append((second, *(values.get(name) for name in SERIES)))
        self.last = second

    def columns(self, since: int | None = None) -> tuple[dict, bool]:
        """({"t": [seconds...], series: [values...]}, whole): what the page's graphs take.
        With ``since`` (the newest second the page has) only the rows after it, unless
        ``since`` is not among the rows kept (the page is new, or far behind, or center's
        history started anew): then every row, and ``whole`` says so."""
        names = ("t", *SERIES)
        rows = list(self.rows)
        whole = since is None or not rows or not rows[0][0] <= since <= rows[-1][0]
        if not whole:
            rows = rows[len(rows) - (rows[-1][0] - since):]
        if not rows:
            return {name: [] for name in names}, whole
        return {name: list(column) for name, column in zip(names, zip(*rows))}, whole
