"""The zfs driver on a real ZFS pool (zfs-fuse here: the machine has no kernel
ZFS): Docker's datasets, clones and deferred snapshots, quotas, mounts
counted across processes, and the refusals.

dockerd refuses zfs-fuse (it opens /dev/zfs), so no engine can write the
layout for comparison here: the expectations are written by hand from moby's
daemon/graphdriver/zfs/zfs.go (v20.10.24, unchanged on these points in
v26.1.5), and each test cites the function it follows.
"""

import errno
import os
import subprocess
import sys
import textwrap

import pytest

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import (
    GraphDriverError, IncompatibleFS, LayerNotFound, NotSupported, PrerequisitesMissing, new)
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import zfs as zfsmod
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.mount import (
    is_mountpoint, mount_of)
from ansible_collections.strata.graphdriver.tests.support import zfs_fuse
from ansible_collections.strata.graphdriver.tests.support.backends import BACKENDS, Unavailable

MiB = 1024 * 1024
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, ".build")


def zfs(*args):
    return subprocess.run(["zfs"] + list(args), check=True, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True).stdout


def prop(dataset, name):
    return zfs("get", "-Hp", "-o", "value", name, dataset).strip()


def datasets(root, kind="filesystem"):
    return sorted(zfs("list", "-rH", "-o", "name", "-t", kind, root).split())


@pytest.fixture
def zfs_home(tmp_path):
    try:
        with BACKENDS["zfs"](str(tmp_path)) as (home, options):
            yield home, options
    except Unavailable as e:
        pytest.skip("zfs backend unavailable: %s" % e)


@pytest.fixture
def driver(zfs_home, tmp_path, monkeypatch):
    # Private refcount directory: counts are per driver home anyway, but the
    # tests must not touch the host's /run/strata-graphdriver.
    from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import refcount
    monkeypatch.setattr(refcount, "RUN_DIR", str(tmp_path / "run"))
    home, options = zfs_home
    drv = new("zfs", home, options)
    yield drv
    drv.cleanup()


def test_layout_is_dockers(driver):
    """No dockerd can run zfs here (it needs kernel ZFS, /dev/zfs): every
    expectation below is written from moby's daemon/graphdriver/zfs/zfs.go
    (v20.10.24; the same in v26.1.5), cited function by function."""
    fsname = driver.fsname
    # Init: without zfs.fsname, lookupZfsDataset takes the dataset mounted
    # at the data-root (the mount whose device is the home's parent's)
    assert fsname == mount_of(os.path.dirname(driver.home)).source
    # Init: idtools.MkdirAllAndChown(base, 0710, ...)
    assert oct(os.stat(driver.home).st_mode & 0o777) == oct(0o710)
    driver.create("base")
    driver.create_read_write("child", "base")
    # zfsPath: <fsname>/<id>, one dataset per layer
    assert datasets(fsname) == sorted([fsname, fsname + "/base", fsname + "/child"])
    for layer in ("base", "child"):
        # create: CreateFilesystem with {"mountpoint": "legacy"};
        # cloneFilesystem: snapshot.Clone(name, {"mountpoint": "legacy"})
        assert prop(fsname + "/" + layer, "mountpoint") == "legacy"
        assert prop(fsname + "/" + layer, "mounted") == "no"
    snaps = datasets(fsname, "snapshot")
    # cloneFilesystem: parentDataset.Snapshot(time.Now().Nanosecond() as
    # decimal digits), not recursive
    assert len(snaps) == 1 and snaps[0].startswith(fsname + "/base@")
    assert snaps[0].split("@")[1].isdigit()
    # cloneFilesystem: snapshot.Destroy(zfs.DestroyDeferDeletion) once the
    # clone exists, so the snapshot goes when no clone needs it
    assert prop(snaps[0], "defer_destroy") == "on"
    assert prop(fsname + "/child", "origin") == snaps[0]
    # GetMetadata: {"Mountpoint": mountPath(id) = <home>/graph/<id>,
    # "Dataset": zfsPath(id)}
    assert driver.metadata("child") == {
        "Mountpoint": os.path.join(driver.home, "graph", "child"),
        "Dataset": fsname + "/child"}


