"""Locust load users for zonechat: `zonechat loadtest` runs this file; so can you.

    locust -f tools/load/locustfile.py WorldUser --headless -u 200 -r 20 --zc-duration 30 \
        --zc-config config.yaml --zc-out reports/mine

Scenarios, chosen by class or by tag (``--tags world``):

=========  ===========================  ================================================
tag        classes                      traffic
=========  ===========================  ================================================
world      WorldUser                    everyone joins ``r:<room>`` and talks there
dm         DmUser                       pairs (user k and k^1) talk in their DM
guild      GuildUser                    groups of ``--zc-guild-size`` talk in ``g:...``
broadcast  BroadcastUser + Broadcaster  the admin endpoint broadcasts; users only receive
churn      ChurnUser                    DM pairs that log out or drop every ~10 s and
                                        come back with their token (offline replay)
=========  ===========================  ================================================

``--zc-rate`` is the total msgs/s into the cluster, spread evenly over the senders.
Load users are ``<prefix><k>``, token-only accounts the run creates once through the admin
API (``/v1/users``, as a game backend would) before the users start; every user logs in
with a token minted by the admin endpoint, so no password hashing sits on the load path.
Only loopback gates are targeted.

``ZonechatShape`` ramps to ``-u`` users at ``-r``/s, waits for their logins and holds
``--zc-duration`` s; with ``--zc-knee`` it steps users up until send→msg p99 passes
``--zc-p99-ms`` or failures appear. Correctness problems (seq gaps, duplicates,
out-of-order, kicks) are Locust failures of type ``check`` and make the exit code 1.
A load user counts ``info user in`` once logged in (and joined, for ``world``) and
``info user out`` when it stops: the report's "users held" are the users in at every
second of the steady window.
"""
from __future__ import annotations

import cluster  # noqa: F401  (gevent's patch first; Locust has applied it already)

import itertools
import random
import time

import gevent
from locust import LoadTestShape, User, constant, events, tag, task
from locust.exception import StopUser
from locust.runners import WorkerRunner

from cluster import admin, convs
from tools.bench import sources
from tools.load import locust_client
from tools.load.conductor import Conductor, Plan, make_plan
from tools.load.report import USER_IN, USER_OUT
from tools.load.seqcheck import SeqCheck

PLAN: Plan | None = None
CONDUCTOR: Conductor | None = None
_local_ids = itertools.count()
TEXT = "load " * 8


@events.init_command_line_parser.add_listener
def add_options(parser) -> None:
    group = parser.add_argument_group("zonechat")
    add = group.add_argument
    add("--zc-config", default="config.yaml", env_var="ZONECHAT_CONFIG", help="cluster config (gates, admin endpoint)")
    add("--zc-rate", type=float, default=0.0, help="total msgs/s into the cluster (0: the scenario's default)")
    add("--zc-duration", type=float, default=60.0, help="steady seconds, once every user is logged in")
    add("--zc-prefix", default="lt", help="load user names: <prefix>0, <prefix>1, ...")
    add("--zc-room", default="world", help="the world-chat room (r:<room>)")
    add("--zc-guild-size", type=int, default=20, help="members per guild group")
    add("--zc-churn-every", type=float, default=10.0, help="mean seconds between reconnects (churn)")
    add("--zc-knee", action="store_true", help="step users up to find the knee instead of a steady run")
    add("--zc-knee-step", type=int, default=0, help="users added per knee step (0: a fifth of -u)")
    add("--zc-step-time", type=float, default=20.0, help="seconds each knee step is measured")
    add("--zc-p99-ms", type=float, default=250.0, help="the knee: send→msg p99 past this")
    add("--zc-max-seconds", type=float, default=0.0, help="hard limit of the run (0: derived)")
    add("--zc-workers", type=int, default=0, help="worker processes in the run (0: --processes or 1)")
    add("--zc-out", default="", help="directory for results.json")


