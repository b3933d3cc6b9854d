"""A browser tab on a gate's chat page, with the steps a person takes (tests/browser)."""
from __future__ import annotations

import os

from playwright.sync_api import expect

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# An ordinary run writes its screenshots to an ignored folder; only
# ZONECHAT_SCREENSHOTS=reports/screenshots (relative to the checkout, or absolute)
# overwrites the tracked ones.
SCREENSHOTS = os.path.join(REPO, os.environ.get("ZONECHAT_SCREENSHOTS") or "reports/test-screenshots")
PASSWORD = "password123"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}

# Layout facts of the page, measured in the browser.
LAYOUT = """() => {
    const root = document.scrollingElement, box = document.getElementById('send-form').getBoundingClientRect();
    return {scrollWidth: root.scrollWidth, clientWidth: root.clientWidth, width: innerWidth, height: innerHeight,
            send: {left: box.left, top: box.top, right: box.right, bottom: box.bottom}};
}"""
# Words (runs of letters) of the message bodies drawn on more than one line: broken mid-word.
BROKEN_WORDS = """() => {
    const broken = [];
    for (const el of document.querySelectorAll('#messages .body')) {
        const node = el.firstChild;
        if (!node) continue;
        for (const m of node.textContent.matchAll(/[A-Za-z]+/g)) {
            const range = document.createRange();
            range.setStart(node, m.index);
            range.setEnd(node, m.index + m[0].length);
            const tops = new Set([...range.getClientRects()].map(r => Math.round(r.top)));
            if (tops.size > 1) broken.push(m[0]);
        }
    }
    return broken;
}"""


class ChatPage:
    """One browser tab on a gate's chat page, with the steps a person takes."""

    def __init__(self, page, base_url: str):
        self.page, self.base_url = page, base_url
        self.console: list[str] = []
        page.on("console", lambda m: self.console.append(m.text))
        page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))

    def open(self) -> "ChatPage":
        self.page.goto(self.base_url + "/")
        return self

    def narrow(self) -> bool:
        return self.page.viewport_size["width"] < 700

    def enter(self, user: str, register: bool = True) -> "ChatPage":
        self.page.fill("#user", user)
        self.page.fill("#password", PASSWORD)
        self.page.click("#register-btn" if register else "#login-btn")
        expect(self.page.locator("#status")).to_have_text("online")
        return self

    def open_drawer(self) -> None:
        """On a phone the sidebar is a drawer: open it (it closes when a conversation is picked)."""
        if self.narrow() and self.page.locator("#drawer-btn").get_attribute("aria-expanded") != "true":
            self.page.click("#drawer-btn")
            self.drawer_settled()

    def drawer_settled(self) -> None:
        """Wait for the opening drawer to finish sliding in."""
        self.page.wait_for_function(
            "() => document.getElementById('sidebar').getBoundingClientRect().left >= 0")

    def dm(self, other: str) -> None:
        self.open_drawer()
        self.page.fill("#dm-user", other)
        self.page.click("#dm-btn")

    def join(self, room_name: str) -> None:
        self.open_drawer()
        self.page.fill("#room-name", room_name)
        self.page.click("#join-btn")

    def select(self, conv: str) -> None:
        self.open_drawer()
        self.page.locator(f"#convs li[data-conv='{conv}']").click()

    def say(self, text: str) -> None:
        self.page.fill("#text", text)
        self.page.press("#text", "Enter")

    def bodies(self):
        return self.page.locator("#messages li.msg:not(.pending):not(.failed) .body")

    def message(self, seq: int):
        """The row of the conversation's message ``seq``."""
        return self.page.locator(f"#messages li.msg[data-seq='{seq}']")

    def conv_item(self, conv: str):
        return self.page.locator(f"#convs li[data-conv='{conv}']")

    def edit(self, seq: int, text: str) -> None:
        """Edit own message ``seq`` with its Edit button (shown on hover)."""
        row = self.message(seq)
        row.hover()
        row.locator(".edit-btn").click()
        self.page.fill("#text", text)
        self.page.press("#text", "Enter")

    def recall(self, seq: int) -> None:
        """Remove own message ``seq`` for everyone with its Remove button."""
        row = self.message(seq)
        row.hover()
        row.locator(".recall-btn").click()

    def add_friend(self, name: str) -> None:
        self.open_drawer()
        self.page.fill("#friend-name", name)
        self.page.click("#friend-btn")
        expect(self.friend(name)).to_have_count(1)      # accepted (presence_sub answered)

    def friend(self, name: str):
        """The friends list's row of ``name`` (its data-status: online, offline or unknown)."""
        return self.page.locator(f"#friends li[data-user='{name}']")

    def set_status(self, text: str) -> None:
        self.open_drawer()
        self.page.fill("#my-status", text)
        self.page.click("#status-btn")

    def seqs(self) -> list[int]:
        return [int(s) for s in self.page.locator("#messages li.msg[data-seq]").evaluate_all(
            "els => els.map(e => e.dataset.seq)")]

    def layout(self) -> dict:
        return self.page.evaluate(LAYOUT)

    def broken_words(self) -> list[str]:
        return self.page.evaluate(BROKEN_WORDS)

    def screenshot(self, name: str) -> str:
        """A picture once the drawer stands still (fully open or fully away): a shot taken
        mid-slide shows its edge over the messages."""
        self.page.wait_for_function(
            "() => { const r = document.getElementById('sidebar').getBoundingClientRect();"
            " return r.left >= 0 || r.right <= 0; }")
        os.makedirs(SCREENSHOTS, exist_ok=True)
        path = os.path.join(SCREENSHOTS, name)
        self.page.screenshot(path=path)
        return path
