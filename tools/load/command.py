"""``zonechat loadtest SCENARIO``: a capacity test in one command.

Runs Locust headless on ``tools/load/locustfile.py`` (found beside this module, so an
installed copy works as well as a checkout) against the running cluster of the config (gate TCP ports from its nodes, the center's admin endpoint for tokens), with
``--workers`` Locust processes, while sampling CPU% and RSS of every cluster process
(pids from the supervisor's state file, see cluster/runstate.py), Redis included, and
of the load generator. Everything lands in ``<out>/loadtest-<scenario>-<timestamp>/``:
Locust's CSV and HTML reports, ``locust.log``, ``results.json`` (the locustfile's),
``samples.json`` (the processes), ``summary.json``, ``summary.md`` and ``summary.html``
(zonechat's own page: the verdict, charts over time, errors, correctness, processes;
self-contained, see tools/load/htmlreport.py). The summary starts with its verdict line,
also the first line printed at the end. Exit code 0 when the run delivered and every
correctness counter is zero, 1 otherwise (a latency over --p99-ms is in the verdict line,
not in the exit code).
"""
from __future__ import annotations

import cluster  # noqa: F401  (gevent patches the standard library first)

import glob
import importlib.metadata
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections import deque

import click
import gevent
import psutil
from gevent.event import Event

from cluster import config as config_mod
from cluster import runstate
from cluster.admin import parse_duration
from cluster.child import child_env, die_with_parent
from tools.load import htmlreport
from tools.load import report as loadreport

LOCUSTFILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "locustfile.py")
SCENARIOS = {"world": ["WorldUser"], "dm": ["DmUser"], "guild": ["GuildUser"],
             "broadcast": ["BroadcastUser", "Broadcaster"], "churn": ["ChurnUser"]}
SAMPLE_EVERY = 1.0      # seconds between two process samples
SAMPLES_MAX = 14400     # samples kept per process (4 hours at one a second; the oldest go first)
PREFIX = "zonechat: "   # the locustfile's progress lines
STOP_GRACE = 30.0       # seconds between SIGTERM and SIGKILL of an overdue Locust


