"""Issue 11: where the secret, the Redis password and the nodes' keys come from (pure
file and lookup logic; no process is started)."""
from __future__ import annotations

import os
import stat

import pytest
import yaml

from cluster import config as config_mod
from cluster import keys, provision, secrets

NODES = {"gate1": {"role": "gate", "bus_port": 1, "tcp_port": 2, "host": "10.0.0.1"},
         "login1": {"role": "login", "bus_port": 3, "host": "10.0.0.2"},
         "center1": {"role": "center", "bus_port": 4, "host": "10.0.0.2"},
         "zone1": {"role": "zone", "bus_port": 5, "host": "10.0.0.2"},
         "dc1": {"role": "dc", "bus_port": 6, "host": "10.0.0.2"},
         "log1": {"role": "log", "bus_port": 7, "host": "10.0.0.2"}}
GOOD = "s" * 40


def make_cfg(tmp_path, **cluster):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"cluster": cluster, "nodes": NODES}))
    return config_mod.load(str(path))


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_lookup_order_env_then_config_then_file(tmp_path):
    cfg = make_cfg(tmp_path, secret="c" * 32)
    assert secrets.cluster_secret(cfg, environ={"ZONECHAT_SECRET": "e" * 32}) == "e" * 32
    assert secrets.cluster_secret(cfg, environ={}) == "c" * 32
    filed = make_cfg(tmp_path, secret_file="my.secret")
    (tmp_path / "my.secret").write_text("f" * 32 + "\n")
    assert secrets.cluster_secret(filed, environ={}) == "f" * 32


def test_no_secret_anywhere_names_the_file(tmp_path):
    cfg = make_cfg(tmp_path)
    with pytest.raises(secrets.SecretError, match="cluster.secret_file: .*data/secret does not exist"):
        secrets.cluster_secret(cfg, environ={})


@pytest.mark.parametrize("value", ["zonechat-dev-secret-change-me", "bench-secret-0123456789", "x" * 31])
def test_shipped_or_short_secrets_are_refused_naming_the_key(tmp_path, value):
    with pytest.raises(secrets.SecretError, match=r"^\$ZONECHAT_SECRET: "):
        secrets.cluster_secret(make_cfg(tmp_path), environ={"ZONECHAT_SECRET": value})
    cfg = make_cfg(tmp_path)
    secrets.write_private(secrets.secret_path(cfg), value)
    with pytest.raises(secrets.SecretError, match=r"^cluster.secret_file "):
        secrets.cluster_secret(cfg, environ={})


def test_generated_secret_is_private_long_and_kept(tmp_path, monkeypatch):
    monkeypatch.delenv("ZONECHAT_SECRET", raising=False)
    cfg = make_cfg(tmp_path)
    assert secrets.ensure_secret(cfg) is True
    first = secrets.cluster_secret(cfg, environ={})
    assert len(first) >= secrets.MIN_SECRET and mode(secrets.secret_path(cfg)) == 0o600
    assert secrets.ensure_secret(cfg) is False and secrets.cluster_secret(cfg, environ={}) == first
    assert secrets.ensure_secret(make_cfg(tmp_path, secret=GOOD)) is False     # configured: no file


def test_token_key_is_not_the_secret_so_a_token_is_no_bearer():
    key = secrets.token_key(GOOD)
    assert key != GOOD.encode() and len(key) == 32
    assert key != secrets.token_key(GOOD + "x")


def test_redis_url_carries_the_generated_password(tmp_path):
    cfg = make_cfg(tmp_path)
    with pytest.raises(secrets.SecretError, match="redis.pass does not exist"):
        secrets.redis_url(cfg)
    assert secrets.redis_password(cfg, required=False) is None
    assert secrets.ensure_redis_password(cfg) is True
    password = secrets.redis_password(cfg)
    assert len(password) == 64 and mode(secrets.redis_pass_path(cfg)) == 0o600
    assert secrets.redis_url(cfg) == f"redis://:{password}@127.0.0.1:7379/0"
    assert cfg.redis_url == "redis://127.0.0.1:7379/0"          # the address alone


def test_external_redis_url_is_used_as_configured(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"nodes": NODES, "redis": {"managed": False, "url": "redis://u:p@db:6379/1"}}))
    assert secrets.redis_url(config_mod.load(str(path))) == "redis://u:p@db:6379/1"


def test_keys_init_makes_private_pairs_and_one_public_list(tmp_path):
    cfg = make_cfg(tmp_path)
    assert sorted(keys.init(cfg)) == sorted(NODES)
    assert mode(keys.keys_dir(cfg)) == 0o700
    assert all(mode(keys.secret_file(cfg, n)) == 0o600 for n in NODES)
    assert sorted(os.listdir(keys.keys_dir(cfg))) == sorted([f"{n}.key_secret" for n in NODES] + ["public.yaml"])
    public = keys.read_public(cfg)
    loaded = keys.load(cfg, "zone1")
    assert loaded.public == public["zone1"] and len(loaded.secret) == 40
    assert loaded.peer("gate1") == public["gate1"] and len(set(public.values())) == len(NODES)
    assert keys.init(cfg) == [] and keys.read_public(cfg) == public         # never overwrites
    with pytest.raises(keys.KeyFileError, match="no public key for node 'gate9'"):
        loaded.peer("gate9")


def test_a_host_without_the_copied_files_is_refused_naming_them(tmp_path):
    cfg = make_cfg(tmp_path, secret=GOOD)
    with pytest.raises(provision.ProvisionError) as err:
        provision.prepare(cfg, "10.0.0.1", out=lambda _line: None)
    text = str(err.value)
    assert "public.yaml" in text and "gate1.key_secret" in text and "redis.pass" in text
    assert "zone1.key_secret" not in text                    # another host's node
    assert not os.path.exists(keys.public_file(cfg))         # --host generates nothing
    provision.make_all(cfg)
    provision.prepare(cfg, "10.0.0.1", out=lambda _line: None)   # now it has all it needs

