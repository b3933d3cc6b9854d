"""The operator view (issue 4 part 3, issue 13 point 5) in a real browser (Debian's Chromium
through Playwright): /ops on center's admin port asks for the secret and refuses a wrong one
with a clear 401 notice; then it shows, refreshing by itself, the graphs of the last 15
minutes (uPlot canvases whose series fill with the traffic the test makes), per-gate and
per-zone numbers, each process's CPU, memory, uptime and restarts under plain labels, and
the last admin actions under readable names (an unban reads "unban"). Its forms send admin
actions only after "Are you sure? Confirm": a broadcast reaches a connected client, a kick
closes one, mute / unmute, ban / unban and slow mode on / off take effect; Cancel sends
nothing. Saves ops.png and ops_actions.png in the screenshots folder (chatpage.SCREENSHOTS).
"""
from __future__ import annotations

import itertools
import os
import re
import urllib.request

import pytest
from playwright.sync_api import expect

from chatpage import PASSWORD, SCREENSHOTS
from cluster import admin as admin_mod
from client import Client, ClientError, dm_conv
from harness import poll_for

NUMBER = re.compile(r"^[1-9][0-9,]*$")
WAIT = 30.0
ACKED_SECONDS = 6             # seconds of traffic drawn before the screenshot
GRAPHS = ("g-msgs", "g-deliveries", "g-sessions", "g-errors", "g-ack")
_names = itertools.count(1)


@pytest.fixture
def tcp_user(cluster):
    """tcp_user(gate) -> a logged-in TCP Client on that gate; closed after the test."""
    made = []

    def make(gate: str = "gate1") -> Client:
        host, port = cluster.gate_addrs[gate]
        client = Client(host, port, timeout=20, ping_interval=None).connect()
        made.append(client)
        user = f"ops{os.getpid() % 1000}x{next(_names)}"
        client.register(user, PASSWORD)
        client.login(user, PASSWORD)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def ops_page(browser, cluster):
    """ops_page() -> (page, problems): a tab on /ops, signed in; ``problems`` collects page
    errors and CSP refusals. Closed after the test, whatever happened."""
    opened = []

    def make(sign_in_now: bool = True):
        host, port = cluster.admin_addr
        page = browser.new_page()
        opened.append(page)
        problems = []
        page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
        page.on("console", lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None)
        page.goto(f"http://{host}:{port}/ops")
        if sign_in_now:
            sign_in(page, cluster.secret)
            expect(page.locator("#status")).to_have_text("live")
        return page, problems

    yield make
    for page in opened:
        page.close()


def cell(page, table: str, node: str, key: str):
    return page.locator(f"#{table} tr[data-node='{node}'] td[data-k='{key}']")


def latest_action(page, key: str):
    return page.locator("#actions tbody tr").first.locator(f"td[data-k='{key}']")


def sign_in(page, secret: str) -> None:
    page.fill("#secret", secret)
    page.click("#connect")


def graph_max(page, graph: str) -> float:
    return float(page.locator(f"#{graph}").get_attribute("data-max") or 0)


def shoot(page, name: str, full_page: bool = False) -> str:
    os.makedirs(SCREENSHOTS, exist_ok=True)
    path = os.path.join(SCREENSHOTS, name)
    page.screenshot(path=path, full_page=full_page)
    return path


