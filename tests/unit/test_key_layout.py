"""dc.keys and dc.layout: tagged key names, and the renames of a version-1 dataset."""
import pytest

from cluster.slots import slot_of
from dc import keys, layout

L = keys.Layout(1024)


def test_every_key_of_a_conversation_carries_its_slot_as_hash_tag():
    conv = "d:alice:bob"
    tag = f"{{s{slot_of(conv, 1024)}}}"
    names = [L.seq(conv), L.messages(conv), L.checkpoints(conv), L.dedup(conv, "alice", "c{1}"),
             L.group_info(conv), L.group_members(conv), *L.store_keys(conv, "alice", "c{1}")]
    assert all(name.split(":", 1)[1].startswith(tag) for name in names)
    assert L.store_keys(conv, "alice", "c") == (L.seq(conv), L.messages(conv), L.checkpoints(conv),
                                                L.dedup(conv, "alice", "c"), L.epoch(L.slot(conv)))
    assert L.epoch(L.slot(conv)) == f"ep:{tag}"


def test_every_key_of_a_user_is_tagged_by_the_user():
    assert [keys.user("bob"), keys.failed_logins("bob"), keys.user_convs("bob"), keys.cursors("bob"),
            keys.blocks("bob")] == ["u:{bob}", "lf:{bob}", "ucv:{bob}", "cur:{bob}", "blk:{bob}"]


@pytest.mark.parametrize("rest, conv", [
    ("d:alice:bob:alice:c1", "d:alice:bob"), ("g:guild:bob:c:2", "g:guild"),
    ("r:world:bob:x", "r:world"), ("sys:system:c9", "sys")])
def test_a_v1_dedup_key_names_its_conversation(rest, conv):
    assert layout.dedup_conv(rest) == conv


@pytest.mark.parametrize("old, new", [
    ("u:bob", "u:{bob}"), ("cur:bob", "cur:{bob}"), ("ucv:bob", "ucv:{bob}"), ("lf:bob", "lf:{bob}"),
    ("blk:bob", "blk:{bob}"), ("seq:d:a:b", L.seq("d:a:b")), ("m:r:world", L.messages("r:world")),
    ("mt:g:x", L.checkpoints("g:x")), ("gi:g:x", L.group_info("g:x")), ("gm:g:x", L.group_members("g:x")),
    ("dd:d:a:b:a:c1", L.dedup("d:a:b", "a", "c1")), ("seq:sys", L.seq("sys"))])
def test_v1_names_map_to_v2(old, new):
    assert layout.v2_name(old, L) == new
    assert layout.v2_name(new, L) is None          # a renamed key is never renamed again


@pytest.mark.parametrize("name", ["mod:mutes", "mod:rooms", "zc:layout", "other", "x:y"])
def test_keys_outside_the_layout_keep_their_names(name):
    assert layout.v2_name(name, L) is None
