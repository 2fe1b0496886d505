"""Driver selection on a real xfs data-root, with real driver initialisation."""

import os

import pytest

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import new, selection
from tests.support.backends import BACKENDS, Unavailable


@pytest.fixture
def data_root(tmp_path):
    try:
        backend = BACKENDS["overlay2"](tmp_path)     # a fresh xfs ftype=1 loop fs
        home, _ = backend.__enter__()
    except Unavailable as e:
        pytest.skip("xfs backend unavailable: %s" % e)
    try:
        yield os.path.dirname(home)
    finally:
        backend.__exit__(None, None, None)


def test_fresh_xfs_data_root_picks_overlay2_and_stays_empty(data_root):
    before = sorted(os.listdir(data_root))
    report = selection.driver_report(data_root, engine_version="24.0.7")
    assert report["backing_fs"] == "xfs" and report["d_type"] is True
    assert report["drivers"]["overlay2"] == {"supported": True, "reason": ""}
    assert report["drivers"]["btrfs"]["supported"] is False
    assert "btrfs" in report["drivers"]["btrfs"]["reason"]
    assert (report["pick"], report["error"], report["prior_state"]) == ("overlay2", None, [])
    assert sorted(os.listdir(data_root)) == before
    assert selection.check_driver("overlay2", os.path.join(data_root, "overlay2")) == (True, "")
    assert sorted(os.listdir(data_root)) == before


def test_prior_state_written_by_our_driver(data_root):
    drv = new("overlay2", os.path.join(data_root, "overlay2"))
    drv.create("base")
    drv.cleanup()
    os.makedirs(os.path.join(data_root, "vfs", "dir", "x"))   # vfs state never counts
    report = selection.driver_report(data_root, engine_version="20.10.24")
    assert report["prior_state"] == ["overlay2"]
    assert (report["pick"], report["error"]) == ("overlay2", None)
    assert report["pick_reason"] == "prior state in %s/overlay2" % data_root
    # state for a second driver: Docker refuses to guess
    os.makedirs(os.path.join(data_root, "fuse-overlayfs", "l"))
    report = selection.driver_report(data_root, engine_version="24.0")
    assert report["pick"] is None
    assert "contains several valid graphdrivers: overlay2, fuse-overlayfs" in report["error"]
    # unless the configuration names one
    report = selection.driver_report(data_root, engine_version="24.0", configured="overlay2")
    assert (report["pick"], report["error"]) == ("overlay2", None)


def test_zfs_fuse_is_not_offered_as_dockers_pick(tmp_path):
    """Our zfs driver runs on zfs-fuse, but dockerd needs /dev/zfs: on a
    zfs-fuse dataset the report must not pick zfs, and must say why."""
    try:
        backend = BACKENDS["zfs"](tmp_path)
        home, _ = backend.__enter__()
    except Unavailable as e:
        pytest.skip("zfs-fuse backend unavailable: %s" % e)
    try:
        if os.path.exists("/dev/zfs"):
            pytest.skip("kernel ZFS is present: dockerd can run zfs here")
        new("zfs", home).cleanup()  # the library itself can use it
        report = selection.driver_report(os.path.dirname(home), engine_version="20.10.24")
        assert report["drivers"]["zfs"]["supported"] is False
        assert "/dev/zfs" in report["drivers"]["zfs"]["reason"]
        assert report["pick"] != "zfs"
    finally:
        backend.__exit__(None, None, None)
