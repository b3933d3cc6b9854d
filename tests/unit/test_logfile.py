"""log.logfile: writer, rotation, reader, torn tails and tail's formatting."""
import errno
import os

import msgpack
import pytest
from hypothesis import given, settings, strategies as st

from log import logfile
from log import tail as logtail
from log.logfile import LogWriter, Record, encode_record

TS = 1_700_000_000_123          # 2023-11-14T22:13:20.123Z


def body(**fields) -> bytes:
    return msgpack.packb(fields, use_bin_type=True)


def rec(i: int, user: str = "alice") -> list:
    return [TS + i, "gate1", "in", i, user, body(t="send", conv="d:alice:bob", cid=f"c{i}")]


def write_records(directory, records, rotate_bytes=1 << 20, keep_files=20) -> LogWriter:
    writer = LogWriter(str(directory), rotate_bytes, keep_files)
    writer.open()
    writer.write([encode_record(r) for r in records])
    writer.close()
    return writer


def test_round_trip_keeps_every_kind_and_bytes(tmp_path):
    records = [
        rec(1),
        [TS, "gate1", "out", None, None, body(t="sys", text="hi"), 120],
        [TS, "zone1", "store", "r:lobby", 7, "bob", "c9", TS],
        [TS, "center1", "admin", "kick", {"user": "bob", "reason": "spam"}],
        [TS, "gate2", "stats", {"log_drops": 3, "sessions": 10}],
        [TS, "zone2", "weird", b"\x00\x01", [1, 2]],
    ]
    write_records(tmp_path, records)
    got = list(logfile.iter_records(str(tmp_path)))
    assert [[r.ts_ms, r.node, r.kind, *r.fields] for r in got] == records


def test_one_write_per_batch(tmp_path, monkeypatch):
    writer = LogWriter(str(tmp_path), 1 << 20, 5)
    writer.open()
    calls = []
    real_write = os.write
    monkeypatch.setattr(logfile.os, "write", lambda fd, data: calls.append(1) or real_write(fd, data))
    writer.write([encode_record(rec(i)) for i in range(500)])
    assert len(calls) == 1
    writer.close()


def write_one_by_one(directory, count: int, rotate_bytes: int, keep_files: int) -> None:
    writer = LogWriter(str(directory), rotate_bytes, keep_files)
    writer.open()
    for i in range(count):
        writer.write([encode_record(rec(i))])
    writer.close()


def test_rotation_keeps_newest_files_in_order(tmp_path):
    write_one_by_one(tmp_path, 300, 1000, 3)
    files = logfile.list_files(str(tmp_path))
    assert len(files) == 3 and files[0][0] > 1
    biggest = len(encode_record(rec(299)))
    for _, path in files[:-1]:
        assert 1000 <= os.path.getsize(path) < 1000 + biggest
    seqs = [r.fields[0] for r in logfile.iter_records(str(tmp_path))]
    assert seqs == list(range(seqs[0], 300))


def test_keep_files_0_deletes_no_file(tmp_path):
    write_one_by_one(tmp_path, 300, 1000, 0)
    assert [n for n, _ in logfile.list_files(str(tmp_path))][0] == 1     # the first file is still there
    assert [r.fields[0] for r in logfile.iter_records(str(tmp_path))] == list(range(300))


def test_one_big_batch_is_split_across_files(tmp_path):
    write_records(tmp_path, [rec(i) for i in range(100)], rotate_bytes=2000, keep_files=50)
    files = logfile.list_files(str(tmp_path))
    assert len(files) > 3
    assert [r.fields[0] for r in logfile.iter_records(str(tmp_path))] == list(range(100))


def test_reopen_continues_the_newest_file(tmp_path):
    first = write_records(tmp_path, [rec(1)])
    second = write_records(tmp_path, [rec(2)])
    assert first.number == second.number == 1
    assert [r.fields[0] for r in logfile.iter_records(str(tmp_path))] == [1, 2]


