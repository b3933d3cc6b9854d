"""A zone's Prometheus families and readiness (cluster/metrics.py), from its counters."""
from __future__ import annotations

from cluster.metrics import bus_families, redis_answers

KINDS = {"d": "dm", "g": "group", "r": "room", "s": "sys"}     # conversation id prefixes


def metrics(zone, fam) -> None:
    stored = {name: zone.stored.get(prefix, 0) for prefix, name in KINDS.items()}
    fam.counter("messages_stored", "messages stored (resends answered from dedup excluded), by "
                "conversation kind", stored, label="kind")
    fam.counter("errors", "requests refused, by error code", dict(zone.errors), label="code")
    fam.counter("redis_errors", "store calls that failed (Redis unreachable or erroring)",
                zone.redis_errors)
    fam.histogram("store_seconds", "one store call of a tick (every send of it, one round trip)",
                  zone.store_seconds)
    fam.gauge("queue", "requests waiting for the next tick", len(zone.queue))
    fam.gauge("slots", "conversation slots this zone owns", len(zone.table.slots_of(zone.name)))
    fam.counter("fenced", "stores refused because the slot moved to another zone", zone.fenced)
    fam.counter("live_dropped", "group read receipts and typing dropped at a full queue (zone/live.py)",
                zone.live.dropped)
    bus_families(fam, zone.bus)


def ready_checks(zone) -> dict:
    """A zone can serve with Redis answering and a slot to serve, or none because center
    handed them to others (a table of center's, version > 1)."""
    return {"redis": redis_answers(zone.store),
            "slots": bool(zone.table.slots_of(zone.name)) or zone.table.version > 1}
