"""Draining a gate (``zonechat drain GATE --over 30s``): NATS's lame-duck mode.

Center's admin API sends the gate a ``Drain`` envelope; the gate then

1. closes its listening sockets at once (TCP and HTTP/WebSocket): a new connection is
   refused by the kernel, the open ones stay; ``draining`` is set, so the supervisor's
   ``/readyz`` calls the gate not ready and a load balancer sends nobody new;
2. ends its sessions, logged in or still logging in, with ``kicked{reason: "moving",
   gates: [{tcp, ws}...], retry_ms}`` (the other gates' addresses: ``gate_addresses``) on
   a paced ``schedule``: session k of N at ``k * over / N`` seconds, in batches every
   ``TICK``, so the sessions come back elsewhere at about N/over per second instead of
   all in the same second. ``retry_ms`` is the time between two kicks (at least a tick,
   at most ``RETRY_MS_MAX``: ``retry_hint_ms``); the client waits a random time within it,
   which spreads a tick's batch over the tick and keeps the arrivals on the drain's pace
   (a wider random wait lets them bunch: in the rolling-restart test, 30 sessions over 2 s,
   a 100-500 ms hint put 17-19 reconnects into one second of a 15/s drain, this one 16-17);
3. waits (at most ``FLUSH_WAIT``) for the last kicks to be written and the sockets to
   close, logs ``gate1 drained N sessions over Xs`` and stops with exit code 0. The
   supervisor restarts any child that exits, so the gate comes back fresh and empty.

``schedule``, ``retry_hint_ms``, ``gate_addresses`` and ``moving_body`` are pure and unit-tested
(tests/unit/test_drain_pacing.py); ``begin`` and ``Drain`` do the gate's side. A second
``Drain`` while one runs only answers how many sessions are left. SIGTERM during a drain
is a plain stop: ``GateNode.shutdown`` kicks what is left with ``kicked{shutdown}``.
"""
from __future__ import annotations

import time

import gevent

from cluster.codec import packb

TICK = 0.05                 # seconds between two batches of kicks
FLUSH_WAIT = 3.0            # seconds the last kicked sessions get to read their kick
RETRY_MS_MAX = 500          # the longest retry_ms hint: a drain over 0 s (everyone at once) gets it


def schedule(n: int, over: float, tick: float = TICK) -> list[tuple[float, int]]:
    """When to kick ``n`` sessions spread evenly over ``over`` seconds: ``[(seconds after
    the start, how many then), ...]``, one entry per ``tick`` that has any. Session k
    (0-based) leaves at ``k * over / n``, so the first leaves at once and the last at
    ``over * (n - 1) / n``; ``over`` 0 kicks everyone at once."""
    if n <= 0:
        return []
    if over <= 0 or tick <= 0:
        return [(0.0, n)]
    counts: dict[int, int] = {}
    for k in range(n):
        slot = int(k * over / n / tick + 1e-9)
        counts[slot] = counts.get(slot, 0) + 1
    return [(slot * tick, count) for slot, count in sorted(counts.items())]


def retry_hint_ms(n: int, over: float, tick: float = TICK) -> int:
    """The ``retry_ms`` of a drain of ``n`` sessions over ``over`` seconds: the time between
    two kicks, at least ``tick`` (a batch spreads over its tick) and at most RETRY_MS_MAX."""
    if n <= 0 or over <= 0:
        return RETRY_MS_MAX
    return int(round(min(max(over / n, tick), RETRY_MS_MAX / 1000) * 1000))


def host_port(host: str, port: int) -> str:
    """``host:port``, an IPv6 address bracketed: ``[::1]:7700``."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def gate_addresses(config, me: str) -> list[dict]:
    """Every gate of the config but ``me``, in name order, as clients reach it: ``{tcp,
    ws}`` from its ``public_tcp`` / ``public_ws`` keys, else host:tcp_port and host:ws_port
    (``ws`` only when the gate has a ws_port or a public_ws)."""
    out = []
    for gate in sorted(config.nodes_of("gate"), key=lambda n: n.name):
        if gate.name == me:
            continue
        entry = {"tcp": gate.public_tcp or host_port(gate.host, gate.tcp_port)}
        ws = gate.public_ws or (host_port(gate.host, gate.ws_port) if gate.ws_port else None)
        if ws:
            entry["ws"] = ws
        out.append(entry)
    return out


def moving_body(gates: list[dict], retry_ms: int) -> dict:
    """The ``kicked{moving}`` body: where to go, and the ``retry_ms`` to wait at most."""
    return {"t": "kicked", "reason": "moving", "gates": gates, "retry_ms": retry_ms}


def begin(gate, over: float) -> dict:
    """The gate's answer to a ``Drain``: start draining (once) and say how many sessions
    it is moving (``already``: a drain was running; ``sessions`` is what it has left) and
    ``retry_ms``, the longest a moved client waits before it reconnects elsewhere."""
    answer = {"t": "ok", "sessions": len(gate.sessions), "over": over, "already": True,
              "retry_ms": RETRY_MS_MAX}
    if gate.draining:
        return answer
    gate.draining = True
    close_listeners(gate)
    drain = Drain(gate, over)
    gate.spawn(drain.run, name="drain_worker")
    return {**answer, "sessions": drain.total, "already": False, "retry_ms": drain.retry_ms}


def close_listeners(gate) -> None:
    """No new connections from now on (the kernel refuses them); open ones stay."""
    if gate.server is not None:
        gate.server.close()
    if gate.web is not None:
        gate.web.close()


class Drain:
    """One drain of one gate: the sessions of the moment, kicked on the schedule."""

    def __init__(self, gate, over: float):
        self.gate, self.over = gate, max(0.0, float(over))
        self.sessions = sorted(gate.sessions.values(), key=lambda s: s.sid)
        self.total = len(self.sessions)
        self.gates = gate_addresses(gate.config, gate.name)
        self.retry_ms = retry_hint_ms(self.total, self.over)
        self.body = packb(moving_body(self.gates, self.retry_ms))
        self.kicked = 0

    def run(self) -> None:
        """drain_worker: the paced kicks, the stragglers, the flush, then the stop."""
        gate, started = self.gate, time.monotonic()
        gate.log.info("gate %s draining: moving %d sessions to %s over %gs", gate.name, self.total,
                      ", ".join(g["tcp"] for g in self.gates) or "no other gate", self.over)
        done = 0
        for at, count in schedule(self.total, self.over):
            gevent.sleep(max(0.0, started + at - time.monotonic()))
            for s in self.sessions[done:done + count]:
                self.kick(s)
            done += count
        for s in list(gate.sessions.values()):   # handshakes that were under way
            self.kick(s)
        deadline = time.monotonic() + FLUSH_WAIT
        while gate.sessions and time.monotonic() < deadline:
            gevent.sleep(TICK)
        gate.log.info("%s drained %d sessions over %.1fs", gate.name, self.kicked,
                      time.monotonic() - started)
        gate.exit_code = 0
        gate.stop()

    def kick(self, s) -> None:
        if s.closing or s.closed:
            return
        self.kicked += 1
        self.gate.kick(s, "moving", self.body)
