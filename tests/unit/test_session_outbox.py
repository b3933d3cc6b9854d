"""The session outbox: frame boundaries survive partial writes; the bounds and policies."""
import cluster  # noqa: F401
from cluster.config import GateConf
from gate.session import Session


class ShortWrites:
    """A socket whose send() accepts at most ``room`` bytes per call."""

    def __init__(self, room):
        self.room, self.wire = room, b""

    def send(self, data, flags=0, timeout=None):
        if not self.room:
            raise BlockingIOError()
        n = min(self.room, len(data))
        self.wire += bytes(data[:n])
        return n

    def fileno(self):
        return -1

    def shutdown(self, how):
        pass

    def close(self):
        pass


def session(room, limit=1000):
    kicked = []
    conf = GateConf(outbox_bytes=limit)
    s = Session(1, ShortWrites(room), None, conf, kicked.append)
    return s, kicked


def test_partial_write_keeps_the_rest_frame_by_frame():
    s, _ = session(room=5)
    for f in (b"AAAA", b"BBBB", b"CCCC"):
        s.queue(f)
    assert s.outbox.send_some(s.sock) is False
    assert s.sock.wire == b"AAAAB" and s.outbox.out == [b"BBB", b"CCCC"] and s.outbox.head_left == 3
    s.outbox.cut_to_whole_frames()   # a kick keeps only the rest of the frame on the wire
    assert s.outbox.out == [b"BBB"]
    s.sock.room = 100
    assert s.outbox.send_some(s.sock) is True and s.sock.wire == b"AAAABBBB" and s.outbox.head_left == 0


def test_cut_with_nothing_partly_sent_drops_everything():
    s, _ = session(room=4)
    for f in (b"AAAA", b"BBBB"):
        s.queue(f)
    s.outbox.send_some(s.sock)
    assert s.outbox.head_left == 0 and s.outbox.out == [b"BBBB"]
    s.outbox.cut_to_whole_frames()
    assert s.outbox.out == []


def test_durable_overflow_kicks_slow_and_live_overflow_drops_oldest():
    s, kicked = session(room=0, limit=10)
    assert s.queue(b"x" * 8) and not s.queue(b"y" * 8)
    assert kicked == [s]
    for i in range(5):
        s.queue_live(bytes([65 + i]) * 4)
    assert list(s.outbox.live) == [b"DDDD", b"EEEE"] and s.dropped == 3


def test_nothing_is_queued_once_closing():
    s, _ = session(room=100)
    s.closing = True
    assert s.queue(b"late") is False
    s.queue_live(b"late")
    assert not s.outbox.out and not s.outbox.live


def test_room_fast_path_keeps_a_cut_frame_and_requeues_the_rest_as_live():
    s, _ = session(room=6)
    frames = [b"AAAA", b"BBBB", b"CCCC"]
    assert s.send_now(b"".join(frames), frames) == 1
    assert s.sock.wire == b"AAAABB" and s.outbox.out == [b"BB"] and s.outbox.head_left == 2
    assert list(s.outbox.live) == [b"CCCC"] and s.draining
    s.sock.room = 100
    assert s.outbox.send_some(s.sock) is True and s.sock.wire == b"AAAABBBBCCCC"
    s.closed = True                  # the drain greenlet it started ends quietly
