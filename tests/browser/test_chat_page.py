"""The chat page in a real browser (Debian's Chromium through Playwright), against the whole
cluster: pages chat with each other and with TCP clients, rooms and broadcasts show up,
errors read like sentences, and a gate restart loses and duplicates nothing. The layout,
the errors and the rooms are checked at a phone's size (390×844) and a desktop's (1280×800)."""
import itertools
import os
import re
import time

import pytest
import websocket
from gevent.pywsgi import WSGIServer
from playwright.sync_api import expect

from chatpage import DESKTOP, PASSWORD, PHONE
from cluster import admin as admin_cli
from client import Client, dm_conv

_names = itertools.count(1)
SIZES = pytest.mark.parametrize("size", [PHONE, DESKTOP], ids=["phone", "desktop"])


def fresh(prefix: str) -> str:
    return f"{prefix}{os.getpid() % 1000}x{next(_names)}"


def tcp_user(cluster, user: str, gate: str) -> Client:
    host, port = cluster.gate_addrs[gate]
    client = Client(host, port, timeout=20, ping_interval=5, reconnect=True).connect()
    client.register(user, PASSWORD)
    client.login(user, PASSWORD)
    return client


def test_two_pages_and_a_tcp_client_chat(open_page, cluster):
    a, b, c = fresh("ann"), fresh("bob"), fresh("cat")
    tcp = tcp_user(cluster, c, "gate1")
    page_a = open_page("gate1")
    page_a.screenshot("chat_login.png")
    page_a.enter(a)
    page_b = open_page("gate2").enter(b)
    page_a.dm(b)
    page_a.say("hello from a browser")
    expect(page_a.bodies()).to_have_text(["hello from a browser"])
    expect(page_b.page.locator(f"#convs li[data-conv='{dm_conv(a, b)}'] .unread")).to_have_text("1")
    page_b.select(dm_conv(a, b))
    expect(page_b.bodies()).to_have_text(["hello from a browser"])
    page_b.say("hi back from another gate")
    expect(page_a.bodies()).to_have_text(["hello from a browser", "hi back from another gate"])
    tcp.send(dm_conv(a, c), "hello from a TCP game client")
    page_a.select(dm_conv(a, c))
    expect(page_a.bodies()).to_have_text(["hello from a TCP game client"])
    page_a.say("hello TCP, from the browser")
    got = tcp.expect("msg", timeout=15, conv=dm_conv(a, c))
    assert (got["from"], got["body"]) == (a, "hello TCP, from the browser")
    page_a.select(dm_conv(a, b))
    page_a.screenshot("chat_dm.png")
    page_b.screenshot("chat_dm_other_gate.png")
    tcp.close()


def test_room_messages_and_system_broadcast(open_page, cluster):
    a, b, c = fresh("ann"), fresh("bob"), fresh("cat")
    room = fresh("lobby")
    page_a, page_b = open_page("gate1").enter(a), open_page("gate2").enter(b)
    for page in (page_a, page_b):
        page.join(room)
        expect(page.page.locator("#conv-title")).to_have_text(f"# {room}")
    page_b.say("room hello from bob")
    expect(page_a.bodies()).to_have_text(["room hello from bob"])
    tcp = tcp_user(cluster, c, "gate2")
    tcp.join(f"r:{room}")
    tcp.send(f"r:{room}", "room hello from a TCP client")
    for page in (page_a, page_b):
        expect(page.bodies()).to_have_text(["room hello from bob", "room hello from a TCP client"])
    admin_cli.call(cluster.cfg, "/v1/broadcast", {"text": "Server maintenance at 12:00 UTC"})
    for page in (page_a, page_b):
        expect(page.page.locator("#sys-banner")).to_be_visible()
        expect(page.page.locator("#sys-text")).to_have_text("Server maintenance at 12:00 UTC")
    page_a.screenshot("chat_room_and_broadcast.png")
    page_a.select("sys")
    expect(page_a.bodies().last).to_have_text("Server maintenance at 12:00 UTC")
    tcp.close()


def suffix(size) -> str:
    return "_phone" if size == PHONE else ""


