"""The btrfs driver on a real btrfs (loop file): Docker's layout, nested
subvolumes, qgroup quotas, and refusal off btrfs."""

import errno
import os
import subprocess

import pytest

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import (
    GraphDriverError, IncompatibleFS, LayerExists, LayerNotFound, NotSupported, QuotaError,
    new)
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import (
    btrfs_ioctl)
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.mount import (
    mount_of, mounts)
from ansible_collections.strata.graphdriver.tests.support.backends import BACKENDS, Unavailable

MiB = 1024 * 1024


def sh(*argv):
    return subprocess.run(argv, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True).stdout


@pytest.fixture
def btrfs_home(tmp_path):
    try:
        with BACKENDS["btrfs"](str(tmp_path)) as (home, options):
            yield home, options
    except Unavailable as e:
        pytest.skip("btrfs backend unavailable: %s" % e)


@pytest.fixture
def driver(btrfs_home):
    home, options = btrfs_home
    return new("btrfs", home, options)


def subvolume_paths(fs_path):
    """Paths (relative to the filesystem top) of every subvolume."""
    out = sh("btrfs", "subvolume", "list", fs_path)
    return sorted(line.split(" path ", 1)[1] for line in out.splitlines() if " path " in line)


def qgroup_max_rfer(path):
    """max_rfer of the subvolume at ``path`` as `btrfs qgroup show` reports it."""
    qid = "0/%d" % btrfs_ioctl.subvolume_id(path)
    for line in sh("btrfs", "qgroup", "show", "-re", "--raw", path).splitlines():
        fields = line.split()
        if fields and fields[0] == qid:
            return fields[3]
    raise AssertionError("no qgroup %s in btrfs qgroup show" % qid)


