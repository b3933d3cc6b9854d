"""The terminal chat's two ways in and out (``client/terminal.py`` holds the session).

- ``PromptUI`` when stdin and stdout are a terminal: prompt_toolkit's line editor with a
  prompt naming the conversation that stays put while messages print above it, colours,
  history, Tab completion. prompt_toolkit, not textual: textual is a full-screen app
  framework, heavier and harder to drive line by line (pexpect, tmux, a pipe);
  prompt_toolkit is a line editor that prints above its prompt and runs under a
  pseudo-terminal.
- ``PlainUI`` for a pipe or a file (tests and scripts): the same lines as plain text, no
  escape codes; lines are read by a thread of gevent's pool.

gevent owns the socket. ``PromptUI`` runs the prompt in its own asyncio loop (on the
unpatched selector) in one real OS thread of gevent's threadpool. Typed lines cross to
gevent with ``hub.loop.run_callback_threadsafe`` into a bounded queue (``INBOX_MAX``);
lines to print cross back into a bounded deque (``SCREEN_MAX``) that the prompt thread
drains and prints with ``run_in_terminal``. Only the prompt thread touches the terminal
while it runs. ``on_typing``, if set, is called in the hub (no waiting there) whenever the
line being edited changes and is not empty and not a command.
"""
from __future__ import annotations

import asyncio
import collections
import os

import gevent
from gevent import monkey
from gevent.queue import Full, Queue

from client.terminal_format import COMMANDS, clean, plain

INBOX_MAX = 100             # typed lines waiting for the gevent side
SCREEN_MAX = 5000           # lines waiting for the prompt thread to print them
STOP_TIMEOUT = 5.0          # seconds for the prompt thread to end
STYLE = {
    "prompt": "bold", "time": "", "tag": "ansiblue", "self": "ansigreen bold",
    "other": "ansicyan bold", "system": "ansiyellow", "error": "ansired bold",
    "broadcast": "ansimagenta bold", "note": "italic", "read": "ansigreen",
}


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
        self.on_typing = None                       # set by the session: called in the hub

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
        session.default_buffer.on_text_changed += self._typed
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

    def _typed(self, buffer) -> None:
        """In the prompt thread: the line changed; a message being typed tells the hub."""
        hook, text = self.on_typing, buffer.text
        if hook is not None and text and not text.startswith("/"):
            self.hub.loop.run_callback_threadsafe(hook)

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


