"""What the flood benches share: the DM pairs that measure send→ack beside a flood.

tools/bench/group_flood.py and tools/bench/abuse_flood.py build their DM pairs, their
cluster overrides and their common options here; the DM phase itself is
``group_flood.dm_phase``.
"""
from __future__ import annotations

from tools.bench.workloads import Peer


def dm_extra() -> dict:
    """The bench config overrides of a flood bench: DM pairs never reach the send rate."""
    return {"gate": {"send_rate": 1000, "send_burst": 1000}}


def dm_peers(gates, tokens: dict, names: list[str]) -> list[Peer]:
    """Logged-in DM pairs of ``names`` taken two by two: one side on the first gate, the
    other on the last; peer i connects from ``sources.source(i)``."""
    specs = []
    for i in range(0, len(names), 2):
        a, b = names[i], names[i + 1]
        specs += [(gates[0], a, tokens[a], b, i), (gates[-1], b, tokens[b], a, i + 1)]
    return [Peer(*s) for s in specs]


def add_dm_args(p) -> None:
    p.add_argument("--pairs", type=int, default=50, help="DM pairs measuring send→ack")
    p.add_argument("--rate", type=float, default=200, help="DM msgs/s in total")
    p.add_argument("--seconds", type=float, default=5, help="length of each phase")


def add_cluster_args(p) -> None:
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--gates", type=int, default=1)
    p.add_argument("--zones", type=int, default=1)
