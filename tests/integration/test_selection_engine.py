"""Our driver pick against Docker's own: each engine asked on each filesystem.

dockerd 20.10 and 26.1 start WITHOUT --storage-driver on a fresh data-root
on each backing filesystem this machine can make, and on data-roots that
hold prior state for one driver or for two; ``selection.driver_report``,
run on the same data-root before the engine starts, must name the driver
``docker info`` reports, say "prior state" exactly when the engine logs
"using prior storage driver", or refuse as the engine refuses (moby
daemon/graphdriver/driver.go New() at v20.10.24 and v26.1.5; the priority
lists in driver_linux.go). One mount per filesystem is shared by every case
and both engines; each case gets its own data-root in it.
"""

import contextlib
import os
import re
import shutil
import subprocess

import pytest

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import (
    new, selection)
from tests.support import dockerd as dockerd_support
from tests.support.loop import loop_filesystem, tmpfs

ENGINES = ("20.10", "26.1")

# case id: (backing filesystem, drivers with state in the data-root)
CASES = {
    "ext4": ("ext4", ()),
    "xfs": ("xfs", ()),
    "btrfs": ("btrfs", ()),                        # 20.10: btrfs, 26.1: overlay2
    "tmpfs": ("tmpfs", ()),
    "btrfs-state-overlay2": ("btrfs", ("overlay2",)),   # 20.10 leaves btrfs for it
    "btrfs-state-btrfs": ("btrfs", ("btrfs",)),         # 26.1 leaves overlay2 for it
    "btrfs-state-two": ("btrfs", ("btrfs", "overlay2")),   # both engines refuse
    "ext4-state-btrfs": ("ext4", ("btrfs",)),      # prior driver no longer fits: refused
}

MKFS_TOOL = {"ext4": "mkfs.ext4", "xfs": "mkfs.xfs", "btrfs": "mkfs.btrfs"}


@pytest.fixture(scope="module")
def filesystem():
    """``filesystem(kind)``: one mounted filesystem per kind for the module."""
    with contextlib.ExitStack() as stack:
        made = {}

        def get(kind):
            if kind not in made:
                if kind in MKFS_TOOL and not shutil.which(MKFS_TOOL[kind]):
                    pytest.skip("%s is not installed: no %s data-root" % (MKFS_TOOL[kind], kind))
                try:
                    made[kind] = stack.enter_context(
                        tmpfs(300) if kind == "tmpfs" else loop_filesystem(kind, size_mb=300))
                except subprocess.CalledProcessError as e:
                    pytest.skip("cannot make a %s filesystem here: %s"
                                % (kind, (e.stderr or "").strip() or e))
            return made[kind]
        yield get


def _seed(root, drivers):
    """Prior state as a store leaves it: a layer each driver wrote itself;
    btrfs on a filesystem that is not btrfs (a store copied over) by hand,
    in the btrfs driver's layout."""
    for name in drivers:
        home = os.path.join(root, name)
        if name == "btrfs" and selection.backing_fs(root) != "btrfs":
            os.makedirs(os.path.join(home, "subvolumes", "seed"))
            continue
        drv = new(name, home)
        try:
            drv.create("seed")
        finally:
            drv.cleanup()


def _engine_pick(root, engine, workdir):
    """What the engine does with ``root``: (driver or None, its log)."""
    picked = None
    try:
        with dockerd_support.dockerd(str(workdir), storage_driver=None, data_root=root,
                                     engine=engine) as d:
            picked = d.docker("info", "--format", "{{.Driver}}").strip()
    except dockerd_support.DockerdUnavailable:
        pass        # refused: the log says why
    with open(os.path.join(str(workdir), "dockerd.log"), errors="replace") as f:
        return picked, f.read()


def _same_order_free(text):
    # Docker lists the drivers with state from a Go map: in random order
    return re.sub(r"graphdrivers: ([^;]*);",
                  lambda m: "graphdrivers: %s;" % ", ".join(sorted(m.group(1).split(", "))),
                  text)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_our_pick_is_the_engines(case, engine, filesystem, tmp_path):
    reason = dockerd_support.available(engine)
    if reason:
        pytest.skip(reason)
    fstype, state = CASES[case]
    root = os.path.join(filesystem(fstype), "%s-%s" % (case, engine))
    os.makedirs(root)
    _seed(root, state)
    report = selection.driver_report(root, engine_version=engine)
    picked, log = _engine_pick(root, engine, tmp_path / "engine")
    assert report["backing_fs"] == selection.backing_fs(root)
    if picked is not None:
        assert (report["pick"], report["error"]) == (picked, None), (report, log[-2000:])
        engine_says_prior = "using prior storage driver: %s" % picked in log
        assert report["pick_reason"].startswith("prior state in ") == engine_says_prior, (
            report["pick_reason"], log[-2000:])
        return
    refusal = re.search(r"failed to start daemon: error initializing graphdriver: (.*)", log)
    assert refusal, "the engine neither started nor refused its graphdriver:\n" + log[-2000:]
    assert report["pick"] is None, (report, refusal.group(1))
    failed = re.search(r"prior storage driver (\S+) failed: ", log)
    if failed:
        # the engine returns the prior driver's own error; we say which
        # driver failed and why in our words
        assert report["error"].startswith(failed.group(0)), (report["error"], failed.group(0))
    else:
        assert _same_order_free(report["error"]) == _same_order_free(refusal.group(1))