@SIZES
def test_rate_limit_and_mute_are_explained(open_page, cluster, size):
    """The notice says the server's reason with the time left, and goes when it stops being
    true: after an unmute, with the next send accepted; by itself when a mute runs out."""
    a, b = fresh("ann"), fresh("bob")
    admin_cli.call(cluster.cfg, "/v1/users", {"users": [b]})
    page = open_page("gate1", viewport=size).enter(a)
    notice, text = page.page.locator("#notice"), page.page.locator("#notice-text")
    page.dm(b)
    page.page.evaluate("([conv]) => { for (let i = 0; i < 50; i++) window.zonechat.send(conv, `flood ${i}`); }",
                       [dm_conv(a, b)])
    expect(text).to_have_text(re.compile(r"^too many messages; slow down\.$", re.I))   # the server's reason
    expect(page.page.locator("#messages li.failed .why").first).to_have_text("not sent: too fast")
    admin_cli.call(cluster.cfg, "/v1/mute", {"user": a, "seconds": 120})
    page.page.locator("#notice-close").click()
    page.say("can anyone hear me")
    expect(text).to_have_text(re.compile(r"^You are muted for [12] more minutes?\.$"))
    expect(page.page.locator("#messages li.failed .why").last).to_have_text("not sent: you are muted")
    page.screenshot(f"chat_errors{suffix(size)}.png")
    admin_cli.call(cluster.cfg, "/v1/mute", {"user": a, "seconds": 0})
    expect(notice).to_be_visible()            # an unmute sends nothing: the page cannot know yet
    page.say("heard again")
    expect(notice).to_be_hidden()
    expect(page.bodies().last).to_have_text("heard again")
    admin_cli.call(cluster.cfg, "/v1/mute", {"user": a, "seconds": 8})
    page.say("a short mute")
    expect(text).to_have_text(re.compile(r"^You are muted for \d+ more seconds?\.$"))
    expect(notice).to_be_hidden(timeout=30_000)   # the mute ran out: nothing else was sent


def test_session_replaced_then_reconnect_here_then_log_out(open_page):
    a = fresh("ann")
    first = open_page("gate1").enter(a)
    second = open_page("gate2").enter(a, register=False)
    expect(first.page.locator("#notice-text")).to_have_text(
        "You logged in somewhere else, so this page went offline.")
    expect(first.page.locator("#status")).to_have_text("offline")
    first.page.locator("#notice .action").click()          # "Reconnect here"
    expect(first.page.locator("#status")).to_have_text("online")
    expect(second.page.locator("#status")).to_have_text("offline")
    first.page.click("#logout")
    expect(first.page.locator("#login-view")).to_be_visible()
    expect(first.page.locator("#status")).to_have_text("offline")


def test_page_survives_a_gate_restart_without_loss_or_duplicates(open_page, cluster):
    a, c = fresh("ann"), fresh("cat")
    conv = dm_conv(a, c)
    tcp = tcp_user(cluster, c, "gate2")
    page = open_page("gate1").enter(a)
    page.dm(c)
    for i in range(1, 4):
        tcp.send(conv, f"m{i}")
    expect(page.bodies()).to_have_text(["m1", "m2", "m3"])
    old = cluster.kill("gate1")
    expect(page.page.locator("#status")).to_have_text("reconnecting…")
    for i in range(4, 7):
        tcp.send(conv, f"m{i}")
    page.say("typed while the gate was down")
    expect(page.page.locator("#messages li.pending .body")).to_have_text(["typed while the gate was down"])
    cluster.wait_ready("gate1", old_pid=old)
    expect(page.page.locator("#status")).to_have_text("online", timeout=30_000)
    expect(page.page.locator("#messages li.pending")).to_have_count(0)
    tcp.send(conv, "m7")
    want = ["m1", "m2", "m3", "m4", "m5", "m6", "typed while the gate was down", "m7"]
    expect(page.bodies()).to_have_text(want)
    assert page.seqs() == list(range(1, 9))
    history = tcp.sync(conv, after=0)
    assert [m["body"] for m in history["msgs"]] == want       # stored once, in order
    page.screenshot("chat_after_gate_restart.png")
    tcp.close()


