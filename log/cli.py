"""``zonechat log ...``: the log role's own commands (``cluster.cli`` attaches the group).

``zonechat log tail [-u USER] [-n N] [--kind K]... [--all] [-f]`` prints the last records
of the traffic log under the config's data_dir (``log.tail.tail``); with ``--follow`` it
goes on printing new ones, across rotation, until Ctrl-C or SIGTERM.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

import click

from cluster import config as config_mod
from log import tail as logtail


@click.group("log")
def log() -> None:
    """Read the traffic log under data_dir."""


@log.command("tail")
@click.option("-c", "--config", "config_path", default="config.yaml", envvar="ZONECHAT_CONFIG",
              show_default=True, type=click.Path(dir_okay=False), help="cluster config file")
@click.option("--user", "-u", default=None, help="only records about this user")
@click.option("-n", "count", default=20, show_default=True, type=click.IntRange(min=1), help="how many records")
@click.option("--kind", "-k", "kinds", multiple=True, type=click.Choice(logtail.KINDS),
              help="only records of this kind (repeatable)")
@click.option("--all", "show_all", is_flag=True, help="also the clients' ping and the gates' pong frames")
@click.option("--follow", "-f", is_flag=True, help="go on printing new records until Ctrl-C")
def log_tail(config_path: str, user: str | None, count: int, kinds: tuple, show_all: bool,
             follow: bool) -> None:
    """Print the last records of the traffic log (ping/pong frames hidden unless --all)."""
    try:
        cfg = config_mod.load(config_path)
    except config_mod.ConfigError as exc:
        raise click.ClickException(f"config error: {exc}") from None
    if not follow:
        logtail.tail(cfg.data_dir, user=user, n=count, out=click.echo, kinds=kinds, keepalive=show_all)
        return
    with stop_on_signals() as stop:
        logtail.tail(cfg.data_dir, user=user, n=count, out=click.echo, kinds=kinds, keepalive=show_all,
                     stop=stop)


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
