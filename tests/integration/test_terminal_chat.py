"""Issue 14: ``zonechat chat`` as a person uses it, through a pseudo-terminal (pexpect).

Real ``python -m cluster.cli chat`` processes on a real cluster, driven by pexpect: the
prompt_toolkit prompt, a DM seen once as ``HH:MM bob: hi``, ``/dm`` of an unknown user
refused with the server's reason, server reasons with the time left, ``/who``'s member
count, ``/reply``, colours (and none with NO_COLOR), and a gate restart shown as
"connection lost" then "reconnected". Every wait is a pexpect ``expect`` with a timeout.

The pseudo-terminal is opened here and the chat started with ``subprocess.Popen`` on its
slave end (as its controlling terminal), then driven with pexpect's ``fdspawn`` on the
master end: ``pexpect.spawn`` itself deadlocks in a gevent-patched process (gevent 25.8+
defers ``os.close`` to its loop, and ptyprocess blocks in a plain ``os.read`` waiting for
the end of a pipe it has just closed).
"""
from __future__ import annotations

import fcntl
import io
import os
import re
import struct
import subprocess
import sys
import termios
import time

import pexpect
import pytest
from pexpect.fdpexpect import fdspawn

from harness import REPO
from kit import PASSWORD, admin, fresh

TIMEOUT = 30                                        # seconds for any one line to show
ANSI = r"(?:\x1b\[[0-9;?]*[A-Za-z]|[\r\x08])*"      # style and cursor codes between characters
ONE_CODE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|[\r\x08]")
COLOUR = re.compile(r"\x1b\[(?:[0-9]+;)*(?:3[0-7]|9[0-7])(?:;[0-9]+)*m")   # SGR with a foreground colour


def _take_the_terminal() -> None:
    """In the child: a new session whose controlling terminal is its stdin (the pty's slave end)."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def spawn_in_pty(argv: list[str], env: dict, rows: int = 40, cols: int = 160):
    """``argv`` on a new pseudo-terminal: (its Popen, pexpect on the master end)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    try:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdin=slave, stdout=slave, stderr=slave,
                                preexec_fn=_take_the_terminal)
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)                              # the child holds it now: EOF when it exits
    return proc, fdspawn(master, encoding="utf-8", timeout=TIMEOUT)


def loose(text: str) -> str:
    """A regex for ``text`` as the terminal gets it: escape codes may sit between its
    characters; ``HH:MM`` stands for any time."""
    return (ANSI + r"\d\d:\d\d" + ANSI).join(ANSI.join(re.escape(ch) for ch in part)
                                           for part in text.split("HH:MM"))


class Chat:
    """One ``zonechat chat USER`` in a pseudo-terminal; ``transcript`` is all it printed."""

    def __init__(self, cluster, user: str, gate: str = "gate1", colour: bool = True):
        host, port = cluster.gate_addrs[gate]
        env = dict(os.environ, TERM="xterm-256color", PROMPT_TOOLKIT_NO_CPR="1")  # pexpect answers no CPR
        env.pop("NO_COLOR", None)
        if not colour:
            env["NO_COLOR"] = "1"
        argv = [sys.executable, "-m", "cluster.cli", "chat", user, "--register", "--host", host,
                "--port", str(port), "-c", cluster.config_path]
        self.user, self.transcript = user, io.StringIO()
        self.proc, self.child = spawn_in_pty(argv, env)
        self.child.logfile_read = self.transcript

    def login(self) -> "Chat":
        for ask in ("Password", "Repeat"):
            self.wait(ask)
            self.child.sendline(PASSWORD)
        self.expect(f"* logged in as {self.user}")
        return self

    def line(self, text: str) -> None:
        self.child.send(text + "\r")

    def wait(self, patterns, timeout: float = TIMEOUT) -> int:
        """pexpect's ``expect``; a timeout fails naming what the terminal showed."""
        try:
            return self.child.expect(patterns, timeout=timeout)
        except (pexpect.TIMEOUT, pexpect.EOF) as exc:
            raise AssertionError(f"{self.user}: no {patterns!r} in {timeout:g}s ({type(exc).__name__}); "
                                 f"the terminal showed:\n{self.text()[-3000:]}") from None

    def expect(self, text: str, timeout: float = TIMEOUT) -> None:
        self.wait(loose(text), timeout)

    def prompt(self, label: str) -> None:
        """The prompt names the conversation (the prompt is drawn in one piece)."""
        self.wait(re.escape(f"[{label}] >"))

    def first(self, texts: list[str], timeout: float = TIMEOUT) -> int:
        return self.wait([loose(t) for t in texts], timeout)

    def text(self) -> str:
        """The transcript without escape codes."""
        return ONE_CODE.sub("", self.transcript.getvalue())

    def count(self, text: str) -> int:
        return len(re.findall(re.escape(text).replace("HH:MM", r"\d\d:\d\d"), self.text()))

    def quit(self) -> int:
        self.line("/quit")
        self.expect("* bye")
        self.wait(pexpect.EOF)
        return self.proc.wait(timeout=TIMEOUT)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()                         # our own child, by its pid
            self.proc.wait(timeout=TIMEOUT)
        if self.child.child_fd != -1:
            self.child.close()


