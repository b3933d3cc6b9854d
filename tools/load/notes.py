"""What a load run's numbers mean, in words: users held vs asked, accounts, deliveries, CPU.

Pure functions of the summary dict (``report.summarize``); summary.md and summary.html show
the same notes. Each explains one figure that would otherwise puzzle: why the accounts
outnumber the users, why deliveries outnumber messages, what a CPU figure is a share of.
"""
from __future__ import annotations

from tools.load.verdict import BUSY_GENERATOR, cores, num

SPARE_REASON = ("user numbers interleave across the Locust workers, so one worker's users may "
                "number past the last one asked")


def counted(n, one: str, many: str) -> str:
    """``1 send was`` / ``3 sends were``: the number and its words."""
    return f"{num(n)} {one if n == 1 else many}"


def users_note(s: dict) -> list[str]:
    st, asked, n = s["steady"], s["steady"].get("users") or s.get("users") or 0, s.get("held_users")
    li = st.get("logged_in")
    if not li:
        return [f"users: {num(asked)} asked; {num(n)} counted (this run recorded no per-second login counts)"]
    out = [f"users: {num(asked)} asked; {num(n)} held, the fewest load users logged in at any second of the "
           f"steady window (most: {num(li['users']['max'])})"]
    if n is not None and n < asked:
        out.append(f"{num(asked - n)} of the users asked were not logged in for the whole window: "
                   + (_stopped_by(s) or "they stopped early (see errors by code)"))
    sess = li.get("sessions")
    if sess and (sess["min"] != li["users"]["min"] or s.get("scenario") == "churn"):
        out.append(f"sessions logged in at once: {num(sess['min'])} to {num(sess['max'])} (mean {num(sess['mean'])}): "
                   f"churn users log out or drop their connection every ~{num(s.get('churn_every') or 10)} s "
                   f"and log in again, so some are between sessions at any moment")
    if s.get("fixed_users"):
        out.append(f"Locust also ran {s['fixed_users']} Broadcaster user: the operator, who broadcasts "
                   f"through the admin endpoint; not a player, never logs in, not counted")
    return out


def _stopped_by(s: dict) -> str:
    """The login, join and token errors that stop a load user, as text."""
    stops = {k: v for k, v in (s.get("errors") or {}).items() if k.split(":")[0] in ("login", "join", "token")}
    return ", ".join(f"{k} ×{v:,}" for k, v in stops.items())


def accounts_note(s: dict) -> str | None:
    accounts, users = s.get("accounts"), s.get("users") or 0
    if not accounts or accounts == users:
        return None
    workers = s.get("locust_workers") or 1
    prefix = s.get("prefix") or "lt"
    pair = accounts - users - workers
    parts = [f"{workers} spare per Locust worker process ({SPARE_REASON})"]
    if pair > 0:
        parts.append(f"{pair} more to make an even number, so that every DM user k has its partner k^1")
    return (f"load accounts: {num(accounts)} ({prefix}0 to {prefix}{accounts - 1}) for {num(users)} users: "
            f"{' and '.join(parts)}; an account no user takes never logs in and is counted nowhere")


def expected_fanout(s: dict) -> str:
    """Whom one message reaches, per scenario."""
    n, sc = s.get("held_users") or s.get("users") or 0, s.get("scenario")
    g = s.get("guild_size") or 20
    return {
        "world": f"each message in r:{s.get('room') or 'world'} reaches every other member: {num(max(0, n - 1))} "
                 f"deliveries at {num(n)} members (the sender gets its ack, never a push of its own message)",
        "dm": "each direct message reaches its one recipient, the sender's partner: 1 delivery (the sender "
              "gets its ack, never a push of its own message)",
        "guild": f"each group message reaches the other {g - 1} members of its group of {g} (the last group may "
                 f"be smaller; the sender gets its ack, not a push)",
        "broadcast": f"each broadcast reaches every logged-in user: {num(n)} deliveries",
        "churn": "each direct message reaches its one recipient: live while it is logged in, else pushed by "
                 "the offline replay at its next login",
    }.get(sc, "")


def deliveries_note(s: dict) -> list[str]:
    st, tot = s["steady"], s["total"]
    out = [f"deliveries: {expected_fanout(s)}"]
    if st.get("msgs_in"):
        out.append(f"steady window: live deliveries per message in = {num(round(st.get('live', 0) / st['msgs_in'], 2))} "
                   f"({num(st.get('live'))} live + {num(st.get('replayed'))} by the offline replay after a login "
                   f"= {num(st['deliveries'])} out, for {num(st['msgs_in'])} in)")
    if st.get("replayed"):
        out.append("in the steady window, " + _replay_words(st))
    out.append(_whole_run_words(tot))
    return out


def _replay_words(fig: dict) -> str:
    """What the offline replay pushed: held for an offline user, left by an earlier run, again."""
    replayed, earlier, again = fig.get("replayed") or 0, fig.get("earlier") or 0, fig.get("redelivered") or 0
    held_back = max(0, replayed - earlier - again)
    parts = [f"{num(held_back)} stored while their recipient was logged out or not yet logged in"] if held_back else []
    if earlier:
        parts.append(f"{num(earlier)} left unread by an earlier run (the load accounts are reused from run to run: "
                     f"messages that reached them after that run logged them out)")
    if again:
        parts.append(f"{num(again)} pushed again (at-least-once: delivered before, but the session ended before "
                     f"its recv cursor was stored)")
    if fig.get("own"):
        parts.append(f"{num(fig['own'])} of them the user's own messages (the login replay includes them)")
    return f"{counted(replayed, 'delivery', 'deliveries')} came from the offline replay after a login: " + "; ".join(parts)


def _whole_run_words(tot: dict) -> str:
    text = f"whole run: {num(tot.get('msgs_in'))} in, {num(tot.get('deliveries'))} out"
    extra = []
    if tot.get("cut"):
        extra.append(f"{counted(tot['cut'], 'send was', 'sends were')} cut short when Locust stopped the users at the end: "
                     f"counted nowhere as in, yet stored and delivered when the server had taken them")
    if tot.get("replayed"):
        extra.append(_replay_words(tot))
    return text + ("; " + "; ".join(extra) if extra else "")


def cpu_note(s: dict) -> list[str]:
    procs, gens = s.get("processes") or [], s.get("generator") or []
    out = [f"cluster CPU: {cores(s.get('cluster_cpu_avg'))} cores of the machine's {s.get('cores') or '?'}: the "
           f"sum of the mean CPU of its {len(procs)} process{'es' if len(procs) != 1 else ''} (supervisor, Redis "
           f"and every node) over the "
           f"steady window; the process tables give each as % of one core (100% = one core busy)"]
    if gens:
        top = max(gens, key=lambda g: g["cpu_avg"])
        text = (f"load generator: {cores(s.get('generator_cpu_avg'))} cores ({len(gens)} Locust "
                f"process{'es' if len(gens) > 1 else ''}); "
                f"its busiest, {top['name']}, at {num(top['cpu_avg'])}% of one core (mean)")
        if top["cpu_avg"] >= BUSY_GENERATOR:
            text += ("; near a full core, so the latencies include the generator's own queueing: add "
                     "--workers on a bigger machine, or use tools/bench")
        out.append(text)
    return out


def notes(s: dict) -> list[str]:
    acc = accounts_note(s)
    return users_note(s) + ([acc] if acc else []) + deliveries_note(s) + cpu_note(s)
