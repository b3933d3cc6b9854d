"""Rooms and system broadcasts on one gate: local members, once-per-gate fan-out.

Center sends a room or ``sys`` message once per interested gate (``rdlv``); the gate
frames it once and queues the same bytes for every local member (live queue: the oldest
frames drop first when a member falls behind). The gate tells center its member count
per room whenever it changes, so center knows which gates need which rooms and can
answer member counts without a member list.
"""
from __future__ import annotations

from cluster.codec import frame


class Rooms:
    def __init__(self, gate):
        self.gate = gate
        self.members: dict = {}      # room -> {sid: Session}
        self.dropped = 0

    def counts(self) -> dict:
        return {room: len(m) for room, m in self.members.items()}

    def join(self, s, room: str) -> None:
        local = self.members.setdefault(room, {})
        if s.sid not in local:
            local[s.sid] = s
            s.rooms.add(room)
            self._count_changed(room)

    def leave(self, s, room: str) -> None:
        local = self.members.get(room)
        s.rooms.discard(room)
        s.room_hold.pop(room, None)
        if local is None or local.pop(s.sid, None) is None:
            return
        if not local:
            del self.members[room]
        self._count_changed(room)

    def leave_all(self, s) -> None:
        for room in list(s.rooms):
            self.leave(s, room)

    def _count_changed(self, room: str) -> None:
        gate = self.gate
        gate.bus.send(gate.center_node(), "roomcount", gate.name, room, len(self.members.get(room, ())))

    def joined(self, s, room: str, last_seq: int) -> None:
        """The `joined` reply went out: release what arrived meanwhile, past last_seq."""
        held = s.room_hold.pop(room, None)
        for seq, data in held or ():
            if seq > last_seq:
                s.queue_live(data)
        if held:
            self.gate.mark_dirty(s)

    def deliver(self, conv: str, seq: int, record: bytes, sender: str) -> int:
        """Fan one message out to the local members; returns how many got it."""
        if conv == "sys":
            targets = self.gate.users.values()
        else:
            local = self.members.get(conv)
            if not local:
                return 0
            targets = local.values()
        data, count, mark = frame(record), 0, self.gate.mark_dirty
        for s in targets:
            if s.user == sender or sender in s.blocked:
                continue
            hold = s.room_hold.get(conv)
            if hold is not None:
                hold.append((seq, data))
                continue
            before = s.dropped
            s.queue_live(data)
            self.dropped += s.dropped - before
            mark(s)
            count += 1
        return count
