"""Issue 11, pure logic: login tokens v2 (derived key, per-user epoch), the bounded hash
pool, and the admin API's strict JSON bodies."""
import json
import os
import time

import gevent
import pytest
from argon2 import PasswordHasher, Type

import cluster  # noqa: F401  (gevent patching first)
from center.admin import MAX_DEPTH, AdminError, parse_body
from cluster import config as config_mod
from cluster import secrets, tokens
from login.hashing import HashBusy, HashPool

SECRET = "s" * 40
KEY = secrets.token_key(SECRET)
OLD_DEFAULT = "zonechat-dev-secret-change-me"


# -- tokens -------------------------------------------------------------------------------
def test_token_roundtrip_names_user_epoch_and_expiry():
    token, expires = tokens.mint(KEY, "al.ice", 3, ttl=60, now=1000.0)
    assert expires == 1060000
    assert token.startswith("al.ice.3.1060000.") and len(token.rsplit(".", 1)[1]) == 64
    assert tokens.verify(KEY, token, "al.ice", 3, now=1001.0) is None
    assert tokens.verify(KEY, token, "bob", 3, now=1001.0) == "token is for another user"
    assert tokens.verify(KEY, token, "al.ice", 3, now=2000.0) == "token expired"


def test_a_bumped_epoch_revokes_every_earlier_token():
    token, _ = tokens.mint(KEY, "alice", 0, ttl=60, now=1000.0)
    assert tokens.verify(KEY, token, "alice", 1, now=1001.0) == "token revoked"
    newer, _ = tokens.mint(KEY, "alice", 1, ttl=60, now=1000.0)
    assert tokens.verify(KEY, newer, "alice", 1, now=1001.0) is None
    assert tokens.verify(KEY, newer, "alice", 0, now=1001.0) == "token revoked"


def test_tampering_with_any_part_breaks_the_signature():
    token, expires = tokens.mint(KEY, "alice", 2, ttl=60, now=1000.0)
    user, epoch, exp, mac = token.rsplit(".", 3)
    for forged in (f"{user}.{epoch}.{int(exp) + 1}.{mac}", f"{user}.3.{exp}.{mac}",
                   f"bob.{epoch}.{exp}.{mac}", f"{user}.{epoch}.{exp}.{mac[:-1]}0"):
        assert tokens.verify(KEY, forged, "alice", 2, now=1001.0) in ("bad token signature",
                                                                      "token is for another user"), forged
    assert tokens.verify(KEY, f"{user}.3.{exp}.{mac}", "alice", 3, now=1001.0) == "bad token signature"


def test_tokens_signed_with_the_raw_secret_or_the_old_default_fail():
    raw, _ = tokens.mint(SECRET.encode(), "alice", 0, ttl=60, now=1000.0)
    assert tokens.verify(KEY, raw, "alice", 0, now=1001.0) == "bad token signature"
    old, _ = tokens.mint(secrets.token_key(OLD_DEFAULT), "alice", 0, ttl=60, now=1000.0)
    assert tokens.verify(KEY, old, "alice", 0, now=1001.0) == "bad token signature"


def test_the_secret_itself_is_refused_as_a_key():
    with pytest.raises(TypeError):
        tokens.mint(SECRET, "alice", 0, ttl=60)
    with pytest.raises(TypeError):
        tokens.verify(SECRET, "alice.0.1.ab", "alice", 0)


@pytest.mark.parametrize("token", [
    "", "garbage", "a.b.c", "alice.1060000." + "0" * 64,              # the old 3-part format
    "alice.x.1060000." + "0" * 64, "alice.0.1e6." + "0" * 64, "alice.-1.5." + "0" * 64,
    "alice.٣.1060000." + "0" * 64, "alicé.0.1060000." + "0" * 64,    # non-ASCII digits / names
    "alice.0." + "9" * 30 + "." + "0" * 64,
])
def test_malformed_tokens(token):
    assert tokens.verify(KEY, token, "alice", 0, now=1001.0) == "malformed token"


def test_the_key_is_derived_from_the_configured_secret_and_is_not_it(monkeypatch):
    monkeypatch.delenv(secrets.ENV, raising=False)
    cfg = config_mod.from_dict({"cluster": {"secret": SECRET}, "nodes": {
        role + "1": {"role": role, "host": "127.0.0.1", "bus_port": 9000 + i,
                     **({"tcp_port": 9100} if role == "gate" else {})}
        for i, role in enumerate(config_mod.ROLES)}})
    assert tokens.key_of(cfg) == KEY != SECRET.encode()
    assert secrets.token_key(OLD_DEFAULT) != KEY


