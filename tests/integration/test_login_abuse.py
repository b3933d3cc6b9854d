"""Issue 11 ("trust nobody on the wire"), login's and the admin API's share, on a real cluster.

What a client can make login spend is bounded and counted: login reports its hash pool
to center's operator view (``GET /v1/ops`` → ``logins``: ``hashes`` computed, answers by
code), so "answered without hashing" and "at most 10 verifications" are read from the
server's own counters once its report covers the requests, never from timings.

Also: tokens are revoked by ``zonechat admin revoke`` and by a ban + unban, tokens signed
with the raw secret, the old default secret or in the old format are refused, malformed
admin bodies are 400 JSON, a ban holds for every send a zone takes after its 200, and
the traffic log is 0600 in a 0700 directory.

argon2 is made costlier here than in the other modules (a few ms a hash) so 30 parallel
logins really are in flight together.
"""
from __future__ import annotations

import dataclasses
import hashlib
import hmac
import http.client
import json
import os
import signal
import stat
import time

import gevent
import pytest

from cluster import secrets, tokens
from cluster.config import GateConf
from cluster.convs import dm
from dc import keys
from kit import (Raw, Users, admin, admin_cli, fresh, redis_client, register,
                 stored_records, wait_for)
from log import logfile

PARALLEL = 30
LIMIT = 10                     # login.failed_logins
OLD_DEFAULT = "zonechat-dev-secret-change-me"
# the gate's per-address limits (if this tree has them) would otherwise count this
# module's registrations and failed logins, all from 127.0.0.1, together
ROOMY = {k: 10000 for k in ("register_per_ip", "register_per_connection", "failed_logins_per_ip")
         if k in {f.name for f in dataclasses.fields(GateConf)}}


@pytest.fixture(scope="module")
def cluster(start_cluster):
    return start_cluster({"login": {"argon2_time_cost": 2, "argon2_memory_kib": 4096},
                          "gate": ROOMY})


# -- helpers ---------------------------------------------------------------------------------
def login_report(cluster) -> dict:
    """login1's latest counters as center's operator view has them ({} before the first)."""
    views = admin(cluster, "/v1/ops").get("logins", [])
    view = next((v for v in views if v["node"] == "login1"), {})
    return view if "hashes" in view else {}


def report_once(cluster, what: str, pred) -> dict:
    """The first login report for which ``pred(report)`` holds (reports come every second)."""
    return wait_for(lambda: (lambda r: r if r and pred(r) else None)(login_report(cluster)), what,
                    timeout=15, interval=0.2)


def n(report: dict, key: str) -> int:
    return report.get(key, 0)


def registered(cluster) -> tuple[str, dict]:
    """A fresh user, and the first login report that has its registration in."""
    before = n(login_report(cluster), "registered")
    name = register(cluster)
    return name, report_once(cluster, "a report with the register",
                             lambda r: n(r, "registered") >= before + 1)


