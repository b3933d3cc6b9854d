"""The terminal chat behind ``zonechat chat USER`` (the ``chat`` command is here too).

Lines typed go to the current conversation; incoming messages print as they arrive, once,
with the local time of their ``ts``::

    12:03 bob: hi                        (in the conversation you talk in)
    12:04 [r:lobby] carol: anyone here?  (elsewhere: DMs are tagged [@user])
    12:05 [broadcast] system: restart at 13:00

Commands: ``/dm USER`` (checked: an unknown user is refused with the server's reason),
``/reply [TEXT]`` (the last DM you got), ``/join r:ROOM``, ``/leave [r:ROOM]``, ``/conv
CONV``, ``/sync [N]``, ``/who`` (the room's member count: the protocol has no member
list), ``/help``, ``/quit``; ``//text`` sends ``/text``. Errors show the server's
``reason`` first (the canned ``ERROR_TEXT`` only when it gave none) with the time left
(``retry_ms``, a mute's ``until``).

Two ways in and out, one output format:

- ``PromptUI`` when stdin and stdout are a terminal: prompt_toolkit's line editor with a
  prompt naming the conversation (``[r:lobby] > ``) that stays put while messages print
  above it, colours for you / others / system / errors (none with ``NO_COLOR``), history,
  Tab completes commands. prompt_toolkit, not textual: textual is a full-screen app
  framework, heavier, and harder to drive line by line (pexpect, tmux, a pipe);
  prompt_toolkit is a line editor that prints above its prompt and runs under a
  pseudo-terminal.
- ``PlainUI`` for a pipe or a file (tests and scripts): the same lines as plain text, no
  escape codes; lines are read by a thread of gevent's pool.

gevent owns the socket. prompt_toolkit needs asyncio, so ``PromptUI`` runs the prompt in
its own asyncio loop (on the unpatched selector) in one real OS thread of gevent's
threadpool. Lines typed cross to gevent with ``hub.loop.run_callback_threadsafe`` into a
bounded queue; lines to print cross back into a bounded deque that the prompt thread
drains (woken by ``call_soon_threadsafe``) and prints with ``run_in_terminal`` above the
prompt. Only the prompt thread touches the terminal while it runs. ``ChatSession`` state
lives on the gevent side; the prompt reads one string of it (the prompt text).
"""
from __future__ import annotations

import asyncio
import collections
import math
import os
import signal
import sys
import threading
import time

import click
import gevent
from gevent import monkey
from gevent.event import Event
from gevent.queue import Full, Queue

from client.client import Client, ClientError, dm_conv
from cluster import convs

RECENT = 10                 # messages shown on /dm, /join
SYNC_DEFAULT = 20           # messages shown by /sync
INBOX_MAX = 100             # typed lines waiting for the gevent side
SCREEN_MAX = 5000           # lines waiting for the prompt thread to print them
BACKLOG_MAX = 5000          # pushes that arrive before the welcome is printed
SEEN_MAX = 20               # names remembered per room (the protocol has no member list)
STOP_TIMEOUT = 5.0          # seconds for the prompt thread to end

STYLE = {
    "prompt": "bold", "time": "", "tag": "ansiblue", "self": "ansigreen bold",
    "other": "ansicyan bold", "system": "ansiyellow", "error": "ansired bold",
    "broadcast": "ansimagenta bold",
}

COMMANDS = ("/dm", "/reply", "/join", "/leave", "/conv", "/sync", "/who", "/help", "/quit")
HELP = """\
* /dm USER       talk to USER (shows your last messages; unknown users are refused)
* /reply [TEXT]  answer the last direct message you got (and talk there)
* /join r:ROOM   join a room (created on first join) and talk there
* /leave [ROOM]  leave the current room (or ROOM)
* /conv CONV     talk in any conversation you belong to, e.g. g:team
* /sync [N]      show the last N messages here (default 20)
* /who           how many are in this room now (a count: the server lists no members),
                 who you are, your conversations
* /quit          log out and leave (end of input or Ctrl-D does the same)
* anything else is sent to the current conversation; //text sends /text"""

