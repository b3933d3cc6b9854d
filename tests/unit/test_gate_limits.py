"""The gate's abuse limits and the zone's group-work bound (pure logic, explicit clocks)."""
import json
from types import SimpleNamespace

import pytest

import cluster  # noqa: F401
from cluster.codec import ProtocolError, packb
from cluster.config import ChatConf
from cluster.envelopes import Group, Sync
from cluster.replies import Refused
from gate.handlers import need_members
from gate.limits import MAX_DEPTH, AddressCounts, AddressWindows, Window, address, too_deep
from gate.ws import decode_message
from zone.groups import GroupWork
from zone.requests import SendReq


# -- Window ---------------------------------------------------------------------------------
def test_window_allows_limit_then_says_how_long_to_wait():
    w = Window(3, 60)
    assert [w.take(now=t) for t in (0.0, 1.0, 2.0)] == [0, 0, 0]
    assert w.take(now=10.0) == 50000          # the first leaves the window at 60 s
    assert w.count(now=10.0) == 3             # a refused event is not counted
    assert w.take(now=60.0) == 0              # the first has left
    assert w.take(now=60.5) == 500


def test_window_give_back_uncounts_the_newest():
    w = Window(1, 60)
    assert w.take(now=0.0) == 0
    w.give_back()
    assert w.take(now=1.0) == 0
    assert w.wait_ms(now=2.0) == 59000


def test_window_add_stays_bounded_and_a_zero_limit_never_fits():
    w = Window(5, 60)
    for t in range(1000):
        w.add(now=t / 1000)
    assert len(w.stamps) == 5 and w.wait_ms(now=1.0) > 0
    assert Window(0, 60).take(now=0.0) == 60000


# -- per address ----------------------------------------------------------------------------
def test_address_windows_are_separate_bounded_and_pruned():
    t = AddressWindows(2, 60, max_addresses=3)
    assert t.take("a", 0.0) == 0 and t.take("a", 0.0) == 0 and t.take("a", 0.0) > 0
    assert t.take("b", 0.0) == 0                       # another address has its own
    t.add("c", 0.0)
    t.add("d", 0.0)                                    # past 3: the least recently used goes
    assert len(t) == 3 and "a" not in t.windows
    t.prune(now=30.0)
    assert len(t) == 3                                 # nothing expired yet
    t.take("d", 50.0)
    t.prune(now=70.0)                                  # b and c are empty now; d is not
    assert list(t.windows) == ["d"]
    assert t.wait_ms("nobody") == 0


def test_address_counts_admit_up_to_the_limit_and_forget_at_zero():
    c = AddressCounts(2)
    assert c.admit("1.2.3.4") and c.admit("1.2.3.4") and not c.admit("1.2.3.4")
    assert c.admit("5.6.7.8")
    c.release("1.2.3.4")
    assert c.admit("1.2.3.4")
    for _ in range(3):
        c.release("5.6.7.8")                           # over-release cannot go negative
    assert "5.6.7.8" not in c.open and len(c) == 1


def test_address_of_a_peer():
    assert address(("127.0.0.2", 5555)) == "127.0.0.2"
    assert address(("::1", 5555, 0, 0)) == "::1"


# -- nesting --------------------------------------------------------------------------------
def nested(depth: int):
    obj = "x"
    for _ in range(depth - 1):
        obj = [obj]
    return {"t": "send", "body": obj}


def test_too_deep_counts_maps_and_lists_and_skips_short_frames():
    assert not too_deep(nested(MAX_DEPTH), 10 ** 6)       # the map is level 1
    assert too_deep(nested(MAX_DEPTH + 1), 10 ** 6)
    assert not too_deep(nested(MAX_DEPTH + 1), MAX_DEPTH)  # too short to be that deep
    wide = {"t": "send", "body": [[i] for i in range(10000)]}
    assert not too_deep(wide, 10 ** 6)
    deep_in_map = {"t": "x", "a": {"b": {"c": nested(MAX_DEPTH)}}}
    assert too_deep(deep_in_map, 10 ** 6)


@pytest.mark.parametrize("text", [True, False])
def test_websocket_decode_refuses_deep_messages_as_bad_frame(text):
    deep = "[" * 5000 + "]" * 5000
    raw = ('{"t":"send","body":%s}' % deep).encode() if text else packb(nested(MAX_DEPTH + 1))
    with pytest.raises(ProtocolError) as exc:
        decode_message(raw, text)
    assert exc.value.code == "bad_frame" and "deep" in exc.value.reason
    ok = json.dumps(nested(MAX_DEPTH)).encode() if text else packb(nested(MAX_DEPTH))
    assert decode_message(ok, text)[0]["t"] == "send"


# -- group members at the gate --------------------------------------------------------------
def gate_with(group_max_members: int):
    return SimpleNamespace(config=SimpleNamespace(chat=ChatConf(group_max_members=group_max_members)))


def test_members_collapse_duplicates_and_the_creator():
    me = SimpleNamespace(user="owner")
    got = need_members(gate_with(3), me, {"members": ["a", "b", "a", "owner", "b"]})
    assert got == ["a", "b"]


@pytest.mark.parametrize("members, code", [
    (["a", "b", "c"], "too_large"),                  # 3 + the owner > 3
    ([f"u{i}" for i in range(8000)] + ["bad name"], "too_large"),   # counted before checked
    (["a", "bad name"], "bad_request"),
    (["a", 5], "bad_request"),
    ("a", "bad_request"),
])
def test_members_refused(members, code):
    with pytest.raises(Refused) as exc:
        need_members(gate_with(3), SimpleNamespace(user="owner"), {"members": members})
    assert exc.value.code == code


# -- group work per zone tick ---------------------------------------------------------------
def create(group: str, n: int) -> Group:
    return Group("gate1", 1, "owner", "create", group, [f"m{i}" for i in range(n)])


def send(conv: str) -> SendReq:
    return SendReq("gate1", 2, "owner", conv, "c", b"\xa1x", False, 0)


def test_group_work_within_the_budget_passes_untouched():
    work = GroupWork(budget=100, limit=10)
    batch = [send("d:a:b"), create("g:x", 10), Sync("gate1", 3, "a", "d:a:b", 0, 10)]
    assert work.take(batch) == (batch, [])
    assert len(work) == 0


def test_group_work_past_the_budget_waits_in_order_with_its_group():
    work = GroupWork(budget=100, limit=10)
    first, second, third = create("g:x", 90), create("g:y", 90), create("g:z", 5)
    after_y, dm = send("g:y"), send("d:a:b")
    now, refused = work.take([first, second, after_y, dm, third])
    assert now == [first, dm, third] and refused == []      # y and its send wait; z fits
    assert list(work.held) == [second, after_y]
    assert work.new_tick() == [second, after_y] and len(work) == 0
    assert work.take([second, after_y]) == ([second, after_y], [])


def test_group_work_a_large_change_runs_alone_and_the_hold_is_bounded():
    work = GroupWork(budget=10, limit=2)
    big = create("g:big", 500)
    now, refused = work.take([big, create("g:a", 1), create("g:b", 1), create("g:c", 1)])
    assert now == [big]                                   # the first always fits
    assert len(work) == 2 and [r.group for r in refused] == ["g:c"]
