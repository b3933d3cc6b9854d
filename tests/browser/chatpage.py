"""A browser tab on a gate's chat page, with the steps a person takes (tests/browser)."""
from __future__ import annotations

import os

from playwright.sync_api import expect

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCREENSHOTS = os.path.join(REPO, "reports", "screenshots")
PASSWORD = "password123"


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

    def enter(self, user: str, register: bool = True) -> "ChatPage":
        self.page.fill("#user", user)
        self.page.fill("#password", PASSWORD)
        self.page.click("#register-btn" if register else "#login-btn")
        expect(self.page.locator("#status")).to_have_text("online")
        return self

    def dm(self, other: str) -> None:
        self.page.fill("#dm-user", other)
        self.page.click("#dm-btn")

    def join(self, room_name: str) -> None:
        self.page.fill("#room-name", room_name)
        self.page.click("#join-btn")

    def select(self, conv: str) -> None:
        self.page.locator(f"#convs li[data-conv='{conv}']").click()

    def say(self, text: str) -> None:
        self.page.fill("#text", text)
        self.page.press("#text", "Enter")

    def bodies(self):
        return self.page.locator("#messages li.msg:not(.pending):not(.failed) .body")

    def seqs(self) -> list[int]:
        return [int(s) for s in self.page.locator("#messages li.msg[data-seq]").evaluate_all(
            "els => els.map(e => e.dataset.seq)")]

    def screenshot(self, name: str) -> str:
        os.makedirs(SCREENSHOTS, exist_ok=True)
        path = os.path.join(SCREENSHOTS, name)
        self.page.screenshot(path=path)
        return path
