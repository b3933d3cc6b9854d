"""cluster.config: documented defaults, typed sections, errors that name the config path."""
import dataclasses
import os

import pytest
import yaml

from cluster import config as config_mod
from cluster.config import ConfigError, GateConf

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHIPPED = os.path.join(REPO, "config.yaml")

NODES = {
    "gate1": {"role": "gate", "bus_port": 7801, "tcp_port": 7700},
    "login1": {"role": "login", "bus_port": 7802},
    "center1": {"role": "center", "bus_port": 7803},
    "zone1": {"role": "zone", "bus_port": 7804},
    "dc1": {"role": "dc", "bus_port": 7805},
    "log1": {"role": "log", "bus_port": 7806},
}


def raw(**sections):
    out = {"nodes": {k: dict(v) for k, v in NODES.items()}}
    out.update(sections)
    return out


def error_of(doc) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        config_mod.from_dict(doc)
    return info.value


# The one key config.yaml sets away from its default (which stays []: a gate allows only its
# own page's origins, ../shared/PROTOCOL.md): both shipped gates' page origins, so a page
# moved by a drain (kicked{moving}) is let in by the other gate.
SHIPPED_NOT_DEFAULT = {("gate", "ws_origins"): ["http://127.0.0.1:7701", "http://localhost:7701",
                                                "http://127.0.0.1:7711", "http://localhost:7711"]}


def test_shipped_config_documents_exactly_the_defaults():
    cfg = config_mod.load(SHIPPED)
    for name, cls in config_mod.SECTIONS.items():
        section = getattr(cfg, name)
        shipped = {key: value for (sec, key), value in SHIPPED_NOT_DEFAULT.items() if sec == name}
        assert {key: getattr(section, key) for key in shipped} == shipped
        assert dataclasses.replace(section, **{key: getattr(cls(), key) for key in shipped}) == cls(), \
            f"config.yaml section {name} differs from the code defaults"


def test_shipped_gates_allow_each_others_page_origins():
    cfg = config_mod.load(SHIPPED)
    pages = {f"http://{host}:{g.ws_port}" for g in cfg.nodes_of("gate") for host in ("127.0.0.1", "localhost")}
    assert set(cfg.gate.ws_origins) == pages and GateConf().ws_origins == []


def test_shipped_config_documents_every_key():
    with open(SHIPPED, encoding="utf-8") as fh:
        shipped = yaml.safe_load(fh)
    for name, cls in config_mod.SECTIONS.items():
        fields = {f.name for f in dataclasses.fields(cls)}
        assert set(shipped[name]) == fields, f"config.yaml section {name} is missing or has extra keys"


def test_shipped_nodes_run_one_of_each_role_on_distinct_ports():
    cfg = config_mod.load(SHIPPED)
    assert {n.role for n in cfg.nodes.values()} == set(config_mod.ROLES)
    ports = [p for n in cfg.nodes.values() for p in (n.bus_port, n.tcp_port, n.ws_port, n.admin_port) if p]
    ports.append(cfg.redis.port)
    assert len(ports) == len(set(ports))


def test_missing_sections_take_defaults():
    cfg = config_mod.from_dict(raw())
    assert cfg.gate.max_frame == 65536
    assert cfg.supervisor.graceful_timeout == 10
    assert cfg.redis.appendfsync == "everysec"
    assert cfg.nodes["gate1"].host == "127.0.0.1"


def test_unknown_key_is_rejected_with_its_path():
    err = error_of(raw(gate={"max_fram": 10}))
    assert err.path == "gate.max_fram"
    assert "unknown key" in str(err) and "max_frame" in str(err)


def test_unknown_section_is_rejected():
    assert "gates" in str(error_of(raw(gates={})))


def test_unknown_node_key_is_rejected_with_its_path():
    doc = raw()
    doc["nodes"]["zone1"]["shard"] = 3
    assert error_of(doc).path == "nodes.zone1.shard"


