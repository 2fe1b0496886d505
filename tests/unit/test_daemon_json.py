"""daemon.json: read, merge, atomic write keep every other key and its order."""

import collections
import json
import os

import pytest

from ansible_collections.strata.graphdriver.plugins.module_utils import _daemon_json as daemon_json


def test_missing_or_empty_file_is_empty_config(tmp_path):
    assert daemon_json.read(str(tmp_path / "nope.json")) == {}
    empty = tmp_path / "empty.json"
    empty.write_text("  \n")
    assert daemon_json.read(str(empty)) == {}


def test_invalid_json_names_the_file(tmp_path):
    bad = tmp_path / "daemon.json"
    bad.write_text('{"storage-driver": ')
    with pytest.raises(daemon_json.DaemonJsonError) as e:
        daemon_json.read(str(bad))
    assert str(bad) in str(e.value) and "not valid JSON" in str(e.value)


def test_not_an_object_refused(tmp_path):
    bad = tmp_path / "daemon.json"
    bad.write_text("[1, 2]")
    with pytest.raises(daemon_json.DaemonJsonError):
        daemon_json.read(str(bad))


def test_with_storage_keeps_other_keys_in_order():
    before = collections.OrderedDict([("log-driver", "journald"), ("storage-driver", "vfs"),
                                      ("storage-opts", ["a=b"]), ("debug", True)])
    after = daemon_json.with_storage(before, "overlay2")
    assert list(after) == list(before)
    assert after["storage-driver"] == "overlay2" and after["storage-opts"] == ["a=b"]
    assert before["storage-driver"] == "vfs", "the input must not change"
    assert "storage-opts" not in daemon_json.with_storage(before, "overlay2", [])
    assert daemon_json.with_storage(before, "btrfs", ["btrfs.min_space=1G"])["storage-opts"] == ["btrfs.min_space=1G"]


def test_data_root_spellings():
    assert daemon_json.data_root({}) == "/var/lib/docker"
    assert daemon_json.data_root({"graph": "/old"}) == "/old"
    assert daemon_json.data_root({"data-root": "/srv/docker", "graph": "/old"}) == "/srv/docker"


def test_write_creates_directory_and_keeps_mode(tmp_path):
    path = tmp_path / "etc" / "docker" / "daemon.json"
    daemon_json.write(str(path), {"storage-driver": "vfs"})
    assert json.loads(path.read_text()) == {"storage-driver": "vfs"}
    assert path.read_text().endswith("\n")
    os.chmod(str(path), 0o600)
    daemon_json.write(str(path), {"storage-driver": "overlay2"})
    assert os.stat(str(path)).st_mode & 0o777 == 0o600
    assert [n for n in os.listdir(str(path.parent)) if n.startswith(".tmp")] == []
