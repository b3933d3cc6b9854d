"""The terminal chat behind ``zonechat chat USER`` (the ``chat`` command is here too).

Lines typed go to the current conversation; incoming messages print as they arrive::

    [d:alice:bob #12] bob: hi

Commands: ``/dm USER``, ``/join r:ROOM``, ``/leave [r:ROOM]``, ``/conv CONV`` (any
conversation id, e.g. a group ``g:NAME``), ``/sync [N]`` (the last N messages, default
20), ``/who``, ``/help``, ``/quit``; ``//text`` sends ``/text``. stdin may be a terminal,
a pipe or a file (tests and tmux drive it): lines are read by a thread of gevent's pool
so the socket keeps being served meanwhile. End of input is ``/quit``.
"""
from __future__ import annotations

import signal
import sys
import threading

import click
import gevent
from gevent.event import Event

from client.client import Client, ClientError, dm_conv
from cluster import convs

RECENT = 10                 # messages shown on /dm, /join
SYNC_DEFAULT = 20           # messages shown by /sync

HELP = """\
* /dm USER       talk to USER (conversation d:<a>:<b>)
* /join r:ROOM   join a room (created on first join) and talk there
* /leave [ROOM]  leave the current room (or ROOM)
* /conv CONV     talk in any conversation you belong to, e.g. g:team
* /sync [N]      show the last N messages here (default 20)
* /who           who you are, where you talk, your conversations
* /quit          log out and leave (end of input does the same)
* anything else is sent to the current conversation; //text sends /text"""