def test_get_mounts_put_restores_legacy(driver):
    # zfs.go (v20.10.24, v26.1.5) Get: MkdirAllAndChown(mountPath(id), 0755),
    # mount.Mount(zfsPath(id), mountpoint, "zfs"); Put: Unmount(MNT_DETACH),
    # Rmdir(mountpoint)
    driver.create("base")
    path = driver.get("base")
    assert path == os.path.join(driver.home, "graph", "base")
    entry = mount_of(path)
    assert entry.mountpoint == path and entry.source == driver.fsname + "/base"
    assert entry.fstype in ("zfs", "fuse.zfs")
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o755)
    with open(os.path.join(path, "hello"), "w") as f:
        f.write("from base")
    driver.put("base")
    assert not is_mountpoint(path)
    assert not os.path.exists(path)
    assert prop(driver.fsname + "/base", "mountpoint") == "legacy"
    driver.create("child", "base")
    child = driver.get("child")
    assert open(os.path.join(child, "hello")).read() == "from base"
    driver.put("child")
    driver.put("child")  # put of an unmounted layer: no-op


def test_refcounts_within_a_process(driver):
    driver.create("a")
    path = driver.get("a")
    assert driver.get("a") == path
    driver.put("a")
    assert is_mountpoint(path), "still held by the first get"
    driver.put("a")
    assert not is_mountpoint(path)


