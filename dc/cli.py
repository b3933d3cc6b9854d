"""``zonechat migrate``: the dataset's keys to the current layout (``dc.layout.migrate``)."""
from __future__ import annotations

import click
import redis

from cluster import secrets
from cluster.cli import config_option, load_config
from dc import layout


@click.command("migrate")
@config_option
def migrate_command(config_path: str) -> None:
    """Rename a version-1 dataset's keys to the current layout (Redis must run)."""
    cfg = load_config(config_path)
    if cfg.redis.mode == "cluster":
        raise click.ClickException("a version-1 dataset lives on one Redis: migrate it there "
                                   "(redis.mode: single), then move it into the cluster")
    try:
        client = redis.Redis.from_url(secrets.redis_url(cfg), socket_timeout=30)
    except secrets.SecretError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        layout.migrate(client, cfg.chat.slots, out=click.echo)
    except redis.RedisError as exc:
        raise click.ClickException(f"Redis: {exc}") from None
    finally:
        client.close()