ERROR_TEXT = {
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


def clean(value) -> str:
    """Text safe for a terminal: other users must not send escape sequences."""
    text = value if isinstance(value, str) else repr(value)
    return "".join(ch if ch.isprintable() else "\ufffd" for ch in text)


def format_msg(m: dict) -> str:
    return f"[{clean(m.get('conv'))} #{m.get('seq')}] {clean(m.get('from'))}: {clean(m.get('body'))}"


def describe_error(code: str, reason: str = "", retry_ms=None) -> str:
    text = ERROR_TEXT.get(code) or clean(reason) or code
    if isinstance(retry_ms, int):
        text += f" (retry in {retry_ms / 1000:g}s)"
    return f"! {text} [{code}]"


def room_id(arg: str) -> str:
    return arg if arg.startswith("r:") else f"r:{arg}"


class ChatSession:
    """One logged-in terminal session: commands in, messages out."""

    def __init__(self, user: str, out):
        self.user, self.out = user, out
        self.client: Client | None = None
        self.current: str | None = None
        self.backlog: list[dict] | None = []      # pushes before the welcome is printed
        self.done = Event()                        # /quit, end of input, or the client closed
        self.commands = {"/dm": self.cmd_dm, "/join": self.cmd_join, "/leave": self.cmd_leave,
                         "/conv": self.cmd_conv, "/sync": self.cmd_sync, "/who": self.cmd_who,
                         "/help": self.cmd_help, "/quit": self.cmd_quit}

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def on_push(self, body: dict) -> None:
        if self.backlog is not None:
            self.backlog.append(body)
            return
        t = body.get("t")
        if t == "msg":
            self.say(format_msg(body))
        elif t == "kicked":
            self.say(f"* kicked by the server: {clean(body.get('reason'))}")
        elif t == "error":
            self.say(describe_error(str(body.get("code")), str(body.get("reason", "")), body.get("retry_ms")))
        else:
            self.say(f"* {clean(t)}: {clean(body)}")

    def start(self, welcome: dict) -> None:
        """Print the welcome, then what arrived with it (the offline messages)."""
        self.say(f"* logged in as {self.user}; /help lists the commands")
        if len(welcome.get("convs") or {}) > 1:
            self.say(f"* conversations: {' '.join(sorted(welcome['convs']))}")
        backlog, self.backlog = self.backlog or [], None
        for body in backlog:
            self.on_push(body)

    def handle(self, line: str) -> None:
        line = line.strip()
        if not line:
            return
        try:
            if line.startswith("/") and not line.startswith("//"):
                name, _, arg = line.partition(" ")
                command = self.commands.get(name.lower())
                if command is None:
                    self.say(f"! unknown command {clean(name)}: /help lists them")
                else:
                    command(arg.strip())
            else:
                self.send_text(line[1:] if line.startswith("//") else line)
        except ClientError as exc:
            self.say(describe_error(exc.code, exc.reason, exc.retry_ms))
        except ValueError as exc:
            self.say(f"! {clean(str(exc))}")

    def send_text(self, text: str) -> None:
        if self.current is None:
            self.say("! no conversation yet: /dm USER or /join r:ROOM")
            return
        ack = self.client.send(self.current, text)
        self.say(format_msg({"conv": ack.get("conv"), "seq": ack.get("seq"), "from": self.user, "body": text}))

    def show_recent(self, conv: str, n: int) -> None:
        known = (self.client.welcome or {}).get("convs") or {}
        last = max(self.client.last_seen(conv) or 0, known.get(conv) or 0)
        if last <= 0:
            return
        for m in self.client.sync(conv, after=max(0, last - n), limit=n).get("msgs") or ():
            self.say(format_msg(m))

    def switch(self, conv: str) -> None:
        self.current = conv
        self.say(f"* now talking in {conv}")

    def cmd_dm(self, arg: str) -> None:
        if not convs.valid_user(arg) or arg == self.user:
            raise ValueError("usage: /dm USER (another user)")
        conv = dm_conv(self.user, arg)
        self.show_recent(conv, RECENT)
        self.switch(conv)

    def cmd_join(self, arg: str) -> None:
        room = room_id(arg)
        if not convs.valid(room):
            raise ValueError("usage: /join r:ROOM")
        joined = self.client.join(room)
        for m in (joined.get("recent") or [])[-RECENT:]:
            self.say(format_msg(m))
        self.switch(room)

    def cmd_leave(self, arg: str) -> None:
        room = room_id(arg) if arg else self.current
        if room is None or not room.startswith("r:"):
            raise ValueError("usage: /leave [r:ROOM] (only rooms are left here)")
        self.client.leave(room)
        self.say(f"* left {room}")
        if self.current == room:
            self.current = None

    def cmd_conv(self, arg: str) -> None:
        if not convs.valid(arg):
            raise ValueError("usage: /conv CONV (d:a:b, g:NAME, r:ROOM or sys)")
        self.switch(arg)

    def cmd_sync(self, arg: str) -> None:
        if self.current is None:
            raise ValueError("no conversation yet: /dm USER or /join r:ROOM")
        if arg and not arg.isdigit():
            raise ValueError("usage: /sync [N]")
        self.show_recent(self.current, min(int(arg or SYNC_DEFAULT), 500))

    def cmd_who(self, _arg: str) -> None:
        known = set(((self.client.welcome or {}).get("convs") or {})) | set(self.client.track.convs)
        self.say(f"* you are {self.user}, talking in {self.current or 'nothing yet'}")
        self.say(f"* rooms: {' '.join(sorted(self.client.rooms)) or '-'}")
        self.say(f"* conversations: {' '.join(sorted(known)) or '-'}")

    def cmd_help(self, _arg: str) -> None:
        self.say(HELP)

    def cmd_quit(self, _arg: str) -> None:
        self.done.set()

    def stdin_listener(self, stdin) -> None:
        """Read lines in a pool thread (works for a tty, a pipe and a file); EOF ends the chat."""
        pool = gevent.get_hub().threadpool
        while not self.done.is_set():
            line = pool.apply(stdin.readline)
            if not line:
                break
            self.handle(line)
        self.done.set()


def run_chat(user: str, host: str = "127.0.0.1", port: int = 7700, register: bool = False,
             password: str | None = None, *, stdin=None, out=None, reconnect: bool = True) -> int:
    """Chat as ``user`` on the gate at host:port until /quit or end of input; the exit code.

    The password is prompted (hidden) when not given; ``register`` registers ``user``
    first (an existing user is reported, then the login is tried). ``stdin``/``out`` are
    text streams (default: the process's).
    """
    stdin, out = stdin or sys.stdin, out or sys.stdout
    if password is None:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=register, err=True)
    session = ChatSession(user, out)
    client = session.client = Client(host, port, reconnect=reconnect, auto_recv=True, on_push=session.on_push)
    try:
        client.connect()
        if register:
            _register(session, password)
        welcome = client.login(user, password)
    except ClientError as exc:
        session.say(describe_error(exc.code, exc.reason, exc.retry_ms))
        client.close()
        return 1
    session.start(welcome)
    return _serve(session, stdin)


def _register(session: ChatSession, password: str) -> None:
    try:
        session.client.register(session.user, password)
        session.say(f"* registered {session.user}")
    except ClientError as exc:
        if exc.code != "user_exists":
            raise
        session.say(describe_error(exc.code, exc.reason) + ": logging in")


def _on_sigint(callback):
    """Handle SIGINT in the loop (only the main thread may): no KeyboardInterrupt mid-request."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return gevent.signal_handler(signal.SIGINT, callback)


def _serve(session: ChatSession, stdin) -> int:
    client = session.client
    client.closed.rawlink(lambda _event: session.done.set())
    reader = gevent.spawn(session.stdin_listener, stdin)
    interrupt = _on_sigint(session.done.set)       # Ctrl-C logs out like /quit
    try:
        session.done.wait()
    finally:
        reader.kill(block=False)
        if interrupt is not None:
            interrupt.cancel()
    if client.closed.is_set():
        session.say(f"* disconnected{': ' + clean(client.kicked_reason) if client.kicked_reason else ''}")
        client.close()
        return 1
    try:
        client.logout()
        session.say("* bye")
    except ClientError as exc:
        session.say(describe_error(exc.code, exc.reason))
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
