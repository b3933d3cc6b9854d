"""The terminal chat behind ``zonechat chat USER`` (the ``chat`` command is here too).

Lines typed go to the current conversation; incoming messages print as they arrive, once,
with the local time of their ``ts``::

    12:03 bob: hi                        (in the conversation you talk in)
    12:04 [r:lobby] carol: anyone here?  (elsewhere: DMs are tagged [@user])
    12:05 [broadcast] system: restart at 13:00

Commands: ``/dm USER`` (checked: an unknown user is refused with the server's reason),
``/reply [TEXT]`` (the last DM you got), ``/join r:ROOM``, ``/leave [r:ROOM]``, ``/conv
CONV``, ``/sync [N]``, ``/who`` (the room's member count: the protocol has no member
list), ``/edit SEQ TEXT``, ``/recall SEQ`` (SEQ: a number, ``last`` for your last message
here; ``/ids`` shows the numbers), ``/friends [add|remove USER]``, ``/status [TEXT]``,
``/hide``, ``/unhide``, ``/help``, ``/quit``; ``//text`` sends ``/text``. Errors show the
server's ``reason`` first (the canned ``ERROR_TEXT`` only when it gave none) with the
time left (``retry_ms``, a mute's ``until``).

Issue 15 on screen: an edit or recall (live, or replayed) prints its target's line again,
``(edited)`` with the new body or ``message removed`` (the last ``LOG_MAX`` messages per
conversation are remembered for that; history already shows the current state and its
events print nothing); the login lists unread counts (``@bob (3 unread)``); a ``read`` from
the other user of a DM prints ``bob read up to #12`` once it covers a message of yours,
and your DM lines shown again (``/sync``, ``/dm``) end in `` ✓✓`` when read; ``bob is
typing…`` prints for the conversation you are in (again after ``TYPING_QUIET`` s or a
message of theirs); friends' presence prints ``bob is online``/``bob is offline``. Typing
a line (not a command) in the prompt sends ``typing`` at most every ``TYPING_EVERY`` s.
The friends list lives as long as the session (the server keeps no friends list).

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
import time

import click
import gevent
from gevent.event import Event

from client.client import Client, ClientError, dm_conv
from client.terminal_format import (CONNECTION_TEXT, EVENT_KINDS, HELP, KICK_TEXT, ConvLog, Friends,
                                    ReadMarks, Throttle, clean, conv_badge, conv_label, describe_error,
                                    digest_line, dm_peer, error_line, format_msg, parse_edit, parse_seq,
                                    parse_status, prompt_text, read_line, typing_line)
from client.terminal_io import PlainUI, make_ui
from cluster import convs

RECENT = 10                 # messages shown on /dm, /join
SYNC_DEFAULT = 20           # messages shown by /sync
BACKLOG_MAX = 5000          # pushes that arrive before the welcome is printed
SEEN_MAX = 20               # names remembered per room (the protocol has no member list)
TYPING_EVERY = 3.0          # seconds between two ``typing`` sent to one conversation (server: 2)
TYPING_QUIET = 10.0         # seconds before "bob is typing…" prints again for bob there


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
        self.log = ConvLog()                       # recent messages as they stand (edits, recalls)
        self.marks = ReadMarks()                   # the other user's read cursor per DM
        self.friends = Friends()
        self.typing_shown = Throttle(TYPING_QUIET)  # (conv, user): "is typing…" printed
        self.typing_sent = Throttle(TYPING_EVERY)   # conv: ``typing`` sent
        self.show_ids = False                      # /ids: #SEQ in front of messages
        self.commands = {"/dm": self.cmd_dm, "/reply": self.cmd_reply, "/join": self.cmd_join,
                         "/leave": self.cmd_leave, "/conv": self.cmd_conv, "/sync": self.cmd_sync,
                         "/who": self.cmd_who, "/edit": self.cmd_edit, "/recall": self.cmd_recall,
                         "/ids": self.cmd_ids, "/friends": self.cmd_friends, "/status": self.cmd_status,
                         "/hide": self.cmd_hide, "/unhide": self.cmd_unhide, "/help": self.cmd_help,
                         "/quit": self.cmd_quit}
        self.pushes = {"msg": self.show_msg, "kicked": self.on_kicked, "error": self.on_error,
                       "read": self.on_read, "typing": self.on_typing, "presence": self.on_presence,
                       "digest": self.on_digest}
        if hasattr(self.ui, "on_typing"):          # the prompt tells when a line is being typed
            self.ui.on_typing = self.typing_started

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
        handler = self.pushes.get(body.get("t"))
        if handler is None:
            self.info(f"{clean(body.get('t'))}: {clean(body)}")
        else:
            handler(body)

    def on_connection(self, state: str) -> None:
        self.info(CONNECTION_TEXT.get(state) or clean(state))

    def on_kicked(self, body: dict) -> None:
        reason = clean(body.get("reason"))
        self.info(f"kicked by the server: {KICK_TEXT.get(reason, reason)}")

    def on_error(self, body: dict) -> None:
        self.say(describe_error(str(body.get("code")), str(body.get("reason", "")),
                                body.get("retry_ms"), body.get("until")), "error")

    def on_read(self, body: dict) -> None:
        """The other user's read cursor in a DM: a line once it covers a message of ours."""
        conv, user, seq = body.get("conv"), body.get("user"), body.get("seq")
        if dm_peer(conv, self.user) != user:
            return                                 # groups: no ticks
        before = self.marks.move(conv, seq)
        own = [] if before is None else self.log.own(conv, self.user, before, seq)
        if own:
            self.info(read_line(user, own[-1]))

    def on_typing(self, body: dict) -> None:
        conv, user = body.get("conv"), body.get("user")
        if conv == self.current and isinstance(user, str) and user != self.user \
                and self.typing_shown.due((conv, user), time.monotonic()):
            self.info(typing_line(user))

    def on_presence(self, body: dict) -> None:
        """A friend logged in or out or changed the status (or, after a reconnect, the answer)."""
        if "users" in body:
            lines = self.friends.take_answer(body)
        else:
            lines = [self.friends.update(body.get("user"), body.get("status"), body.get("text"))]
        for line in lines:
            if line:
                self.info(line)

    def on_digest(self, body: dict) -> None:
        self.info(digest_line(body, self.user))

    def show_msg(self, m: dict, current: str | None = None, live: bool = True) -> None:
        """A message (``live``: pushed; else from history). An edit or recall shows its target
        again, changed (live only: history shows the target as it stands already)."""
        if m.get("kind") in EVENT_KINDS:
            rec, changed = self.log.apply(m)
            if changed and live:
                self.ui.show(self.render(rec, current))
            return
        conv, sender = m.get("conv"), m.get("from")
        if isinstance(conv, str) and conv.startswith("d:") and sender != self.user:
            self.last_dm = conv
        self.remember(conv, sender)
        self.typing_shown.reset((conv, sender))
        self.log.add(m)
        self.ui.show(self.render(m, current))

    def render(self, m: dict, current: str | None = None):
        read = m.get("from") == self.user and self.marks.read(m.get("conv"), m.get("seq"))
        return format_msg(m, self.user, current or self.current, read=read, ids=self.show_ids)

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
        unread = welcome.get("unread") if isinstance(welcome.get("unread"), dict) else {}
        if known:
            self.info(f"your conversations: {' '.join(conv_badge(c, self.user, unread.get(c)) for c in known)}")
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
        m = {"conv": ack.get("conv", self.current), "seq": ack.get("seq"), "from": self.user,
             "ts": ack.get("ts"), "body": text}
        self.log.add(m)
        self.ui.show(self.render(m, self.current))

    def typing_started(self) -> None:
        """A line (not a command) is being typed: called by the prompt, in the hub (no waits)."""
        conv, client = self.current, self.client
        if conv is None or client is None or not client.connected:
            return
        allowed = conv.startswith(("d:", "g:")) or conv in client.rooms   # not sys, not a room left
        if allowed and self.typing_sent.due(conv, time.monotonic()):
            gevent.spawn(self._send_typing, conv)

    def _send_typing(self, conv: str) -> None:
        try:
            self.client.typing(conv)
        except ClientError:                        # down: the connection events say so
            pass

    def tail(self, conv: str, n: int) -> list[dict]:
        """The last ``n`` messages of ``conv``; a DM with nobody raises ``bad_conv`` here."""
        last = int(self.client.sync(conv, after=0, limit=1).get("last_seq") or 0)
        if last <= 0:
            return []
        history = self.client.sync(conv, after=max(0, last - n), limit=n)
        read, peer = history.get("read"), dm_peer(conv, self.user)
        if isinstance(read, dict) and peer is not None:
            self.marks.move(conv, read.get(peer))
        return history.get("msgs") or []

    def need_current(self) -> str:
        if self.current is None:
            raise ValueError("no conversation yet: /dm USER or /join r:ROOM")
        return self.current

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
            self.show_msg(m, conv, live=False)
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
            self.show_msg(m, room, live=False)
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
        conv = self.need_current()
        if arg and not arg.isdigit():
            raise ValueError("usage: /sync [N]")
        for m in self.tail(conv, max(1, min(int(arg or SYNC_DEFAULT), 500))):
            self.show_msg(m, live=False)

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

    def cmd_edit(self, arg: str) -> None:
        conv = self.need_current()
        seq, text = parse_edit(arg, self.log.last_own(conv, self.user))
        ack = self.client.edit(conv, seq, text)
        self.show_own_event(conv, seq, ack, {"kind": "edit", "body": text})

    def cmd_recall(self, arg: str) -> None:
        conv = self.need_current()
        seq = parse_seq(arg, self.log.last_own(conv, self.user), "usage: /recall SEQ (a number, or last)")
        ack = self.client.recall(conv, seq)
        self.show_own_event(conv, seq, ack, {"kind": "recall", "body": None})

    def show_own_event(self, conv: str, ref: int, ack: dict, event: dict) -> None:
        """Our edit/recall was acked (its push is ours: not shown): show the target changed."""
        rec, _changed = self.log.apply({"conv": conv, "seq": ack.get("seq"), "from": self.user,
                                        "ts": ack.get("ts"), "ref": ref, **event})
        self.ui.show(self.render(rec, conv))

    def cmd_ids(self, arg: str) -> None:
        if arg not in ("", "on", "off"):
            raise ValueError("usage: /ids [on|off]")
        self.show_ids = not self.show_ids if not arg else arg == "on"
        self.info("message numbers shown (#SEQ, for /edit and /recall)" if self.show_ids
                  else "message numbers hidden")

    def cmd_friends(self, arg: str) -> None:
        action, _, name = arg.partition(" ")
        name = name.strip()
        if not action:
            for line in self.friends.listing():
                self.info(line)
        elif action == "add" and name:
            self.friend_add(name)
        elif action in ("remove", "rm") and name:
            self.friend_remove(name)
        else:
            raise ValueError("usage: /friends [add USER | remove USER]")

    def friend_add(self, name: str) -> None:
        """Add ``name`` and watch the whole list again (the answer says who is online)."""
        if not convs.valid_user(name) or name == self.user:
            raise ValueError("usage: /friends add USER (another user)")
        if not self.friends.add(name):
            raise ValueError(f"{name} is on your friends list already")
        try:
            answer = self.client.presence_sub(self.friends.names)
        except ClientError:
            self.friends.remove(name)
            raise
        self.info(f"{name} added to your friends")
        for line in self.friends.take_answer(answer):
            self.info(line)

    def friend_remove(self, name: str) -> None:
        if not self.friends.remove(name):
            raise ValueError(f"{clean(name)} is not on your friends list")
        try:
            self.client.presence_sub(self.friends.names)
        except ClientError:
            self.friends.add(name)
            raise
        self.info(f"{name} removed from your friends")

    def cmd_status(self, arg: str) -> None:
        text = parse_status(arg)
        self.client.set_status(text=text)
        self.info(f"status set: {clean(text)}" if text else "status cleared")

    def cmd_hide(self, _arg: str) -> None:
        self.client.set_status(hidden=True)
        self.info("hidden: you appear offline to everyone (/unhide to show up again)")

    def cmd_unhide(self, _arg: str) -> None:
        self.client.set_status(hidden=False)
        self.info("visible again: your friends see you online")

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

