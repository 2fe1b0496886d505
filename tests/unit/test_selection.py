"""Driver selection as Docker's graphdriver.New does it."""

import os

import pytest

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import (
    priority, registered, selection)

V20 = ["btrfs", "zfs", "overlay2", "fuse-overlayfs", "aufs", "overlay", "devicemapper", "vfs"]


def ok():
    return {"supported": True, "reason": "", "fatal": False}


def no(reason="not here", fatal=False):
    return {"supported": False, "reason": reason, "fatal": fatal}


@pytest.mark.parametrize("version,first,has_aufs,has_dm", [
    ("20.10.24+dfsg1", "btrfs", True, True),
    ("23.0.6", "overlay2", True, True),
    ("24.0.7", "overlay2", False, True),
    ("25.0.0", "overlay2", False, False),
    (None, "overlay2", False, False),
])
def test_priority_by_engine_version(version, first, has_aufs, has_dm):
    order = priority(version)
    assert order[0] == first
    assert ("aufs" in order) == has_aufs
    assert ("devicemapper" in order) == has_dm
    assert order[-1] == "vfs"


def test_prior_drivers_ignores_vfs_and_empty_dirs(tmp_path):
    for name in ("vfs", "btrfs", "overlay2", "zfs"):
        (tmp_path / name).mkdir()
    (tmp_path / "vfs" / "dir").mkdir()          # vfs state never counts
    (tmp_path / "overlay2" / "l").mkdir()       # non-empty: prior state
    (tmp_path / "zfs" / "graph").mkdir()
    # btrfs exists but is empty: not prior state
    assert selection.prior_drivers(str(tmp_path), V20) == ["zfs", "overlay2"]
    assert selection.prior_drivers(str(tmp_path), priority("25.0")) == ["overlay2", "zfs"]


def test_pick_first_supported_in_priority_order():
    results = {"btrfs": no("home not on btrfs"), "zfs": no("no zfs"), "overlay2": ok(),
               "vfs": ok()}
    name, reason, error = selection.pick("/r", V20, results, [])
    assert (name, error) == ("overlay2", None)
    assert "btrfs: home not on btrfs" in reason and "zfs: no zfs" in reason


def test_pick_stops_on_a_fatal_error_like_docker():
    results = {"btrfs": no("bad option", fatal=True), "overlay2": ok()}
    name, _reason, error = selection.pick("/r", V20, results, [])
    assert name is None and error == "btrfs failed: bad option"


def test_pick_prior_state_wins_over_priority():
    results = {"btrfs": ok(), "overlay2": ok(), "vfs": ok()}
    name, reason, error = selection.pick("/r", V20, results, ["overlay2"])
    assert (name, error) == ("overlay2", None)
    assert reason == "prior state in /r/overlay2"


def test_pick_prior_state_that_no_longer_works_is_an_error():
    results = {"btrfs": ok(), "overlay2": no("d_type")}
    name, _reason, error = selection.pick("/r", V20, results, ["overlay2"])
    assert name is None and error == "prior storage driver overlay2 failed: d_type"


def test_pick_several_prior_drivers_is_dockers_error():
    results = {"zfs": ok(), "overlay2": ok()}
    name, _reason, error = selection.pick("/r", V20, results, ["zfs", "overlay2"])
    assert name is None
    assert error.startswith("/r contains several valid graphdrivers: zfs, overlay2;")


def test_pick_configured_driver_is_used_or_fails():
    results = {"overlay2": ok(), "vfs": ok(), "btrfs": no("not btrfs")}
    assert selection.pick("/r", V20, results, ["overlay2"], configured="vfs")[0] == "vfs"
    name, _reason, error = selection.pick("/r", V20, results, [], configured="btrfs")
    assert name is None and error == "configured storage driver btrfs failed: not btrfs"
    assert "unknown storage driver" in selection.pick("/r", V20, results, [], "nope")[2]


def test_pick_nothing_supported_in_each_engines_words():
    results = {n: no("no") for n in V20}
    name, _reason, error = selection.pick("/r", V20, results, [], engine_version="20.10.24")
    assert name is None and error.startswith("No supported storage backend found (")
    name, _reason, error = selection.pick("/r", V20, results, [], engine_version="23.0.0")
    assert name is None and error.startswith("no supported storage driver found (")


