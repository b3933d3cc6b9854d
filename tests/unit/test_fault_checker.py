"""The fault suite's checker (tests/faultcheck.py) on crafted histories: a clean run counts
nothing, and each kind of failure is counted under the fault it happened in."""
from faultcheck import Epoch, Send, Stored, check, format_table

CONV = "d:reader:writer"


def clean(n: int = 5, faults=("none", "zone")):
    """n messages of one writer, the first half sent during faults[0], the rest faults[1]."""
    sends = [Send("writer", CONV, f"c{i}", faults[0] if i <= n // 2 else faults[1], [i])
             for i in range(1, n + 1)]
    history = {CONV: [Stored(i, f"c{i}", "writer") for i in range(1, n + 1)]}
    epoch = Epoch("reader", (CONV,), [(CONV, i, f"c{i}") for i in range(1, n + 1)], connected_at_end=True)
    return sends, history, [epoch]


def counts(report, column):
    return {fault: row[column] for fault, row in report.rows.items() if row[column]}


def test_a_clean_run_counts_sends_and_acks_and_no_failure():
    report = check(*clean(), faults=("none", "zone", "gate"))
    assert report.failures() == 0, report.problems
    assert report.problems == []
    assert list(report.rows) == ["none", "zone", "gate"]
    assert counts(report, "sends") == {"none": 2, "zone": 3}
    assert counts(report, "acked") == {"none": 2, "zone": 3}


def test_an_unacked_send_is_counted_but_is_no_failure():
    sends, history, epochs = clean()
    sends.append(Send("writer", CONV, "c6", "zone", []))
    report = check(sends, history, epochs)
    assert (report.total("sends"), report.total("acked"), report.failures()) == (6, 5, 0)


def test_an_acked_message_missing_from_the_history_is_lost():
    sends, history, epochs = clean()
    history[CONV] = history[CONV][:4]                   # seq 5 gone
    epochs[0].pushes = epochs[0].pushes[:4]
    report = check(sends, history, epochs)
    assert counts(report, "lost") == {"zone": 1}
    assert report.failures() == 1, report.problems


def test_another_message_at_the_acked_seq_is_lost():
    sends, history, epochs = clean()
    history[CONV][1] = Stored(2, "other", "writer")
    report = check(sends, history, epochs)
    assert counts(report, "lost") == {"none": 1}
    assert "c2 acked as seq 2; the history holds cid other there" in report.problems[0]


def test_a_cid_stored_twice_is_a_duplicate():
    sends, history, epochs = clean()
    history[CONV].append(Stored(6, "c4", "writer"))
    epochs[0].pushes.append((CONV, 6, "c4"))
    report = check(sends, history, epochs)
    assert counts(report, "dup") == {"zone": 1}
    assert report.failures() == 1, report.problems


def test_acks_of_one_cid_with_different_seqs_are_a_duplicate():
    sends, history, epochs = clean()
    sends[0].acks = [1, 1, 3]
    report = check(sends, history, epochs)
    assert counts(report, "dup") == {"none": 1}
    assert counts(report, "lost") == {"none": 1}        # seq 3 holds c3, not c1


def test_a_seq_pushed_twice_to_one_session_is_a_duplicate():
    sends, history, epochs = clean()
    epochs[0].pushes.insert(3, (CONV, 3, "c3"))
    report = check(sends, history, epochs)
    assert counts(report, "dup") == {"zone": 1}
    assert report.failures() == 1, report.problems


def test_the_same_seq_in_two_sessions_is_no_duplicate():
    sends, history, epochs = clean()
    epochs.insert(0, Epoch("reader", (CONV,), epochs[0].pushes[:3]))     # a login replays
    assert check(sends, history, epochs).failures() == 0


def test_a_seq_missing_from_the_history_is_a_gap_blamed_on_the_next_send():
    sends, history, epochs = clean(n=6)
    del history[CONV][2]                                # seq 3 (c3, fault none) never stored
    sends = [s for s in sends if s.cid != "c3"]
    epochs[0].pushes = [p for p in epochs[0].pushes if p[1] != 3]
    report = check(sends, history, epochs)
    assert counts(report, "gaps") == {"zone": 1}        # c4, the next stored, was sent in "zone"
    assert report.failures() == 1, report.problems


def test_a_writers_messages_out_of_send_order_are_a_reorder():
    sends, history, epochs = clean()
    sends[2].acks, sends[3].acks = [4], [3]             # c3 stored after c4
    history[CONV][2:4] = [Stored(3, "c4", "writer"), Stored(4, "c3", "writer")]
    epochs[0].pushes[2:4] = [(CONV, 3, "c4"), (CONV, 4, "c3")]
    report = check(sends, history, epochs)
    assert counts(report, "reorders") == {"zone": 1}
    assert report.failures() == 1, report.problems


def test_a_history_page_out_of_order_is_a_reorder():
    sends, history, epochs = clean()
    history[CONV][1], history[CONV][2] = history[CONV][2], history[CONV][1]
    assert counts(check(sends, history, epochs), "reorders") == {"none": 1}


def test_a_push_below_an_earlier_one_is_a_reorder():
    sends, history, epochs = clean()
    p = epochs[0].pushes
    p[1], p[2] = p[2], p[1]                             # 1, 3, 2, 4, 5
    report = check(sends, history, epochs)
    assert counts(report, "reorders") == {"none": 1}
    assert report.failures() == 1, report.problems


def test_a_seq_skipped_by_a_connected_session_is_a_live_hole():
    sends, history, epochs = clean()
    epochs[0].pushes = [p for p in epochs[0].pushes if p[1] != 3]     # 1, 2, 4, 5
    epochs[0].connected_at_end = False                  # and it got 4 and 5: still a hole
    report = check(sends, history, epochs)
    assert counts(report, "live_holes") == {"zone": 1}
    assert "seq 3 (c3) never pushed" in report.problems[0]
    assert report.failures() == 1


def test_the_tail_missed_by_a_session_connected_to_the_end_are_live_holes():
    sends, history, epochs = clean()
    epochs[0].pushes = epochs[0].pushes[:2]
    report = check(sends, history, epochs)
    assert counts(report, "live_holes") == {"zone": 3}


def test_a_session_that_ended_owes_nothing_after_its_last_push():
    sends, history, epochs = clean()
    epochs[0].pushes, epochs[0].connected_at_end = epochs[0].pushes[:2], False
    epochs.append(Epoch("reader", (CONV,), list(clean()[2][0].pushes), connected_at_end=True))
    assert check(sends, history, epochs).failures() == 0


def test_a_session_pushes_from_above_its_floor():
    sends, history, epochs = clean()
    epochs[0].pushes, epochs[0].floor = epochs[0].pushes[2:], {CONV: 2}
    assert check(sends, history, epochs).failures() == 0
    epochs[0].floor = {CONV: 1}
    assert counts(check(sends, history, epochs), "live_holes") == {"none": 1}


def test_a_conversation_never_pushed_to_a_connected_session_is_all_holes():
    sends, history, epochs = clean()
    epochs[0].pushes = []
    assert counts(check(sends, history, epochs), "live_holes") == {"none": 2, "zone": 3}


def test_the_table_has_a_row_per_fault_and_a_total():
    sends, history, epochs = clean()
    epochs[0].pushes = epochs[0].pushes[:4]
    lines = format_table(check(sends, history, epochs, faults=("none", "zone"))).splitlines()
    assert lines[0].split() == ["fault", "sends", "acked", "lost", "dup", "gaps", "reorders", "live_holes"]
    assert lines[2].split() == ["none", "2", "2", "0", "0", "0", "0", "0"]
    assert lines[3].split() == ["zone", "3", "3", "0", "0", "0", "0", "1"]
    assert lines[4].split() == ["total", "5", "5", "0", "0", "0", "0", "1"]