def test_ops_page_shows_the_cluster_live(cluster, ops_page, tcp_user):
    page, problems = ops_page(sign_in_now=False)
    sign_in(page, "not-the-secret-at-all")
    expect(page.locator("#notice-text")).to_contain_text("refused (401 unauthorized)")
    expect(page.locator("#auth-form")).to_be_visible()
    sign_in(page, cluster.secret)
    expect(page.locator("#status")).to_have_text("live")
    expect(page.locator("#notice")).to_be_hidden()

    a, b, c = tcp_user("gate1"), tcp_user("gate1"), tcp_user("gate2")
    a.join("r:opslobby")
    admin_mod.call(cluster.cfg, "/v1/mute", {"user": c.user, "seconds": 60})
    expect(cell(page, "gates", "gate1", "sessions")).to_have_text("2")
    expect(cell(page, "gates", "gate1", "users")).to_have_text("2")
    expect(cell(page, "gates", "gate1", "rooms")).to_have_text("1")
    expect(cell(page, "gates", "gate2", "sessions")).to_have_text("1")
    for zone in ("zone1", "zone2"):
        expect(cell(page, "zones", zone, "slots")).to_have_text(NUMBER)
    expect(page.locator("#redis-used")).to_have_text(re.compile(r"[0-9]"))
    expect(latest_action(page, "action")).to_have_text("mute")
    expect(latest_action(page, "about")).to_have_text(f"{c.user} for 1 min")

    with pytest.raises(ClientError, match="muted"):
        c.send(dm_conv(c.user, a.user), "muted, so refused by the zone")
    expect(page.locator("#zones td[data-k='errors']").filter(has_text="muted 1")).to_have_count(1)
    admin_mod.call(cluster.cfg, "/v1/mute", {"user": c.user, "seconds": 0})
    expect(latest_action(page, "action")).to_have_text("unmute")
    admin_mod.call(cluster.cfg, "/v1/ban", {"user": c.user, "reason": ""})
    expect(latest_action(page, "action")).to_have_text("unban")
    expect(latest_action(page, "about")).to_have_text(c.user)
    expect(latest_action(page, "args")).to_contain_text('"reason": ""')

    convs, sent = [dm_conv(a.user, b.user), dm_conv(a.user, c.user)], itertools.count()

    def graphs_filled() -> bool:        # 3 sends per 0.25 s: under the gate's 20/s per user
        for _ in range(3):
            k = next(sent)
            a.send(convs[k % 2], f"ops traffic {k}")
        acked_seconds = int(page.locator("#g-ack").get_attribute("data-points") or 0)
        return acked_seconds >= ACKED_SECONDS and all(
            graph_max(page, g) > 0 for g in ("g-msgs", "g-deliveries", "g-sessions", "g-ack"))
    poll_for(graphs_filled, WAIT, "msgs/s, deliveries/s, sessions and ack p99 drawn", interval=0.25)
    for graph in GRAPHS:
        expect(page.locator(f"#{graph} canvas")).to_have_count(1)
        assert int(page.locator(f"#{graph}").get_attribute("data-points")) > 0, graph
    expect(page.locator("#g-msgs .value")).to_have_text(re.compile(r"now$"))
    expect(page.locator("#c-ack")).to_have_text(re.compile(r"[0-9.]+ ms"))
    for key in ("in_per_s", "deliveries_per_s"):
        expect(cell(page, "gates", "gate1", key)).not_to_have_text(re.compile(r"^(–|0)$"))

    headers = page.locator("#procs th").all_inner_texts()
    assert {"CPU", "Memory", "Up for", "Restarts"} <= set(headers), headers
    assert not any("dlv" in h for h in page.locator("th, .card .label").all_inner_texts())
    for node in ("center1", "gate1", "zone1", "dc1", "login1"):
        expect(cell(page, "procs", node, "cpu")).to_have_text(re.compile(r"^[0-9]+\.[0-9] %$"))
        expect(cell(page, "procs", node, "rss")).to_have_text(re.compile(r"^[0-9.]+ (MB|GB)$"))
        expect(cell(page, "procs", node, "uptime")).to_have_text(re.compile(r"^[0-9]+ (s|min|h|d)"))
        expect(cell(page, "procs", node, "restarts")).to_have_text(re.compile(r"^[0-9]+$"))
    shoot(page, "ops.png", full_page=True)

    page.reload()                       # the secret stays in the tab: no second prompt
    expect(page.locator("#status")).to_have_text("live")
    expect(page.locator("#auth-view")).to_be_hidden()
    expect(page.locator("#g-sessions canvas")).to_have_count(1)
    assert problems == []


def the_license_is_served(cluster) -> None:
    host, port = cluster.admin_addr
    with urllib.request.urlopen(f"http://{host}:{port}/vendor/uPlot.LICENSE", timeout=10) as resp:
        assert b"MIT License" in resp.read()


def submit(page, form: str, button: str, **fields) -> None:
    """Fill a form of the actions panel and press one of its buttons: the page asks first."""
    for name, value in fields.items():
        page.fill(f"#{form} [name='{name}']", str(value))
    page.click(f"#{form} button[value='{button}']")
    expect(page.locator("#confirm")).to_be_visible()
    expect(page.locator("#confirm-text")).not_to_be_empty()


def confirm(page, result: str | re.Pattern) -> None:
    page.click("#confirm-yes")
    expect(page.locator("#confirm")).to_be_hidden()
    expect(page.locator("#action-result")).to_have_attribute("data-kind", "ok")
    expect(page.locator("#action-result")).to_have_text(result)


