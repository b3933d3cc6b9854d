"""center/ops.py without a cluster: rates from successive reports, one report per known
node, the last admin actions bounded and newest first."""
from types import SimpleNamespace

from center.ops import ACTIONS_KEPT, ARGS_SHOWN, Ops, rates
from cluster.envelopes import Stats

NODES = {"gate": ["gate1"], "zone": ["zone1"], "dc": ["dc1"]}


def fake_center():
    config = SimpleNamespace(nodes_of=lambda role: [SimpleNamespace(name=n) for n in NODES.get(role, [])])
    return SimpleNamespace(config=config, snapshot=lambda: {"node": "center1", "online": 0})


def test_rates_between_two_reports():
    assert rates(None, {"t": 10.0, "frames_in": 5}) == {"in_per_s": None}
    assert rates({"t": 10.0, "frames_in": 5}, {"t": 12.0, "frames_in": 25}) == {"in_per_s": 10.0}
    # the node restarted: its counter starts again from zero
    assert rates({"t": 10.0, "stored": 500}, {"t": 11.0, "stored": 7}) == {"stored_per_s": 7.0}
    assert rates({"t": 10.0, "stored": 1}, {"t": 10.0, "stored": 2}) == {"stored_per_s": None}


def test_one_report_per_known_node():
    ops = Ops(fake_center())
    ops.on_stats(Stats("gate1", "gate", {"t": 1.0, "frames_in": 1, "sessions": 1}))
    ops.on_stats(Stats("gate1", "gate", {"t": 2.0, "frames_in": 4, "sessions": 2}))
    ops.on_stats(Stats("intruder", "gate", {"t": 2.0}))        # not in the config
    ops.on_stats(Stats("zone1", "gate", {"t": 2.0}))           # wrong role
    assert set(ops.reports) == {"gate1"}
    snap = ops.snapshot()
    gate = snap["gates"][0]
    assert gate["node"] == "gate1" and gate["sessions"] == 2 and gate["in_per_s"] == 3.0
    assert not gate["stale"] and "t" not in gate and "received" not in gate
    assert snap["zones"] == [{"node": "zone1", "age_s": None, "stale": True}]
    assert snap["redis"] == {} and snap["center"]["node"] == "center1"


def test_last_actions_bounded_newest_first():
    ops = Ops(fake_center())
    for k in range(ACTIONS_KEPT + 5):
        ops.action("kick", {"user": f"u{k}"})
    ops.action("group", {"members": ["m" * 30] * 50})
    actions = ops.snapshot()["actions"]
    assert len(actions) == ACTIONS_KEPT
    assert actions[0]["action"] == "group" and len(actions[0]["args"]) == ARGS_SHOWN
    assert actions[1]["args"] == '{"user": "u54"}'
