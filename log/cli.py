"""``zonechat log ...``: the log role's own commands (``cluster.cli`` attaches the group).

``zonechat log tail [-u USER] [-n N] [--kind K]... [--all] [-f]`` prints the last records
of the traffic log under the config's data_dir (``log.tail.tail``); with ``--follow`` it
goes on printing new ones, across rotation, until Ctrl-C or SIGTERM.

``zonechat log export CONV [-o FILE] [--since T] [--until T]`` writes one conversation's
archived messages as JSON lines (``log.export``), to stdout or to a new 0600 file.
"""
from __future__ import annotations

import datetime
import os
import signal
import threading
from contextlib import contextmanager

import click

from cluster.cli import config_option, load_config
from log import export as logexport
from log import tail as logtail



@click.group("log")
def log() -> None:
    """Read the traffic log under data_dir."""


@log.command("tail")
@config_option
@click.option("--user", "-u", default=None, help="only records about this user")
@click.option("-n", "count", default=20, show_default=True, type=click.IntRange(min=1), help="how many records")
@click.option("--kind", "-k", "kinds", multiple=True, type=click.Choice(logtail.KINDS),
              help="only records of this kind (repeatable)")
@click.option("--all", "show_all", is_flag=True, help="also the clients' ping and the gates' pong frames")
@click.option("--follow", "-f", is_flag=True, help="go on printing new records until Ctrl-C")
def log_tail(config_path: str, user: str | None, count: int, kinds: tuple, show_all: bool,
             follow: bool) -> None:
    """Print the last records of the traffic log (ping/pong frames hidden unless --all)."""
    cfg = load_config(config_path)
    if not follow:
        logtail.tail(cfg.data_dir, user=user, n=count, out=click.echo, kinds=kinds, keepalive=show_all)
        return
    with stop_on_signals() as stop:
        logtail.tail(cfg.data_dir, user=user, n=count, out=click.echo, kinds=kinds, keepalive=show_all,
                     stop=stop)


class Moment(click.ParamType):
    """A time as epoch milliseconds, or ISO 8601 (UTC when it names no zone)."""
    name = "time"

    def convert(self, value, param, ctx):
        if isinstance(value, int) or str(value).isdigit():
            return int(value)
        try:
            moment = datetime.datetime.fromisoformat(str(value))
        except ValueError:
            self.fail(f"{value!r} is neither epoch milliseconds nor ISO 8601 (2026-12-04T18:00)",
                      param, ctx)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.timezone.utc)
        return int(moment.timestamp() * 1000)


@log.command("export")
@click.argument("conv")
@config_option
@click.option("-o", "--output", default=None, type=click.Path(dir_okay=False),
              help="a new file to write (mode 0600); stdout when not given")
@click.option("--since", type=Moment(), default=None, help="only messages sent at or after this time")
@click.option("--until", type=Moment(), default=None, help="only messages sent before this time")
def log_export(conv: str, config_path: str, output: str | None, since: int | None,
               until: int | None) -> None:
    """Write CONV's archived messages (d:alice:bob, g:<id>, r:<room>, sys) as JSON lines."""
    cfg = load_config(config_path)
    if output is None:
        count = logexport.export(cfg.data_dir, conv, click.echo, since, until)
    else:
        try:
            fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise click.ClickException(f"{output} exists; name a new file") from None
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            count = logexport.export(cfg.data_dir, conv, lambda text: fh.write(text + "\n"), since, until)
    click.echo(f"{count} messages of {conv} exported", err=True)


@contextmanager
def stop_on_signals():
    """An Event that SIGINT (Ctrl-C) or SIGTERM sets; the old handlers come back after."""
    stop = threading.Event()
    wanted = (signal.SIGINT, signal.SIGTERM)
    old = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in wanted}
    try:
        yield stop
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
