"""Issue 2, point 5: accounts and sessions over real TCP against a whole cluster: register,
login (password and token), welcome, auth_failed, protocol version, double login, the
failed-login limits per user and per connection, token expiry, ping, logout, and the
log-in and idle timeouts.

Two clusters: the module's default one, and ``timers``, started with short timers so the
suite stays fast: ``gate.login_timeout`` 1.5 s (contract: 10 s), ``gate.idle_timeout``
2.5 s (contract: 60 s) and ``login.token_ttl`` 2 s (default 24 h). The rules are the
same, only the numbers are smaller.
"""
import time

import pytest

from cluster.convs import dm
from kit import PASSWORD, Closed, Raw, Users, fresh, redis_client, register
from dc import keys

LOGIN_TIMEOUT, IDLE_TIMEOUT, TOKEN_TTL = 1.5, 2.5, 2
TIMERS = {"gate": {"login_timeout": LOGIN_TIMEOUT, "idle_timeout": IDLE_TIMEOUT},
          "login": {"token_ttl": TOKEN_TTL}}


@pytest.fixture(scope="module")
def timers(start_cluster):
    return start_cluster(TIMERS)


def now_ms() -> int:
    return int(time.time() * 1000)


# -- register --------------------------------------------------------------------------------
def test_register_ok_and_user_exists(cluster):
    name = fresh("reg")
    with Raw(cluster.gates[0]) as conn:
        assert conn.register(name) == {"t": "ok", "rid": 1}
        reply = conn.register(name, "another-password")
        assert (reply["t"], reply["code"], reply["rid"]) == ("error", "user_exists", 2)
        assert conn.is_open()
    with Raw(cluster.gates[1]) as other_gate:          # an ok holds on every gate
        assert other_gate.register(name)["code"] == "user_exists"
        assert other_gate.login(name)["t"] == "welcome"
    # the password is stored as argon2id, never in clear
    record = redis_client(cluster).hgetall(keys.user(name))
    assert record[b"pw"].startswith(b"$argon2id$") and PASSWORD.encode() not in record[b"pw"]


@pytest.mark.parametrize("name", ["", "bad name", "a" * 33, "system", "a/b", "ünï", "a:b", "x\n",
                                  "d:a:b", "name@host"])
def test_register_bad_name(cluster, name):
    with Raw(cluster.gates[0]) as conn:
        reply = conn.register(name)
        assert (reply["t"], reply["code"]) == ("error", "bad_name"), reply
        assert conn.is_open()


def test_register_longest_and_odd_valid_names(cluster):
    for name in (fresh("L").ljust(32, "z"), "." + fresh(), "-" + fresh("_"), fresh("A.b-C_")):
        assert len(name) <= 32
        with Raw(cluster.gates[0]) as conn:
            assert conn.register(name)["t"] == "ok", name
            assert conn.login(name)["user"] == name


def test_register_weak_password_and_check_order(cluster):
    with Raw(cluster.gates[0]) as conn:
        name = fresh("weak")
        for pw in ("", "1234567", "seven77"):
            reply = conn.register(name, pw)
            assert (reply["t"], reply["code"]) == ("error", "weak_password"), (pw, reply)
        # name first, then password length, then a taken name
        assert conn.register("bad name", "short")["code"] == "bad_name"
        assert conn.register(name, "12345678")["t"] == "ok"               # 8 characters is enough
        assert conn.register(name, "short")["code"] == "weak_password"
        assert conn.register(name, "12345678")["code"] == "user_exists"
        assert conn.login(name, "12345678")["t"] == "welcome"


def test_register_works_while_logged_in(cluster):
    with Users(cluster) as users:
        me = users.new("me")
        other = fresh("o")
        assert me.register(other)["t"] == "ok"
        assert me.send(dm(me.user, other), "hi new user")["t"] == "ack"


