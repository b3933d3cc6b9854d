"""Rooms and system broadcasts on one gate: local members, once-per-gate fan-out.

Center sends a room or ``sys`` message once per interested gate (``rdlv``); the gate
frames it once and sends the same bytes to every local member, several messages per
send() when they come close together (a room fans out at most once per window, which
grows with its audience and with what its fan-outs cost, up to 50 ms; a quiet room's
message goes out in the tick it came). A member that falls behind gets a live queue whose
oldest frames drop first. Passive viewers (gate/passive.py) are members but no fan-out
targets: they get a digest per window. The gate tells center its member count
per room whenever it changes, so center knows which gates need which rooms and can
answer member counts without a member list.
"""
from __future__ import annotations

import time

import gevent

from cluster.codec import frame
from cluster.envelopes import RoomCount
from gate.passive import Digests

WINDOW_PER_MEMBER = 20e-6     # seconds of fan-out window per local member, at most
DUTY = 3.0                    # ... and at most DUTY x what the room's fan-outs take
MAX_WINDOW = 0.05             # never hold a room message longer than this


def fanout_window(members: int, cost: float) -> float:
    """Seconds between two fan-outs of a room with ``members`` local targets whose
    fan-outs take ``cost`` seconds (smoothed)."""
    return min(MAX_WINDOW, members * WINDOW_PER_MEMBER, DUTY * cost)


def smoothed(previous: float | None, took: float) -> float:
    """The fan-out cost a room goes by: half the last one, half the history."""
    return took if previous is None else (previous + took) / 2