@events.init.add_listener
def on_init(environment, **_kw) -> None:
    global PLAN, CONDUCTOR
    classes = environment.user_classes
    tags = set(getattr(environment.parsed_options, "tags", None) or ())
    if tags:                                   # a tag selects its scenario's classes
        classes[:] = [c for c in classes if c.scenario in tags]
    scenarios = sorted({c.scenario for c in classes})
    if len(scenarios) != 1:
        raise SystemExit(f"pick one scenario by class or --tags (these mix: {', '.join(scenarios)})")
    PLAN = make_plan(environment.parsed_options, scenarios[0], sum(c.fixed_count for c in classes))
    if not isinstance(environment.runner, WorkerRunner):
        CONDUCTOR = Conductor(environment, PLAN)


@events.test_start.add_listener
def on_test_start(environment, **_kw) -> None:
    if CONDUCTOR is not None:
        CONDUCTOR.prepare()


@events.quitting.add_listener
def on_quitting(environment, **_kw) -> None:
    if CONDUCTOR is not None:
        environment.process_exit_code = CONDUCTOR.write_results()


class ZonechatShape(LoadTestShape):
    """Steady run or knee search; the Conductor decides (see tools.load.conductor)."""

    use_common_options = True                  # -u and -r are ours to read

    def tick(self):
        return CONDUCTOR.tick() if CONDUCTOR is not None else None


class Pacer:
    """One send per ``interval`` s from a random phase, at most ``limit`` in all."""

    def __init__(self, interval: float, limit: int):
        self.interval, self.left = interval, limit
        self.due = time.monotonic() + random.random() * interval

    def ready(self) -> bool:
        now = time.monotonic()
        if now < self.due or self.left <= 0:
            return False
        self.due = max(self.due + self.interval, now - self.interval)   # no burst after a stall
        self.left -= 1
        return True

    def wait(self) -> float:
        return min(max(0.0, self.due - time.monotonic()), 2.0)        # checks run every <= 2 s


def user_index(environment) -> int:
    """A run-wide unique index: local count interleaved with the worker's index."""
    runner = environment.runner
    worker = runner.worker_index if isinstance(runner, WorkerRunner) else 0
    return next(_local_ids) * PLAN.workers + worker


class ZonechatUser(User):
    """A logged-in player: one LoadClient session at a time, a conversation to talk in."""

    abstract = True
    scenario = ""
    conn: locust_client.LoadClient | None = None
    in_game = False                            # logged in (and joined): counted as held

    def wait_time(self) -> float:
        return self.pacer.wait()

    def conversation(self) -> str:
        raise NotImplementedError

    def on_start(self) -> None:
        if CONDUCTOR is not None and CONDUCTOR.failed:
            raise StopUser()
        self.k = user_index(self.environment)
        self.user = PLAN.name(self.k)
        self.conv = self.conversation()
        self.check = SeqCheck()
        self.pacer = Pacer(PLAN.interval, int(PLAN.max_seconds / PLAN.interval) + 1)
        started = time.perf_counter()
        try:
            self.token = locust_client.ensure_user(PLAN.cfg, self.addr, self.user, self.source)
        except (admin.AdminFailed, locust_client.ClientError, RuntimeError) as exc:
            locust_client.fire_call(self.environment.events.request.fire, "admin", "token", started, str(exc)[:80])
            raise StopUser() from None
        locust_client.fire_call(self.environment.events.request.fire, "admin", "token", started)
        self.conn = self.open_session("login")
        self.after_login()
        self.in_game = True
        locust_client.fire_info(self.environment.events.request.fire, USER_IN)

    @property
    def addr(self) -> tuple[str, int]:
        return PLAN.addrs[self.k % len(PLAN.addrs)]

    @property
    def source(self) -> str:
        """The loopback address this user connects from: a gate takes at most
        gate.max_connections_per_ip from one address, so load users of a gate on this
        machine spread over 127.0.0.2... (None, the system's choice, for a remote gate)."""
        return sources.source(self.k) if self.addr[0].startswith("127.") else None

    def open_session(self, name: str) -> locust_client.LoadClient:
        """Log in by token; a busy cluster (``unavailable``...) is asked again, as a game would."""
        bases = {self.conv: 0} if convs.is_durable(self.conv) else {}
        for attempt in range(locust_client.TRIES):
            conn = locust_client.LoadClient(self.addr, self.environment.events.request.fire, self.check, bases,
                                            self.source)
            if conn.login(self.user, self.token, name) is not None:
                self.token = conn.client.token or self.token
                return conn
            conn.close(logout=False)
            if conn.error not in locust_client.RETRY:
                break
            locust_client.backoff(attempt, conn.retry_ms)
        raise StopUser()

    def after_login(self) -> None:
        pass

    def talk(self) -> None:
        if self.pacer.ready():
            self.conn.send(self.conv, TEXT)
        self.conn.poll_checks()

    def on_stop(self) -> None:
        try:
            if self.conn is not None:
                self.conn.poll_checks(final=True)
                self.conn.close()
        finally:
            if self.in_game:
                self.in_game = False
                locust_client.fire_info(self.environment.events.request.fire, USER_OUT)


