"""cluster.backup: which archive members a restore accepts, and how it reaches Redis."""
import io
import json
import tarfile

import pytest

from cluster import backup


@pytest.mark.parametrize("name, ok", [
    ("manifest.json", True), ("redis/dump.rdb", True), ("secret", True), ("keys/gate1.key_secret", True),
    ("keys/public.yaml", True), ("keys/", False), ("keys/../secret", False), ("keys/a/b", False),
    ("../secret", False), ("/etc/passwd", False), ("redis/other.rdb", False), ("keys/..", False)])
def test_only_the_members_a_backup_has_are_accepted(name, ok):
    assert bool(backup._allowed(name)) is ok


def archive(tmp_path, members: dict) -> str:
    path = str(tmp_path / "a.tar.gz")
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_an_archive_without_a_manifest_or_snapshot_is_refused(tmp_path):
    with pytest.raises(backup.BackupError, match="no readable manifest"):
        backup.read_archive(archive(tmp_path, {"redis/dump.rdb": b"REDIS0009"}))
    with pytest.raises(backup.BackupError, match="format"):
        backup.read_archive(archive(tmp_path, {"manifest.json": json.dumps({"format": 1}).encode()}))
    with pytest.raises(backup.BackupError, match="cannot read"):
        backup.read_archive(str(tmp_path / "missing.tar.gz"))


def test_a_good_archive_reads_back(tmp_path):
    manifest, members = backup.read_archive(archive(tmp_path, {
        "manifest.json": json.dumps({"format": 1, "redis": {"keys": 3}}).encode(),
        "redis/dump.rdb": b"REDIS0009", "keys/redis.pass": b"pw"}))
    assert manifest["redis"]["keys"] == 3 and set(members) == {"redis/dump.rdb", "keys/redis.pass"}


def test_an_external_redis_url_gives_redis_cli_its_parts_and_no_password_on_argv():
    target = backup.target_of("rediss://ops:p%40ss@db.internal:6380/0")
    assert target == {"host": "db.internal", "port": 6380, "username": "ops", "password": "p@ss", "tls": True}
    argv, env = backup.cli_argv(target, "--rdb", "x.rdb")
    assert argv[1:] == ["-h", "db.internal", "-p", "6380", "--user", "ops", "--tls", "--rdb", "x.rdb"]
    assert env["REDISCLI_AUTH"] == "p@ss" and "p@ss" not in " ".join(argv)
