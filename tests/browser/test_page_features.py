"""The chat page's side of the issue-15 extensions in a real browser (Debian's Chromium
through Playwright), against the whole cluster: an edit and a recall seen on the other
user's page (live, and from history after a reload), the unread badge from welcome.unread,
read ticks from `read` pushes (and from `sync`'s history.read after a reload), "X is
typing…" (the page sending at most one `typing` per 2 s), and the friends list following
presence (online, offline, status text, hidden). Saves chat_features.png."""
import itertools
import json
import os
import re
import time

from playwright.sync_api import expect

from chatpage import PASSWORD
from client import Client, dm_conv

_names = itertools.count(1)


def fresh(prefix: str) -> str:
    return f"{prefix}{os.getpid() % 1000}f{next(_names)}"


def tcp_client(cluster, gate: str = "gate2") -> Client:
    host, port = cluster.gate_addrs[gate]
    return Client(host, port, timeout=20, ping_interval=5).connect()


def registered(cluster, user: str) -> None:
    """``user`` exists and is not logged in anywhere."""
    tcp = tcp_client(cluster)
    tcp.register(user, PASSWORD)
    tcp.close()


def tcp_user(cluster, user: str, gate: str = "gate2") -> Client:
    tcp = tcp_client(cluster, gate)
    tcp.register(user, PASSWORD)
    tcp.login(user, PASSWORD)
    return tcp


def test_edit_and_recall_seen_by_the_other_page(open_page):
    a, b = fresh("ann"), fresh("bob")
    conv = dm_conv(a, b)
    page_a, page_b = open_page("gate1").enter(a), open_page("gate2").enter(b)
    page_a.dm(b)
    for text in ("fist try", "oops, wrong chat", "third"):
        page_a.say(text)
    expect(page_a.bodies()).to_have_text(["fist try", "oops, wrong chat", "third"])
    page_b.select(conv)
    expect(page_b.bodies()).to_have_text(["fist try", "oops, wrong chat", "third"])
    page_a.edit(1, "first try")
    page_a.recall(2)
    for page in (page_a, page_b):            # the events change their targets, nothing else shows
        expect(page.message(1).locator(".body")).to_have_text("first try")
        expect(page.message(1).locator(".edited")).to_be_visible()
        expect(page.message(2).locator(".body")).to_have_text("message removed")
        expect(page.message(2)).to_have_class(re.compile(r"\brecalled\b"))
        expect(page.message(3).locator(".body")).to_have_text("third")
        expect(page.message(3).locator(".edited")).to_have_count(0)
        expect(page.page.locator("#messages li.msg")).to_have_count(3)
    expect(page_b.message(1).locator(".edit-btn")).to_have_count(0)   # not b's to change
    expect(page_a.message(2).locator(".edit-btn")).to_have_count(0)   # removed: nothing to change
    page_b.page.reload()                     # the history records carry edited / recalled
    expect(page_b.page.locator("#status")).to_have_text("online")
    page_b.select(conv)
    expect(page_b.bodies()).to_have_text(["first try", "message removed", "third"])
    expect(page_b.message(1).locator(".edited")).to_be_visible()
    assert page_b.seqs() == [1, 2, 3]
    for page in (page_a, page_b):
        assert not [line for line in page.console if "pageerror" in line], page.console


def test_unread_badge_after_login(open_page, cluster):
    a, b = fresh("ann"), fresh("bob")
    conv = dm_conv(a, b)
    registered(cluster, b)
    tcp = tcp_user(cluster, a)
    for i in range(1, 4):
        tcp.send(conv, f"while you were away {i}")
    page = open_page("gate1").enter(b, register=False)
    assert page.page.evaluate(f"() => window.zonechat.core.welcome.unread[{json.dumps(conv)}]") == 3
    expect(page.conv_item(conv).locator(".unread")).to_have_text("3")   # not counted twice
    page.select(conv)
    expect(page.bodies()).to_have_text([f"while you were away {i}" for i in range(1, 4)])
    expect(page.conv_item(conv).locator(".unread")).to_have_count(0)    # opened: cleared
    page.dm(fresh("zed"))                     # another conversation on screen
    tcp.send(conv, "and one more")
    expect(page.conv_item(conv).locator(".unread")).to_have_text("1")
    tcp.close()


def test_read_tick_after_the_other_side_reads(open_page, cluster):
    a, b = fresh("ann"), fresh("bob")
    conv = dm_conv(a, b)
    registered(cluster, b)
    page_a = open_page("gate1").enter(a)
    page_a.dm(b)
    page_a.say("are you there?")
    tick = page_a.message(1).locator(".tick")
    expect(tick).to_have_text("✓")           # stored; b has not read it (b is offline)
    expect(tick).not_to_have_class(re.compile(r"\bread\b"))
    page_b = open_page("gate2").enter(b, register=False)
    expect(page_b.conv_item(conv).locator(".unread")).to_have_text("1")
    expect(tick).to_have_class(re.compile(r"\bread\b"))    # b's cursor moved: a read push
    expect(tick).to_have_text("✓✓")
    page_a.say("good")
    expect(page_a.message(2).locator(".tick.read")).to_be_visible()
    page_a.page.reload()                     # from history.read of the sync answer
    expect(page_a.page.locator("#status")).to_have_text("online")
    page_a.select(conv)
    expect(page_a.page.locator("#messages li.msg .tick.read")).to_have_count(2)