# -- login -----------------------------------------------------------------------------------
def test_login_with_password_welcome_fields(cluster):
    name = register(cluster)
    with Raw(cluster.gates[1]) as conn:
        before = now_ms()
        welcome = conn.login(name)
        after = now_ms()
    assert welcome["t"] == "welcome" and welcome["rid"] == 1
    assert welcome["user"] == name
    assert isinstance(welcome["token"], str) and welcome["token"]
    assert PASSWORD not in welcome["token"]
    assert before - 1000 <= welcome["ts"] <= after + 1000
    assert isinstance(welcome["expires"], int)
    assert abs(welcome["expires"] - (welcome["ts"] + 86400 * 1000)) < 5000   # login.token_ttl 24 h
    assert welcome["convs"] == {"sys": welcome["convs"]["sys"]}              # a new user: only sys
    assert isinstance(welcome["convs"]["sys"], int)


def test_welcome_convs_lists_dms_with_messages_and_last_seq(cluster):
    with Users(cluster) as users:
        a, b = users.new("a"), users.new("b")
        empty_peer = register(cluster)
        conv = dm(a.user, b.user)
        for i in range(3):
            assert a.send(conv, i)["seq"] == i + 1
        assert b.send(conv, "back")["seq"] == 4
        again = users.relogin(a.user, gate=1)
        assert again.welcome["convs"] == {"sys": again.welcome["convs"]["sys"], conv: 4}
        assert dm(a.user, empty_peer) not in again.welcome["convs"]


def test_login_with_token(cluster):
    name = register(cluster)
    with Users(cluster) as users:
        first = users.relogin(name, gate=0)
        token = first.welcome["token"]
        second = users.connect(1)
        welcome = second.login(name, token=token)
        assert welcome["t"] == "welcome" and welcome["user"] == name
        assert isinstance(welcome["token"], str) and welcome["expires"] >= first.welcome["expires"]
        assert first.expect("kicked")["reason"] == "session_replaced"
        # a fresh token works again
        third = users.connect(0)
        assert third.login(name, token=welcome["token"])["t"] == "welcome"


def test_bad_tokens_are_auth_failed(cluster):
    name, other = register(cluster), register(cluster)
    with Raw(cluster.gates[0]) as conn:
        token = conn.login(name)["token"]
    user_part, expires, mac = token.rsplit(".", 2)
    flipped = mac[:-1] + ("0" if mac[-1] != "0" else "1")
    bad = [
        token + "x", flipped, f"{user_part}.{int(expires) + 1000}.{mac}",   # tampered
        "", "garbage", "a.b.c", f"{other}.{expires}.{mac}",
    ]
    with Raw(cluster.gates[1]) as conn:
        for t in bad:
            reply = conn.login(name, token=t)
            assert (reply["t"], reply["code"]) == ("error", "auth_failed"), (t, reply)
            assert conn.is_open()
        # a good token for another user is refused too
        reply = conn.login(other, token=token)
        assert reply["code"] == "auth_failed"
        assert conn.login(name, token=token)["t"] == "welcome"


def test_auth_failed(cluster):
    name = register(cluster)
    with Raw(cluster.gates[0]) as conn:
        for user, pw in ((name, "wrong-password"), (name, PASSWORD.upper()), (fresh("nobody"), PASSWORD),
                         ("bad name", PASSWORD), (name, "")):
            reply = conn.login(user, pw)
            assert (reply["t"], reply["code"], reply["rid"]) == ("error", "auth_failed", conn.last_rid), reply
            assert isinstance(reply["reason"], str)
        assert conn.is_open()
        assert conn.login(name)["t"] == "welcome"


def test_login_with_another_version_is_bad_request(cluster):
    name = register(cluster)
    with Raw(cluster.gates[0]) as conn:
        for v in (2, 0, -1, "1", [1]):
            reply = conn.login(name, v=v)
            assert (reply["t"], reply["code"]) == ("error", "bad_request"), (v, reply)
        welcome = conn.request("login", user=name, password=PASSWORD)    # v is optional
        assert welcome["t"] == "welcome"