ERROR_TEXT = {              # only when the server gave no reason (or the error is ours)
    "rate_limited": "rate limited: you are sending too fast, wait a moment",
    "muted": "you are muted here",
    "not_member": "you are not a member of this conversation (rooms: /join first)",
    "bad_conv": "no such conversation (or no such user)",
    "too_large": "message too large",
    "unavailable": "the server could not store it: try again",
    "auth_failed": "wrong user or password",
    "user_exists": "that user exists already",
    "weak_password": "password too weak: at least 8 characters",
    "bad_name": "bad user name: 1-32 characters of A-Z a-z 0-9 _ . -",
    "timeout": "no answer from the server in time",
    "disconnected": "not connected to the server",
}

CONNECTION_TEXT = {"lost": "connection lost, reconnecting…", "reconnected": "reconnected"}

KICK_TEXT = {
    "session_replaced": "you logged in somewhere else",
    "admin": "an operator kicked you",
    "banned": "this account is banned",
    "idle": "idle for too long",
    "slow": "this terminal read too slowly",
    "shutdown": "the server is restarting",
}


# -- formatting (pure) ----------------------------------------------------------------------
def clean(value) -> str:
    """Text safe for a terminal: other users must not send escape sequences."""
    text = value if isinstance(value, str) else repr(value)
    return "".join(ch if ch.isprintable() else "\ufffd" for ch in text)


def hhmm(ts) -> str:
    """``HH:MM`` in local time of a ``ts`` in ms since the epoch."""
    if not isinstance(ts, (int, float)) or isinstance(ts, bool):
        return "--:--"
    return time.strftime("%H:%M", time.localtime(ts / 1000))


def span(ms: float) -> str:
    """A duration for people, rounded up: ``1 second``, ``9 minutes``, ``2 hours``, ``3 days``."""
    for unit, size in (("second", 1000), ("minute", 60000), ("hour", 3600000)):
        if ms < size * (60 if unit != "hour" else 48):
            n = max(1, math.ceil(ms / size))
            return f"{n} {unit}{'s' if n != 1 else ''}"
    n = math.ceil(ms / 86400000)
    return f"{n} day{'s' if n != 1 else ''}"


def time_left(code: str, retry_ms=None, until=None, now_ms: float | None = None) -> str:
    """What the error says about time: ``muted for 9 more minutes``, ``retry in 2 seconds``."""
    now_ms = time.time() * 1000 if now_ms is None else now_ms
    if code == "muted" and isinstance(until, (int, float)) and until > now_ms:
        return f"muted for {span(until - now_ms).replace(' ', ' more ', 1)}"
    if isinstance(retry_ms, (int, float)) and not isinstance(retry_ms, bool) and retry_ms > 0:
        return f"retry in {span(retry_ms)}"
    return ""


def describe_error(code: str, reason: str = "", retry_ms=None, until=None, now_ms=None,
                   *, ours: bool = False) -> str:
    """``! <server's reason> (<time left>)``; the canned text only when there is no reason,
    or first for errors the client made itself (``ours``: timeouts, a lost connection)."""
    canned, given = ERROR_TEXT.get(code), clean(reason or "")
    text = ((canned or given) if ours else (given or canned)) or clean(code)
    extra = time_left(code, retry_ms, until, now_ms)
    return f"! {text}" + (f" ({extra})" if extra else "")


def error_line(exc: ClientError, now_ms=None) -> str:
    reply = exc.reply or {}
    return describe_error(exc.code, exc.reason, exc.retry_ms, reply.get("until"), now_ms,
                          ours=exc.reply is None)


def conv_label(conv, me: str) -> str:
    """How a conversation is named on screen: ``@bob`` for your DM with bob, else its id."""
    conv = clean(conv)
    if conv == "sys":
        return "broadcast"
    if conv.startswith("d:") and convs.valid(conv):
        a, b = convs.dm_users(conv)
        if me in (a, b):
            return f"@{b if a == me else a}"
    return conv