def test_room_and_system_gaps_are_filled_after_a_gate_restart(open_page, cluster):
    a, c = fresh("ann"), fresh("cat")
    room = f"r:{fresh('hall')}"
    tcp = tcp_user(cluster, c, "gate2")
    tcp.join(room)
    page = open_page("gate1").enter(a)
    page.join(room[2:])
    tcp.send(room, "before")
    expect(page.bodies()).to_have_text(["before"])
    old = cluster.kill("gate1")
    expect(page.page.locator("#status")).to_have_text("reconnecting…")
    tcp.send(room, "during 1")
    tcp.send(room, "during 2")
    admin_cli.call(cluster.cfg, "/v1/broadcast", {"text": "sent while the gate was down"})
    cluster.wait_ready("gate1", old_pid=old)
    expect(page.page.locator("#status")).to_have_text("online", timeout=30_000)
    tcp.send(room, "after")
    expect(page.bodies()).to_have_text(["before", "during 1", "during 2", "after"])
    page.select("sys")                  # sys is live only: this one came back through sync
    expect(page.bodies().filter(has_text="sent while the gate was down")).to_have_count(1)
    tcp.close()


def another_site():
    """A plain local web site on another port: another origin, no CSP of ours."""
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
        return [b"<!doctype html><title>another site</title><h1>another site</h1>"]
    server = WSGIServer(("127.0.0.1", 0), app, log=None)
    server.start()
    return server


TRY_WS = """(url) => new Promise(done => {
    setTimeout(() => done('no answer'), 10000);
    const ws = new WebSocket(url);
    ws.onopen = () => { ws.close(); done('open'); };
    ws.onclose = (ev) => done(`closed ${ev.code}`);
})"""


def test_a_page_from_another_origin_is_refused(open_page, cluster):
    host, port = cluster.ws_addrs["gate1"]
    target = f"ws://{host}:{port}/ws"
    assert open_page("gate1").page.evaluate(TRY_WS, target) == "open"
    site = another_site()
    try:
        page = open_page("gate1")
        page.page.goto(f"http://127.0.0.1:{site.server_port}/")
        assert page.page.evaluate(TRY_WS, target) == "closed 1006"
    finally:
        site.stop()
    assert any("Unexpected response code: 403" in line for line in page.console), page.console
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(target, timeout=10, origin="http://evil.example")
    assert refused.value.status_code == 403


LONG_WORDS = ("Supercalifragilisticexpialidocious adventures await whoever reads this "
              "extraordinarily long message about incomprehensibilities, characteristically "
              "written without a single hyphenation opportunity anywhere in it at all.")
TOKEN = "https://example.com/" + "7" * 300       # one unbreakable token


def check_fits(page) -> None:
    """No horizontal scroll, the send box wholly in the viewport, no word broken mid-word."""
    lay = page.layout()
    assert lay["scrollWidth"] <= lay["clientWidth"], lay
    box = lay["send"]
    assert 0 <= box["left"] and box["right"] <= lay["width"], lay
    assert 0 <= box["top"] and box["bottom"] <= lay["height"], lay
    for part in ("#text", "#send-btn"):
        expect(page.page.locator(part)).to_be_in_viewport(ratio=1)
    assert page.broken_words() == []


def check_drawer(page) -> None:
    """Below 700 px the sidebar is a drawer: the button opens and closes it, so does the shade;
    at the desktop size the sidebar is always there and there is no button."""
    p, sidebar, button = page.page, page.page.locator("#sidebar"), page.page.locator("#drawer-btn")
    if not page.narrow():
        expect(button).to_be_hidden()
        expect(sidebar).to_be_visible()
        return
    expect(sidebar).to_be_hidden()
    button.click()
    expect(sidebar).to_be_visible()
    expect(button).to_have_attribute("aria-expanded", "true")
    page.drawer_settled()
    page.screenshot("chat_phone_drawer.png")
    button.click()
    expect(sidebar).to_be_hidden()
    expect(button).to_have_attribute("aria-expanded", "false")
    button.click()
    expect(sidebar).to_be_visible()
    p.locator("#shade").click(position={"x": p.viewport_size["width"] - 20, "y": 200})
    expect(sidebar).to_be_hidden()


