"""The chat page in a real browser (Debian's Chromium through Playwright), against the whole
cluster: pages chat with each other and with TCP clients, rooms and broadcasts show up,
errors read like sentences, and a gate restart loses and duplicates nothing."""
import itertools
import os

import pytest
import websocket
from gevent.pywsgi import WSGIServer
from playwright.sync_api import expect

from chatpage import PASSWORD
from cluster import admin as admin_cli
from client import Client, dm_conv

_names = itertools.count(1)


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


def test_rate_limit_and_mute_are_explained(open_page, cluster):
    a, b = fresh("ann"), fresh("bob")
    page = open_page("gate1").enter(a)
    open_page("gate2").enter(b)
    page.dm(b)
    page.page.evaluate("([conv]) => { for (let i = 0; i < 50; i++) window.zonechat.send(conv, `flood ${i}`); }",
                       [dm_conv(a, b)])
    expect(page.page.locator("#notice-text")).to_contain_text("too fast")
    expect(page.page.locator("#messages li.failed .why").first).to_have_text("not sent: too fast")
    admin_cli.call(cluster.cfg, "/v1/mute", {"user": a, "seconds": 120})
    page.page.locator("#notice-close").click()
    page.say("can anyone hear me")
    expect(page.page.locator("#notice-text")).to_contain_text("You are muted until")
    expect(page.page.locator("#messages li.failed .why").last).to_have_text("not sent: you are muted")
    page.screenshot("chat_errors.png")
    admin_cli.call(cluster.cfg, "/v1/mute", {"user": a, "seconds": 0})


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
