"""strata.graphdriver.btrfs_filesystem through ansible-playbook on real loop devices."""

import shutil
import subprocess

import pytest

from tests.support.loop import loop_device, mounted
from tests.support.playbook import run_module

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(shutil.which("mkfs.btrfs") is None, reason="btrfs-progs (mkfs.btrfs) not installed"),
]


def blkid(dev):
    proc = subprocess.run(["blkid", "-p", "-o", "export", dev], stdout=subprocess.PIPE,
                          universal_newlines=True)
    return dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)


def members(uuid):
    out = subprocess.run(["btrfs", "filesystem", "show", uuid], stdout=subprocess.PIPE,
                         universal_newlines=True).stdout
    return sorted(line.split()[-1] for line in out.splitlines() if line.strip().startswith("devid"))


@pytest.fixture
def devs():
    with loop_device(256) as a, loop_device(256) as b:
        yield a, b


def test_create_then_idempotent(devs):
    a, b = devs
    params = {"devices": [a, b], "label": "strata-t1", "data_profile": "single", "metadata_profile": "raid1"}
    run, res = run_module("btrfs_filesystem", params, diff=True)
    assert run.rc == 0, run
    assert res["changed"] is True
    assert res["created"] is True
    assert res["commands"] == ["mkfs.btrfs -L strata-t1 -d single -m raid1 %s %s" % (a, b)]
    assert res["diff"]["before"] == {"exists": False}
    ia, ib = blkid(a), blkid(b)
    assert ia["TYPE"] == ib["TYPE"] == "btrfs"
    assert ia["UUID"] == ib["UUID"] == res["uuid"]
    assert ia["LABEL"] == "strata-t1"
    assert members(res["uuid"]) == sorted([a, b])

    run, again = run_module("btrfs_filesystem", params)
    assert run.rc == 0, run
    assert again["changed"] is False
    assert again["commands"] == []
    assert again["uuid"] == res["uuid"]


def test_check_mode_plans_and_changes_nothing(devs):
    a, b = devs
    run, res = run_module("btrfs_filesystem", {"devices": [a], "label": "strata-t2"}, check=True)
    assert run.rc == 0, run
    assert res["changed"] is True
    assert res["commands"] == ["mkfs.btrfs -L strata-t2 %s" % a]
    assert blkid(a) == {}


def test_other_signature_refused_without_force(devs):
    a, b = devs
    subprocess.run(["mkfs.ext4", "-q", "-F", b], check=True)
    before = blkid(b)
    run, res = run_module("btrfs_filesystem", {"devices": [a, b]})
    assert res.get("failed") is True
    assert b in res["msg"] and "ext4" in res["msg"] and "force" in res["msg"]
    assert blkid(b) == before
    assert blkid(a) == {}

    run, res = run_module("btrfs_filesystem", {"devices": [a, b], "force": True})
    assert run.rc == 0, run
    # what b held is wiped first: mkfs -f alone can leave signatures behind
    assert res["commands"][0] == "wipefs --all %s" % b
    assert res["commands"][1].startswith("mkfs.btrfs -f ")
    assert blkid(b)["TYPE"] == "btrfs"


def test_device_in_use_refused_even_with_force(devs):
    a, b = devs
    subprocess.run(["mkfs.ext4", "-q", "-F", a], check=True)
    before = blkid(a)
    with mounted(a, "ext4"):
        run, res = run_module("btrfs_filesystem", {"devices": [a], "force": True})
        assert res.get("failed") is True
        assert a in res["msg"] and "in use" in res["msg"] and "mounted at" in res["msg"]
    assert blkid(a) == before


def test_grow_keeps_unlisted_unless_asked(devs):
    a, b = devs
    run, res = run_module("btrfs_filesystem", {"devices": [a], "label": "strata-t3"})
    assert run.rc == 0, run
    uuid = res["uuid"]

    run, res = run_module("btrfs_filesystem", {"devices": [a, b]}, check=True)
    assert res["changed"] is True and res["added"] == [b]
    assert any(c.startswith("btrfs device add %s " % b) for c in res["commands"]), res["commands"]
    assert members(uuid) == [a]

    run, res = run_module("btrfs_filesystem", {"devices": [a, b]})
    assert run.rc == 0, run
    assert res["added"] == [b] and res["created"] is False
    assert members(uuid) == sorted([a, b])
    assert blkid(b)["UUID"] == uuid

    # Listing only a: b stays, and is reported.
    run, res = run_module("btrfs_filesystem", {"devices": [a]})
    assert res["changed"] is False
    assert res["unlisted_devices"] == [b]
    assert members(uuid) == sorted([a, b])

    run, res = run_module("btrfs_filesystem", {"devices": [a], "remove_unlisted": True})
    assert run.rc == 0, run
    assert res["removed"] == [b]
    assert members(uuid) == [a]


def test_relabel(devs):
    a, _ = devs
    run_module("btrfs_filesystem", {"devices": [a], "label": "old"})
    run, res = run_module("btrfs_filesystem", {"devices": [a], "label": "new"}, diff=True)
    assert res["changed"] is True
    assert res["commands"] == ["btrfs filesystem label %s new" % a]
    assert blkid(a)["LABEL"] == "new"
    run, res = run_module("btrfs_filesystem", {"devices": [a], "label": "new"})
    assert res["changed"] is False
