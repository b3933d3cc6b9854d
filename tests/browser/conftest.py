"""Browser fixtures: Playwright for Python driving Debian's Chromium (never a downloaded one).

The tests skip, saying why, only when Chromium is not installed on a developer machine
(``apt-get install chromium``); under CI (``CI`` set) a missing Chromium fails instead,
so a CI run cannot pass by skipping them.

Screenshots: an ordinary run (``make test``) writes them to ``reports/test-screenshots/``,
which git ignores. Only a run with ``ZONECHAT_SCREENSHOTS`` naming a folder writes there
instead: ``ZONECHAT_SCREENSHOTS=reports/screenshots make test`` overwrites the tracked
screenshots (a relative folder is taken from the checkout's root). Pages open at the desktop
size (1280×800, ``chatpage.DESKTOP``) unless a test asks for the phone size (``PHONE``).
"""
from __future__ import annotations

import os

import pytest

from chatpage import DESKTOP, ChatPage

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
            viewport=DESKTOP)
        context.set_default_timeout(TIMEOUT_MS)
        yield context
        context.close()


@pytest.fixture
def open_page(browser, cluster):
    """open_page("gate1", viewport=PHONE) -> a ChatPage on that gate's chat page (desktop size
    unless told); ``before_load(page)`` runs before the page loads. Tabs close after the test."""
    pages = []

    def make(gate: str, viewport: dict | None = None, before_load=None) -> ChatPage:
        host, port = cluster.ws_addrs[gate]
        page = browser.new_page()
        if viewport:
            page.set_viewport_size(viewport)
        if before_load:
            before_load(page)
        chat = ChatPage(page, f"http://{host}:{port}")
        pages.append(chat)
        return chat.open()

    yield make
    for chat in pages:
        chat.page.close()
