"""Browser fixtures: Playwright for Python driving Debian's Chromium (never a downloaded one).

The tests skip, saying why, only when Chromium is not installed on a developer machine
(``apt-get install chromium``); under CI (``CI`` set) a missing Chromium fails instead,
so a CI run cannot pass by skipping them. Screenshots go to ``reports/screenshots/``.
"""
from __future__ import annotations

import os

import pytest

from chatpage import ChatPage

CHROMIUM = os.environ.get("ZONECHAT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
TIMEOUT_MS = 20_000


def need_chromium() -> None:
    if os.path.exists(CHROMIUM):
        return
    why = f"{CHROMIUM} not found: install Debian's Chromium (apt-get install -y chromium)"
    if os.environ.get("CI"):
        pytest.fail(why + " — CI must install it (.ci/run)", pytrace=False)
    pytest.skip(why)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """One Chromium per test module, with a fresh user-data dir."""
    need_chromium()
    from playwright.sync_api import expect, sync_playwright
    expect.set_options(timeout=TIMEOUT_MS)
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1100, "height": 640})
        context.set_default_timeout(TIMEOUT_MS)
        yield context
        context.close()


@pytest.fixture
def open_page(browser, cluster):
    """open_page("gate1") -> a ChatPage on that gate's chat page; tabs close after the test."""
    pages = []

    def make(gate: str) -> ChatPage:
        host, port = cluster.ws_addrs[gate]
        chat = ChatPage(browser.new_page(), f"http://{host}:{port}")
        pages.append(chat)
        return chat.open()

    yield make
    for chat in pages:
        chat.page.close()
