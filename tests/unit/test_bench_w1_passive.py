"""W1's passive-viewer accounting (tools/bench/w1_room.py): digest coverage and
continuity, who is passive, the split over generator processes, pass/fail, compare."""
from tools.bench import w1_room
from tools.bench.w1_room import DigestTally


def digest(first, last, recent=None, conv=w1_room.ROOM, count=None):
    if recent is None:
        recent = list(range(max(first, last - 4), last + 1))
    return {"t": "digest", "conv": conv, "from_seq": first, "to_seq": last,
            "count": last - first + 1 if count is None else count,
            "recent": [{"t": "msg", "seq": s} for s in recent]}


def test_contiguous_digests_cover_every_seq():
    t = DigestTally(last_seq=7)
    t.feed(digest(8, 20), 0.0)
    t.feed(digest(21, 21), 1.0)
    t.feed(digest(22, 100), 2.1)
    assert (t.digests, t.cover, t.gaps, t.bad, t.short, t.early) == (3, 93, 0, 0, 0, 0)
    assert t.next_from == 101


def test_first_digest_must_start_after_joined_last_seq():
    t = DigestTally(last_seq=7)
    t.feed(digest(9, 20), 0.0)
    assert t.gaps == 1 and t.cover == 12


def test_hole_and_overlap_are_gaps_and_counts_still_summed():
    t = DigestTally(last_seq=0)
    t.feed(digest(1, 10), 0.0)
    t.feed(digest(12, 20), 1.0)          # 11 missing
    t.feed(digest(18, 30), 2.0)          # 18..20 twice
    assert t.gaps == 2
    assert t.cover == 10 + 9 + 13
    assert t.next_from == 31


def test_unknown_last_seq_accepts_first_digest():
    t = DigestTally(last_seq=None)
    t.feed(digest(50, 60), 0.0)
    assert t.gaps == 0 and t.next_from == 61


def test_inconsistent_fields_are_bad():
    t = DigestTally(last_seq=0)
    t.feed(digest(1, 10, count=9), 0.0)                  # count disagrees with the range
    t.feed(digest(11, 12, conv="r:other"), 1.0)
    t.feed({"t": "digest", "conv": w1_room.ROOM, "from_seq": "13"}, 2.0)
    assert t.bad == 3 and t.digests == 3


def test_recent_must_be_the_newest_of_the_range():
    t = DigestTally(last_seq=0, keep=5)
    t.feed(digest(1, 3, recent=[1, 2, 3]), 0.0)          # fine: count < keep
    t.feed(digest(4, 20, recent=[16, 17, 18, 19]), 1.0)  # 4 of 5
    t.feed(digest(21, 30, recent=[19, 27, 28, 29, 30]), 2.0)   # 19 is out of range
    t.feed(digest(31, 40, recent=[35, 36, 37, 38, 39]), 3.0)   # newest is not to_seq
    assert t.short == 3 and t.gaps == 0


def test_digest_within_half_a_window_is_early():
    t = DigestTally(last_seq=0, window=1.0)
    t.feed(digest(1, 5), 10.0)
    t.feed(digest(6, 9), 10.3)
    t.feed(digest(10, 12), 11.2)
    assert t.early == 1


def test_is_passive_spreads_round_fraction():
    for n, f in ((10, 0.9), (4950, 0.9), (19950, 0.9), (7, 0.5), (100, 0.0)):
        assert sum(w1_room.is_passive(j, f) for j in range(n)) == round(n * f)
    marks = [w1_room.is_passive(j, 0.9) for j in range(100)]
    assert all(sum(marks[k:k + 10]) == 9 for k in range(0, 100, 10))


def test_split_even_and_contiguous():
    assert w1_room.split(5000, 15000) == [(0, 5000)]
    assert w1_room.split(20000, 15000) == [(0, 10000), (10000, 10000)]
    parts = w1_room.split(301, 100)
    assert [c for _, c in parts] == [76, 75, 75, 75]
    assert all(parts[k][0] + parts[k][1] == parts[k + 1][0] for k in range(len(parts) - 1))
    assert sum(c for _, c in parts) == 301


def test_coverage_expectations():
    base = dict.fromkeys(w1_room.STAT_KEYS, 0) | {"sender_msgs": 0, "acks": 0, "errors": 0}
    now = dict(base, active=45, passive=405, frames=45 * 100, sender_msgs=49 * 100,
               cover=405 * 100 - 3, acks=100, digests=800)
    got, want, cover, want_cover = w1_room.coverage(now, base, senders=50)
    assert (got, want) == (9400, 100 * (50 + 45 - 1))
    assert (cover, want_cover) == (40497, 40500)


def test_passes_needs_cover_when_passive():
    row = {"ratio": 1.0, "p99_ms": 40.0, "passive_cover": 0.998}
    assert not w1_room.passes(row)
    assert w1_room.passes(dict(row, passive_cover=1.0))
    assert w1_room.passes(dict(row, passive_cover=None))
    assert w1_room.passes({"ratio": 1.0, "p99_ms": 40.0})
    assert not w1_room.passes({"ratio": 1.0, "p99_ms": 250.0})


def test_compare_medians_and_cuts():
    act = [[{"rate": 100, "deliveries_s": 500000.0, "server_busy": 0.5, "p50_ms": 10.0,
             "p99_ms": 40.0, "ratio": 1.0, "valid": True}]] * 2
    pas = [[{"rate": 100, "deliveries_s": 60000.0, "server_busy": 0.1, "p50_ms": 5.0,
             "p99_ms": 20.0, "ratio": 1.0, "passive_cover": 1.0, "valid": True},
            {"rate": 200, "deliveries_s": 110000.0, "server_busy": 0.2, "p50_ms": 6.0,
             "p99_ms": 30.0, "ratio": 1.0, "passive_cover": 0.5, "valid": True}]]
    rows = w1_room.compare(act, pas)
    assert [r["rate"] for r in rows] == [100, 200]
    r = rows[0]
    assert abs(r["deliv_cut"] - 0.88) < 1e-9 and abs(r["cpu_cut"] - 0.8) < 1e-9
    assert (r["act_ok"], r["pas_ok"]) == ("2/2", "1/1")
    assert rows[1]["act_deliv_s"] is None and rows[1]["deliv_cut"] is None
    assert rows[1]["pas_ok"] == "0/1"
