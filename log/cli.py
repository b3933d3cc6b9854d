"""``zonechat log ...``: the log role's own commands (``cluster.cli`` attaches the group).

``zonechat log tail [-u USER] [-n N]`` prints the last records of the traffic log under the
config's data_dir (``log.logfile.tail``).
"""
from __future__ import annotations

import click

from cluster import config as config_mod
from log import logfile


@click.group("log")
def log() -> None:
    """Read the traffic log under data_dir."""


@log.command("tail")
@click.option("-c", "--config", "config_path", default="config.yaml", envvar="ZONECHAT_CONFIG",
              show_default=True, type=click.Path(dir_okay=False), help="cluster config file")
@click.option("--user", "-u", default=None, help="only records about this user")
@click.option("-n", "count", default=20, show_default=True, type=click.IntRange(min=1), help="how many records")
def log_tail(config_path: str, user: str | None, count: int) -> None:
    """Print the last records of the traffic log."""
    try:
        cfg = config_mod.load(config_path)
    except config_mod.ConfigError as exc:
        raise click.ClickException(f"config error: {exc}") from None
    logfile.tail(cfg.data_dir, user=user, n=count, out=click.echo)