def sends(client: Client, conv: str) -> str:
    """'ok' or the code a send is refused with."""
    try:
        client.send(conv, "probe")
        return "ok"
    except ClientError as exc:
        return exc.code


def test_actions_from_the_page_after_confirming(cluster, ops_page, tcp_user):
    the_license_is_served(cluster)
    page, problems = ops_page()
    listener, target, spared = tcp_user("gate1"), tcp_user("gate2"), tcp_user("gate1")
    page.locator("#actions-panel").scroll_into_view_if_needed()

    # Cancel sends nothing: the user stays connected and no kick is listed
    submit(page, "f-kick", "kick", user=spared.user)
    expect(page.locator("#confirm-text")).to_contain_text(f"Kick {spared.user}")
    page.click("#confirm-no")
    expect(page.locator("#confirm")).to_be_hidden()
    expect(page.locator("#action-result")).to_have_text("Cancelled: nothing was sent.")

    text = f"maintenance at noon {os.getpid()}"
    submit(page, "f-broadcast", "broadcast", text=text)
    expect(page.locator("#confirm-text")).to_contain_text(text)
    confirm(page, re.compile(r"^Broadcast sent to everyone \(message [0-9]+ of sys\)\.$"))
    assert listener.expect("msg", conv="sys", body=text)["from"] == "system"
    expect(latest_action(page, "action")).to_have_text("broadcast")
    assert spared.ping() and spared.kicked_reason is None
    assert not page.locator("#actions td[data-k='about']").filter(has_text=spared.user).count()

    submit(page, "f-kick", "kick", user=target.user)
    confirm(page, f"Kicked {target.user}.")
    assert target.expect("kicked")["reason"] == "admin"
    expect(latest_action(page, "action")).to_have_text("kick")

    dm = dm_conv(listener.user, spared.user)
    submit(page, "f-mute", "mute", user=listener.user, minutes=5)
    confirm(page, re.compile(rf"^{listener.user} is muted until "))
    poll_for(lambda: sends(listener, dm) == "muted", WAIT, "the mute applied", interval=0.2)
    submit(page, "f-mute", "unmute", user=listener.user)
    confirm(page, f"{listener.user} is no longer muted.")
    expect(latest_action(page, "action")).to_have_text("unmute")
    poll_for(lambda: sends(listener, dm) == "ok", WAIT, "the unmute applied", interval=0.2)

    room = f"opsroom{os.getpid() % 1000}x{next(_names)}"
    spared.join(f"r:{room}")
    submit(page, "f-slow", "slow", room=room, seconds=30)
    expect(page.locator("#confirm-text")).to_contain_text("one message every 30 s")
    confirm(page, f"Slow mode in r:{room}: 30 s between messages.")
    expect(latest_action(page, "action")).to_have_text("slow mode 30 s")
    poll_for(lambda: sends(spared, f"r:{room}") == "rate_limited", WAIT, "slow mode on", interval=0.2)
    submit(page, "f-slow", "slow", room=f"r:{room}", seconds=0)
    confirm(page, f"Slow mode is off in r:{room}.")
    expect(latest_action(page, "action")).to_have_text("slow mode off")
    poll_for(lambda: sends(spared, f"r:{room}") == "ok", WAIT, "slow mode off", interval=0.2)

    submit(page, "f-ban", "ban", user=spared.user, reason="flooding the lobby")
    expect(page.locator("#confirm-text")).to_contain_text("flooding the lobby")
    page.evaluate("document.getElementById('actions-title').scrollIntoView({block: 'start'})")
    shoot(page, "ops_actions.png")
    confirm(page, f"{spared.user} is banned.")
    assert spared.expect("kicked")["reason"] == "banned"
    expect(latest_action(page, "about")).to_have_text(f"{spared.user}: flooding the lobby")
    submit(page, "f-ban", "unban", user=spared.user)
    confirm(page, f"{spared.user} is unbanned.")
    expect(latest_action(page, "action")).to_have_text("unban")

    # an error answer is shown as it came
    submit(page, "f-ban", "ban", user="nobody-by-this-name", reason="x")
    page.click("#confirm-yes")
    expect(page.locator("#action-result")).to_have_attribute("data-kind", "error")
    expect(page.locator("#action-result")).to_contain_text("404 no_such_user")
    assert problems == []
