"""gate/fills.py: a session's DM and group pushes never skip a seq. A push past a hole is
held while the gate fetches the missing seqs from the zone, then everything goes out in
order. The bounds, and giving up past them, are tested here too. The gate around it is a
stand-in that records what would go on the bus; the Session is the real one."""
import collections
import itertools

import cluster  # noqa: F401
from cluster.codec import frame, packb
from cluster.config import ChatConf, GateConf
from cluster.envelopes import Rep, Sync
from gate.fills import FILL_TRIES, Fills
from gate.session import Session
from harness import poll_for

CONV = "d:alice:bob"


class Sent:
    def __init__(self):
        self.envs = []

    def send(self, peer, env):
        self.envs.append((peer, env))

    def record(self, *args):
        pass


class StandInGate:
    """What Fills uses of GateNode: config, stats, ids, routing, the bus, mark_dirty."""

    def __init__(self, request_timeout=5.0, outbox_bytes=1 << 20, replay_max=1000):
        self.config = type("Cfg", (), {"chat": ChatConf(replay_max=replay_max)})()
        self.conf = GateConf(request_timeout=request_timeout, outbox_bytes=outbox_bytes)
        self.stats = collections.Counter()
        self.bus = Sent()
        self.name = "gate1"
        self.frames_out = 0
        self.dirty = []
        self._ids = itertools.count(100)

    def new_id(self):
        return next(self._ids)

    def zone_of(self, conv):
        return "zone1"

    def mark_dirty(self, s):
        self.dirty.append(s)


class NoSocket:
    def fileno(self):
        return -1


def setup(**gate_options):
    gate = StandInGate(**gate_options)
    s = Session(7, NoSocket(), None, GateConf(), lambda s: None)
    s.user = "bob"
    return Fills(gate), gate, s


def msg(seq, sender="alice"):
    return {"t": "msg", "conv": CONV, "from": sender, "ts": 1, "cid": f"c{seq}", "body": seq, "seq": seq}


def data(seq, sender="alice"):
    return frame(packb(msg(seq, sender)))


def pushed(s):
    return [f for f in s.outbox.out]


def history(seqs, senders=None):
    senders = senders or {}
    return packb({"t": "history", "conv": CONV, "last_seq": max(seqs, default=0),
                  "msgs": [msg(q, senders.get(q, "alice")) for q in seqs]})


def test_in_order_pushes_go_straight_out_and_repeats_are_dropped():
    fills, gate, s = setup()
    assert fills.offer(s, CONV, 1, data(1)) is True
    assert fills.offer(s, CONV, 2, data(2)) is True
    assert fills.offer(s, CONV, 2, data(2)) is False
    assert pushed(s) == [data(1), data(2)] and gate.bus.envs == [] and len(fills) == 0


def test_a_push_past_a_hole_waits_for_the_missing_seqs_fetched_from_the_zone():
    fills, gate, s = setup()
    s.seen[CONV] = 415
    assert fills.offer(s, CONV, 417, data(417)) is False
    assert fills.offer(s, CONV, 418, data(418)) is False     # behind the hole as well
    assert pushed(s) == []
    [(peer, env)] = gate.bus.envs
    assert peer == "zone1" and isinstance(env, Sync)
    assert (env.gate, env.user, env.conv, env.after, env.limit) == ("gate1", "bob", CONV, 415, 1)
    assert fills.answer(Rep(env.req, history([416]))) is True
    assert pushed(s) == [frame(packb(msg(416))), data(417), data(418)]
    assert s.seen[CONV] == 418 and len(fills) == 0 and gate.dirty == [s]
    assert fills.answer(Rep(999, b"")) is False              # not ours: a client's request


def test_own_messages_count_as_seen_and_are_never_pushed():
    fills, gate, s = setup()
    s.seen[CONV] = 3
    fills.offer(s, CONV, 4, None)                            # the session's own ack
    assert fills.offer(s, CONV, 5, data(5)) is True and gate.bus.envs == []
    fills.offer(s, CONV, 7, data(7))                         # 6 went missing: it was bob's own
    [(_, env)] = gate.bus.envs
    fills.answer(Rep(env.req, history([6], {6: "bob"})))
    assert pushed(s) == [data(5), data(7)] and s.seen[CONV] == 7


