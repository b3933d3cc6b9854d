"""The operator view (issue 4, part 3) in a real browser (Debian's Chromium through
Playwright): /ops on center's admin port asks for the secret, refuses a wrong one with a
clear 401 notice, then shows live per-gate and per-zone numbers, Redis memory and the last
admin actions, refreshing by itself. Saves reports/screenshots/ops.png."""
from __future__ import annotations

import itertools
import os
import re

import pytest
from playwright.sync_api import expect

from chatpage import PASSWORD, SCREENSHOTS
from cluster import admin as admin_mod
from client import Client, ClientError, dm_conv
from harness import poll_for

NUMBER = re.compile(r"^[1-9][0-9]*$")
_names = itertools.count(1)


@pytest.fixture
def tcp_user(cluster):
    """tcp_user(gate) -> a logged-in TCP Client on that gate; closed after the test."""
    made = []

    def make(gate: str) -> Client:
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


def cell(page, table: str, node: str, key: str):
    return page.locator(f"#{table} tr[data-node='{node}'] td[data-k='{key}']")


def sign_in(page, secret: str) -> None:
    page.fill("#secret", secret)
    page.click("#connect")


def test_ops_page_shows_the_cluster_live(browser, cluster, tcp_user):
    host, port = cluster.admin_addr
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"http://{host}:{port}/ops")
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
    expect(page.locator("#actions tbody tr").first.locator("td[data-k='action']")).to_have_text("mute")
    expect(page.locator("#actions tbody tr").first.locator("td[data-k='args']")).to_contain_text(c.user)

    with pytest.raises(ClientError, match="muted"):
        c.send(dm_conv(c.user, a.user), "muted, so refused by the zone")
    expect(page.locator("#zones td[data-k='errors']").filter(has_text="muted 1")).to_have_count(1)
    convs, sent = [dm_conv(a.user, b.user), dm_conv(a.user, c.user)], itertools.count()

    def rates_shown() -> bool:          # 3 sends per 0.25 s: under the gate's 20/s per user
        for _ in range(3):
            k = next(sent)
            a.send(convs[k % 2], f"ops traffic {k}")
        shown = [cell(page, "gates", "gate1", k).inner_text() for k in ("in_per_s", "out_per_s")]
        return all(text not in ("0", "–") for text in shown)
    poll_for(rates_shown, 30, "non-zero msgs/s on gate1 in the page", interval=0.25)
    expect(cell(page, "gates", "gate1", "frames_in")).to_have_text(NUMBER)
    os.makedirs(SCREENSHOTS, exist_ok=True)
    page.screenshot(path=os.path.join(SCREENSHOTS, "ops.png"), full_page=True)

    page.reload()                       # the secret stays in the tab: no second prompt
    expect(page.locator("#status")).to_have_text("live")
    expect(page.locator("#auth-view")).to_be_hidden()
    assert errors == []
    page.close()
