"""A gate's report for the operator view (sent to center once a second, ``cluster/stats.py``).

Cumulative since the gate started: ``frames_in`` (client requests decoded, TCP and
WebSocket), ``frames_out`` (frames queued for clients: replies, DMs, room and sys
deliveries, offline replay), ``live_dropped`` (room/sys frames dropped by slow consumers,
sessions open or closed: ``closed_dropped`` keeps those of closed sessions), ``held_dropped`` (live DMs left out behind an offline replay),
``kicks`` by reason, ``timeouts`` and ``refused_per_ip`` (connections past
``gate.max_connections_per_ip``). Current sizes: ``sessions`` (connections),
``users`` (logged in), ``ws_sessions``, ``rooms`` (rooms with local members),
``room_members`` and ``pending`` (requests awaiting a reply).
"""
from __future__ import annotations

from cluster.stats import bus_counters, report_loop

KICKED = "kicked_"


def start(gate) -> None:
    """Spawn the gate's once-a-second report to center (an owned greenlet)."""
    gate.spawn(report_loop, gate, lambda: counters(gate), name="stats_reporter")


def counters(gate) -> dict:
    sessions = list(gate.sessions.values())
    members = gate.rooms.members
    return {
        "sessions": len(sessions), "users": len(gate.users),
        "ws_sessions": sum(1 for s in sessions if not s.tcp),
        "rooms": len(members), "room_members": sum(len(m) for m in members.values()),
        "frames_in": gate.frames_in, "frames_out": gate.frames_out,
        "live_dropped": gate.closed_dropped + sum(s.dropped for s in sessions),
        "held_dropped": gate.stats["held_dropped"], "timeouts": gate.stats["timeouts"],
        "refused_per_ip": gate.stats["refused_per_ip"],
        "kicks": {k[len(KICKED):]: n for k, n in gate.stats.items() if k.startswith(KICKED)},
        "pending": len(gate.requests), **bus_counters(gate.bus),
    }