@pytest.mark.parametrize("record, epoch", [({}, 0), ({"ep": "4"}, 4), ({"ep": "x"}, -1)])
def test_epoch_of_a_user_record(record, epoch):
    assert tokens.epoch_of(record) == epoch


# -- the hash pool --------------------------------------------------------------------------
class Blocker:
    """A pool thread held in os.read on a pipe (not patched by gevent) until released."""

    def __init__(self):
        self.r, self.w = os.pipe()

    def __call__(self):
        return os.read(self.r, 1)

    def release(self):
        os.write(self.w, b"x")


@pytest.fixture
def pool():
    hasher = PasswordHasher(time_cost=1, memory_cost=256, parallelism=1, type=Type.ID)
    p = HashPool(hasher, threads=1, queue=1)
    yield p
    p.close()


def test_the_pool_refuses_past_its_queue_and_past_a_deadline(pool):
    hold = Blocker()
    far = time.monotonic() + 60
    busy = gevent.spawn(pool._run, hold, (), far)
    gevent.sleep(0)                                     # busy holds the one thread
    queued = gevent.spawn(pool.hash, "password123", far)
    gevent.sleep(0)                                     # queued waits: the queue is full
    assert pool.counters()["hash_waiting"] == 1
    with pytest.raises(HashBusy, match="full"):
        pool.verify("$argon2id$x", "password123", far)
    with pytest.raises(HashBusy):                       # a deadline already past: never queued
        pool.hash("password123", time.monotonic())
    hold.release()
    assert busy.get(timeout=10) == b"x"
    assert queued.get(timeout=10).startswith("$argon2id$")
    counters = pool.counters()
    assert (counters["hashes"], counters["hash_full"], counters["hash_late"]) == (2, 1, 1)


def test_a_queued_request_past_its_deadline_is_dropped_unhashed(pool):
    hold = Blocker()
    busy = gevent.spawn(pool._run, hold, (), time.monotonic() + 60)
    gevent.sleep(0)
    with pytest.raises(HashBusy, match="in time"):
        pool.hash("password123", time.monotonic() + 0.05)
    hold.release()
    busy.get(timeout=10)
    assert pool.counters()["hashes"] == 1               # only the blocker ran


def test_verify_is_false_for_a_wrong_password_or_a_non_hash(pool):
    far = time.monotonic() + 60
    good = pool.hash("password123", far)
    assert pool.verify(good, "password123", far) is True
    assert pool.verify(good, "password124", far) is False
    assert pool.verify("!", "password123", far) is False


# -- admin bodies ---------------------------------------------------------------------------
@pytest.mark.parametrize("raw", [
    b'{"seconds": NaN}', b'{"seconds": Infinity}', b'{"seconds": -Infinity}',
    b'{"seconds": 1e999}', b'{"seconds": -1e400}', b"[1, 2]", b'"text"', b"5", b"null",
    b"[" * 5000 + b"]" * 5000, b'{"a":' * 5000 + b"1" + b"}" * 5000,
    b'{"body": ' + b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1) + b"}",
    b'{"n": 18446744073709551616}', b'{"text": "\\ud800"}', b'{"\\udfff": 1}',
    b"\xff\xfe{}", b"{'a': 1}", b'{"a": 1} x',
])
def test_malformed_bodies_are_bad_request(raw):
    with pytest.raises(AdminError) as err:
        parse_body(raw)
    assert (err.value.status, err.value.code) == (400, "bad_request")


def test_good_bodies_pass_as_they_are():
    nested = {"body": json.loads("[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1))}
    for value in ({}, {"user": "alice", "seconds": 1.5}, {"n": -2 ** 63, "m": 2 ** 63 - 1},
                  {"body": {"é": ["ü", None, True]}}, nested):
        assert parse_body(json.dumps(value).encode()) == value
    assert parse_body(b"") == {}


# -- a zone's ban check ---------------------------------------------------------------------
class NoRedis:
    """A store whose Redis holds nothing: Moderation only reads mutes and room modes at start."""

    class link:
        @staticmethod
        def run(fn, *args):
            return {}


def test_a_pushed_ban_refuses_the_users_sends_until_the_unban():
    from cluster.envelopes import Mod
    from cluster.replies import Refused
    from zone.moderation import Moderation

    mod = Moderation(NoRedis())
    mod.check_muted("alice", 0)
    mod.on_change(Mod("ban", "alice", "spam"))
    with pytest.raises(Refused) as refused:
        mod.check_muted("alice", 0)
    assert refused.value.code == "banned"
    mod.check_muted("bob", 0)
    mod.on_change(Mod("ban", "alice", ""))
    mod.check_muted("alice", 0)