def format_msg(m: dict, me: str, current: str | None = None) -> list[tuple[str, str]]:
    """One message as styled fragments: ``HH:MM [tag] sender: body`` (tag only elsewhere)."""
    conv, sender, body = m.get("conv"), clean(m.get("from")), clean(m.get("body"))
    stamp = hhmm(m.get("ts")) + " "
    if conv == "sys":
        return [("class:broadcast", f"{stamp}[broadcast] {sender}: {body}")]
    who = "self" if sender == me else "system" if sender == "system" else "other"
    frags = [("class:time", stamp)]
    if conv != current:
        frags.append(("class:tag", f"[{conv_label(conv, me)}] "))
    return frags + [(f"class:{who}", sender), ("", f": {body}")]


def prompt_text(current: str | None, me: str) -> str:
    return f"[{conv_label(current, me)}] > " if current else "> "


def plain(frags) -> str:
    return "".join(text for _style, text in frags)


def is_tty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


# -- plain lines: a pipe, a file ------------------------------------------------------------
class PlainUI:
    """Plain text out (no escape codes); lines in read by a thread of gevent's pool."""

    def __init__(self, out, stdin=None):
        self.out, self.stdin = out, stdin

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def set_prompt(self, text: str) -> None:
        pass

    def show(self, frags) -> None:
        self.out.write(plain(frags) + "\n")
        self.out.flush()

    def next_line(self) -> str | None:
        """The next line typed, None at the end of input (a tty, a pipe and a file alike)."""
        line = gevent.get_hub().threadpool.apply(self.stdin.readline)
        return line or None