def test_several_prior_drivers_in_each_engines_words():
    results = {"zfs": ok(), "overlay2": ok()}
    error = selection.pick("/r", V20, results, ["zfs", "overlay2"], engine_version="20.10")[2]
    assert error.endswith("; Please cleanup or explicitly choose storage driver (-s <DRIVER>)")
    error = selection.pick("/r", V20, results, ["zfs", "overlay2"], engine_version="26.1")[2]
    assert error.endswith("; cleanup or explicitly choose storage driver (-s <DRIVER>)")


def test_a_file_where_a_home_would_be_is_prior_state(tmp_path):
    # Docker: os.Stat succeeds and Readdirnames fails, so isEmptyDir is false
    (tmp_path / "overlay2").write_text("")
    (tmp_path / "btrfs").mkdir()
    assert selection.prior_drivers(str(tmp_path), V20) == ["overlay2"]


def test_driver_report_on_a_fresh_data_root(tmp_path):
    root = str(tmp_path / "docker")
    report = selection.driver_report(root, engine_version="24.0", configured="vfs")
    assert set(report) == {"backing_fs", "d_type", "engine_version", "priority", "drivers",
                           "prior_state", "pick", "pick_reason", "error"}
    assert set(report["drivers"]) == set(registered())
    assert all(set(v) == {"supported", "reason"} for v in report["drivers"].values())
    assert report["drivers"]["vfs"] == {"supported": True, "reason": ""}
    assert report["priority"] == priority("24.0")
    assert report["prior_state"] == []
    assert (report["pick"], report["error"]) == ("vfs", None)
    assert report["backing_fs"] == selection.backing_fs(str(tmp_path))
    assert report["d_type"] is True
    # every check ran a real initialisation, and left nothing behind
    assert not os.path.exists(root)
    assert os.listdir(str(tmp_path)) == []


def test_driver_report_sees_prior_state(tmp_path):
    (tmp_path / "overlay2" / "l").mkdir(parents=True)
    (tmp_path / "btrfs" / "subvolumes").mkdir(parents=True)
    report = selection.driver_report(str(tmp_path), engine_version="20.10")
    assert report["prior_state"] == ["btrfs", "overlay2"]
    assert report["pick"] is None
    # btrfs comes first in 20.10's order: its failure on this fs is reported
    assert report["error"].startswith("prior storage driver btrfs failed")


def test_check_driver_leaves_an_existing_home_as_it_was(tmp_path):
    home = tmp_path / "vfs"
    home.mkdir()
    (home / "keep").write_text("x")
    supported, reason = selection.check_driver("vfs", str(home))
    assert (supported, reason) == (True, "")
    assert (home / "keep").read_text() == "x"


def test_check_driver_reports_not_supported_with_reason(tmp_path):
    supported, reason = selection.check_driver("vfs", str(tmp_path / "h"), {"bogus": "1"})
    assert supported is False and "unknown option bogus for vfs" in reason
    assert not (tmp_path / "h").exists()


def test_other_drivers_are_checked_without_the_configured_drivers_opts(tmp_path):
    # a devicemapper host asking whether it could switch to vfs: dm.* opts
    # would be refused by vfs as unknown, which is not the answer
    opts = {"dm.thinpooldev": "/dev/mapper/docker-thinpool", "vfs.size": "bad"}
    assert selection.options_for("vfs", opts, configured="devicemapper") == {"vfs.size": "bad"}
    assert selection.options_for("devicemapper", opts, configured="devicemapper") == opts
    # nothing configured: Docker gives every candidate every opt
    assert selection.options_for("vfs", opts) == opts
    report = selection.driver_report(str(tmp_path / "docker"), engine_version="20.10",
                                     configured="devicemapper",
                                     options={"dm.thinpooldev": "/dev/mapper/docker-thinpool"})
    assert report["drivers"]["vfs"] == {"supported": True, "reason": ""}
    report = selection.driver_report(str(tmp_path / "docker"), engine_version="20.10",
                                     options={"dm.thinpooldev": "/dev/mapper/docker-thinpool"})
    assert report["drivers"]["vfs"]["supported"] is False and "dm.thinpooldev" in report["drivers"]["vfs"]["reason"]