def test_the_missing_seq_arriving_late_closes_the_hole_and_the_answer_is_still_kept_from_the_client():
    fills, gate, s = setup()
    s.seen[CONV] = 1
    fills.offer(s, CONV, 3, data(3))
    fills.offer(s, CONV, 2, data(2))                         # a restarted zone delivers it again
    assert pushed(s) == [data(2), data(3)] and len(fills) == 0
    [(_, env)] = gate.bus.envs
    assert fills.answer(Rep(env.req, history([2]))) is False  # ended: requests.answer drops it
    assert pushed(s) == [data(2), data(3)]


def test_no_answer_asks_again_then_pushes_what_it_holds():
    fills, gate, s = setup(request_timeout=0.01)
    s.seen[CONV] = 1
    fills.offer(s, CONV, 3, data(3))
    poll_for(lambda: gate.stats["fill_gave_up"] == 1, 5, "the fill to give up")
    assert len(gate.bus.envs) == FILL_TRIES
    assert pushed(s) == [data(3)] and s.seen[CONV] == 3 and len(fills) == 0
    assert fills.offer(s, CONV, 4, data(4)) is True          # the hole is the client's to sync


def test_an_answer_without_the_missing_seqs_gives_up():
    fills, gate, s = setup()
    s.seen[CONV] = 1
    fills.offer(s, CONV, 3, data(3))
    [(_, env)] = gate.bus.envs
    fills.answer(Rep(env.req, history([])))
    assert pushed(s) == [data(3)] and gate.stats["fill_gave_up"] == 1


def test_an_error_answer_other_than_unavailable_gives_up():
    fills, gate, s = setup()
    s.seen[CONV] = 1
    fills.offer(s, CONV, 3, data(3))
    [(_, env)] = gate.bus.envs
    fills.answer(Rep(env.req, packb({"t": "error", "code": "not_member", "reason": "left"})))
    assert pushed(s) == [data(3)] and len(fills) == 0


def test_a_wide_hole_is_left_to_the_client_to_sync():
    fills, gate, s = setup(replay_max=10)
    s.seen[CONV] = 1
    assert fills.offer(s, CONV, 13, data(13)) is True        # 11 missing, more than replay_max
    assert gate.bus.envs == [] and gate.stats["fill_skipped"] == 1
    assert fills.offer(s, CONV, 13 + 11, data(24)) is False  # 10 missing: fetched
    assert len(gate.bus.envs) == 1


def test_past_the_hold_bound_the_session_gets_what_is_held_in_order():
    fills, gate, s = setup(outbox_bytes=3 * len(data(10)))
    s.seen[CONV] = 1
    for seq in (3, 4, 5):
        fills.offer(s, CONV, seq, data(seq))
    assert pushed(s) == []
    fills.offer(s, CONV, 6, data(6))
    assert pushed(s) == [data(3), data(4), data(5), data(6)] and gate.stats["fill_gave_up"] == 1


def test_a_group_never_seen_starts_at_its_first_push_a_dm_at_one():
    fills, gate, s = setup()
    assert fills.offer(s, "g:guild", 500, b"x") is True      # added to it just now
    assert gate.bus.envs == []
    fills.offer(s, CONV, 3, data(3))                         # a DM starts at seq 1
    [(_, env)] = gate.bus.envs
    assert (env.after, env.limit) == (0, 2)


def test_a_closed_session_ends_its_fill():
    fills, gate, s = setup(request_timeout=0.01)
    s.seen[CONV] = 1
    fills.offer(s, CONV, 3, data(3))
    s.closed = True
    poll_for(lambda: len(fills.by_session) == 0, 5, "the fill of a closed session to end")
    assert len(gate.bus.envs) == 1
