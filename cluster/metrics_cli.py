"""``zonechat metrics ...``: what Prometheus needs to scrape this cluster.

``zonechat metrics scrape-config`` prints a ``prometheus.yml`` with one target per host
of the config (each host's supervisor serves its nodes on ``metrics.port``,
cluster/metrics_http.py); use it as it is, or copy its ``scrape_configs`` entry into yours.
``zonechat metrics show [--node N]`` prints one host's scrape (for a quick look).
"""
from __future__ import annotations

import sys
import urllib.error
import urllib.request

import click
import yaml

from cluster.cli import config_option, host_option, load_config
from cluster.supervisor import WILDCARDS

DEFAULT_INTERVAL = "15s"


def hosts(cfg) -> list[str]:
    """Every host that runs a supervisor: the nodes' hosts, and the managed Redis's."""
    found = {n.host for n in cfg.nodes.values()}
    if cfg.redis.managed:
        found.add(cfg.redis.host)
    return sorted(found)


def target(cfg, host: str) -> str:
    addr = cfg.metrics.host if cfg.metrics.host not in (None, *WILDCARDS) else host
    if addr in WILDCARDS:
        addr = "127.0.0.1"
    return f"[{addr}]:{cfg.metrics.port}" if ":" in addr else f"{addr}:{cfg.metrics.port}"


def scrape_config(cfg, interval: str = DEFAULT_INTERVAL, job: str = "zonechat") -> dict:
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [{
            "job_name": job, "metrics_path": "/metrics", "scrape_interval": interval,
            "static_configs": [{"targets": [target(cfg, h) for h in hosts(cfg)],
                                "labels": {"cluster": cfg.cluster.name}}],
        }],
    }


@click.group("metrics")
def metrics() -> None:
    """Prometheus: the scrape config for this cluster, or a look at one host's metrics."""


@metrics.command("scrape-config")
@config_option
@click.option("--interval", default=DEFAULT_INTERVAL, show_default=True, help="scrape_interval")
@click.option("--job", default="zonechat", show_default=True, help="job_name")
def scrape_config_cmd(config_path: str, interval: str, job: str) -> None:
    """Print a prometheus.yml scraping every host's supervisor (one target per host)."""
    cfg = load_config(config_path)
    click.echo(f"# zonechat cluster {cfg.cluster.name}: every host's supervisor serves /metrics")
    click.echo(yaml.safe_dump(scrape_config(cfg, interval, job), sort_keys=False), nl=False)


@metrics.command("show")
@config_option
@host_option
def show(config_path: str, host: str | None) -> None:
    """Print this host's /metrics as Prometheus would read it."""
    cfg = load_config(config_path)
    url = f"http://{target(cfg, host or hosts(cfg)[0])}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            sys.stdout.write(resp.read().decode("utf-8", "replace"))
    except (urllib.error.URLError, OSError) as exc:
        raise click.ClickException(f"{url}: {exc} (is the cluster running? zonechat status)") from None
