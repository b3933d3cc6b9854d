"""zone/recent.py: the journal of conversations a zone stored into lately, which its next
incarnation delivers again. What is kept, what is read back, and the bounds."""
import os

from zone.recent import Journal, parse, pick_recent


def test_parse_keeps_well_formed_durable_entries_only():
    lines = [b"100 d:alice:bob", b"101 g:guild", b"102 r:world", b"103 sys", b"x d:alice:bob",
             b"104 d:bob:alice", b"105", b"106 d:alice:bob extra", b"107 g:\xff", b"108 g:gu", b""]
    assert parse(lines) == [(100, "d:alice:bob"), (101, "g:guild"), (108, "g:gu")]


def test_pick_recent_takes_the_window_before_the_newest_entry_newest_first():
    entries = [(1000, "d:a:b"), (5000, "g:old"), (9000, "d:a:b"), (9500, "g:new"), (10000, "d:a:b")]
    assert pick_recent(entries, 2000, 10) == [("d:a:b", 9000), ("g:new", 9500)]
    assert pick_recent(entries, 2000, 1) == [("d:a:b", 9000)]
    assert pick_recent(entries, 10000, 10) == [("d:a:b", 1000), ("g:new", 9500), ("g:old", 5000)]


def test_pick_recent_ignores_a_journal_older_than_not_before():
    entries = [(9000, "d:a:b")]
    assert pick_recent(entries, 2000, 10, not_before=9001) == []
    assert pick_recent(entries, 2000, 10, not_before=9000) == [("d:a:b", 9000)]
    assert pick_recent([], 2000, 10) == []


def test_the_journal_reads_back_what_was_noted_across_restarts(tmp_path):
    path = str(tmp_path / "zone" / "zone1.recent")
    j = Journal(path)
    j.note(100, ["d:a:b", "d:a:b", "g:guild"])       # one line per conversation of a batch
    j.note(200, [])
    j.close()
    j = Journal(path)                                 # the next incarnation
    j.note(300, ["d:a:b"])
    assert j.read() == [(100, "d:a:b"), (100, "g:guild"), (300, "d:a:b")]
    assert j.recent(150, 10) == [("d:a:b", 300)]
    j.close()


def test_past_max_bytes_one_older_generation_is_kept(tmp_path):
    path = str(tmp_path / "z.recent")
    j = Journal(path, max_bytes=30)
    for ms in range(100, 110):
        j.note(ms, ["d:a:b"])                         # 10 bytes a line
    entries = j.read()
    assert os.path.getsize(path) <= 30 and os.path.getsize(path + ".1") <= 30
    assert entries[-1] == (109, "d:a:b") and len(entries) < 10
    assert [ms for ms, _ in entries] == sorted(ms for ms, _ in entries)
    j.close()


def test_a_journal_that_cannot_be_written_is_given_up_quietly(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    j = Journal(str(blocker / "zone1.recent"))        # its directory is a file
    j.note(100, ["d:a:b"])
    j.note(101, ["d:a:b"])
    assert j.read() == []