def test_double_login_on_one_connection_is_bad_request(cluster):
    name, other = register(cluster), register(cluster)
    with Raw(cluster.gates[0]) as conn:
        assert conn.login(name)["t"] == "welcome"
        for user in (name, other):
            reply = conn.login(user)
            assert (reply["t"], reply["code"]) == ("error", "bad_request"), reply
        assert conn.is_open()
        assert conn.request("sync", conv="sys", after=0)["t"] == "history"   # still logged in as name
    with Raw(cluster.gates[1]) as conn:                                   # second login while the first is in flight
        first = conn.begin("login", user=name, password=PASSWORD, v=1)
        second = conn.begin("login", user=other, password=PASSWORD, v=1)
        assert conn.reply(second)["code"] == "bad_request"
        assert conn.reply(first)["t"] == "welcome"


def test_failed_login_limit_per_user(cluster):
    """More than 10 failed logins for one user in a minute: rate_limited, on any
    connection and even with the right password; the connection stays up."""
    name = register(cluster)
    bystander = register(cluster)
    for i in range(10):
        with Raw(cluster.gates[i % 2]) as conn:       # a fresh connection each time
            reply = conn.login(name, "wrong-password")
            assert reply["code"] == "auth_failed", (i, reply)
    for gate in (0, 1):
        with Raw(cluster.gates[gate]) as conn:
            reply = conn.login(name, "wrong-password")
            assert (reply["t"], reply["code"]) == ("error", "rate_limited"), reply
            reply = conn.login(name)                    # the right password: still limited
            assert reply["code"] == "rate_limited", reply
            assert conn.is_open()
            assert conn.login(bystander)["t"] == "welcome"   # other users are not affected
    assert redis_client(cluster).ttl(keys.failed_logins(name)) <= 60


def test_failed_login_limit_per_connection(cluster):
    """More than 10 failed logins on one connection: rate_limited there (whoever the
    user), the connection stays up; another connection is not affected."""
    good = register(cluster)
    with Raw(cluster.gates[0]) as conn:
        for i in range(10):
            reply = conn.login(fresh("nobody"), PASSWORD)    # 10 different users: no per-user limit
            assert reply["code"] == "auth_failed", (i, reply)
        reply = conn.login(good)
        assert (reply["t"], reply["code"]) == ("error", "rate_limited"), reply
        assert conn.is_open()
        assert conn.request("ping")["t"] == "pong"
    with Raw(cluster.gates[0]) as other:
        assert other.login(good)["t"] == "welcome"


# -- ping, logout ----------------------------------------------------------------------------
def test_ping_pong(cluster):
    with Users(cluster) as users:
        for conn in (users.connect(0), users.new("p", 1)):
            before = now_ms()
            pong = conn.request("ping")
            assert pong["t"] == "pong" and pong["rid"] == conn.last_rid
            assert before - 1000 <= pong["ts"] <= now_ms() + 1000
            conn.write({"t": "ping"})
            bare = conn.expect("pong")
            assert "rid" not in bare and isinstance(bare["ts"], int)


def test_logout_answers_ok_then_closes(cluster):
    with Users(cluster) as users:
        a, b = users.new("a", 0), users.new("b", 1)
        rid = a.begin("logout")
        got = a.wait_closed()
        assert got == [{"t": "ok", "rid": rid}], got
        # the user is logged out everywhere: a DM waits for the next login
        conv = dm(a.user, b.user)
        ack = b.send(conv, "are you there?")
        again = users.relogin(a.user, gate=1)
        assert again.expect("msg", conv=conv)["seq"] == ack["seq"]


