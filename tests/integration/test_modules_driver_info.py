"""strata.graphdriver.driver_info through ansible-playbook on real filesystems and a real dockerd."""

import contextlib
import json
import os
import subprocess
import tempfile

import pytest

from tests.support.dockerd import DockerdUnavailable, dockerd
from tests.support.loop import loop_filesystem
from tests.support.playbook import run_module

pytestmark = pytest.mark.root


def info(data_root, check=False, **extra):
    params = {"data_root": data_root, "daemon_json": os.path.join(data_root, "..", "daemon.json"),
              "docker_host": "unix:///nonexistent/docker.sock"}
    params.update(extra)
    run, res = run_module("driver_info", params, check=check)
    assert run.rc == 0, run
    assert res["changed"] is False
    return res


@pytest.fixture(scope="module")
def xfs():
    with loop_filesystem("xfs", 300) as mnt:
        yield mnt


def test_xfs_ftype1_overlay2_is_picked(xfs):
    root = os.path.join(xfs, "docker")
    res = info(root, engine_version="20.10.24")
    assert res["backing_fs"] == "xfs"
    assert res["xfs_ftype"] == 1
    assert res["d_type"] is True
    assert res["mountpoint"] == xfs
    assert res["mount_source"].startswith("/dev/loop")
    assert "xfs" in res["kernel_filesystems"]
    assert res["drivers"]["overlay2"] == {"supported": True, "reason": ""}
    assert res["drivers"]["btrfs"]["supported"] is False
    assert "btrfs" in res["drivers"]["btrfs"]["reason"]
    assert res["priority"][:3] == ["btrfs", "zfs", "overlay2"]
    assert res["pick"] == "overlay2"
    assert isinstance(res["overlay_native_diff"], bool)
    assert res["prior_state"] == [] and res["running"] is None
    # Asking did not create the data-root.
    assert not os.path.exists(root)


def test_check_mode_same_answer(xfs):
    root = os.path.join(xfs, "docker")
    assert info(root, check=True, engine_version="20.10.24")["pick"] == "overlay2"


def test_priority_follows_engine_version(xfs):
    root = os.path.join(xfs, "docker")
    assert "devicemapper" in info(root, engine_version="24.0.7")["priority"]
    v25 = info(root, engine_version="25.0.3")
    assert v25["priority"] == ["overlay2", "fuse-overlayfs", "btrfs", "zfs", "vfs"]
    assert v25["containerd_image_store_default"] is False
    v29 = info(root, engine_version="29.0.1")
    assert v29["containerd_image_store_default"] is True
    assert any("containerd image store" in w for w in v29["storage_warnings"])


def test_xfs_without_ftype_refuses_overlay2():
    with contextlib.ExitStack() as stack:
        try:
            mnt = stack.enter_context(loop_filesystem("xfs-noftype", 300))
        except subprocess.CalledProcessError:
            pytest.skip("this kernel cannot mount xfs V4 (crc=0), the only xfs format with ftype=0")
        res = info(os.path.join(mnt, "docker"), engine_version="20.10.24")
    assert res["xfs_ftype"] == 0
    assert res["d_type"] is False
    assert res["drivers"]["overlay2"]["supported"] is False
    assert "d_type" in res["drivers"]["overlay2"]["reason"]
    assert res["pick"] != "overlay2"
    assert any("d_type" in w for w in res["storage_warnings"])


def test_btrfs_first_for_20_10_overlay2_first_from_23():
    with loop_filesystem("btrfs", 300) as mnt:
        root = os.path.join(mnt, "docker")
        assert info(root, engine_version="20.10.24")["pick"] == "btrfs"
        assert info(root, engine_version="23.0.6")["pick"] == "overlay2"


def test_several_valid_graphdrivers_trap(xfs):
    root = os.path.join(xfs, "trap")
    for d in ("overlay2", "fuse-overlayfs"):
        os.makedirs(os.path.join(root, d, "something"))
    res = info(root, engine_version="20.10.24")
    assert res["prior_state"] == ["overlay2", "fuse-overlayfs"]
    assert res["pick"] is None
    assert "several valid graphdrivers" in res["error"]
    assert any("several valid graphdrivers" in w for w in res["storage_warnings"])


def test_daemon_json_and_running_engine(xfs):
    work = tempfile.mkdtemp(prefix="strata-info-", dir=xfs)
    root = os.path.join(work, "data")
    conf = os.path.join(work, "etc-docker-daemon.json")  # the fixture owns work/daemon.json
    with open(conf, "w") as f:
        json.dump({"storage-driver": "overlay2", "storage-opts": ["overlay2.size=1G"]}, f)
    try:
        with dockerd(work, storage_driver="vfs", data_root=root) as d:
            res = info(root, daemon_json=conf, docker_host="unix://" + d.socket)
    except DockerdUnavailable as e:
        pytest.skip(str(e))
    assert res["daemon_json"]["storage_driver"] == "overlay2"
    assert res["daemon_json"]["storage_opts"] == ["overlay2.size=1G"]
    assert res["running"]["driver"] == "vfs"
    assert res["running"]["data_root"] == root
    assert res["running"]["version"].startswith("20.10")
    assert res["engine_version"] == res["running"]["version"]
    assert any("restart the engine" in w for w in res["storage_warnings"])


def test_missing_thin_pool_is_reported(tmp_path):
    """A devicemapper host whose dm.thinpooldev is gone (the VG not
    activated): reported with why, and warned about. A pool that exists is
    reported in test_thin_pool.py's VM test."""
    root = str(tmp_path / "docker")
    os.mkdir(root)      # info() finds daemon.json at <data-root>/..
    with open(str(tmp_path / "daemon.json"), "w") as f:
        json.dump({"storage-driver": "devicemapper",
                   "storage-opts": ["dm.thinpooldev=/dev/mapper/strata--nosuch-thinpool"]}, f)
    res = info(root, engine_version="20.10.24")
    pool = res["thin_pool"]
    assert pool["thinpooldev"] == "/dev/mapper/strata--nosuch-thinpool"
    assert "no thin pool strata--nosuch-thinpool" in pool["error"] and pool["over_threshold"] is None
    assert any("no thin pool strata--nosuch-thinpool" in w for w in res["storage_warnings"])


def test_no_thin_pool_facts_elsewhere(xfs):
    assert info(os.path.join(xfs, "docker"), engine_version="20.10.24")["thin_pool"] is None