def fill(path, size, chunk=MiB):
    with open(path, "wb") as f:
        block = os.urandom(chunk)
        for _ in range(size // chunk):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())


def test_layout_is_dockers(driver):
    old = os.umask(0o077)
    try:
        driver.create("base")
    finally:
        os.umask(old)
    path = driver.get("base")
    sub = os.path.join(driver.home, "subvolumes", "base")
    assert path == sub
    st = os.lstat(sub)
    assert st.st_ino == 256, "a layer must be a subvolume root (inode 256)"
    assert oct(st.st_mode & 0o7777) == oct(0o755), "layer root 0755 whatever the umask"
    assert oct(os.stat(driver.home).st_mode & 0o777) == oct(0o710)
    assert oct(os.stat(os.path.join(driver.home, "subvolumes")).st_mode & 0o777) == oct(0o710)
    assert sorted(os.listdir(driver.home)) == ["subvolumes"]
    with open(os.path.join(path, "file"), "w") as f:
        f.write("base")
    driver.put("base")

    driver.create_read_write("child", "base")
    child = driver.get("child")
    assert os.lstat(child).st_ino == 256
    # A snapshot: the parent's content, then independent of it.
    assert open(os.path.join(child, "file")).read() == "base"
    with open(os.path.join(child, "file"), "w") as f:
        f.write("child")
    assert open(os.path.join(sub, "file")).read() == "base"
    driver.put("child")
    rel = os.path.relpath(driver.home, mount_of(driver.home).mountpoint)
    assert subvolume_paths(driver.home) == sorted(
        os.path.join(rel, "subvolumes", i) for i in ("base", "child"))


def test_get_mounts_nothing_and_put_is_noop(driver):
    driver.create("a")
    before = [m.mountpoint for m in mounts()]
    assert driver.get("a") == os.path.join(driver.home, "subvolumes", "a")
    assert driver.get("a") == os.path.join(driver.home, "subvolumes", "a")
    assert [m.mountpoint for m in mounts()] == before
    driver.put("a")
    driver.put("a")
    driver.put("never-mounted")
    assert driver.exists("a")


def test_errors_name_the_layer(driver):
    with pytest.raises(LayerNotFound, match="missing"):
        driver.get("missing")
    with pytest.raises(LayerNotFound, match="missing"):
        driver.create("x", "missing")
    assert not driver.exists("x")
    driver.create("a")
    with pytest.raises(LayerExists):
        driver.create("a")
    driver.remove("missing")  # idempotent
    with pytest.raises(GraphDriverError, match="unknown storage option"):
        driver.create_read_write("b", None, {"bogus": "1"})
    assert not driver.exists("b")


def test_remove_deletes_nested_subvolumes_first(driver):
    driver.create("outer")
    root = driver.get("outer")
    os.makedirs(os.path.join(root, "plain", "dir"))
    sh("btrfs", "subvolume", "create", os.path.join(root, "plain", "dir", "nested"))
    sh("btrfs", "subvolume", "create", os.path.join(root, "plain", "dir", "nested", "deeper"))
    sh("btrfs", "subvolume", "create", os.path.join(root, "top"))
    with open(os.path.join(root, "plain", "dir", "nested", "deeper", "f"), "w") as f:
        f.write("x")
    assert os.lstat(os.path.join(root, "plain", "dir", "nested", "deeper")).st_ino == 256
    assert len(subvolume_paths(driver.home)) == 4
    driver.remove("outer")
    assert not driver.exists("outer")
    assert not os.path.lexists(root)
    assert subvolume_paths(driver.home) == []


def test_nested_subvolume_walk_matches_the_kernel(driver):
    # The fallback (Docker's walk for inode 256) finds what the ioctl finds.
    driver.create("outer")
    root = driver.get("outer")
    os.makedirs(os.path.join(root, "a", "b"))
    sh("btrfs", "subvolume", "create", os.path.join(root, "a", "b", "n1"))
    sh("btrfs", "subvolume", "create", os.path.join(root, "n2"))
    sh("btrfs", "subvolume", "create", os.path.join(root, "n2", "inner"))
    expected = sorted([os.path.join(root, "a", "b", "n1"), os.path.join(root, "n2")])
    assert sorted(btrfs_ioctl.child_subvolumes(root)) == expected
    assert sorted(btrfs_ioctl._child_subvolumes_walk(root)) == expected


def test_remove_parent_keeps_child_snapshot(driver):
    # Snapshots do not depend on their source: Docker removes a parent
    # subvolume while its children live on.
    driver.create("base")
    with open(os.path.join(driver.get("base"), "f"), "w") as f:
        f.write("kept")
    driver.create("child", "base")
    driver.remove("base")
    assert not driver.exists("base")
    assert open(os.path.join(driver.get("child"), "f")).read() == "kept"


def test_quota_is_enforced_through_qgroups(driver):
    driver.create_read_write("limited", None, {"size": "50M"})
    path = driver.get("limited")
    assert open(os.path.join(driver.home, "quotas", "limited")).read() == str(50 * MiB)
    assert oct(os.stat(os.path.join(driver.home, "quotas")).st_mode & 0o777) == oct(0o700)
    assert qgroup_max_rfer(path) == str(50 * MiB)
    assert ("Quota", "enabled (qgroups, ioctl)") in driver.status()
    fill(os.path.join(path, "first"), 25 * MiB)
    with pytest.raises(OSError) as e:
        fill(os.path.join(path, "second"), 50 * MiB)
    assert e.value.errno in (errno.EDQUOT, errno.ENOSPC)
    driver.put("limited")
    driver.remove("limited")
    assert not os.path.exists(os.path.join(driver.home, "quotas", "limited"))


def test_quota_on_a_snapshot(driver):
    driver.create("base")
    fill(os.path.join(driver.get("base"), "data"), 10 * MiB)
    driver.create_read_write("rw", "base", {"size": "30M"})
    path = driver.get("rw")
    # The snapshot's 10 MiB count against its 30 MiB: 30 more must fail.
    with pytest.raises(OSError) as e:
        fill(os.path.join(path, "more"), 30 * MiB)
    assert e.value.errno in (errno.EDQUOT, errno.ENOSPC)


def test_get_restores_a_lost_limit(driver):
    driver.create_read_write("limited", None, {"size": "40M"})
    path = driver.get("limited")
    sh("btrfs", "qgroup", "limit", "none", path)
    assert qgroup_max_rfer(path) == "none"
    driver.get("limited")
    assert qgroup_max_rfer(path) == str(40 * MiB)


def test_min_space_option(btrfs_home):
    home, options = btrfs_home
    drv = new("btrfs", home, dict(options, **{"btrfs.min_space": "100M"}))
    # Docker turns quota on at start when min_space is given.
    assert btrfs_ioctl.quota_enabled(home)
    with pytest.raises(QuotaError, match="cannot be less than"):
        drv.create_read_write("small", None, {"size": "50M"})
    assert not drv.exists("small")
    drv.create_read_write("big", None, {"size": "120M"})
    assert drv.exists("big")
    with pytest.raises(QuotaError, match="invalid storage size"):
        drv.create_read_write("zero", None, {"size": "0"})
    with pytest.raises(GraphDriverError, match="unknown option"):
        new("btrfs", home, {"btrfs.bogus": "1"})


def test_incompatible_fs_names_what_it_found(tmp_path):
    fs = subprocess.run(["stat", "-f", "-c", "%T", str(tmp_path)], stdout=subprocess.PIPE,
                        universal_newlines=True).stdout.strip()
    if fs == "btrfs":
        pytest.skip("the temporary directory is itself on btrfs")
    with pytest.raises(IncompatibleFS) as e:
        new("btrfs", str(tmp_path / "btrfs"))
    assert isinstance(e.value, NotSupported)
    assert str(tmp_path) in e.value.reason and "not btrfs" in e.value.reason
    assert not os.path.exists(str(tmp_path / "btrfs")), "nothing written when refused"


def test_status_says_how(driver):
    status = dict(driver.status())
    assert status["Subvolume Operations"] == "ioctl"
    assert "linux/btrfs.h" in status["Build Version"]
    assert status["Library Version"].startswith("btrfs-progs") or status["Library Version"] == "-"