# -- timers (short ones in this cluster) ---------------------------------------------------------
def test_login_timeout_kicks_idle(timers):
    """Contract: not logged in within 10 s -> kicked{idle}; here login_timeout 1.5 s."""
    with Raw(timers.gates[0]) as conn:
        start = time.monotonic()
        got = conn.wait_closed(timeout=LOGIN_TIMEOUT + 10)
        elapsed = time.monotonic() - start
    assert got == [{"t": "kicked", "reason": "idle"}]
    assert LOGIN_TIMEOUT - 0.3 <= elapsed <= LOGIN_TIMEOUT + 3, elapsed


def test_login_timeout_counts_from_connect_even_with_pings(timers):
    """Pings do not extend the time to log in."""
    with Raw(timers.gates[0]) as conn:
        start = time.monotonic()
        bodies = []
        while time.monotonic() - start < LOGIN_TIMEOUT + 3 and "kicked" not in bodies:
            try:
                conn.write({"t": "ping"})
                bodies.append(conn.next(timeout=0.5)["t"])
            except (Closed, OSError):
                break
            time.sleep(0.3)
        elapsed = time.monotonic() - start
        assert bodies[-1] == "kicked" and set(bodies[:-1]) == {"pong"}, bodies
        assert LOGIN_TIMEOUT - 0.3 <= elapsed <= LOGIN_TIMEOUT + 1.5, elapsed


def test_idle_timeout_kicks_a_silent_session_and_pings_keep_one_alive(timers):
    """Contract: 60 s without a frame -> kicked{idle}; here idle_timeout 2.5 s."""
    with Users(timers) as users:
        silent, chatty = users.new("s", 0), users.new("c", 1)
        assert silent.request("ping")["t"] == "pong"              # silent from now on
        start = time.monotonic()
        while time.monotonic() - start < IDLE_TIMEOUT + 1.5:          # chatty pings every 0.5 s
            assert chatty.request("ping")["t"] == "pong"
            time.sleep(0.5)
        got = silent.wait_closed(timeout=10)
        assert got == [{"t": "kicked", "reason": "idle"}], got
        assert chatty.is_open()
        # being kicked for idleness is no obstacle to logging in again
        again = users.relogin(silent.user, gate=0)
        assert again.is_open()


def test_idle_kick_comes_after_idle_timeout_not_before(timers):
    with Users(timers) as users:
        conn = users.new("s", 1)
        assert conn.request("ping")["t"] == "pong"
        start = time.monotonic()
        assert conn.wait_closed(timeout=IDLE_TIMEOUT + 10) == [{"t": "kicked", "reason": "idle"}]
        elapsed = time.monotonic() - start
        assert IDLE_TIMEOUT - 0.3 <= elapsed <= IDLE_TIMEOUT + 3, elapsed


def test_silence_right_after_login_gets_the_idle_timeout(timers):
    name = register(timers)
    with Raw(timers.gates[1]) as conn:
        assert conn.login(name)["t"] == "welcome"
        start = time.monotonic()
        assert conn.wait_closed(timeout=10) == [{"t": "kicked", "reason": "idle"}]
        elapsed = time.monotonic() - start
        assert elapsed >= IDLE_TIMEOUT - 0.3, elapsed


def test_token_expires(timers):
    name = register(timers)
    with Raw(timers.gates[0]) as conn:
        welcome = conn.login(name)
        token, expires = welcome["token"], welcome["expires"]
        assert abs(expires - welcome["ts"] - TOKEN_TTL * 1000) < 1000
        assert conn.request("logout")["t"] == "ok"
    with Raw(timers.gates[1]) as conn:                 # still valid right away
        assert conn.login(name, token=token)["t"] == "welcome"
    while now_ms() <= expires + 50:                     # wall clock: no server to wait for
        time.sleep(0.1)
    with Raw(timers.gates[0]) as conn:
        reply = conn.login(name, token=token)
        assert (reply["t"], reply["code"]) == ("error", "auth_failed"), reply
        assert "expired" in reply["reason"]
        assert conn.login(name)["t"] == "welcome"      # the password still works