def post_raw(cluster, path: str, data: bytes, auth: bool = True) -> tuple[int, str, dict]:
    """(status, content type, decoded JSON) of one POST with exactly ``data`` as its body."""
    host, port = cluster.admin_addr
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {cluster.secret}"
        conn.request("POST", path, body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type", ""), json.loads(resp.read())
    finally:
        conn.close()


def token_login(cluster, user: str, token: str) -> dict:
    with Raw(cluster.gates[1]) as conn:
        return conn.login(user, token=token)


# -- register and login cost ------------------------------------------------------------------
def test_register_checks_the_name_before_hashing(cluster):
    taken, base = registered(cluster)
    with Users(cluster) as users:
        for name, code in ((taken, "user_exists"), ("bad name", "bad_name"), ("system", "bad_name")):
            reply = users.connect().register(name)
            assert (reply["t"], reply.get("code")) == ("error", code), (name, reply)
        assert users.connect().register(fresh("weak"), "short")["code"] == "weak_password"
    register(cluster)                             # answered after the four: one hash
    after = report_once(cluster, "a report with the last register",
                        lambda r: n(r, "registered") >= n(base, "registered") + 1)
    assert n(after, "registers") == n(base, "registers") + 5
    assert n(after, "hashes") == n(base, "hashes") + 1, (base, after)


def test_parallel_wrong_logins_verify_at_most_the_limit(cluster):
    name, base = registered(cluster)
    answered = n(base, "auth_failed") + n(base, "rate_limited")
    with Users(cluster) as users:
        conns = [users.connect(i % 2) for i in range(PARALLEL)]
        rids = [c.begin("login", user=name, password="wrong-password-xyz", v=1) for c in conns]
        codes = sorted(c.reply(rid)["code"] for c, rid in zip(conns, rids))
        assert 1 <= codes.count("auth_failed") <= LIMIT, codes
        assert codes.count("rate_limited") == PARALLEL - codes.count("auth_failed"), codes
        assert users.connect().login(name)["code"] == "rate_limited"     # even the right password
    after = report_once(cluster, "a report with the 31 answers",
                        lambda r: n(r, "auth_failed") + n(r, "rate_limited") >= answered + PARALLEL + 1)
    assert n(after, "hashes") - n(base, "hashes") <= LIMIT, (base, after)
    text = cluster.log_text("login1")
    assert "Traceback" not in text and "wrong-password-xyz" not in text


def test_unknown_user_login_is_auth_failed_and_verifies_a_dummy_hash(cluster):
    known, base = registered(cluster)
    with Raw(cluster.gates[0]) as conn:
        nobody = conn.login(fresh("nobody"))
        wrong = conn.login(known, "wrong-password")
    assert (nobody["t"], nobody["code"]) == ("error", "auth_failed")
    assert nobody["reason"] == wrong["reason"]                      # nothing tells them apart
    after = report_once(cluster, "a report with both logins",
                        lambda r: n(r, "auth_failed") >= n(base, "auth_failed") + 2)
    assert n(after, "hashes") == n(base, "hashes") + 2              # the same cost: one hash each


# -- tokens -----------------------------------------------------------------------------------
def test_revoke_voids_the_users_tokens(cluster):
    name = register(cluster)
    with Raw(cluster.gates[0]) as conn:
        token = conn.login(name)["token"]
        assert token_login(cluster, name, token)["t"] == "welcome"    # (ends conn's session)
    minted = admin(cluster, "/v1/token", {"user": name})["token"]
    out = json.loads(admin_cli(cluster, "revoke", name, "--json").stdout)
    assert out["user"] == name and out["epoch"] >= 1
    for t in (token, minted):
        reply = token_login(cluster, name, t)
        assert (reply["t"], reply["code"]) == ("error", "auth_failed") and "revoked" in reply["reason"], reply
    with Raw(cluster.gates[0]) as conn:
        fresh_token = conn.login(name)["token"]                       # the password still works
    assert token_login(cluster, name, fresh_token)["t"] == "welcome"
    missing = admin_cli(cluster, "revoke", fresh("ghost"), check=False)
    assert missing.returncode != 0 and "no_such_user" in missing.stderr
    assert not redis_client(cluster).exists(keys.user(fresh("ghost")))


def test_ban_and_unban_revoke_tokens(cluster):
    name = register(cluster)
    with Raw(cluster.gates[0]) as conn:
        token = conn.login(name)["token"]
    admin(cluster, "/v1/ban", {"user": name, "reason": "spam"})
    admin(cluster, "/v1/ban", {"user": name, "reason": ""})
    reply = token_login(cluster, name, token)
    assert reply["code"] == "auth_failed" and "revoked" in reply["reason"], reply
    with Raw(cluster.gates[0]) as conn:
        assert conn.login(name)["t"] == "welcome"


def test_tokens_of_the_raw_secret_the_old_default_or_the_old_format_are_refused(cluster):
    name = register(cluster)
    secret = cluster.secret
    expires = int((time.time() + 3600) * 1000)
    old_mac = hmac.new(secret.encode(), f"{name}.{expires}".encode(), hashlib.sha256).hexdigest()
    forged = [
        tokens.mint(secret.encode(), name, 0, 3600)[0],                   # the raw secret as key
        tokens.mint(secrets.token_key(OLD_DEFAULT), name, 0, 3600)[0],    # the old shipped secret
        tokens.mint(OLD_DEFAULT.encode(), name, 0, 3600)[0],
        f"{name}.{expires}.{old_mac}",                                    # the 3-part format, real secret
    ]
    for token in forged:
        reply = token_login(cluster, name, token)
        assert (reply["t"], reply["code"]) == ("error", "auth_failed"), (token, reply)
    good = tokens.mint(secrets.token_key(secret), name, 0, 3600)[0]       # control: the derived key
    assert token_login(cluster, name, good)["t"] == "welcome"
    status, _, body = post_raw(cluster, "/v1/stats", b"{}", auth=False)
    assert status == 401 and body["error"] == "unauthorized"


def test_admin_secret_prints_the_cluster_secret(cluster):
    assert admin_cli(cluster, "secret").stdout.strip() == cluster.secret


# -- the admin API's bodies -------------------------------------------------------------------
@pytest.fixture(scope="module")
def victim(cluster) -> str:
    """A real user for the bodies below: a refusal is the body's, not a missing user's."""
    return register(cluster)


@pytest.mark.parametrize("path, data", [
    ("/v1/mute", b'{"user": "USER", "seconds": NaN}'),
    ("/v1/mute", b'{"user": "USER", "seconds": Infinity}'),
    ("/v1/mute", b'{"user": "USER", "seconds": -Infinity}'),
    ("/v1/mute", b'{"user": "USER", "seconds": 1e999}'),
    ("/v1/mute", b'{"user": "USER", "seconds": true}'),
    ("/v1/mute", b'{"user": "USER", "seconds": "60"}'),
    ("/v1/mute", b'{"user": "USER", "seconds": 1e300}'),
    ("/v1/mute", b'{"user": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
    ("/v1/mute", b"[" * 5000 + b"]" * 5000),
    ("/v1/ban", b'{"user": "USER", "reason": {"a": 1}}'),
    ("/v1/ban", b'["USER"]'),
    ("/v1/room", b'{"room": "r:lobby", "slow": NaN}'),
    ("/v1/post", b'{"conv": "sys", "body": 18446744073709551616}'),
    ("/v1/broadcast", b'{"text": "\\ud800"}'),
    ("/v1/kick", b'\xff{"user": "USER"}'),
])
def test_malformed_admin_bodies_are_400_json(cluster, victim, path, data):
    status, ctype, body = post_raw(cluster, path, data.replace(b"USER", victim.encode()))
    assert (status, ctype, body["error"]) == (400, "application/json", "bad_request"), body
    assert isinstance(body["reason"], str) and body["reason"]
    r = redis_client(cluster)
    assert not r.hexists(keys.MUTES, victim) and not r.hexists(keys.user(victim), "ban")   # nothing happened


# -- a ban holds from its 200 on --------------------------------------------------------------
def test_no_send_is_stored_after_the_ban_answered(cluster):
    a, b = register(cluster), register(cluster)
    conv = dm(a, b)
    with Raw(cluster.gates[0]) as conn:
        conn.login(a)
        answered = {}

        def ban():
            admin(cluster, "/v1/ban", {"user": a, "reason": "flood"})
            answered["ms"] = time.time() * 1000

        banning = gevent.spawn(ban)
        after = None
        try:
            for i in range(30):                 # within the send burst: none is rate_limited
                conn.begin("send", conv=conv, cid=f"c{i}", body=f"m{i}")
                gevent.sleep(0.002)
            banning.get(timeout=15)
            after = conn.begin("send", conv=conv, cid="after", body="after the ban")
        except OSError:
            pass                                # closed already: the kick came first
        banning.get(timeout=15)
        bodies = conn.wait_closed()
        assert not [x for x in bodies if x.get("rid") == after and x.get("t") == "ack"], bodies
        assert {"t": "kicked", "reason": "banned"} in bodies, bodies
    stored = stored_records(redis_client(cluster), conv)
    assert all(rec["ts"] <= answered["ms"] for rec in stored.values()), (answered, stored)
    assert all(rec["cid"] != "after" for rec in stored.values())
    with Raw(cluster.gates[1]) as conn:
        assert "banned" in conn.login(a)["reason"]


# -- the traffic log --------------------------------------------------------------------------
def test_traffic_log_files_are_private(cluster):
    directory = logfile.log_dir(cluster.data_dir)
    files = wait_for(lambda: logfile.list_files(directory), "a traffic log file")
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    for _, path in files:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path


def test_a_ban_no_zone_confirms_is_503_json_and_still_stored(cluster):
    """Last in the module: zone2 is stopped (SIGSTOP) for ZONE_WAIT seconds."""
    name = register(cluster)
    pid = cluster.kill("zone2", signal.SIGSTOP)
    try:
        status, ctype, body = post_raw(cluster, "/v1/ban", json.dumps({"user": name, "reason": "x"}).encode())
    finally:
        os.kill(pid, signal.SIGCONT)
    assert (status, ctype, body["error"]) == (503, "application/json", "unavailable"), body
    assert "zone2" in body["reason"] and "zone1" not in body["reason"]
    with Raw(cluster.gates[0]) as conn:
        assert "banned" in conn.login(name)["reason"]                # stored: logins refused
    assert admin(cluster, "/v1/ban", {"user": name, "reason": ""}) == {"user": name, "banned": False}