@pytest.mark.parametrize("section,key,value", [
    ("gate", "max_frame", "big"),
    ("gate", "max_frame", True),          # a bool is not an int
    ("redis", "managed", "yes"),
    ("cluster", "name", 5),
    ("gate", "ws_origins", "http://x"),
    ("supervisor", "ready_timeout", None),
])
def test_wrong_types_name_the_path(section, key, value):
    err = error_of(raw(**{section: {key: value}}))
    assert err.path == f"{section}.{key}"
    assert str(err).startswith(f"{section}.{key}: ")


def test_ints_are_accepted_where_floats_are_expected():
    cfg = config_mod.from_dict(raw(supervisor={"graceful_timeout": 2}))
    assert cfg.supervisor.graceful_timeout == 2.0 and isinstance(cfg.supervisor.graceful_timeout, float)


def test_section_must_be_a_mapping():
    assert error_of(raw(gate=[1, 2])).path == "gate"


@pytest.mark.parametrize("mutate,path", [
    (lambda n: n["zone1"].update(role="shard"), "nodes.zone1.role"),
    (lambda n: n["gate1"].pop("tcp_port"), "nodes.gate1"),
    (lambda n: n.pop("dc1"), "nodes"),
])
def test_node_errors(mutate, path):
    doc = raw()
    mutate(doc["nodes"])
    assert error_of(doc).path == path


def test_nodes_are_required():
    assert error_of({}).path == "nodes"


@pytest.mark.parametrize("sections,path", [
    ({"redis": {"appendfsync": "sometimes"}}, "redis.appendfsync"),
    ({"redis": {"managed": False}}, "redis.url"),
    ({"chat": {"slots": 0}}, "chat.slots"),
    ({"cluster": {"secret": "short"}}, "cluster.secret"),
    ({"cluster": {"secret": "x" * 31}}, "cluster.secret"),
    ({"cluster": {"secret": "zonechat-dev-secret-change-me"}}, "cluster.secret"),   # once shipped
    ({"gate": {"max_connections_per_ip": 0}}, "gate.max_connections_per_ip"),
    ({"gate": {"limit_window": 0}}, "gate.limit_window"),
    ({"gate": {"register_per_ip": -1}}, "gate.register_per_ip"),
    ({"chat": {"group_max_members": 1}}, "chat.group_max_members"),
    ({"zone": {"group_work": 0}}, "zone.group_work"),
])
def test_semantic_errors_name_the_path(sections, path):
    assert error_of(raw(**sections)).path == path


def test_redis_url_managed_and_external():
    managed = config_mod.from_dict(raw(redis={"port": 7000}))
    assert managed.redis_url == "redis://127.0.0.1:7000/0"
    external = config_mod.from_dict(raw(redis={"managed": False, "url": "redis://10.0.0.5:6379/2"}))
    assert external.redis_url == "redis://10.0.0.5:6379/2"


def test_data_dir_is_relative_to_the_config_file(tmp_path):
    path = tmp_path / "sub" / "config.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(raw(cluster={"data_dir": "state"})))
    assert config_mod.load(str(path)).data_dir == str(tmp_path / "sub" / "state")
    path.write_text(yaml.safe_dump(raw(cluster={"data_dir": str(tmp_path / "abs")})))
    assert config_mod.load(str(path)).data_dir == str(tmp_path / "abs")


def test_load_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        config_mod.load(str(missing))
    assert info.value.path == str(missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("nodes: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        config_mod.load(str(bad))
    assert info.value.path == str(bad) and "YAML" in str(info.value)


def test_node_lookup():
    cfg = config_mod.from_dict(raw())
    assert cfg.node("zone1").bus_addr == "tcp://127.0.0.1:7804"
    assert [n.name for n in cfg.nodes_of("gate")] == ["gate1"]
    with pytest.raises(ConfigError) as info:
        cfg.node("zone9")
    assert info.value.path == "nodes" and "zone1" in str(info.value)