class Rooms:
    def __init__(self, gate):
        self.gate = gate
        self.members: dict = {}      # room -> {sid: Session}, passive viewers included
        self.active: dict = {}       # room -> {sid: Session} the fan-out targets
        self.digests = Digests(gate)
        self.dropped = 0
        self.pending: dict = {}      # room -> [(seq, record, sender)] not fanned out yet
        self.last_flush: dict = {}   # room -> monotonic time of its last fan-out
        self.cost: dict = {}         # room -> seconds its fan-outs take (smoothed)
        self.timers: dict = {}       # room -> the libev timer of its next fan-out
        self._ws: dict = {}          # per-message WebSocket encodings, this flush only

    def counts(self) -> dict:
        return {room: len(m) for room, m in self.members.items()}

    def join(self, s, room: str, passive: bool = False) -> None:
        """A member, active or passive (a join of a joined room switches its mode)."""
        local = self.members.setdefault(room, {})
        new = s.sid not in local
        if new:
            local[s.sid] = s
            s.rooms.add(room)
        if passive:
            self.active.get(room, {}).pop(s.sid, None)
            self.digests.add(s, room)
        else:
            self.activate(s, room)
        if new:
            self._count_changed(room)

    def activate(self, s, room: str):
        """The session gets the room's messages again: its passive position (or None)."""
        self.active.setdefault(room, {})[s.sid] = s
        return self.digests.remove(s, room)

    def back_to_passive(self, s, room: str, position: int) -> None:
        """A failed focus: passive again at ``position``, what was held for it dropped."""
        s.room_hold.pop(room, None)
        self.join(s, room, passive=True)
        self.digests.placed(s, room, position)

    def leave(self, s, room: str) -> None:
        local = self.members.get(room)
        s.rooms.discard(room)
        s.room_hold.pop(room, None)
        s.room_floor.pop(room, None)
        self.digests.remove(s, room)
        active = self.active.get(room)
        if active is not None and active.pop(s.sid, None) is not None and not active:
            del self.active[room]
        if local is None or local.pop(s.sid, None) is None:
            return
        if not local:
            del self.members[room]
            self.last_flush.pop(room, None)
            self.cost.pop(room, None)
        self._count_changed(room)

    def leave_all(self, s) -> None:
        for room in list(s.rooms):
            self.leave(s, room)

    def _count_changed(self, room: str) -> None:
        gate = self.gate
        gate.bus.send(gate.center_node(), RoomCount(gate.name, room, len(self.members.get(room, ()))))

    def joined(self, s, room: str, last_seq: int) -> None:
        """The `joined` reply went out: release what arrived meanwhile, past last_seq (a
        passive viewer's digests start there)."""
        if room in s.passive:
            self.digests.placed(s, room, last_seq)
            return
        held = s.room_hold.pop(room, None)
        for seq, data in held or ():
            if seq > last_seq:
                s.queue_live(data)
        if held:
            self.gate.mark_dirty(s)
        # `joined` came straight from the zone; live messages it already holds in `recent`
        # may still be on their way through center: drop those when they come
        s.room_floor[room] = last_seq

    def deliver(self, conv: str, seq: int, record: bytes, sender: str) -> None:
        """Queue one room/sys message; a room's messages fan out together (``flush_room``)."""
        self.digests.offer(conv, seq, record, sender)
        entries = self.pending.get(conv)
        if entries is None:
            entries = self.pending[conv] = []
            self._schedule(conv)
        entries.append((seq, record, sender))

    def window(self, conv: str) -> float:
        """A room fans out at most once per window: the smaller of what its audience
        suggests (each fan-out costs a send() per member, so a big room batches more
        messages per send) and DUTY times what its fan-outs take now (a cheap fan-out is
        not held the audience's full window), never past MAX_WINDOW. A message after a
        quiet spell goes out in the tick it came."""
        members = len(self.gate.users) if conv == "sys" else len(self.active.get(conv, ()))
        return fanout_window(members, self.cost.get(conv, 0.0))

    def _schedule(self, conv: str) -> None:
        loop = gevent.get_hub().loop
        wait = self.last_flush.get(conv, 0.0) + self.window(conv) - time.monotonic()
        if wait <= 0:
            loop.run_callback(self.flush_room, conv)      # idle room: out at the end of this tick
            return
        timer = self.timers[conv] = loop.timer(wait)
        timer.start(self.flush_room, conv)

    def flush_room(self, conv: str) -> None:
        """Frame every pending message once and join them once; a member with nothing else
        pending gets the joined bytes in one send() (the fast path)."""
        self.timers.pop(conv, None)
        entries = self.pending.pop(conv, None)
        started = self.last_flush[conv] = time.monotonic()
        if not entries:
            return
        counts = self.fan_out(conv, entries)
        took = time.monotonic() - started
        self.cost[conv] = smoothed(self.cost.get(conv), took)
        for (_seq, record, _sender), count in zip(entries, counts):
            if count:
                self.gate.frames_out += count
                self.gate.bus.record("out", None, None, record, count)

    def targets(self, conv: str):
        if conv == "sys":
            return list(self.gate.users.values())
        return list(self.active.get(conv, {}).values())

    def fan_out(self, conv: str, entries: list) -> list:
        self._ws = {}
        frames = [frame(record) for _seq, record, _sender in entries]
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        senders = {sender for _seq, _record, sender in entries}
        counts, fast = [0] * len(entries), 0
        for s in self.targets(conv):
            if (s.tcp and s.idle() and s.user not in senders and conv not in s.room_hold
                    and (not s.blocked or s.blocked.isdisjoint(senders))
                    and (not s.room_floor or conv not in s.room_floor)):
                fast += s.send_now(data, frames)
            else:
                self.one_by_one(s, conv, entries, frames, counts)
        if conv == "sys":
            self.hold_for_logins(entries, frames)
        return [c + fast for c in counts]

    def hold_for_logins(self, entries: list, frames: list) -> None:
        """A broadcast during a login: the welcome may not count it yet, so hold it for
        the session (released after the welcome, above welcome.convs.sys)."""
        for s in list(self.gate.logging_in.values()):
            for (seq, record, _sender), data in zip(entries, frames):
                self.gate.delivery.hold(s, "sys", seq, data if s.tcp else s.encode_cached(record, {}))

    def one_by_one(self, s, conv: str, entries: list, frames: list, counts: list) -> None:
        """The slow path: senders, blocks, holds, WebSocket encodings, a busy outbox."""
        hold = s.room_hold.get(conv)
        floor = s.room_floor.pop(conv, 0) if s.room_floor else 0
        if floor and entries[-1][0] <= floor:
            s.room_floor[conv] = floor          # nothing new yet: keep filtering
        for k, ((seq, record, sender), data) in enumerate(zip(entries, frames)):
            if s.user == sender or sender in s.blocked or seq <= floor:
                continue
            out = data if s.tcp else s.encode_cached(record, self._ws_cache(k))
            if hold is not None:
                hold.append((seq, out))
                continue
            before = s.dropped
            s.queue_live(out)
            self.dropped += s.dropped - before
            counts[k] += 1
        if hold is None:
            self.gate.mark_dirty(s)

    def _ws_cache(self, k: int) -> dict:
        return self._ws.setdefault(k, {})