def test_torn_tail_is_skipped_then_cut_on_reopen(tmp_path):
    writer = write_records(tmp_path, [rec(1), rec(2)])
    with open(writer.path, "ab") as fh:
        fh.write(encode_record(rec(3))[:-5])
    assert [r.fields[0] for r in logfile.iter_records(str(tmp_path))] == [1, 2]
    write_records(tmp_path, [rec(4)])
    assert [r.fields[0] for r in logfile.iter_records(str(tmp_path))] == [1, 2, 4]


def test_corrupt_record_stops_that_file_only(tmp_path):
    writer = LogWriter(str(tmp_path), 1 << 20, 5)
    writer.open()
    writer.write([encode_record(rec(1)), encode_record(rec(2))])
    writer.rotate()
    writer.write([encode_record(rec(3))])
    writer.close()
    first = logfile.list_files(str(tmp_path))[0][1]
    data = bytearray(open(first, "rb").read())
    data[-3] ^= 0xFF                                   # CRC mismatch in record 2
    open(first, "wb").write(bytes(data))
    assert [r.fields[0] for r in logfile.iter_records(str(tmp_path))] == [1, 3]


def test_failed_write_cuts_back_to_last_whole_record(tmp_path, monkeypatch):
    writer = LogWriter(str(tmp_path), 1 << 20, 5)
    writer.open()
    writer.write([encode_record(rec(1))])
    real_write = os.write
    calls = []

    def half_then_full(fd, data):
        calls.append(1)
        if len(calls) == 1:
            return real_write(fd, bytes(data[:10]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(logfile.os, "write", half_then_full)
    with pytest.raises(OSError):
        writer.write([encode_record(rec(2))])
    monkeypatch.setattr(logfile.os, "write", real_write)
    writer.write([encode_record(rec(3))])
    writer.close()
    assert [r.fields[0] for r in logfile.iter_records(str(tmp_path))] == [1, 3]


@settings(max_examples=60, deadline=None)
@given(garbage=st.binary(max_size=64))
def test_any_garbage_tail_never_breaks_the_reader(tmp_path_factory, garbage):
    directory = tmp_path_factory.mktemp("garbage")
    writer = write_records(directory, [rec(1), rec(2)])
    with open(writer.path, "ab") as fh:
        fh.write(garbage)
    got = [r.fields[0] for r in logfile.iter_records(str(directory))]
    assert got[:2] == [1, 2]


def test_foreign_files_are_ignored(tmp_path):
    (tmp_path / "traffic-00000001.log").write_bytes(b"not ours at all")
    (tmp_path / "notes.txt").write_text("hello")
    write_records(tmp_path, [rec(5)])
    assert [n for n, _ in logfile.list_files(str(tmp_path))] == [1, 2]
    assert [r.fields[0] for r in logfile.iter_records(str(tmp_path))] == [5]


# -- tail -------------------------------------------------------------------------------
def tail_lines(data_dir, **kwargs) -> list[str]:
    lines = []
    logtail.tail(str(data_dir), out=lines.append, **kwargs)
    return lines


def test_tail_formats_one_line_per_kind(tmp_path):
    write_records(tmp_path / "log", [
        [TS, "gate1", "in", 17, "alice", body(t="send", rid=4, cid="x", conv="d:alice:bob")],
        [TS, "gate1", "out", None, None, body(t="msg", conv="r:lobby", seq=9), 120],
        [TS, "zone1", "store", "d:alice:bob", 12, "alice", "x", TS],
        [TS, "center1", "admin", "kick", {"user": "bob", "reason": "spam"}],
        [TS, "gate2", "stats", {"sessions": 10, "log_drops": 3}],
        [TS, "zone2", "weird", b"\x00\x01", "two words"],
    ])
    assert tail_lines(tmp_path) == [
        "2023-11-14T22:13:20.123Z gate1 in alice send conv=d:alice:bob cid=x rid=4 sid=17",
        "2023-11-14T22:13:20.123Z gate1 out - msg conv=r:lobby seq=9 sid=- recipients=120",
        "2023-11-14T22:13:20.123Z zone1 store alice conv=d:alice:bob seq=12 cid=x",
        "2023-11-14T22:13:20.123Z center1 admin bob kick user=bob reason=spam",
        "2023-11-14T22:13:20.123Z gate2 stats - log_drops=3 sessions=10",
        "2023-11-14T22:13:20.123Z zone2 weird - <2 bytes> 'two words'",
    ]


def test_tail_filters_by_user_and_keeps_the_last_n(tmp_path):
    records = [rec(i, "alice" if i % 2 else "bob") for i in range(50)]
    records.append([TS, "zone1", "store", "d:alice:bob", 1, "alice", "c99", TS])
    write_records(tmp_path / "log", records, rotate_bytes=600)
    assert len(logfile.list_files(str(tmp_path / "log"))) > 3
    lines = tail_lines(tmp_path, user="alice", n=3)
    assert [line.split()[3] for line in lines] == ["alice"] * 3
    assert "cid=c47" in lines[0] and "cid=c49" in lines[1] and " store " in lines[2]
    assert len(tail_lines(tmp_path, n=20)) == 20
    assert tail_lines(tmp_path, n=0) == []
    assert tail_lines(tmp_path, user="nobody") == []


def test_tail_never_prints_secrets_or_raw_newlines(tmp_path):
    write_records(tmp_path / "log", [
        [TS, "gate1", "in", 1, None, body(t="login", user="alice", password="hunter2",
                                          token="tok-123", v=1)],
        [TS, "gate1", "in", 1, "alice", body(t="send", conv="r:a", body={"text": "a\nb",
                                                                          "Secret": "s3"})],
        [TS, "center1", "admin", "login", {"user": "bob", "api_token": "tok-456"}],
    ])
    lines = tail_lines(tmp_path)
    text = "\n".join(lines)
    assert len(lines) == 3
    for secret in ("hunter2", "tok-123", "tok-456", "s3"):
        assert secret not in text
    assert "password=***" in lines[0] and "token=***" in lines[0]
    assert r"text='a\nb'" in lines[1]


def test_tail_survives_undecodable_bodies_and_missing_dir(tmp_path):
    assert logtail.tail(str(tmp_path / "nothing"), out=lambda line: None) == 0
    write_records(tmp_path / "log", [[TS, "gate1", "in", 1, "alice", b"\xc1garbage"],
                                     [TS, "gate1", "out"]])
    lines = tail_lines(tmp_path)
    assert "not msgpack" in lines[0]
    assert lines[1] == "2023-11-14T22:13:20.123Z gate1 out - - sid=- recipients=-"


def test_record_is_a_named_tuple():
    r = Record(TS, "n", "k", [1])
    assert logtail.format_record(r).startswith("2023-11-14T22:13:20.123Z n k - 1")


def test_a_recs_batch_frame_reads_back_as_its_records(tmp_path):
    """A node's ``recs`` envelope is written as one frame and read back record by record,
    between single records, in order; malformed items inside are skipped."""
    batch = msgpack.packb(["recs", 3, "gate2", [
        [TS + 1, "in", 4, "alice", body(t="send", conv="r:lobby", cid="a")],
        "not a record",
        [TS + 2, "out", 4, "alice", body(t="ack", cid="a"), 1],
    ]], use_bin_type=True)
    writer = LogWriter(str(tmp_path), 1 << 20, 20)
    writer.open()
    writer.write([encode_record(rec(0)), logfile.encode_payload(batch), encode_record(rec(3))])
    writer.close()
    got = list(logfile.iter_records(str(tmp_path)))
    assert [(r.ts_ms, r.node, r.kind) for r in got] == [
        (TS, "gate1", "in"), (TS + 1, "gate2", "in"), (TS + 2, "gate2", "out"), (TS + 3, "gate1", "in")]
    assert got[2].fields[:2] == [4, "alice"] and got[2].fields[3] == 1


@pytest.mark.parametrize("n", [1, 127, 128, 255, 256, 65535, 65536])
def test_recs_count_reads_n_from_the_envelope_head(n):
    from log.node import recs_count
    raw = msgpack.packb(["recs", n, "g", []], use_bin_type=True)
    assert recs_count(raw) == n
    assert recs_count(msgpack.packb(["rec", 1, "gate1", "in"], use_bin_type=True)) == 0


# -- kinds, ping/pong, follow -------------------------------------------------------------
def ping_pong_and_more() -> list:
    return [
        [TS, "gate1", "in", 1, "alice", body(t="ping", rid=1)],
        [TS + 1, "gate1", "out", 1, "alice", body(t="pong", ts=TS, rid=1), 1],
        [TS + 2, "gate1", "in", 1, "alice", body(t="send", conv="r:a", cid="x", body="ping")],
        [TS + 3, "zone1", "store", "r:a", 1, "alice", "x", TS],
        [TS + 4, "center1", "admin", "kick", {"user": "alice"}],
        [TS + 5, "gate1", "stats", {"sessions": 1}],
        [TS + 6, "gate1", "in", 1, "alice", body(t="ping", rid=2, pad="x" * 80)],   # too long for a ping
    ]


def kinds_of(lines: list[str]) -> list[str]:
    return [line.split()[2] for line in lines]


def test_ping_and_pong_are_hidden_unless_keepalive(tmp_path):
    write_records(tmp_path / "log", ping_pong_and_more())
    assert kinds_of(tail_lines(tmp_path)) == ["in", "store", "admin", "stats", "in"]
    shown = tail_lines(tmp_path, keepalive=True)
    assert kinds_of(shown) == ["in", "out", "in", "store", "admin", "stats", "in"]
    assert " ping " in shown[0] and " pong " in shown[1]


def test_kinds_filter_is_a_set_and_combines_with_user(tmp_path):
    write_records(tmp_path / "log", ping_pong_and_more() + [
        [TS + 7, "zone1", "store", "r:a", 2, "bob", "y", TS]])
    assert kinds_of(tail_lines(tmp_path, kinds=["store"])) == ["store", "store"]
    assert kinds_of(tail_lines(tmp_path, kinds=("store", "admin"))) == ["store", "admin", "store"]
    assert kinds_of(tail_lines(tmp_path, kinds=["out"])) == []                   # only a pong
    assert kinds_of(tail_lines(tmp_path, kinds=["out"], keepalive=True)) == ["out"]
    assert kinds_of(tail_lines(tmp_path, kinds=["store"], user="bob")) == ["store"]
    assert kinds_of(tail_lines(tmp_path, kinds=["store", "in"], n=2)) == ["in", "store"]


def test_is_keepalive_only_for_small_ping_in_and_pong_out():
    def r(kind, frame):
        return Record(TS, "gate1", kind, [1, "alice", frame, 1])
    assert logtail.is_keepalive(r("in", body(t="ping")))
    assert logtail.is_keepalive(r("out", body(t="pong", ts=TS)))
    assert not logtail.is_keepalive(r("store", body(t="ping")))
    assert not logtail.is_keepalive(r("in", body(t="send", body="ping")))
    assert not logtail.is_keepalive(r("in", b"\xc1"))
    assert not logtail.is_keepalive(Record(TS, "gate1", "in", []))


def append(writer: LogWriter, *numbers: int) -> None:
    writer.write([encode_record(rec(i)) for i in numbers])


def test_cursor_then_follower_misses_and_repeats_nothing_across_rotation(tmp_path):
    writer = LogWriter(str(tmp_path), 600, 50)
    writer.open()
    append(writer, *range(10))
    keep = logtail.record_filter()
    last, cursor = logtail.last_with_cursor(str(tmp_path), keep, 3)
    assert [r.fields[0] for r in last] == [7, 8, 9]
    follower = logtail.Follower(str(tmp_path), cursor)
    assert follower.poll() == []
    for i in range(10, 40):                           # one record a write: several rotations
        append(writer, i)
    assert len(logfile.list_files(str(tmp_path))) > 3
    assert [r.fields[0] for r in follower.poll()] == list(range(10, 40))
    append(writer, 40, 41)
    assert [r.fields[0] for r in follower.poll()] == [40, 41]
    writer.close()


def test_follower_goes_past_files_pruned_behind_it(tmp_path):
    writer = LogWriter(str(tmp_path), 600, 2)
    writer.open()
    append(writer, 0)
    follower = logtail.Follower(str(tmp_path), logtail.last_with_cursor(str(tmp_path), logtail.record_filter(), 1)[1])
    for i in range(1, 60):
        append(writer, i)
    got = [r.fields[0] for r in follower.poll()]
    assert got == sorted(got) and got[-1] == 59 and len(got) < 59     # what is left, in order
    append(writer, 60)
    assert [r.fields[0] for r in follower.poll()] == [60]
    writer.close()


def test_follower_waits_at_a_partly_written_record(tmp_path):
    writer = write_records(tmp_path, [rec(1)])
    follower = logtail.Follower(str(tmp_path), logtail.last_with_cursor(str(tmp_path), logtail.record_filter(), 1)[1])
    frame = encode_record(rec(2))
    with open(writer.path, "ab") as fh:
        fh.write(frame[:7])
    assert follower.poll() == []
    with open(writer.path, "ab") as fh:
        fh.write(frame[7:])
    assert [r.fields[0] for r in follower.poll()] == [2]


def test_follower_starts_with_the_first_file_when_there_was_none(tmp_path):
    records, cursor = logtail.last_with_cursor(str(tmp_path), logtail.record_filter(), 5)
    assert records == [] and cursor == logtail.Cursor(0, 0)
    follower = logtail.Follower(str(tmp_path), cursor)
    assert follower.poll() == []
    write_records(tmp_path, [rec(1), rec(2)])
    assert [r.fields[0] for r in follower.poll()] == [1, 2]


def test_follower_polls_are_bounded(tmp_path):
    writer = write_records(tmp_path, [rec(0)])
    follower = logtail.Follower(str(tmp_path), logtail.last_with_cursor(str(tmp_path), logtail.record_filter(), 1)[1])
    writer.open()
    append(writer, *range(1, 26))
    writer.close()
    assert [r.fields[0] for r in follower.poll(limit=10)] == list(range(1, 11))
    assert [r.fields[0] for r in follower.poll(limit=10)] == list(range(11, 21))
    assert [r.fields[0] for r in follower.poll()] == list(range(21, 26))


def test_tail_with_stop_follows_until_the_event_is_set(tmp_path):
    import threading
    writer = LogWriter(str(tmp_path / "log"), 600, 50)
    writer.open()
    append(writer, 0, 1)
    stop, lines = threading.Event(), []

    def out(line):
        lines.append(line)
        if len(lines) == 2:                 # the tail's two: now write while following
            append(writer, *range(2, 30))
        if "cid=c29 " in line:
            stop.set()
    result = {}
    worker = threading.Thread(target=lambda: result.setdefault(
        "n", logtail.tail(str(tmp_path), n=5, out=out, stop=stop, kinds=["in"])), daemon=True)
    worker.start()
    worker.join(timeout=30)
    stop.set()                              # never leave it running, even when it failed
    writer.close()
    assert not worker.is_alive() and result["n"] == 2
    assert [line.split("cid=")[1].split()[0] for line in lines] == [f"c{i}" for i in range(30)]
