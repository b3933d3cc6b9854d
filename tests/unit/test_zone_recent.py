"""zone/recent.py: the journal of conversations a zone stored into lately, which the next
writer of their slots delivers again: what an entry is, what is picked, who is asked."""
from cluster.slots import SlotTable
from zone.recent import entries, gained_from, parse, pick_recent


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


def test_a_batch_gives_one_entry_per_durable_conversation_in_order():
    assert entries(100, ["d:a:b", "r:world", "d:a:b", "g:guild", "sys"]) == [b"100 d:a:b", b"100 g:guild"]
    assert parse(entries(7, ["g:x", "d:a:b"])) == [(7, "g:x"), (7, "d:a:b")]
    assert entries(5, []) == []


def test_what_a_zone_gained_is_named_by_its_previous_owner():
    old = SlotTable(["z1", "z2", "z1", "z3"])
    new = SlotTable(["z2", "z2", "z2", "z3"], version=2)
    assert gained_from(old, new, "z2") == {"z1": {0, 2}}
    assert gained_from(new, old, "z1") == {"z2": {0, 2}}          # and back again
    assert gained_from(old, new, "z3") == {}
