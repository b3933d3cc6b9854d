"""Conversation ids, slot math and tokens (pure logic)."""
import pytest

import cluster  # noqa: F401
from cluster import convs, tokens
from cluster.slots import SlotTable, slot_of


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


def test_reassign_moves_only_the_dead_zones_slots():
    table = SlotTable.initial(["z1", "z2", "z3"], 30)
    new = table.reassign("z2", ["z1", "z3"])
    assert new.version == table.version + 1
    assert "z2" not in new.owners
    for old, now in zip(table.owners, new.owners):
        if old != "z2":
            assert old == now


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
