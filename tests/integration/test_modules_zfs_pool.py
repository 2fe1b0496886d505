"""strata.graphdriver.zfs_pool through ansible-playbook on a private zfs-fuse daemon."""

import os
import shutil
import subprocess
import tempfile

import pytest

from tests.support.backends import Unavailable
from tests.support.playbook import run_module
from tests.support.zfs_fuse import _destroy_pool as destroy_pool, zfs_fuse_daemon

pytestmark = pytest.mark.root


def sh(*argv):
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True)


def blkid(path):
    out = sh("blkid", "-p", "-o", "export", path).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def status(pool):
    return sh("zpool", "status", pool).stdout


_serial = [0]


@pytest.fixture
def lab():
    """(pool name, work dir) with a private zfs-fuse running; the pool is destroyed after."""
    try:
        with zfs_fuse_daemon():
            workdir = tempfile.mkdtemp(prefix="strata-zfs-pool-")
            _serial[0] += 1
            name = "strata-mod-%d-%d" % (os.getpid(), _serial[0])
            try:
                yield name, workdir
            finally:
                for pool in (name, name + "-other"):
                    if sh("zpool", "list", "-H", pool).returncode == 0:
                        destroy_pool(pool)   # retried: zfs-fuse reports a just-used pool busy
                shutil.rmtree(workdir, ignore_errors=True)
    except Unavailable as e:
        pytest.skip(str(e))


def params(name, workdir, files, **extra):
    p = {"name": name, "vdevs": [{"devices": [os.path.join(workdir, f) for f in files]}],
         "file_size": "128M", "pool_properties": {"cachefile": "none"}}
    p.update(extra)
    return p


def test_create_with_dataset_then_idempotent(lab):
    name, workdir = lab
    mnt = os.path.join(workdir, "docker")
    p = params(name, workdir, ["a", "b"], dataset="docker", mountpoint=mnt,
               properties={"compression": "on", "atime": False})  # YAML's off
    run, res = run_module("zfs_pool", p, diff=True)
    assert run.rc == 0, run
    assert res["changed"] is True and res["created"] is True
    a, b = os.path.join(workdir, "a"), os.path.join(workdir, "b")
    assert res["commands"][0] == "zpool create -o cachefile=none -m none %s %s %s" % (name, a, b)
    assert res["commands"][1] == ("zfs create -p -o atime=off -o compression=on -o mountpoint=%s %s/docker"
                                  % (mnt, name))
    assert res["files_created"] == [a, b]
    assert res["vdevs"] == [{"type": "stripe", "devices": [a]}, {"type": "stripe", "devices": [b]}]
    assert res["dataset"] == {"name": name + "/docker", "mountpoint": mnt}
    assert res["diff"]["before"] == {}
    assert res["diff"]["after"]["vdevs"] == res["vdevs"]
    assert a in status(name) and b in status(name)
    assert sh("zfs", "get", "-H", "-o", "value", "compression", name + "/docker").stdout.strip() == "on"
    assert os.path.ismount(mnt)

    run, again = run_module("zfs_pool", p)
    assert run.rc == 0, run
    assert again["changed"] is False and again["commands"] == []

    # A property changed behind our back is put back, nothing else.
    sh("zfs", "set", "atime=on", name + "/docker")
    run, fix = run_module("zfs_pool", p)
    assert fix["commands"] == ["zfs set atime=off %s/docker" % name]
    assert sh("zfs", "get", "-H", "-o", "value", "atime", name + "/docker").stdout.strip() == "off"


def test_check_mode_creates_nothing(lab):
    name, workdir = lab
    p = params(name, workdir, ["a"])
    run, res = run_module("zfs_pool", p, check=True)
    assert run.rc == 0, run
    assert res["changed"] is True
    assert res["commands"] == ["zpool create -o cachefile=none -m none %s %s" % (name, os.path.join(workdir, "a"))]
    assert sh("zpool", "list", "-H", name).returncode != 0
    assert not os.path.exists(os.path.join(workdir, "a"))