def default_workers() -> int:
    """Half the cores this process may use, at least one (the cluster needs the rest)."""
    return max(1, len(os.sched_getaffinity(0)) // 2)


def default_spawn_rate(users: int) -> float:
    return float(min(100, max(10, users // 10)))


class ProcessSampler:
    """Every second: CPU% and RSS of the cluster's processes and of the load generator."""

    def __init__(self, data_dir: str, generator_pid: int):
        self.state_glob = os.path.join(data_dir, "run", "supervisor*.json")
        self.generator_pid = generator_pid
        self.samples: dict = {"cluster": {}, "generator": {}}
        self._procs: dict = {}

    def targets(self):
        """(group, name, role, pid, create_time) of every process to sample now."""
        for path in sorted(glob.glob(self.state_glob)):
            doc = runstate.read(path) or {}
            nodes = doc.get("nodes") or {}
            for name, pid, ctime in runstate.processes(doc):
                yield "cluster", name, (nodes.get(name) or {}).get("role", "supervisor"), pid, ctime
        try:
            gen = psutil.Process(self.generator_pid)
            yield "generator", "locust", "locust", gen.pid, None
            for i, child in enumerate(gen.children(recursive=True)):
                yield "generator", f"locust-worker{i + 1}", "locust", child.pid, None
        except psutil.Error:
            return

    def sample_once(self) -> None:
        now = time.time()
        for group, name, role, pid, ctime in list(self.targets()):
            key = (pid, ctime)
            try:
                proc = self._procs.get(key)
                if proc is None:
                    proc = self._procs[key] = psutil.Process(pid)
                    proc.cpu_percent(None)          # primes the counter: the next call measures
                    continue
                cpu, rss = proc.cpu_percent(None), proc.memory_info().rss
            except psutil.Error:
                continue
            entry = self.samples[group].setdefault(name, {"role": role, "pid": pid,
                                                          "samples": deque(maxlen=SAMPLES_MAX)})
            entry["pid"] = pid
            entry["samples"].append([round(now, 2), cpu, rss])

    def plain(self) -> dict:
        """The samples as plain lists (for samples.json and the report)."""
        return {group: {name: {**entry, "samples": list(entry["samples"])} for name, entry in procs.items()}
                for group, procs in self.samples.items()}

    def sampler_worker(self, stop) -> None:
        while not stop.is_set():
            self.sample_once()
            stop.wait(SAMPLE_EVERY)


def cluster_running(data_dir: str) -> bool:
    for path in glob.glob(os.path.join(data_dir, "run", "supervisor*.json")):
        doc = runstate.read(path)
        if doc and runstate.alive(doc.get("pid"), doc.get("create_time")):
            return True
    return False


def locust_argv(o: dict, report_dir: str) -> list[str]:
    argv = [sys.executable, "-m", "locust", "-f", LOCUSTFILE, *SCENARIOS[o["scenario"]],
            "--headless", "-u", str(o["users"]), "-r", f"{o['spawn_rate']:g}", "--only-summary",
            "--stop-timeout", "5", "--csv", os.path.join(report_dir, "locust"),
            "--html", os.path.join(report_dir, "locust.html"),
            "--zc-config", o["config"], "--zc-rate", f"{o['rate'] or 0:g}", "--zc-duration", f"{o['duration']:g}",
            "--zc-out", report_dir, "--zc-workers", str(o["workers"]), "--zc-p99-ms", f"{o['p99_ms']:g}"]
    if o["workers"] > 1:
        argv += ["--processes", str(o["workers"])]
    if o["knee"]:
        argv += ["--zc-knee"]
    return argv


def time_limit(o: dict) -> float:
    """Seconds after which an overdue Locust is stopped (its own limits come first)."""
    ramp = o["users"] / o["spawn_rate"]
    hold = o["duration"] if not o["knee"] else 6 * (20 + 30)
    return 120 + o["users"] * 0.5 + ramp + hold + 60 + 30   # + registering every user once


def relay_output(proc, log_path: str) -> None:
    """Copy Locust's output to locust.log; show the progress lines and errors."""
    with open(log_path, "w", encoding="utf-8") as log:
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
            log.write(line)
            if line.startswith(PREFIX):
                click.echo(line[len(PREFIX):].rstrip())
            elif "/ERROR/" in line or "/CRITICAL/" in line:
                click.echo("locust: " + line.rstrip(), err=True)
            log.flush()


def wait_for(proc, limit: float) -> int:
    """Locust's exit code. Overdue: SIGTERM (it writes its reports), then SIGKILL. Ctrl-C
    reached Locust too (same process group): give it STOP_GRACE to finish its reports."""
    try:
        return proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        click.echo(f"locust overdue after {limit:.0f}s: stopping it (pid {proc.pid})", err=True)
        proc.send_signal(signal.SIGTERM)
    except KeyboardInterrupt:
        click.echo("interrupted: waiting for Locust to write its reports", err=True)
    try:
        return proc.wait(timeout=STOP_GRACE)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        proc.kill()
        return proc.wait()


def run_locust(o: dict, report_dir: str, sampler_dir: str) -> tuple[int, dict]:
    """Run Locust to its end (stopping it when overdue); its exit code and the samples."""
    argv = locust_argv(o, report_dir)
    proc = subprocess.Popen(argv, env=child_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=die_with_parent(os.getpid()))
    sampler, stop = ProcessSampler(sampler_dir, proc.pid), Event()
    log_path = os.path.join(report_dir, "locust.log")
    workers = [gevent.spawn(sampler.sampler_worker, stop), gevent.spawn(relay_output, proc, log_path)]
    try:
        rc = wait_for(proc, time_limit(o))
    finally:
        if proc.poll() is None:                     # an error here: our child goes too
            proc.kill()
            proc.wait()
    stop.set()
    gevent.joinall(workers, timeout=10)
    return rc, sampler.plain()


def meta(o: dict, load_start, load_end) -> dict:
    return {"command": "zonechat loadtest " + " ".join(o["argv"]), "config": o["config"],
            "cores": len(os.sched_getaffinity(0)), "workers": o["workers"], "spawn_rate": o["spawn_rate"],
            "loadavg_start": load_start, "loadavg_end": load_end,
            "locust": importlib.metadata.version("locust"), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "options": {"rate": o["rate"], "workers": o["workers_arg"], "config": o["config_arg"]}}


def write_json(path: str, doc) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=1)


def run(o: dict) -> int:
    cfg = o["cfg"]
    if not cluster_running(cfg.data_dir):
        raise click.ClickException(f"no cluster runs for {cfg.path}: start it with zonechat up -c {cfg.path}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    report_dir = os.path.abspath(os.path.join(o["out"], f"loadtest-{o['scenario']}-{stamp}"))
    os.makedirs(report_dir, exist_ok=True)
    click.echo(f"loadtest {o['scenario']}: {o['users']} users, {o['workers']} Locust process(es); "
               f"reports in {report_dir}")
    load_start = [round(x, 2) for x in os.getloadavg()]
    rc, samples = run_locust(o, report_dir, cfg.data_dir)
    write_json(os.path.join(report_dir, "samples.json"), samples)
    try:
        with open(os.path.join(report_dir, "results.json"), encoding="utf-8") as fh:
            results = json.load(fh)
    except (OSError, ValueError):
        click.echo(f"locust exited {rc} without results; see {report_dir}/locust.log", err=True)
        return 1
    summary = loadreport.summarize(results, samples, meta(o, load_start, [round(x, 2) for x in os.getloadavg()]))
    summary["locust_exit_code"] = rc
    text = write_summaries(report_dir, summary)
    click.echo("\n" + text)
    click.echo(f"reports: {report_dir} (summary.html: charts; locust.html: Locust's own)")
    return 0 if summary["verdict"] == "pass" and rc == 0 else 1


def write_summaries(report_dir: str, summary: dict) -> str:
    """summary.json, summary.md and summary.html; the markdown, to print."""
    write_json(os.path.join(report_dir, "summary.json"), summary)
    text = loadreport.render_markdown(summary)
    with open(os.path.join(report_dir, "summary.md"), "w", encoding="utf-8") as fh:
        fh.write(text)
    with open(os.path.join(report_dir, "summary.html"), "w", encoding="utf-8") as fh:
        fh.write(htmlreport.render_html(summary))
    return text


@click.command("loadtest")
@click.argument("scenario", type=click.Choice(sorted(SCENARIOS)))
@click.option("-u", "--users", type=click.IntRange(min=1), required=True, help="load users (players)")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=None,
              help="total msgs/s into the cluster [world 10, broadcast 2, dm/guild users/2, churn users/5]")
@click.option("--duration", default="60", show_default=True, help="steady time once every user is in: 60, 90s, 5m")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Locust processes [half the cores, >= 1]")
@click.option("--spawn-rate", type=click.FloatRange(min=0, min_open=True), default=None,
              help="users started per second [users/10 within 10..100]")
@click.option("--knee", is_flag=True, help="step users up (fifths of --users) until send→msg p99 passes --p99-ms")
@click.option("--p99-ms", type=float, default=250.0, show_default=True,
              help="send→msg p99 bound (ms) of the verdict, and of the knee's steps")
@click.option("--out", default="reports", show_default=True, type=click.Path(file_okay=False), help="reports go under here")
@click.option("-c", "--config", "config_path", default="config.yaml", envvar="ZONECHAT_CONFIG", show_default=True,
              type=click.Path(dir_okay=False), help="cluster config file")
def loadtest(scenario, users, rate, duration, workers, spawn_rate, knee, p99_ms, out, config_path) -> None:
    """Run a Locust capacity test of SCENARIO against the running cluster (127.0.0.1 only)."""
    if importlib.util.find_spec("locust") is None:
        raise click.ClickException("Locust is not installed: pip install -e '.[load]'")
    try:
        cfg = config_mod.load(config_path)
    except config_mod.ConfigError as exc:
        raise click.ClickException(f"config error: {exc}") from None
    far = [g.name for g in cfg.nodes_of("gate") if not (g.host == "localhost" or g.host.startswith("127."))]
    if far:
        raise click.ClickException(f"loadtest only targets loopback gates; not {', '.join(far)}")
    o = {"scenario": scenario, "users": users, "rate": rate, "duration": parse_duration(duration),
         "workers": workers or default_workers(), "spawn_rate": spawn_rate or default_spawn_rate(users),
         "knee": knee, "p99_ms": p99_ms, "out": out, "cfg": cfg, "config": os.path.abspath(config_path),
         "workers_arg": workers, "config_arg": config_path,
         "argv": sys.argv[2:] if len(sys.argv) > 2 else [scenario]}
    sys.exit(run(o))