@pytest.fixture
def chats(cluster):
    started = []

    def start(prefix: str, gate: str = "gate1", colour: bool = True) -> Chat:
        started.append(Chat(cluster, fresh(prefix), gate, colour))
        return started[-1].login()

    yield start
    for chat in started:
        chat.close()


def send_until(chat: Chat, refused: str, accepted: str, timeout: float = TIMEOUT) -> None:
    """Type probes until ``refused`` shows (an admin change takes up to a second to reach
    every zone); ``accepted`` is what an accepted probe prints."""
    deadline = time.monotonic() + timeout
    for i in range(1000):
        chat.line(f"probe {i}")
        if chat.first([refused, accepted.format(i=i)], max(1.0, deadline - time.monotonic())) == 0:
            return
    raise AssertionError(f"never refused with {refused!r}")


def test_dm_once_unknown_user_reply_and_who(chats):
    alice, bob = chats("alice", "gate1"), chats("bob", "gate2")
    nobody = fresh("nobody")
    alice.line(f"/dm {nobody}")
    alice.wait(COLOUR.pattern + ANSI + loose(f"! no user named {nobody}"))  # the server's reason, in colour
    alice.line("/who")
    alice.expect(f"* you are {alice.user}, talking in nothing yet")                    # we stayed
    alice.line(f"/dm {bob.user}")
    alice.expect(f"* now talking with {bob.user}")
    alice.prompt(f"@{bob.user}")
    bob.line(f"/dm {alice.user}")
    bob.prompt(f"@{alice.user}")
    bob.line("hi")
    bob.expect(f"HH:MM {bob.user}: hi")
    alice.expect(f"HH:MM {bob.user}: hi")
    room = fresh("room")
    for chat in (alice, bob):
        chat.line(f"/join {room}")
        chat.prompt(f"r:{room}")
    alice.line("/who")
    alice.expect(f"* r:{room}: 2 here now")
    alice.line(f"/reply hello back {bob.user}")
    alice.expect(f"* now talking with {bob.user}")
    alice.expect(f"HH:MM {alice.user}: hello back {bob.user}")
    bob.expect(f"HH:MM [@{alice.user}] {alice.user}: hello back {bob.user}")
    bob.line("/who")                                 # a fence: all of the above has printed
    bob.expect(f"* you are {bob.user}")
    assert alice.count(f"HH:MM {bob.user}: hi") == 1 and bob.count(f"HH:MM {bob.user}: hi") == 1
    assert bob.count(f"{alice.user}: hello back") == 1 and alice.count(f"{alice.user}: hello back") == 1
    dm_id = re.compile(r"\bd:[\w.-]+:[\w.-]+")
    assert "#" not in alice.text() and not dm_id.search(alice.text() + bob.text())   # no seqs, no DM ids
    assert alice.quit() == 0 and bob.quit() == 0


def test_errors_show_the_server_reason_and_the_time_left(cluster, chats):
    alice, bob = chats("alice"), chats("bob", "gate2")
    room = fresh("slow")
    alice.line(f"/join {room}")
    alice.prompt(f"r:{room}")
    admin(cluster, "/v1/room", {"room": f"r:{room}", "slow": 30})
    send_until(alice, f"! slow mode: one message every 30 s in r:{room}; not sent: probe",
               f"HH:MM {alice.user}: probe {{i}}")
    admin(cluster, "/v1/mute", {"user": bob.user, "seconds": 600})
    bob.line(f"/dm {alice.user}")
    bob.prompt(f"@{alice.user}")
    send_until(bob, "! you are muted (muted for ", f"HH:MM {bob.user}: probe {{i}}")
    bob.wait(r"(9|10) more minutes\); not sent: probe")
    assert "muted here" not in bob.text()          # the server's reason, not the canned text
    assert alice.quit() == 0 and bob.quit() == 0


def test_no_color_prints_no_colours(chats):
    plain = chats("plain", colour=False)
    nobody = fresh("nobody")
    plain.line(f"/dm {nobody}")
    plain.expect(f"! no user named {nobody}")
    assert plain.quit() == 0
    assert not COLOUR.search(plain.transcript.getvalue())


def test_a_gate_restart_shows_connection_lost_then_reconnected(cluster, chats):
    alice, bob = chats("alice", "gate1"), chats("bob", "gate2")
    room = fresh("room")
    for chat in (alice, bob):
        chat.line(f"/join {room}")
        chat.prompt(f"r:{room}")
    cluster.restart("gate1")
    alice.expect("* connection lost, reconnecting…")
    alice.expect("* reconnected", timeout=60)
    alice.line("back again")                          # the room was joined again
    alice.expect(f"HH:MM {alice.user}: back again")
    bob.expect(f"HH:MM {alice.user}: back again")
    assert alice.quit() == 0 and bob.quit() == 0