# -- a terminal: prompt_toolkit in a thread --------------------------------------------------
class PromptUI:
    """prompt_toolkit's prompt, run by its own asyncio loop in one thread of gevent's pool.

    gevent side: ``start``, ``show``, ``set_prompt``, ``next_line``, ``stop``. The prompt
    thread owns the terminal between start and stop; before and after, ``show`` prints
    directly.
    """

    def __init__(self, stdin, out, colour: bool = True):
        from prompt_toolkit.input import create_input
        from prompt_toolkit.output import ColorDepth, create_output
        from prompt_toolkit.styles import Style
        self.style = Style.from_dict(STYLE if colour else {})
        self.depth = None if colour else ColorDepth.DEPTH_1_BIT
        self.input, self.output = create_input(stdin), create_output(stdout=out)
        self.hub = gevent.get_hub()
        self.prompt = "> "                          # written by gevent, read by the prompt
        self.inbox: Queue = Queue(INBOX_MAX)        # lines typed; None: end of input
        self.screen: collections.deque = collections.deque()   # at most SCREEN_MAX lines
        self.dropped = self.reported = 0            # lines not shown: gevent / prompt side
        self.loop = self.app = self.task = self.thread = self.failure = self.printing = None
        self.direct, self.stopping, self.wake_pending = True, False, False

    # gevent side
    def start(self) -> None:
        self.direct = False
        self.thread = self.hub.threadpool.spawn(self._thread_main)

    def set_prompt(self, text: str) -> None:
        self.prompt = text
        self._call_in_prompt(self._redraw)

    def show(self, frags) -> None:
        if self.direct:
            self._print([frags])
        elif len(self.screen) >= SCREEN_MAX:
            self.dropped += 1
        else:
            self.screen.append(frags)               # append, then wake: see _flush
            if not self.wake_pending:
                self.wake_pending = True
                self._call_in_prompt(self._flush)

    def next_line(self) -> str | None:
        return self.inbox.get()

    def stop(self) -> None:
        """End the prompt (the terminal is restored), then print what is left directly."""
        self.stopping = True                        # before reading loop/task: see _run
        if self.task is not None:
            self._call_in_prompt(self.task.cancel)
        if self.thread is not None:
            self.thread.wait(STOP_TIMEOUT)
        self.direct = True
        left = [self.screen.popleft() for _ in range(len(self.screen))]
        if self.failure is not None:
            left.append([("class:error", f"! the prompt failed: {clean(str(self.failure))}")])
        self._print(left)

    def _call_in_prompt(self, fn) -> None:
        loop = self.loop
        if loop is None:
            return                                  # not running yet: _run flushes first
        try:
            loop.call_soon_threadsafe(fn)
        except RuntimeError:                        # the loop closed: stop() prints the rest
            pass

    def _accept(self, line) -> None:
        """In the hub: a line from the prompt thread."""
        try:
            self.inbox.put_nowait(line)
        except Full:
            if line is not None:
                self.show([("class:error", "! typed too far ahead: a line was dropped")])
                return
            self.inbox.get_nowait()                 # the end of input must get through
            self.inbox.put_nowait(None)

    # prompt thread
    def _thread_main(self) -> None:
        loop = asyncio.SelectorEventLoop(monkey.get_original("selectors", "DefaultSelector")())
        try:
            loop.run_until_complete(self._run(loop))
        except asyncio.CancelledError:
            pass
        except Exception as exc:                    # shown by stop(); the chat ends
            self.failure = exc
        finally:
            self.loop = None
            loop.close()
            self.hub.loop.run_callback_threadsafe(self._accept, None)

    async def _run(self, loop) -> None:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.completion import WordCompleter
        session = PromptSession(input=self.input, output=self.output, style=self.style,
                                color_depth=self.depth, erase_when_done=True,
                                completer=WordCompleter(list(COMMANDS), WORD=True), complete_while_typing=False)
        self.app, self.task, self.loop = session.app, asyncio.current_task(), loop
        self._flush()
        try:
            while not self.stopping:
                line = await session.prompt_async(lambda: [("class:prompt", self.prompt)],
                                                  handle_sigint=False, set_exception_handler=False)
                self.hub.loop.run_callback_threadsafe(self._accept, line)
        except (EOFError, KeyboardInterrupt):       # Ctrl-D, Ctrl-C: end of input
            pass
        except asyncio.CancelledError:              # stop()
            pass
        if self.printing is not None:               # lines on their way still print
            await asyncio.wait([self.printing], timeout=STOP_TIMEOUT)

    def _flush(self) -> None:
        """Print every waiting line above the prompt (cleared flag first: no wake is lost)."""
        from prompt_toolkit.application import run_in_terminal
        from prompt_toolkit.application.current import set_app
        self.wake_pending = False
        batch = [self.screen.popleft() for _ in range(len(self.screen))]
        if self.dropped != self.reported:
            batch.append([("class:error", f"! {self.dropped - self.reported} lines not shown: too many at once")])
            self.reported = self.dropped
        if not batch:
            return
        if self.app is not None and self.app.is_running:
            with set_app(self.app):                 # each waits for the one before
                self.printing = run_in_terminal(lambda: self._print(batch))
        else:
            self._print(batch)

    def _redraw(self) -> None:
        if self.app is not None and self.app.is_running:
            self.app.invalidate()

    def _print(self, batch) -> None:
        """Print lines on the terminal: in the prompt thread, or directly when it is not running."""
        from prompt_toolkit.renderer import print_formatted_text as render
        for frags in batch:                         # the renderer's: it never defers to an app
            render(self.output, [*frags, ("", "\n")], self.style, color_depth=self.depth)
        self.output.flush()


def make_ui(stdin, out):
    """The prompt when both ends are a terminal (and TERM is not dumb), else plain lines."""
    if is_tty(stdin) and is_tty(out) and os.environ.get("TERM", "") != "dumb":
        return PromptUI(stdin, out, colour=not os.environ.get("NO_COLOR"))
    return PlainUI(out, stdin)


def room_id(arg: str) -> str:
    return arg if arg.startswith("r:") else f"r:{arg}"


