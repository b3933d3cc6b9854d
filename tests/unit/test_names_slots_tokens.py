"""Conversation ids, slot math and tokens (pure logic)."""
import pytest

import cluster  # noqa: F401
from cluster import convs, tokens
from cluster.slots import SlotTable, balanced, from_saved, reconciled, slot_of


@pytest.mark.parametrize("conv, ok", [
    ("sys", True), ("d:alice:bob", True), ("d:bob:alice", False), ("d:a:a", False),
    ("d:a", False), ("d:a:b:c", False), ("g:guild_1", True), ("r:world.cn", True),
    ("g:", False), ("r:" + "x" * 33, False), ("x:foo", False), ("r:bad name", False),
    (5, False), (None, False), ("d:A:a", True), ("d:a:A", False),
])
def test_conversation_ids(conv, ok):
    assert convs.valid(conv) is ok


def test_dm_is_ordered_by_bytes():
    assert convs.dm("bob", "alice") == "d:alice:bob"
    assert convs.dm("a", "B") == "d:B:a"
    assert convs.dm_users("d:alice:bob") == ("alice", "bob")


@pytest.mark.parametrize("name, ok", [("a", True), ("x" * 32, True), ("x" * 33, False),
                                      ("", False), ("a b", False), ("é", False), ("a-b_c.d", True)])
def test_user_names(name, ok):
    assert convs.valid_user(name) is ok


def test_slots_are_stable_and_spread():
    table = SlotTable.initial(["zone2", "zone1"], 1024)
    assert table.owners[0] == "zone1" and table.owners[1] == "zone2"
    assert len(table.slots_of("zone1")) == 512
    assert slot_of("d:a:b", 1024) == slot_of("d:a:b", 1024)
    zones = {table.zone_of(f"r:room{i}") for i in range(100)}
    assert zones == {"zone1", "zone2"}


def test_balanced_moves_only_the_dead_zones_slots_and_gives_them_back():
    zones = ["z1", "z2", "z3"]
    initial = SlotTable.initial(zones, 30)
    without = balanced(zones, {"z1", "z3"}, 30)
    assert "z2" not in without
    assert all(old == now for old, now in zip(initial.owners, without) if old != "z2")
    assert abs(without.count("z1") - without.count("z3")) <= 1          # dealt in turn
    assert balanced(zones, set(zones), 30) == initial.owners              # back to balance
    assert balanced(zones, {"z3", "ghost"}, 30) == ["z3"] * 30
    assert balanced(zones, set(), 30) is None


def test_a_handover_bumps_the_version_and_only_the_moved_epochs():
    table = SlotTable.initial(["z1", "z2"], 4)
    owners = balanced(["z1", "z2"], {"z2"}, 4)
    moved = table.moved_to(owners)
    assert moved == [0, 2]
    new = table.handed_over(owners, {0: 5, 2: 7})
    assert new.version == 2 and new.owners == ["z2"] * 4 and new.epochs == [5, 0, 7, 0]
    assert new.counts() == {"z2": 4} and new.epoch_of("d:a:b") == new.epochs[slot_of("d:a:b", 4)]


def test_a_saved_table_is_used_only_when_it_fits_the_config():
    saved = (3, ["z1", "z2"], [1, 2])
    assert from_saved(saved, ["z1", "z2"], 2).to_wire() == (3, ["z1", "z2"], [1, 2])
    assert from_saved(saved, ["z1", "z2"], 4).version == 1                 # another chat.slots
    assert from_saved((3, ["z1", "gone"], [1, 2]), ["z1", "z2"], 2).version == 1   # a zone renamed
    assert from_saved(None, ["z1"], 2).owners == ["z1", "z1"]


def test_fences_redis_holds_higher_make_a_newer_version():
    table = SlotTable(["z1", "z2", "z1"], version=4, epochs=[2, 0, 5])
    assert reconciled(table, [2, 0, 5]) is None
    again = reconciled(table, [3, 0, 1])
    assert again.version == 5 and again.epochs == [3, 0, 5] and again.owners == table.owners


def test_token_roundtrip_and_refusals():
    """The v2 format (derived key, epoch) in detail: tests/unit/test_tokens_v2.py."""
    key = b"k" * 32
    token, expires = tokens.mint(key, "al.ice", 0, ttl=60, now=1000.0)
    assert expires == 1060000
    assert tokens.verify(key, token, "al.ice", 0, now=1001.0) is None
    assert tokens.verify(key, token, "bob", 0, now=1001.0) == "token is for another user"
    assert tokens.verify(key, token, "al.ice", 0, now=2000.0) == "token expired"
    assert tokens.verify(b"t" * 32, token, "al.ice", 0, now=1001.0) == "bad token signature"
    forged = token.replace(str(expires), str(expires + 1))
    assert tokens.verify(key, forged, "al.ice", 0, now=1001.0) == "bad token signature"
    assert tokens.verify(key, "garbage", "al.ice", 0) == "malformed token"
