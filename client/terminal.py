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

import collections
import signal
import sys
import threading

import click
import gevent
from gevent.event import Event

from client.client import Client, ClientError, dm_conv
from client.terminal_format import (CONNECTION_TEXT, HELP, KICK_TEXT, clean, conv_label,
                                    describe_error, error_line, format_msg, prompt_text)
from client.terminal_io import PlainUI, make_ui
from cluster import convs

RECENT = 10                 # messages shown on /dm, /join
SYNC_DEFAULT = 20           # messages shown by /sync
BACKLOG_MAX = 5000          # pushes that arrive before the welcome is printed
SEEN_MAX = 20               # names remembered per room (the protocol has no member list)


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