# -- the session ----------------------------------------------------------------------------
class ChatSession:
    """One logged-in terminal session: commands in, messages out (gevent side only)."""

    def __init__(self, user: str, ui):
        self.user = user
        self.ui = ui if hasattr(ui, "show") else PlainUI(ui)   # a UI, or a text stream
        self.client: Client | None = None
        self.current: str | None = None
        self.last_dm: str | None = None            # the last DM another user sent us
        self.seen: dict[str, collections.OrderedDict] = {}     # room -> names seen there
        self.backlog: list[dict] | None = []      # pushes before the welcome is printed
        self.done = Event()                        # /quit, end of input, or the client closed
        self.commands = {"/dm": self.cmd_dm, "/reply": self.cmd_reply, "/join": self.cmd_join,
                         "/leave": self.cmd_leave, "/conv": self.cmd_conv, "/sync": self.cmd_sync,
                         "/who": self.cmd_who, "/help": self.cmd_help, "/quit": self.cmd_quit}

    def say(self, text: str, kind: str = "system") -> None:
        self.ui.show([(f"class:{kind}", text)])

    def info(self, text: str) -> None:
        self.say(f"* {text}")

    def fail(self, text: str) -> None:
        self.say(f"! {text}", "error")

    # pushes and connection events (the client's greenlets)
    def on_push(self, body: dict) -> None:
        if self.backlog is not None:
            if len(self.backlog) < BACKLOG_MAX:
                self.backlog.append(body)
            return
        t = body.get("t")
        if t == "msg":
            self.show_msg(body)
        elif t == "kicked":
            reason = clean(body.get("reason"))
            self.info(f"kicked by the server: {KICK_TEXT.get(reason, reason)}")
        elif t == "error":
            self.say(describe_error(str(body.get("code")), str(body.get("reason", "")),
                                    body.get("retry_ms"), body.get("until")), "error")
        else:
            self.info(f"{clean(t)}: {clean(body)}")

    def on_connection(self, state: str) -> None:
        self.info(CONNECTION_TEXT.get(state) or clean(state))

    def show_msg(self, m: dict, current: str | None = None) -> None:
        conv, sender = m.get("conv"), m.get("from")
        if isinstance(conv, str) and conv.startswith("d:") and sender != self.user:
            self.last_dm = conv
        self.remember(conv, sender)
        self.ui.show(format_msg(m, self.user, current or self.current))

    def remember(self, conv, sender) -> None:
        names = self.seen.get(conv)
        if names is None or not isinstance(sender, str) or sender == self.user:
            return
        names.pop(sender, None)
        names[sender] = True
        while len(names) > SEEN_MAX:
            names.popitem(last=False)

    def start(self, welcome: dict) -> None:
        """Print the welcome, then what arrived with it (the offline messages)."""
        self.info(f"logged in as {self.user}; /help lists the commands")
        known = sorted(c for c in (welcome.get("convs") or {}) if c != "sys")
        if known:
            self.info(f"your conversations: {' '.join(conv_label(c, self.user) for c in known)}")
        backlog, self.backlog = self.backlog or [], None
        for body in backlog:
            self.on_push(body)

    # lines typed
    def read_input(self) -> None:
        """Handle lines until /quit or the end of input."""
        while not self.done.is_set() and (line := self.ui.next_line()) is not None:
            self.handle(line)
        self.done.set()

    def handle(self, line: str) -> None:
        line = line.strip()
        if not line:
            return
        try:
            if line.startswith("/") and not line.startswith("//"):
                name, _, arg = line.partition(" ")
                command = self.commands.get(name.lower())
                if command is None:
                    self.fail(f"unknown command {clean(name)}: /help lists them")
                else:
                    command(arg.strip())
            else:
                self.send_text(line[1:] if line.startswith("//") else line)
        except ClientError as exc:
            self.say(error_line(exc), "error")
        except ValueError as exc:
            self.fail(clean(str(exc)))

    def send_text(self, text: str) -> None:
        if self.current is None:
            self.fail("no conversation yet: /dm USER or /join r:ROOM")
            return
        try:
            ack = self.client.send(self.current, text)
        except ClientError as exc:
            maybe = "not sent" if exc.reply is not None else "maybe not sent"
            self.say(f"{error_line(exc)}; {maybe}: {clean(text)}", "error")
            return
        self.ui.show(format_msg({"conv": ack.get("conv", self.current), "from": self.user,
                                 "ts": ack.get("ts"), "body": text}, self.user, self.current))

    def tail(self, conv: str, n: int) -> list[dict]:
        """The last ``n`` messages of ``conv``; a DM with nobody raises ``bad_conv`` here."""
        last = int(self.client.sync(conv, after=0, limit=1).get("last_seq") or 0)
        if last <= 0:
            return []
        return self.client.sync(conv, after=max(0, last - n), limit=n).get("msgs") or []

    def switch(self, conv: str, note: str = "") -> None:
        self.current = conv
        self.ui.set_prompt(prompt_text(conv, self.user))
        label = conv_label(conv, self.user)
        where = f"with {label[1:]}" if label.startswith("@") else f"in {label}"
        self.info(f"now talking {where}{note}")

    # commands
    def cmd_dm(self, arg: str) -> None:
        if not convs.valid_user(arg) or arg == self.user:
            raise ValueError("usage: /dm USER (another user)")
        conv = dm_conv(self.user, arg)
        for m in self.tail(conv, RECENT):          # refused for an unknown user: we stay
            self.show_msg(m, conv)
        self.switch(conv)

    def cmd_reply(self, arg: str) -> None:
        if self.last_dm is None:
            raise ValueError("no direct message to reply to yet")
        if self.current != self.last_dm:
            self.switch(self.last_dm)
        if arg:
            self.send_text(arg)

    def cmd_join(self, arg: str) -> None:
        room = room_id(arg)
        if not convs.valid(room):
            raise ValueError("usage: /join r:ROOM")
        joined = self.client.join(room)
        self.seen.setdefault(room, collections.OrderedDict())
        for m in (joined.get("recent") or [])[-RECENT:]:
            self.show_msg(m, room)
        members = joined.get("members")
        self.switch(room, f" ({members} here)" if isinstance(members, int) else "")

    def cmd_leave(self, arg: str) -> None:
        room = room_id(arg) if arg else self.current
        if room is None or not room.startswith("r:"):
            raise ValueError("usage: /leave [r:ROOM] (only rooms are left here)")
        self.client.leave(room)
        self.seen.pop(room, None)
        self.info(f"left {room}")
        if self.current == room:
            self.current = None
            self.ui.set_prompt(prompt_text(None, self.user))

    def cmd_conv(self, arg: str) -> None:
        if not convs.valid(arg):
            raise ValueError("usage: /conv CONV (d:a:b, g:NAME, r:ROOM or sys)")
        self.switch(arg)

    def cmd_sync(self, arg: str) -> None:
        if self.current is None:
            raise ValueError("no conversation yet: /dm USER or /join r:ROOM")
        if arg and not arg.isdigit():
            raise ValueError("usage: /sync [N]")
        for m in self.tail(self.current, max(1, min(int(arg or SYNC_DEFAULT), 500))):
            self.show_msg(m)

    def cmd_who(self, _arg: str) -> None:
        where = conv_label(self.current, self.user) if self.current else "nothing yet"
        self.info(f"you are {self.user}, talking in {where}")
        if self.current and self.current.startswith("r:"):
            self.who_in_room(self.current)
        known = set(((self.client.welcome or {}).get("convs") or {})) | set(self.client.track.convs)
        labels = sorted(conv_label(c, self.user) for c in known if c != "sys" and not c.startswith("r:"))
        self.info(f"rooms: {' '.join(sorted(self.client.rooms)) or '-'}")
        self.info(f"conversations: {' '.join(labels) or '-'}")

    def who_in_room(self, room: str) -> None:
        members = self.client.call("room_info", room=room).get("members")
        names = list(self.seen.get(room) or ())
        seen = f"; seen here: {', '.join(names)}" if names else ""
        self.info(f"{room}: {members} here now (a count: the protocol has no member list){seen}")

    def cmd_help(self, _arg: str) -> None:
        for line in HELP.splitlines():
            self.say(line)

    def cmd_quit(self, _arg: str) -> None:
        self.done.set()