def _run_in_process(home, run_dir, code):
    script = textwrap.dedent("""
        import sys
        from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import new
        drv = new("zfs", sys.argv[1])
    """) + textwrap.dedent(code)
    env = dict(os.environ, PYTHONPATH=BUILD, STRATA_GRAPHDRIVER_RUN_DIR=run_dir)
    proc = subprocess.run([sys.executable, "-c", script, home], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_refcounts_across_processes(zfs_home, tmp_path):
    home, _ = zfs_home
    run_dir = str(tmp_path / "run")
    _run_in_process(home, run_dir, 'drv.create("layer")')
    path = _run_in_process(home, run_dir, 'print(drv.get("layer"))')
    assert is_mountpoint(path)
    _run_in_process(home, run_dir, 'drv.get("layer")')
    _run_in_process(home, run_dir, 'drv.put("layer")')
    assert is_mountpoint(path), "a second task still holds the layer"
    _run_in_process(home, run_dir, 'drv.put("layer")')
    assert not is_mountpoint(path)
    _run_in_process(home, run_dir, 'drv.remove("layer")')


def test_remove_of_a_parent_with_clones_is_refused_as_docker(driver):
    fsname = driver.fsname
    driver.create("base")
    driver.create("child", "base")
    # zfs.go Remove: dataset.Destroy(zfs.DestroyRecursive), i.e. zfs destroy
    # -r, which refuses a dataset with dependent clones
    with pytest.raises(GraphDriverError) as e:
        driver.remove("base")
    assert "base" in str(e.value) and "dependent clones" in str(e.value)
    assert driver.exists("base") and driver.exists("child")
    driver.remove("child")
    # The deferred snapshot went with its last clone; now the parent goes.
    assert datasets(fsname, "snapshot") == []
    driver.remove("base")
    assert datasets(fsname) == [fsname]
    assert not driver.exists("base")
    driver.remove("base")  # idempotent


def test_remove_unmounts_a_mounted_layer(driver):
    driver.create("a")
    path = driver.get("a")
    driver.remove("a")
    assert not is_mountpoint(path)
    assert not driver.exists("a")


def test_quota_is_enforced(driver):
    # zfs.go create/setQuota: the size storage option is the dataset's quota
    # property, in bytes; parseStorageOpt refuses any other key
    driver.create_read_write("limited", None, {"size": "50M"})
    assert prop(driver.fsname + "/limited", "quota") == str(50 * MiB)
    path = driver.get("limited")
    with open(os.path.join(path, "first"), "wb") as f:
        f.write(os.urandom(MiB) * 25)
    with pytest.raises(OSError) as e:
        with open(os.path.join(path, "second"), "wb") as f:
            block = os.urandom(MiB)
            for _ in range(50):
                f.write(block)
            f.flush()
            os.fsync(f.fileno())
    assert e.value.errno in (errno.EDQUOT, errno.ENOSPC)
    driver.put("limited")
    with pytest.raises(GraphDriverError, match="unknown storage option"):
        driver.create_read_write("bad", None, {"inodes": "10"})


def test_create_over_a_leftover_dataset_replaces_it(driver):
    # Docker: "dataset already exists" means an aborted build; destroy, retry.
    driver.create("a")
    with open(os.path.join(driver.get("a"), "stale"), "w") as f:
        f.write("x")
    driver.put("a")
    driver.create("a")
    assert os.listdir(driver.get("a")) == []
    driver.put("a")


def test_errors_name_the_layer(driver):
    with pytest.raises(LayerNotFound, match="missing"):
        driver.get("missing")
    with pytest.raises(LayerNotFound, match="missing"):
        driver.create("x", "missing")
    assert not driver.exists("x")


def test_exists_sees_other_instances(driver, zfs_home):
    other = new("zfs", zfs_home[0])
    other.create("made-elsewhere")
    assert driver.exists("made-elsewhere")
    assert not driver.exists("never-made")


def test_cleanup_unmounts_everything(driver):
    for layer in ("a", "b"):
        driver.create(layer)
        driver.get(layer)
    driver.get("a")
    driver.cleanup()
    for layer in ("a", "b"):
        assert not is_mountpoint(os.path.join(driver.home, "graph", layer))
        assert prop(driver.fsname + "/" + layer, "mountpoint") == "legacy"
    assert driver.refs.active() == []


def test_explicit_fsname_option(zfs_home, tmp_path, monkeypatch):
    from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import refcount
    monkeypatch.setattr(refcount, "RUN_DIR", str(tmp_path / "run"))
    home, _ = zfs_home
    fsname = mount_of(os.path.dirname(home)).source
    zfs("create", "-o", "mountpoint=legacy", fsname + "/explicit")
    # With zfs.fsname Docker does not look at the home's filesystem at all.
    elsewhere = str(tmp_path / "home")
    drv = new("zfs", elsewhere, {"zfs.fsname": fsname + "/explicit"})
    drv.create("layer")
    assert prop(fsname + "/explicit/layer", "mountpoint") == "legacy"
    assert drv.get("layer") == os.path.join(elsewhere, "graph", "layer")
    drv.put("layer")
    drv.remove("layer")
    with pytest.raises(GraphDriverError, match="unknown option"):
        new("zfs", elsewhere, {"zfs.bogus": "x"})
    with pytest.raises(GraphDriverError, match="cannot find root filesystem"):
        new("zfs", elsewhere, {"zfs.fsname": fsname + "/nope"})


def test_status_reports_the_implementation(driver):
    status = dict(driver.status())
    assert status["Parent Dataset"] == driver.fsname
    assert status["Zpool"] == driver.fsname.split("/")[0]
    assert status["Zpool Health"] == "ONLINE"
    assert status["Parent Quota"] == "no"
    if driver.implementation == zfsmod.FUSE:
        assert status["ZFS Implementation"].startswith("zfs-fuse")
        # statfs says fuse; accepted because the mount there is a dataset.
        assert status["Backing Filesystem"] == "fuse (zfs-fuse dataset %s)" % driver.fsname
    else:
        assert status["ZFS Implementation"].startswith("kernel")


def test_home_not_on_zfs_is_incompatible(zfs_home, tmp_path):
    # The daemon runs (zfs_home), but this home is on the test's tmp fs.
    home = str(tmp_path / "docker" / "zfs")
    os.makedirs(os.path.dirname(home))
    with pytest.raises(IncompatibleFS) as e:
        new("zfs", home)
    assert str(tmp_path / "docker") in e.value.reason
    assert "not on a ZFS dataset" in e.value.reason


def test_no_zfs_implementation_is_not_supported(tmp_path):
    if zfsmod.kernel_zfs_present():
        pytest.skip("this host has kernel ZFS")
    zfs_fuse.stop_idle_daemon()  # ours, left idle by the tests before
    if zfs_fuse.other_daemons() or zfsmod.zfs_fuse_running():
        pytest.skip("a zfs-fuse daemon is running on this host")
    with pytest.raises(PrerequisitesMissing) as e:
        new("zfs", str(tmp_path / "zfs"))
    assert isinstance(e.value, NotSupported)
    assert "/dev/zfs" in e.value.reason and zfsmod.ZFS_FUSE_SOCKET in e.value.reason


def test_missing_zfs_tool_is_not_supported(tmp_path):
    """In a private mount namespace the zfs tool is hidden (a non-executable
    file bound over it): the driver must refuse, naming the tool."""
    if subprocess.run(["which", "unshare"], stdout=subprocess.DEVNULL).returncode:
        pytest.skip("unshare (util-linux) is not installed")
    blank = tmp_path / "blank"
    blank.write_text("")
    os.chmod(str(blank), 0o644)
    hide = " && ".join("mount --bind %s %s" % (blank, p)
                       for p in ("/usr/sbin/zfs", "/sbin/zfs", "/usr/bin/zfs",
                                 "/usr/local/sbin/zfs")
                       if os.path.exists(p) and not os.path.islink(os.path.dirname(p)))
    code = ("from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver "
            "import new, PrerequisitesMissing\n"
            "try:\n    new('zfs', %r)\nexcept PrerequisitesMissing as e:\n    print(e.reason)\n"
            % str(tmp_path / "zfs"))
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         "%s && exec %s -c \"$0\"" % (hide or "true", sys.executable), code],
        env=dict(os.environ, PYTHONPATH=BUILD), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, universal_newlines=True)
    if proc.returncode != 0 and "unshare failed" in proc.stderr:
        pytest.skip("cannot make a mount namespace: %s" % proc.stderr.strip())
    assert proc.returncode == 0, proc.stderr
    assert "'zfs' tool is not installed" in proc.stdout


