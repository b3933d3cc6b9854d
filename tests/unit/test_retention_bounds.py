"""chat.retention (dc/retention.py): the bounds per kind, the checkpoint width and where
a conversation's kept history starts. Pure; the store script itself runs against real
Redis in tests/integration/test_retention.py."""
import pytest

from cluster import config as config_mod
from cluster.config import ConfigError, Retention
from dc import retention
from dc.retention import Bounds


def chat(**retention_raw):
    nodes = {"gate1": {"role": "gate", "tcp_port": 7700}, "login1": {"role": "login"},
             "center1": {"role": "center"}, "zone1": {"role": "zone"}, "dc1": {"role": "dc"},
             "log1": {"role": "log"}}
    return config_mod.from_dict({"nodes": nodes, "chat": {"room_history": 300, "retention": retention_raw}}).chat


def test_defaults_keep_dms_and_groups_whole_and_rooms_and_sys_to_room_history():
    b = retention.all_bounds(chat())
    assert b == {"dm": Bounds(0, 0), "group": Bounds(0, 0), "room": Bounds(300, 0), "sys": Bounds(300, 0)}


def test_each_kind_takes_its_count_and_age_in_milliseconds():
    b = retention.all_bounds(chat(dm={"count": 50}, group={"age": 86400}, room={"count": 0, "age": 1.5}))
    assert b["dm"] == Bounds(50, 0) and b["group"] == Bounds(0, 86_400_000)
    assert b["room"] == Bounds(0, 1500) and b["sys"] == Bounds(300, 0)


@pytest.mark.parametrize("raw, path", [({"dm": {"count": -1}}, "chat.retention.dm"),
                                       ({"room": {"age": -5}}, "chat.retention.room"),
                                       ({"sys": {"keep": 3}}, "chat.retention.sys.keep"),
                                       ({"chan": {}}, "chat.retention.chan"),
                                       ({"dm": 5}, "chat.retention.dm")])
def test_bad_retention_names_its_path(raw, path):
    with pytest.raises(ConfigError) as err:
        chat(**raw)
    assert err.value.path == path or str(err.value).startswith(path), str(err.value)


def test_kinds_of_conversations():
    assert [retention.kind_of(c) for c in ("d:a:b", "g:guild", "r:world", "sys")] == ["dm", "group", "room", "sys"]


def test_a_checkpoint_per_64th_of_the_age_and_at_most_one_a_second():
    assert retention.bucket_ms(86_400_000) == 1_350_000
    assert retention.bucket_ms(2000) == retention.MIN_BUCKET_MS == 1000
    assert retention.bucket_ms(0) == 1000


def test_first_seq_by_count_by_age_and_when_everything_expired():
    first = retention.first_seq
    assert first(0, Bounds(5, 0), None, False) == 1                   # an empty conversation
    assert first(8, Bounds(5, 0), None, True) == 4 and first(3, Bounds(5, 0), None, True) == 1
    assert first(8, Bounds(0, 0), None, True) == 1                    # no bound
    assert first(40, Bounds(0, 2000), b"31:1700000000000", True) == 31
    assert first(40, Bounds(5, 2000), b"31:1700000000000", True) == 36   # the tighter bound wins
    assert first(40, Bounds(0, 2000), None, True) == 1                # kept before a bound was set
    assert first(40, Bounds(0, 2000), None, False) == 41              # all of it expired


def test_a_retention_section_is_frozen_like_the_others():
    with pytest.raises(Exception):
        Retention().count = 3