# -- running it -----------------------------------------------------------------------------
def run_chat(user: str, host: str = "127.0.0.1", port: int = 7700, register: bool = False,
             password: str | None = None, *, stdin=None, out=None, reconnect: bool = True) -> int:
    """Chat as ``user`` on the gate at host:port until /quit or end of input; the exit code.

    The password is prompted (hidden) when not given; ``register`` registers ``user``
    first (an existing user is reported, then the login is tried). ``stdin``/``out`` are
    text streams (default: the process's); both a terminal: the prompt, else plain lines.
    """
    stdin, out = stdin or sys.stdin, out or sys.stdout
    if password is None:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=register, err=True)
    session = ChatSession(user, make_ui(stdin, out))
    client = session.client = Client(host, port, reconnect=reconnect, auto_recv=True,
                                     on_push=session.on_push, on_connection=session.on_connection)
    try:
        client.connect()
        if register:
            _register(session, password)
        welcome = client.login(user, password)
    except ClientError as exc:
        session.say(error_line(exc), "error")
        client.close()
        return 1
    session.start(welcome)
    return _serve(session)


def _register(session: ChatSession, password: str) -> None:
    try:
        session.client.register(session.user, password)
        session.info(f"registered {session.user}")
    except ClientError as exc:
        if exc.code != "user_exists":
            raise
        session.say(error_line(exc) + ": logging in", "error")


