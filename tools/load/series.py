"""Time series of a load run, for the charts of summary.html. No I/O, plain numbers.

Every series is binned by ``STEP`` (2) seconds and holds at most ``MAX_POINTS`` points: a
longer run widens its bins (4 s, 6 s, ...), so summary.json and summary.html stay small
whatever the run's length. x values are seconds since the run started.

- throughput: msgs/s in and deliveries/s out per bin, from Locust's per-second counts
  (stamped where each request happened), and the load users in the game at each bin's end;
- latency: send→msg p50/p99 and send→ack p99 of each progress sample (the conductor's
  2-second windows, 6 s behind a master);
- cpu: the cores the cluster's processes and the load generator used, mean per bin.
"""
from __future__ import annotations

import math

STEP = 2
MAX_POINTS = 900


def bin_width(span: float) -> int:
    """Seconds per point: STEP, or a multiple of it so that the span fits MAX_POINTS."""
    return STEP * max(1, math.ceil(max(0.0, span) / (STEP * MAX_POINTS)))


def bin_starts(t0: float, t1: float, width: int) -> list[int]:
    """Starts of the whole bins of ``width`` seconds inside [t0, t1)."""
    return list(range(int(t0), int(t1) - width + 1, width))


def levels(ups: dict, downs: dict, seconds) -> list[int]:
    """How many are up at the end of each of ``seconds`` (increasing): ups minus downs so far."""
    changes: dict[int, int] = {}
    for sec, count in ups.items():
        changes[int(sec)] = changes.get(int(sec), 0) + count
    for sec, count in downs.items():
        changes[int(sec)] = changes.get(int(sec), 0) - count
    keys, out, level, i = sorted(changes), [], 0, 0
    for sec in seconds:
        while i < len(keys) and keys[i] <= sec:
            level += changes[keys[i]]
            i += 1
        out.append(level)
    return out


def throughput(in_ps: dict, out_ps: dict, users: tuple[dict, dict], t0: float, t1: float) -> dict:
    """Per bin: msgs/s in, deliveries/s out, users in the game at the bin's end."""
    width = bin_width(t1 - t0)
    starts = bin_starts(t0, t1, width)

    def per_s(ps: dict) -> list[float]:
        return [round(sum(ps.get(s, 0) for s in range(b, b + width)) / width, 1) for b in starts]

    in_game = levels(users[0], users[1], [b + width - 1 for b in starts]) if users[0] else [None] * len(starts)
    return {"t": [round(b + width - t0, 1) for b in starts], "in": per_s(in_ps), "out": per_s(out_ps),
            "users": in_game, "bin_s": width}


def thin(rows: list, limit: int = MAX_POINTS) -> list:
    """Every k-th row so that at most ``limit`` remain (the last one kept)."""
    if len(rows) <= limit:
        return list(rows)
    k = math.ceil(len(rows) / limit)
    kept = rows[::k]
    return kept if kept[-1] is rows[-1] else kept[:-1] + [rows[-1]]


def latency(progress: list[dict], t0: float) -> dict:
    """send→msg p50/p99 and send→ack p99 (ms) of each progress sample."""
    rows = thin([p for p in progress if isinstance(p.get("t"), (int, float))])
    return {"t": [round(p["t"] - t0, 1) for p in rows], "e2e_p50": [p.get("e2e_p50") for p in rows],
            "e2e_p99": [p.get("e2e_p99") for p in rows], "ack_p99": [p.get("ack_p99") for p in rows]}


def _cores_per_bin(group: dict, t0: float, t1: float, width: int) -> dict[int, float]:
    """{bin index: cores} of one process group: each process's mean CPU% in the bin, summed."""
    acc: dict[tuple[int, str], list] = {}
    for name, proc in group.items():
        for t, cpu, _rss in proc.get("samples") or ():
            if t0 <= t < t1:
                cell = acc.setdefault((int((t - t0) // width), name), [0.0, 0])
                cell[0] += cpu
                cell[1] += 1
    out: dict[int, float] = {}
    for (index, _name), (total, n) in acc.items():
        out[index] = out.get(index, 0.0) + total / n / 100.0
    return out


def cpu(samples: dict, t0: float, t1: float) -> dict:
    """Cores used per bin by the cluster (every process) and by the load generator."""
    width = bin_width(t1 - t0)
    count = max(0, math.ceil((t1 - t0) / width))
    cluster = _cores_per_bin(samples.get("cluster") or {}, t0, t1, width)
    generator = _cores_per_bin(samples.get("generator") or {}, t0, t1, width)

    def col(per_bin: dict) -> list:
        return [round(per_bin[i], 3) if i in per_bin else None for i in range(count)]

    return {"t": [round((i + 1) * width, 1) for i in range(count)], "cluster": col(cluster),
            "generator": col(generator), "bin_s": width}