def test_same_second_rewrite_is_a_change(driver):
    """A same-size rewrite in the second the parent was written is a C, as
    kernel ZFS (nanosecond times) would show it, also under zfs-fuse (whole
    seconds); an untouched file with the same size is not."""
    driver.create("base")
    root = driver.get("base")
    os.mkdir(os.path.join(root, "dir"))
    for name in ("dir/same", "dir/kept"):
        with open(os.path.join(root, name), "wb") as f:
            f.write(b"0123456789")
    driver.put("base")
    driver.create("upper", "base")
    up = driver.get("upper")
    with open(os.path.join(up, "dir", "same"), "wb") as f:
        f.write(b"abcdefghij")
    driver.put("upper")
    changes = sorted((c.kind, c.path) for c in driver.changes("upper", "base"))
    assert changes == [("C", "/dir"), ("C", "/dir/same")]
    import tarfile
    stream = driver.diff("upper", "base")
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            names = {}
            for m in tar:
                names[m.name.rstrip("/")] = tar.extractfile(m).read() if m.isfile() else None
    finally:
        stream.close()
    assert names == {"dir": None, "dir/same": b"abcdefghij"}
    assert driver.diff_size("upper", "base") == 10


def test_rewrite_detection_reads_only_the_last_second(driver):
    """Files older than the clone are left to Docker's rule (not read): a
    same-size rewrite whose time was set back to the old second is missed,
    as Docker misses it on every filesystem."""
    import time
    driver.create("base")
    root = driver.get("base")
    with open(os.path.join(root, "old"), "wb") as f:
        f.write(b"0123456789")
    os.utime(os.path.join(root, "old"), (1000000000, 1000000000))
    driver.put("base")
    time.sleep(1.1)  # the clone is made in a later second than "old"
    driver.create("upper", "base")
    since = driver._cloned_since("upper", "base")
    assert since > 1000000000
    driver.create("top", "upper")
    assert driver._cloned_since("top", "base") == since
    assert driver._cloned_since("base", "top") == 0
    up = driver.get("top")
    with open(os.path.join(up, "old"), "wb") as f:
        f.write(b"abcdefghij")
    os.utime(os.path.join(up, "old"), (1000000000, 1000000000))
    driver.put("top")
    assert driver.changes("top", "base") == []


def test_fixture_daemon_dies_with_its_process(tmp_path):
    """tests/support/zfs_fuse.py: a test process killed outright (SIGKILL, no
    atexit) still takes its zfs-fuse daemon with it, so no run leaves one."""
    import signal
    import time
    zfs_fuse.stop_idle_daemon()
    if zfs_fuse.other_daemons():
        pytest.skip("a zfs-fuse daemon that is not ours is running")
    code = textwrap.dedent("""
        import sys, time
        from ansible_collections.strata.graphdriver.tests.support import zfs_fuse
        with zfs_fuse.zfs_fuse_daemon() as pid:
            print(pid, flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            env=dict(os.environ, PYTHONPATH=BUILD), universal_newlines=True)
    try:
        line = proc.stdout.readline().strip()
        if not line.isdigit():
            pytest.skip("the fixture could not start zfs-fuse here")
        daemon = int(line)
        assert daemon in zfs_fuse.other_daemons()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + zfs_fuse.STOP_TIMEOUT
    while daemon in zfs_fuse.other_daemons() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert daemon not in zfs_fuse.other_daemons()