def test_mirror_grow_and_unlisted_kept(lab):
    name, workdir = lab
    a, b, c, d = (os.path.join(workdir, x) for x in "abcd")
    base = {"name": name, "file_size": "128M", "pool_properties": {"cachefile": "none"}}
    run, res = run_module("zfs_pool", dict(base, vdevs=[{"type": "mirror", "devices": [a, b]}]))
    assert run.rc == 0, run
    assert res["vdevs"] == [{"type": "mirror", "devices": [a, b]}]

    both = [{"type": "mirror", "devices": [a, b]}, {"type": "mirror", "devices": [c, d]}]
    run, res = run_module("zfs_pool", dict(base, vdevs=both), check=True)
    assert res["changed"] is True
    assert res["commands"] == ["zpool add %s mirror %s %s" % (name, c, d)]
    assert c not in status(name)

    run, res = run_module("zfs_pool", dict(base, vdevs=both))
    assert run.rc == 0, run
    assert res["vdevs"] == both

    # Declaring only the first mirror keeps the second: reported, not removed.
    run, res = run_module("zfs_pool", dict(base, vdevs=[{"type": "mirror", "devices": [a, b]}]))
    assert res["changed"] is False
    assert res["unlisted_vdevs"] == [{"type": "mirror", "devices": [c, d], "vdev": "mirror-1"}]
    assert c in status(name) and d in status(name)

    # A mirror member left out is detached only when asked.
    one_less = [{"type": "mirror", "devices": [a, b]}, {"type": "mirror", "devices": [c]}]
    run, res = run_module("zfs_pool", dict(base, vdevs=one_less))
    assert res["changed"] is False and d in status(name)
    run, res = run_module("zfs_pool", dict(base, vdevs=one_less, remove_unlisted=True))
    assert run.rc == 0, run
    assert res["commands"] == ["zpool detach %s %s" % (name, d)]
    assert d not in status(name)


def test_raidz(lab):
    name, workdir = lab
    files = [os.path.join(workdir, x) for x in "abc"]
    p = {"name": name, "vdevs": [{"type": "raidz", "devices": files}], "file_size": "128M",
         "pool_properties": {"cachefile": "none"}}
    run, res = run_module("zfs_pool", p)
    assert run.rc == 0, run
    assert res["commands"] == ["zpool create -o cachefile=none -m none %s raidz1 %s" % (name, " ".join(files))]
    assert res["vdevs"] == [{"type": "raidz1", "devices": files}]
    assert "raidz1-0" in status(name)
    # A raidz vdev's width is fixed: a fourth member is refused with the reason.
    more = dict(p, vdevs=[{"type": "raidz", "devices": files + [os.path.join(workdir, "d")]}])
    run, res = run_module("zfs_pool", more)
    assert res["failed"] is True and "width is fixed" in res["msg"]
    assert not os.path.exists(os.path.join(workdir, "d"))


def test_signature_refused_and_left_untouched(lab):
    name, workdir = lab
    victim = os.path.join(workdir, "ext4.img")
    with open(victim, "wb") as f:
        f.truncate(128 << 20)
    sh("mkfs.ext4", "-q", "-F", victim)
    before = blkid(victim)
    assert before["TYPE"] == "ext4"
    run, res = run_module("zfs_pool", {"name": name, "vdevs": [{"devices": [victim]}]})
    assert res["failed"] is True
    assert victim in res["msg"] and "ext4" in res["msg"] and "force" in res["msg"]
    assert blkid(victim) == before
    assert sh("zpool", "list", "-H", name).returncode != 0


def test_vdev_of_imported_pool_refused_even_with_force(lab):
    name, workdir = lab
    a = os.path.join(workdir, "a")
    run, res = run_module("zfs_pool", params(name, workdir, ["a"]))
    assert run.rc == 0, run
    run, res = run_module("zfs_pool", {"name": name + "-other", "vdevs": [{"devices": [a]}], "force": True})
    assert res["failed"] is True
    assert a in res["msg"] and "imported zpool" in res["msg"]


def test_absent_needs_force(lab):
    name, workdir = lab
    run, res = run_module("zfs_pool", params(name, workdir, ["a"]))
    assert run.rc == 0, run
    run, res = run_module("zfs_pool", {"name": name, "state": "absent"})
    assert res["failed"] is True and "force" in res["msg"]
    assert sh("zpool", "list", "-H", name).returncode == 0
    run, res = run_module("zfs_pool", {"name": name, "state": "absent", "force": True})
    assert res["changed"] is True and res["commands"] == ["zpool destroy -f %s" % name]
    assert sh("zpool", "list", "-H", name).returncode != 0
    run, res = run_module("zfs_pool", {"name": name, "state": "absent", "force": True})
    assert res["changed"] is False