@SIZES
def test_the_page_fits_the_screen(open_page, cluster, size):
    a, b = fresh("ann"), fresh("bob")
    admin_cli.call(cluster.cfg, "/v1/users", {"users": [b]})
    page = open_page("gate1", viewport=size)
    expect(page.page.locator("#login-form")).to_be_in_viewport(ratio=1)
    assert page.layout()["scrollWidth"] <= page.layout()["clientWidth"]
    if size == PHONE:
        page.screenshot("chat_login_phone.png")
    page.enter(a)
    check_drawer(page)
    page.dm(b)
    page.say(LONG_WORDS)
    page.say(TOKEN)
    page.say("a short one")
    expect(page.bodies()).to_have_text([LONG_WORDS, TOKEN, "a short one"])
    expect(page.page.locator("#messages li").first).to_have_text("Today")   # date separator
    check_fits(page)
    page.screenshot("chat_phone.png" if size == PHONE else "chat_desktop.png")
    ghost = fresh("ghost")
    page.dm(ghost)
    page.say("is anyone there")
    expect(page.page.locator("#notice-text")).to_have_text(re.compile(rf"^no user named {ghost}\.$", re.I))
    expect(page.page.locator("#messages li.failed .why")).to_have_text("not sent: no such user")
    check_fits(page)


ROWS = "els => els.map(e => e.className.split(' ')[0])"


@SIZES
def test_room_member_count_and_own_joins_and_leaves(open_page, cluster, size):
    a, c = fresh("ann"), fresh("cat")
    room = fresh("lobby")
    page = open_page("gate1", viewport=size).enter(a)
    p = page.page
    page.join(room)
    expect(p.locator("#conv-title")).to_have_text(f"# {room}")
    expect(p.locator("#conv-members")).to_have_text("1 member")            # from joined.members
    expect(p.locator("#messages li.line .text")).to_have_text([f"You joined # {room}"])
    tcp = tcp_user(cluster, c, "gate2")
    tcp.join(f"r:{room}")
    expect(p.locator("#conv-members")).to_have_text("2 members", timeout=40_000)   # room_info, ~10 s
    tcp.send(f"r:{room}", "hello room")
    expect(page.bodies()).to_have_text(["hello room"])
    assert p.locator("#messages li").evaluate_all(ROWS) == ["day", "line", "msg"]
    expect(p.locator("#messages li.day")).to_have_text(["Today"])
    check_fits(page)
    page.screenshot(f"chat_room{suffix(size)}.png")
    p.click("#leave-btn")
    expect(p.locator("#messages li.line .text")).to_have_text([f"You joined # {room}", f"You left # {room}"])
    assert p.locator("#messages li").evaluate_all(ROWS) == ["day", "line", "msg", "line"]
    expect(p.locator("#conv-title")).to_have_text(f"# {room} (left)")
    expect(p.locator("#conv-members")).to_be_hidden()
    expect(p.locator("#text")).to_be_disabled()
    tcp.close()


def test_date_separators_between_days(open_page, cluster):
    """The page's clock runs a day ahead: the room's messages are from yesterday, the page's
    own join line from today."""
    a, c = fresh("ann"), fresh("cat")
    room = f"r:{fresh('hall')}"
    tcp = tcp_user(cluster, c, "gate2")
    tcp.join(room)
    tcp.send(room, "said yesterday")
    tomorrow = time.time() + 86_400
    page = open_page("gate1", before_load=lambda pg: pg.clock.install(time=tomorrow)).enter(a)
    page.join(room[2:])
    expect(page.bodies()).to_have_text(["said yesterday"])
    expect(page.page.locator("#messages li.day")).to_have_text(["Yesterday", "Today"])
    assert page.page.locator("#messages li").evaluate_all(ROWS) == ["day", "msg", "day", "line"]
    tcp.close()