def test_typing_shows_and_is_sent_at_most_every_two_seconds(open_page):
    a, b = fresh("ann"), fresh("bob")
    conv = dm_conv(a, b)
    typing_sent = []

    def count_typing(page):
        def on_socket(ws):
            def on_frame(payload):
                if isinstance(payload, str) and '"typing"' in payload and json.loads(payload).get("t") == "typing":
                    typing_sent.append(time.monotonic())
            ws.on("framesent", on_frame)
        page.on("websocket", on_socket)

    page_a = open_page("gate1", before_load=count_typing).enter(a)
    page_b = open_page("gate2").enter(b)
    page_a.dm(b)
    page_b.dm(a)
    indicator = page_b.page.locator("#typing")
    expect(indicator).to_be_hidden()
    started = time.monotonic()
    page_a.page.locator("#text").press_sequentially("hold on, ", delay=100)
    expect(indicator).to_have_text(f"{a} is typing…")
    page_a.page.locator("#text").press_sequentially("writing a long answer", delay=100)
    took = time.monotonic() - started
    assert 1 <= len(typing_sent) <= int(took // 2) + 1, (typing_sent, took)
    gaps = [later - earlier for earlier, later in zip(typing_sent, typing_sent[1:])]
    assert all(gap >= 1.9 for gap in gaps), gaps
    expect(indicator).to_be_hidden(timeout=8_000)          # ~3 s after the last push
    page_a.page.press("#text", "Enter")
    expect(page_b.bodies()).to_have_text(["hold on, writing a long answer"])
    expect(indicator).to_be_hidden()
    assert conv in page_b.page.evaluate("() => [...window.zonechat.convs.keys()]")


def test_friends_list_online_and_offline(open_page, cluster):
    a, b = fresh("ann"), fresh("bob")
    registered(cluster, b)
    page_a = open_page("gate1").enter(a)
    page_a.add_friend(b)
    row = page_a.friend(b)
    expect(row).to_have_attribute("data-status", "offline")
    page_b = open_page("gate2").enter(b, register=False)
    expect(row).to_have_attribute("data-status", "online")
    page_b.set_status("in a match")
    expect(row.locator(".status-text")).to_have_text("in a match")
    page_b.page.locator("#appear-offline").check()
    expect(row).to_have_attribute("data-status", "offline")           # hidden: offline to all
    page_b.page.locator("#appear-offline").uncheck()
    expect(row).to_have_attribute("data-status", "online")
    page_a.page.reload()                     # the list is kept and watched again
    expect(page_a.page.locator("#status")).to_have_text("online")
    expect(page_a.friend(b)).to_have_attribute("data-status", "online")
    expect(page_a.friend(b).locator(".status-text")).to_have_text("in a match")
    page_b.page.click("#logout")
    expect(page_a.friend(b)).to_have_attribute("data-status", "offline")
    page_a.friend(b).locator(".name").click()                         # a friend opens the DM
    expect(page_a.page.locator("#conv-title")).to_have_text(b)


def test_the_features_together(open_page, cluster):
    """One picture of it all: friends with presence, an edited and a removed message, read
    ticks, an unread badge and "is typing…"."""
    a, b, c = fresh("ann"), fresh("bob"), fresh("cat")
    conv = dm_conv(a, b)
    tcp = tcp_user(cluster, c)
    page_a, page_b = open_page("gate1").enter(a), open_page("gate2").enter(b)
    page_a.add_friend(b)
    page_a.add_friend(c)
    page_b.set_status("queueing for a raid")
    page_a.dm(b)
    for text in ("ready for tonight?", "bring the potions", "meet at the gate at 9"):
        page_a.say(text)
    page_b.select(conv)
    expect(page_b.bodies()).to_have_count(3)
    page_a.edit(3, "meet at the east gate at 9")
    page_a.recall(2)
    page_b.say("sure, see you there")
    tcp.send(dm_conv(a, c), "are you two grouping up?")
    expect(page_a.conv_item(dm_conv(a, c)).locator(".unread")).to_have_text("1")
    expect(page_a.page.locator("#messages li.msg .tick.read")).to_have_count(2)
    expect(page_a.friend(b).locator(".status-text")).to_have_text("queueing for a raid")
    expect(page_a.friend(c)).to_have_attribute("data-status", "online")
    page_b.page.locator("#text").press_sequentially("one more thing", delay=20)
    expect(page_a.page.locator("#typing")).to_have_text(f"{b} is typing…")
    page_a.page.mouse.move(0, 0)
    page_a.screenshot("chat_features.png")
    tcp.close()