class WorldUser(ZonechatUser):
    scenario = "world"

    def conversation(self) -> str:
        return f"r:{PLAN.room}"

    def after_login(self) -> None:
        if not self.conn.join(self.conv):
            raise StopUser()

    @tag("world")
    @task
    def chat(self) -> None:
        self.talk()


class DmUser(ZonechatUser):
    scenario = "dm"

    def conversation(self) -> str:
        return convs.dm(self.user, PLAN.name(self.k ^ 1))

    @tag("dm")
    @task
    def chat(self) -> None:
        self.talk()


class GuildUser(ZonechatUser):
    scenario = "guild"

    def conversation(self) -> str:
        return PLAN.guild(self.k)

    @tag("guild")
    @task
    def chat(self) -> None:
        self.talk()


class BroadcastUser(ZonechatUser):
    """Receives the operators' broadcasts (``sys``); sends nothing."""

    scenario = "broadcast"
    wait_time = constant(1.0)

    def conversation(self) -> str:
        return "sys"

    @tag("broadcast")
    @task
    def listen(self) -> None:
        self.conn.poll_checks()


class Broadcaster(User):
    """The operator: one broadcast per ``interval`` through the admin endpoint."""

    scenario = "broadcast"
    fixed_count = 1

    def on_start(self) -> None:
        self.pacer = Pacer(PLAN.interval, int(PLAN.max_seconds / PLAN.interval) + 1)

    def wait_time(self) -> float:
        return self.pacer.wait()

    @tag("broadcast")
    @task
    def broadcast(self) -> None:
        if not self.pacer.ready():
            return
        started, code = time.perf_counter(), None
        try:
            admin.call(PLAN.cfg, "/v1/broadcast", {"body": {"ts": time.time_ns(), "text": TEXT}})
        except admin.AdminFailed as exc:
            code = str(exc.message).split(":")[0]
        locust_client.fire_call(self.environment.events.request.fire, "admin", "broadcast", started, code)


class ChurnUser(DmUser):
    """DM traffic, and every ~``--zc-churn-every`` s a logout or a dropped connection and a
    login by token again (``relogin``): the offline replay must fill every hole."""

    scenario = "churn"

    def after_login(self) -> None:
        self.next_churn = time.monotonic() + random.expovariate(1.0 / PLAN.churn_every)

    @tag("churn")
    @task
    def chat(self) -> None:
        if time.monotonic() >= self.next_churn:
            self.reconnect()
        self.talk()

    def reconnect(self) -> None:
        self.conn.poll_checks()
        self.conn.close(logout=random.random() < 0.5)
        self.conn = None
        gevent.sleep(random.uniform(0.1, 1.0))
        self.conn = self.open_session("relogin")
        self.after_login()

