"""cluster.lru: bounded caches, least recently used out, touch on hit."""
import pytest

from cluster.lru import LruDict, LruSet


@pytest.mark.parametrize("bad", [0, -1, 1.5, "3", True, None])
def test_maxsize_must_be_a_positive_int(bad):
    with pytest.raises(ValueError):
        LruDict(bad)
    with pytest.raises(ValueError):
        LruSet(bad)


# -- LruDict ------------------------------------------------------------------------------
def test_dict_evicts_the_least_recently_used_past_maxsize():
    d = LruDict(3)
    for k in "abc":
        d[k] = k.upper()
    d["d"] = "D"
    assert list(d) == ["b", "c", "d"] and len(d) == 3
    assert "a" not in d and d.get("a") is None


def test_dict_get_and_getitem_touch_a_hit():
    d = LruDict(3)
    for k in "abc":
        d[k] = k
    assert d.get("a") == "a"          # a: most recent
    assert d["b"] == "b"              # b: most recent
    d["d"] = "d"                       # evicts c, the least recently used
    assert list(d) == ["a", "b", "d"]


def test_dict_membership_does_not_touch():
    d = LruDict(2)
    d["a"], d["b"] = 1, 2
    assert "a" in d
    d["c"] = 3
    assert list(d) == ["b", "c"]


def test_dict_overwrite_touches_and_keeps_the_size():
    d = LruDict(2)
    d["a"], d["b"] = 1, 2
    d["a"] = 10
    d["c"] = 3
    assert dict(d.items()) == {"a": 10, "c": 3}


def test_dict_get_default_and_missing_key():
    d = LruDict(2)
    sentinel = object()
    assert d.get("x", sentinel) is sentinel
    with pytest.raises(KeyError):
        d["x"]
    d["none"] = None                   # a stored None is a hit, not a miss
    assert d.get("none", sentinel) is None


def test_dict_update_inserts_in_order_then_evicts():
    d = LruDict(3)
    d["old"] = 0
    d.update({"a": 1, "b": 2, "c": 3})
    assert list(d) == ["a", "b", "c"]
    d.update([("b", 20), ("e", 5)])
    assert list(d) == ["c", "b", "e"] and d.get("b") == 20


def test_dict_pop_and_copy():
    d = LruDict(2)
    d["a"], d["b"] = 1, 2
    assert d.pop("a") == 1 and d.pop("a", None) is None
    c = d.copy()
    assert isinstance(c, LruDict) and c.maxsize == 2 and dict(c.items()) == {"b": 2}


# -- LruSet -------------------------------------------------------------------------------
def test_set_evicts_the_least_recently_used_past_maxsize():
    s = LruSet(3, "abc")
    s.add("d")
    assert list(s) == ["b", "c", "d"] and "a" not in s and len(s) == 3


def test_set_add_of_a_member_touches_it():
    s = LruSet(3, "abc")
    s.add("a")
    s.add("d")
    assert list(s) == ["c", "a", "d"]


def test_set_update_keeps_the_last_members_when_more_than_maxsize():
    s = LruSet(3)
    s.update(range(10))
    assert list(s) == [7, 8, 9]


def test_set_missing_returns_the_unknown_and_touches_the_known():
    s = LruSet(4, "abcd")
    assert s.missing(["a", "x", "c", "x"]) == {"x"}
    assert list(s)[-2:] in (["a", "c"], ["c", "a"])      # touched: most recent
    s.update(["y", "z"])                                   # evicts b and d, not a or c
    assert set(s) == {"a", "c", "y", "z"}
    assert s.missing(iter(["q"])) == {"q"} and s.missing(()) == set()


def test_set_touch_only_moves_members():
    s = LruSet(3, "abc")
    s.touch(["a", "nope"])
    assert list(s) == ["b", "c", "a"] and "nope" not in s


def test_set_intersection_either_side_is_a_plain_set_without_touching():
    s = LruSet(3, "abc")
    assert {"a", "x"} & s == {"a"}
    assert s & ["c", "y"] == {"c"}
    assert type({"a"} & s) is set
    assert list(s) == ["a", "b", "c"]


def test_set_discard_and_membership():
    s = LruSet(2, ["a"])
    s.discard("a")
    s.discard("a")
    assert "a" not in s and len(s) == 0
    assert isinstance(s.copy(), LruSet)


def test_a_batch_that_fits_survives_its_own_learning():
    """The zone's pattern: a tick's names are looked up, the unknown ones added; all of
    the tick's names are then held, whatever was in the cache before."""
    s = LruSet(5, range(100, 105))
    batch = [1, 2, 100, 3]
    unknown = s.missing(batch)
    s.update(unknown)
    assert all(n in s for n in batch)


# -- the zone's group cache on top of it ----------------------------------------------------
class FakeGroupStore:
    """GroupStore's interface over a dict: what Redis would hold."""

    def __init__(self):
        self.groups, self.loads, self.fail = {}, 0, False

    def load(self, conv):
        self.loads += 1
        g = self.groups.get(conv)
        return (g[0], list(g[1])) if g else None

    def create(self, conv, owner, members):
        self.groups[conv] = [owner, list(members)]

    def add(self, conv, user):
        if self.fail:
            from dc.store import StoreUnavailable
            raise StoreUnavailable("down")
        self.groups[conv][1].append(user)

    def set_owner(self, conv, owner):
        self.groups[conv][0] = owner

    def remove(self, conv, user, new_owner, empty):
        if empty:
            del self.groups[conv]
            return
        self.groups[conv][1].remove(user)
        if new_owner:
            self.groups[conv][0] = new_owner


def groups(size):
    from types import SimpleNamespace
    from zone.groups import Groups
    g = Groups(SimpleNamespace(link=None, layout=None), cache_size=size)
    g.db = FakeGroupStore()
    return g


def test_groups_cache_is_bounded_and_reloads_an_evicted_group():
    g = groups(2)
    for name in ("g:a", "g:b", "g:c"):
        g.create(name, "o", ["m"])
    assert len(g.cache) == 2 and "g:a" not in g.cache
    loads = g.db.loads
    assert g.is_member("g:a", "m") and g.db.loads == loads + 1       # reloaded from "Redis"
    assert g.is_member("g:a", "m") and g.db.loads == loads + 1       # then cached


def test_groups_a_change_whose_group_is_evicted_mid_write_still_lands_in_the_cache():
    g = groups(1)
    g.create("g:a", "o", ["m"])
    write = g.db.add

    def add_while_evicted(conv, user):     # the write yields; another lookup evicts g:a
        g.get("g:other")
        assert "g:a" not in g.cache
        write(conv, user)
    g.db.add = add_while_evicted
    g.add("g:a", "o", "new")
    assert g.db.groups["g:a"][1] == ["o", "m", "new"]
    loads = g.db.loads
    assert g.members("g:a") == ["o", "m", "new"] and g.db.loads == loads   # put back, current


def test_groups_a_failed_write_drops_the_cached_group():
    from dc.store import StoreUnavailable
    g = groups(4)
    g.create("g:a", "o", [])
    g.db.fail = True
    with pytest.raises(StoreUnavailable):
        g.add("g:a", "o", "x")
    assert "g:a" not in g.cache            # the next use reads what Redis holds
    g.db.fail = False
    assert g.members("g:a") == ["o"]
