"""A gate's report for the operator view (sent to center once a second, ``cluster/stats.py``).

Cumulative since the gate started: ``frames_in`` (client requests decoded, TCP and
WebSocket), ``frames_out`` (frames queued for clients: replies, DMs, room and sys
deliveries, offline replay), ``live_dropped`` (room/sys frames dropped by slow consumers,
sessions open or closed: ``closed_dropped`` keeps those of closed sessions), ``held_dropped`` (live DMs left out behind an offline replay),
``kicks`` by reason, ``timeouts`` and ``refused_per_ip`` (connections past
``gate.max_connections_per_ip``). Current sizes: ``sessions`` (connections),
``users`` (logged in), ``ws_sessions``, ``rooms`` (rooms with local members),
``room_members``, ``passive_viewers`` (of them, passive: gate/passive.py), ``digests``
(digest frames written) and ``pending`` (requests awaiting a reply).
"""
from __future__ import annotations

from cluster.metrics import bus_families
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
        "passive_viewers": sum(len(v) for v in gate.rooms.digests.viewers.values()),
        "digests": gate.rooms.digests.sent,
        "frames_in": gate.frames_in, "frames_out": gate.frames_out,
        "live_dropped": gate.closed_dropped + sum(s.dropped for s in sessions),
        "held_dropped": gate.stats["held_dropped"], "timeouts": gate.stats["timeouts"],
        "refused_per_ip": gate.stats["refused_per_ip"],
        "kicks": {k[len(KICKED):]: n for k, n in gate.stats.items() if k.startswith(KICKED)},
        "pending": len(gate.requests), **bus_counters(gate.bus),
        "ack_counts": list(gate.ack_seconds.counts), "deliveries": gate.frames_out - gate.replies,
        "errors": dict(gate.errors),
    }


def metrics(gate, fam) -> None:
    """The gate's Prometheus families (cluster/metrics.py), from the same counters."""
    c = counters(gate)
    fam.gauge("sessions", "client connections (TCP and WebSocket)", c["sessions"])
    fam.gauge("users", "logged-in users", c["users"])
    fam.gauge("websocket_sessions", "WebSocket connections", c["ws_sessions"])
    fam.gauge("rooms", "rooms with a member on this gate", c["rooms"])
    fam.gauge("passive_viewers", "room members watching passively (one digest per window)", c["passive_viewers"])
    fam.gauge("requests_pending", "requests forwarded and awaiting their answer", c["pending"])
    fam.gauge("draining", "1 while zonechat drain moves this gate's sessions away", int(gate.draining))
    fam.counter("frames_in", "client frames decoded", c["frames_in"])
    fam.counter("frames_out", "frames queued for clients", c["frames_out"])
    fam.counter("deliveries", "messages queued for clients: DMs, group, room and sys pushes, replay",
                gate.frames_out - gate.replies)
    fam.counter("digests", "digests written to passive room viewers", c["digests"])
    fam.counter("dropped", "frames not delivered, by policy: live (room/sys to a slow reader), "
                "held (live DMs past the replay bound, filled later)",
                {"live": c["live_dropped"], "held": c["held_dropped"]}, label="policy")
    fam.counter("kicks", "sessions kicked, by reason", c["kicks"], label="reason")
    fam.counter("errors", "error frames sent to clients, by code", dict(gate.errors), label="code")
    fam.counter("request_timeouts", "requests answered unavailable for want of an answer", c["timeouts"])
    fam.counter("refused_per_ip", "connections refused past gate.max_connections_per_ip",
                c["refused_per_ip"])
    fam.histogram("ack_seconds", "a send forwarded to its zone until its answer (ack)", gate.ack_seconds)
    bus_families(fam, gate.bus)


def ready_checks(gate) -> dict:
    """A gate can serve with a live link to center and to every zone, and is not draining."""
    return {"center": gate.bus.linked(gate.center_node()),
            "zones": all(gate.bus.linked(z) for z in gate.zone_nodes()),
            "accepting": not gate.draining}