def _on_sigint(callback):
    """Handle SIGINT in the loop (only the main thread may): no KeyboardInterrupt mid-request."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return gevent.signal_handler(signal.SIGINT, callback)


def _serve(session: ChatSession) -> int:
    client = session.client
    client.closed.rawlink(lambda _event: session.done.set())
    session.ui.start()
    reader = gevent.spawn(session.read_input)
    interrupt = _on_sigint(session.done.set)       # Ctrl-C logs out like /quit
    try:
        session.done.wait()
    finally:
        reader.kill(block=False)
        if interrupt is not None:
            interrupt.cancel()
        session.ui.stop()
    if client.closed.is_set():
        reason = clean(client.kicked_reason) if client.kicked_reason else ""
        session.info(f"disconnected{': ' + KICK_TEXT.get(reason, reason) if reason else ''}")
        client.close()
        return 1
    try:
        client.logout()
        session.info("bye")
    except ClientError as exc:
        session.say(error_line(exc), "error")
    client.close()
    return 0


@click.command("chat")
@click.option("-c", "--config", "config_path", default="config.yaml", envvar="ZONECHAT_CONFIG",
              show_default=True, type=click.Path(dir_okay=False), help="cluster config file")
@click.argument("user")
@click.option("--host", default=None, help="gate host (default: the first gate's)")
@click.option("--port", default=None, type=int, help="gate TCP port (default: the first gate's)")
@click.option("--register", is_flag=True, help="register USER before logging in")
def chat(config_path: str, user: str, host: str | None, port: int | None, register: bool) -> None:
    """Chat as USER from the terminal."""
    if host is None or port is None:
        from cluster import config as config_mod   # the config is read only to find a gate
        try:
            cfg = config_mod.load(config_path)
        except config_mod.ConfigError as exc:
            raise click.ClickException(f"config error: {exc}") from None
        gate = min(cfg.nodes_of("gate"), key=lambda n: n.name)
        host, port = host or gate.host, port or gate.tcp_port
    sys.exit(run_chat(user, host=host, port=port, register=register))
