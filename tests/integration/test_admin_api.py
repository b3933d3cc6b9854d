"""Issue 3, points 5 (audit, endpoint security) and 7 (a game backend drives it), on the real
cluster: center's admin endpoint over HTTP and ``zonechat admin`` as a subprocess.

The endpoint refuses a wrong secret (401) and listens on loopback; ``token USER`` mints a
login token (no password needed); ``/v1/group`` sets a roster exactly; ``/v1/post`` posts
to a DM, a group or a room as ``system``; every action is an ``admin`` record in
``zonechat log tail``.
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys

import psutil
import pytest
import yaml

from cluster.admin import AdminFailed
from client import dm_conv
from harness import REPO, http_request
from kit import admin, admin_cli, expect_error, expect_ok, fresh, wait_for


def http(cluster, path: str, payload=None, auth: str | None = "secret", method: str | None = None):
    """(status, json body) of one raw HTTP request to the admin endpoint."""
    host, port = cluster.admin_addr
    headers = {"Content-Type": "application/json"}
    if auth == "secret":
        headers["Authorization"] = f"Bearer {cluster.secret}"
    elif auth is not None:
        headers["Authorization"] = auth
    data = None if payload is None else json.dumps(payload).encode()
    status, _, body = http_request(f"http://{host}:{port}{path}", headers, data, method)
    return status, json.loads(body or b"{}")


# -- the endpoint ----------------------------------------------------------------------------
def test_wrong_secret_is_401_and_nothing_happens(cluster, clients):
    u = clients.user()
    for auth in (None, "Bearer wrong-secret-wrong-secret", f"Bearer {cluster.secret}x",
                 f"Basic {cluster.secret}", cluster.secret):
        status, body = http(cluster, "/v1/kick", {"user": u.user}, auth=auth)
        assert status == 401 and body["error"] == "unauthorized", (auth, status, body)
        status, _ = http(cluster, "/v1/stats", auth=auth)
        assert status == 401
    u.fence()
    assert u.kicked_reason is None                       # the refused kick did nothing
    status, body = http(cluster, "/v1/stats")
    assert status == 200 and body["node"] == "center1"
    assert http(cluster, "/v1/nope", {})[0] == 404
    assert http(cluster, "/v1/kick", {"user": "no spaces"})[0] == 400
    # the CLI with another secret is refused too
    raw = yaml.safe_load(open(cluster.config_path))
    raw.setdefault("cluster", {})["secret"] = "another-secret-of-at-least-32-characters"
    other = cluster.config_path.replace("config.yaml", "wrong-secret.yaml")
    with open(other, "w") as fh:
        yaml.safe_dump(raw, fh)
    out = subprocess.run([sys.executable, "-m", "cluster.cli", "admin", "-c", other, "stats"],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "unauthorized" in out.stderr


def test_admin_endpoint_listens_on_loopback_only(cluster):
    port = cluster.admin_addr[1]
    center = psutil.Process(cluster.pid("center1"))
    listening = [c.laddr for c in center.net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN and c.laddr.port == port]
    assert listening and all(addr.ip in ("127.0.0.1", "::1") for addr in listening), listening
    others = [a.address for addrs in psutil.net_if_addrs().values() for a in addrs
              if a.family == socket.AF_INET and not a.address.startswith("127.")]
    for ip in others:                                       # not reachable from the network
        with pytest.raises(OSError):
            socket.create_connection((ip, port), timeout=2).close()


# -- a game backend ----------------------------------------------------------------------------
def test_token_lets_a_player_log_in_without_password(cluster, clients):
    name = clients.register()
    out = admin_cli(cluster, "token", name, "--quiet")
    token = out.stdout.strip()
    assert token and "\n" not in token
    c = clients.connect(gate=1)
    welcome = c.login(name, token=token)
    assert welcome["user"] == name and welcome["token"]
    full = json.loads(admin_cli(cluster, "token", name).stdout)
    assert full["user"] == name and full["expires"] > 0 and full["token"]
    other = clients.register()
    wrong = clients.connect(gate=0)
    assert wrong.request("login", user=other, token=token)["code"] == "auth_failed"  # only for its user
    missing = admin_cli(cluster, "token", fresh("ghost"), check=False)
    assert missing.returncode != 0 and "no_such_user" in missing.stderr


def test_token_only_accounts_log_in_by_token_never_by_password(cluster, clients):
    names = [fresh("tok") for _ in range(3)]
    assert admin(cluster, "/v1/users", {"users": names}) == {"created": 3, "existing": 0}
    assert admin(cluster, "/v1/users", {"users": names[:1]}) == {"created": 0, "existing": 1}
    token = admin(cluster, "/v1/token", {"user": names[0]})["token"]
    c = clients.connect(gate=1)
    assert c.login(names[0], token=token)["user"] == names[0]
    other = clients.connect(gate=0)
    for password in ("!", "password1", ""):
        reply = other.request("login", user=names[1], password=password)
        assert (reply["t"], reply["code"]) == ("error", "auth_failed"), reply
    taken = clients.connect(gate=0).request("register", user=names[2], password="password1")
    assert taken["code"] == "user_exists"
    with pytest.raises(AdminFailed) as bad:
        admin(cluster, "/v1/users", {"users": ["system"]})
    assert "bad_name" in str(bad.value)


def test_roster_creates_a_group_and_sets_its_members_exactly(cluster, clients):
    owner, a, b, c = (clients.user(gate=i % 2) for i in range(4))
    g = f"g:{fresh('guild')}"
    result = admin(cluster, "/v1/group", {"group": g, "owner": owner.user, "members": [a.user, b.user]})
    assert result == {"group": g, "owner": owner.user, "members": [a.user, b.user]}
    ack = a.send(g, "hello guild")
    for m in (owner, b):
        assert m.wait_msgs(g, 1)[0]["seq"] == ack["seq"]
    expect_error(c, "not_member", "send", conv=g, cid="c1", body="x")
    expect_error(a, "not_owner", "group_add", group=g, user=c.user)
    # the roster changes: a out, c in; the owner stays the owner
    admin_cli(cluster, "roster", g, owner.user, b.user, c.user)
    expect_error(a, "not_member", "send", conv=g, cid="a2", body="x")
    assert c.send(g, "new here")["seq"] == 2
    b.wait_msgs(g, 2)
    owner.wait_msgs(g, 2)
    a.fence()
    assert a.seqs(g) == []
    expect_ok(owner, "group_remove", group=g, user=c.user)
    c2 = clients.relogin(c, gate=0)
    assert g not in c2.welcome["convs"]
    # an exact roster: the same call again changes nothing, a member list of none leaves the owner
    admin(cluster, "/v1/group", {"group": g, "owner": owner.user, "members": []})
    expect_error(b, "not_member", "send", conv=g, cid="b3", body="x")
    assert owner.send(g, "alone")["t"] == "ack"
    with pytest.raises(AdminFailed, match="no_such_user"):
        admin(cluster, "/v1/group", {"group": g, "owner": owner.user, "members": [fresh("ghost")]})
    with pytest.raises(AdminFailed, match="bad_request"):
        admin(cluster, "/v1/group", {"group": "r:notagroup", "owner": owner.user, "members": []})


def test_roster_member_starts_at_the_groups_last_seq(cluster, clients):
    owner = clients.user()
    g = f"g:{fresh('guild')}"
    admin(cluster, "/v1/group", {"group": g, "owner": owner.user, "members": []})
    owner.send(g, "one")
    owner.send(g, "two")
    newcomer = clients.register()
    admin(cluster, "/v1/group", {"group": g, "owner": owner.user, "members": [newcomer]})
    n = clients.user(newcomer, gate=1, register=False)
    assert n.welcome["convs"][g] == 2
    n.fence()
    assert n.msgs(g) == []


def test_post_as_system_to_dm_group_and_room(cluster, clients):
    a, b, w = clients.user(gate=0), clients.user(gate=1), clients.user(gate=1)
    dm = dm_conv(a.user, b.user)
    out = json.loads(admin_cli(cluster, "post", dm, "your match starts").stdout)
    assert out["conv"] == dm and out["seq"] == 1
    for m in (a, b):                                          # both users get it
        got = m.wait_msgs(dm, 1)[0]
        assert (got["from"], got["body"], got["seq"], got["cid"]) == ("system", "your match starts", 1, out["cid"])
    g = f"g:{fresh('grp')}"
    expect_ok(a, "group_create", group=g, members=[b.user])
    res = admin(cluster, "/v1/post", {"conv": g, "body": {"reward": 100}, "cid": "quest-7"})
    assert (res["seq"], res["cid"]) == (1, "quest-7")
    for m in (a, b):
        got = m.wait_msgs(g, 1)[0]
        assert (got["from"], got["body"], got["cid"]) == ("system", {"reward": 100}, "quest-7")
    again = admin(cluster, "/v1/post", {"conv": g, "body": {"reward": 100}, "cid": "quest-7"})
    assert again["seq"] == 1                                  # the same cid: deduplicated
    r = f"r:{fresh('arena')}"
    a.join(r)
    b.join(r)
    res = admin(cluster, "/v1/post", {"conv": r, "body": "round 2"})
    for m in (a, b):
        got = m.wait_msgs(r, 1)[0]
        assert (got["from"], got["body"], got["seq"]) == ("system", "round 2", res["seq"])
    w.fence()
    assert w.msgs(r) == []
    # offline delivery of system posts works like any DM message
    b.logout()
    admin(cluster, "/v1/post", {"conv": dm, "body": "while you were away"})
    b2 = clients.relogin(b, gate=0)
    b2.fence()
    assert [m["body"] for m in b2.msgs(dm)][-1] == "while you were away"
    with pytest.raises(AdminFailed, match="bad_conv"):
        admin(cluster, "/v1/post", {"conv": dm_conv(a.user, fresh("zghost")), "body": "x"})
    with pytest.raises(AdminFailed, match="bad_request"):
        admin(cluster, "/v1/post", {"conv": "d:b:a", "body": "x"})


def test_stats_count_online_users_and_rooms(cluster, clients):
    # the module's cluster is ours: once the earlier tests' sessions are gone, nobody is online
    wait_for(lambda: admin(cluster, "/v1/stats")["online"] == 0, "the earlier sessions gone", timeout=15)
    users = [clients.user(gate=i % 2) for i in range(3)]
    r = f"r:{fresh('stat')}"
    for u in users:
        u.join(r)
    wait_for(lambda: admin(cluster, "/v1/stats")["online"] == 3, "3 online")
    stats = json.loads(admin_cli(cluster, "stats").stdout)
    assert (stats["online"], stats["rooms"], stats["room_members"]) == (3, 1, 3)
    assert stats["bus_drops"] == 0 and isinstance(stats["counters"], dict)
    for u in users:
        u.logout()
    wait_for(lambda: admin(cluster, "/v1/stats")["online"] == 0, "nobody online again")
    assert admin(cluster, "/v1/stats")["room_members"] == 0


# -- audit ---------------------------------------------------------------------------------------
def test_every_admin_action_is_an_audit_record_in_log_tail(cluster, clients):
    target = clients.user()
    name = target.user
    r = f"r:{fresh('audit')}"
    g = f"g:{fresh('audit')}"
    actions = [
        ("broadcast", lambda: admin_cli(cluster, "broadcast", f"audit {name}")),
        ("post", lambda: admin_cli(cluster, "post", r, f"audit {name}")),
        ("mute", lambda: admin_cli(cluster, "mute", name, "--for", "30s")),
        ("mute", lambda: admin_cli(cluster, "unmute", name)),
        ("room", lambda: admin_cli(cluster, "slow", r, "5")),
        ("room", lambda: admin_cli(cluster, "dups", r, "0")),
        ("token", lambda: admin_cli(cluster, "token", name)),
        ("group", lambda: admin_cli(cluster, "roster", g, name)),
        ("reload", lambda: admin_cli(cluster, "reload")),
        ("kick", lambda: admin_cli(cluster, "kick", name)),
        ("ban", lambda: admin_cli(cluster, "ban", name, "--reason", "audit")),
        ("ban", lambda: admin_cli(cluster, "unban", name)),
    ]
    for _, run in actions:
        run()

    def admin_lines():
        out = subprocess.run([sys.executable, "-m", "cluster.cli", "log", "tail", "-c", cluster.config_path,
                              "-n", "5000"], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return [line for line in out.stdout.splitlines() if " center1 admin " in line]

    def mine(lines):
        """The admin lines from this test's broadcast on (the module runs one test at a time)."""
        starts = [i for i, line in enumerate(lines) if " broadcast " in line and name in line]
        return lines[starts[0]:] if starts else []

    wait_for(lambda: len(mine(admin_lines())) >= len(actions), "the audit records", timeout=15, interval=0.5)
    lines = mine(admin_lines())
    assert len(lines) == len(actions), "\n".join(lines)
    for (action, _), line in zip(actions, lines):
        assert line.split(" center1 admin ", 1)[1].split(" ", 2)[1] == action, line
    assert "seconds=30" in lines[2] and "seconds=0" in lines[3] and "slow=5" in lines[4]
    assert "reason=audit" in lines[10] and "reason=''" in lines[11]
    assert all(f" {name} " in lines[i] for i in (2, 3, 6, 9, 10, 11))     # tail shows the target user
    # a refused request (wrong secret) is no action: nothing is recorded for it
    assert http(cluster, "/v1/kick", {"user": name}, auth="Bearer nope-nope-nope-nope")[0] == 401
    admin_cli(cluster, "token", name)
    wait_for(lambda: len(mine(admin_lines())) == len(actions) + 1, "the next audit record", timeout=15,
             interval=0.5)
    assert " token " in mine(admin_lines())[-1]
