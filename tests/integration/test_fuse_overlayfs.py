"""fuse-overlayfs: overlay2's layout, FUSE mounts, aufs-style whiteouts."""

import io
import os
import stat
import subprocess
import sys
import tarfile

import pytest

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import (
    GraphDriverError, LayerNotFound, QuotaError, new)
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.mount import (
    mounts, mounts_under)
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import changes
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.naive import (
    NaiveDiffDriver)
from tests.support.backends import backend_home

from .test_overlay2 import BUILD, _base_tree, _change_tree, chain, layout_shape, mode, read

DRIVER = "fuse-overlayfs"


@pytest.fixture
def home(tmp_path):
    with backend_home(DRIVER, tmp_path) as (path, _):
        yield path


@pytest.fixture
def drv(home):
    d = new(DRIVER, home)
    try:
        yield d
    finally:
        d.cleanup()


def fuse_mount(path):
    real = os.path.realpath(path)
    found = [m for m in mounts() if m.mountpoint == real]
    return found[-1] if found else None


def test_layout_is_overlay2s_with_a_0710_work_dir(drv, home):
    chain(drv, ["A", "B", "C"])
    assert mode(home) == 0o710
    assert mode(os.path.join(home, "l")) == 0o700
    assert layout_shape(home, "A") == {
        ".": ("dir", 0o710), "diff": ("dir", 0o755),
        "link": ("file", 0o644, "LID"), "committed": ("file", 0o600, "")}
    assert layout_shape(home, "C") == {
        ".": ("dir", 0o710), "diff": ("dir", 0o755), "work": ("dir", 0o710),
        "link": ("file", 0o644, "LID"), "lower": ("file", 0o644, "lowers:2")}
    lid = read(os.path.join(home, "A", "link"))
    assert os.readlink(os.path.join(home, "l", lid)) == "../A/diff"
    assert drv.status() == []
    assert sorted(os.listdir(home)) == ["A", "B", "C", "l"]


def test_mounted_by_the_fuse_program_and_put_unmounts(drv, home):
    chain(drv, ["A", "B"])
    with open(os.path.join(home, "A", "diff", "a"), "w") as f:
        f.write("a")
    merged = drv.get("B")
    m = fuse_mount(merged)
    assert m is not None and m.fstype == "fuse.fuse-overlayfs"
    assert read(os.path.join(merged, "a")) == "a"
    with open(os.path.join(merged, "b"), "w") as f:
        f.write("b")
    assert read(os.path.join(home, "B", "diff", "b")) == "b"
    drv.put("B")
    assert fuse_mount(merged) is None
    assert not os.path.exists(merged)


def test_refcounts_are_shared_between_processes(drv, home):
    chain(drv, ["A", "B"])
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver "
            "import new\n"
            "d = new(%r, %r)\n"
            "print(d.get('B') if sys.argv[1] == 'get' else d.put('B'))\n"
            % (BUILD, DRIVER, home))
    merged = subprocess.run([sys.executable, "-c", code, "get"], check=True,
                            stdout=subprocess.PIPE, universal_newlines=True).stdout.strip()
    assert fuse_mount(merged) is not None
    assert drv.get("B") == merged
    drv.put("B")
    assert fuse_mount(merged) is not None
    subprocess.run([sys.executable, "-c", code, "put"], check=True)
    assert fuse_mount(merged) is None


def _layer_tar(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tf.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def test_apply_on_the_direct_parent_keeps_aufs_whiteouts(drv, home):
    drv.create("A")
    base = drv.get("A")
    with open(os.path.join(base, "gone"), "w") as f:
        f.write("x")
    os.mkdir(os.path.join(base, "d"))
    with open(os.path.join(base, "d", "old"), "w") as f:
        f.write("old")
    drv.create("B", "A")
    size = drv.apply_diff("B", "A", _layer_tar([
        (".wh.gone", b""), ("d/.wh..wh..opq", b""), ("d/new", b"new"), ("hello", b"hi!")]))
    diff = os.path.join(home, "B", "diff")
    # written as Docker's Unpack writes them: plain files, not overlay devices
    assert stat.S_ISREG(os.lstat(os.path.join(diff, ".wh.gone")).st_mode)
    assert stat.S_ISREG(os.lstat(os.path.join(diff, "d", ".wh..wh..opq")).st_mode)
    assert size == len(b"new") + len(b"hi!")       # Docker: directory.Size(diff)
    merged = drv.get("B")
    try:
        assert not os.path.exists(os.path.join(merged, "gone"))
        assert sorted(os.listdir(os.path.join(merged, "d"))) == ["new"]
        assert read(os.path.join(merged, "hello")) == "hi!"
    finally:
        drv.put("B")


def test_apply_elsewhere_is_naive(drv, home):
    chain(drv, ["A", "B", "C"], rw_top=False)
    size = drv.apply_diff("C", "A", _layer_tar([("f", b"12345")]))
    assert size == 5
    assert read(os.path.join(home, "C", "diff", "f")) == "12345"
    assert mounts_under(home) == []


def test_edge_cases(drv, home):
    chain(drv, ["A", "B"])
    drv.put("B")
    drv.put("missing")
    drv.remove("missing")
    with pytest.raises(LayerNotFound):
        drv.get("missing")
    with pytest.raises(QuotaError):
        drv.create_read_write("C", "A", {"size": "10M"})
    with pytest.raises(GraphDriverError):
        drv.create("C", "A", {"other": "1"})
    assert not drv.exists("C")


def test_cleanup_unmounts_everything(drv, home):
    chain(drv, ["A", "B", "C"])
    drv.get("B")
    drv.get("C")
    assert len(mounts_under(home)) == 2
    drv.cleanup()
    assert mounts_under(home) == []


# --- changes(): the upper directory read against the naive walk -----------

def _naive(drv, id, parent):
    return [(c.kind, c.path) for c in NaiveDiffDriver.changes(drv, id, parent)]


def _native(drv, id, parent):
    """drv.changes, checked to be the upper-dir read (not a fallback)."""
    got = [(c.kind, c.path) for c in drv.changes(id, parent)]
    upper = changes.upper_changes(os.path.join(drv.home, id, "diff"), drv._lower_dirs(id),
                                  changes.FUSE_OVERLAYFS)
    assert got == [(c.kind, c.path) for c in upper]
    return got


def test_changes_from_the_upper_dir_equal_the_naive_walk(drv, home):
    """fuse-overlayfs marks deletions and opaque dirs its own way (0/0
    devices, .wh..wh..opq files next to the xattr): both readings agree."""
    drv.create("A")
    _base_tree(drv.get("A"))
    drv.put("A")
    drv.create("B", "A")
    _change_tree(drv.get("B"), lower_hard_links=False)
    drv.put("B")
    upper = os.path.join(home, "B", "diff")
    assert stat.S_ISCHR(os.lstat(os.path.join(upper, "etc", "gone")).st_mode)
    assert os.path.lexists(os.path.join(upper, "var", "opaque", ".wh..wh..opq"))
    naive = _naive(drv, "B", "A")
    assert _native(drv, "B", "A") == naive
    kinds = dict((p, k) for k, p in naive)
    assert kinds["/etc/gone"] == "D" and kinds["/var/opaque/x"] == "D"
    assert kinds["/etc/mode"] == "C" and kinds["/var/moved/deep/r2"] == "A"
    assert not any(".wh." in p for p in kinds)
    drv.create_read_write("C", "B")
    top = drv.get("C")
    with open(os.path.join(top, "var", "opaque", "again"), "w") as f:
        f.write("again")
    with open(os.path.join(top, "etc", "gone"), "w") as f:
        f.write("back")
    os.unlink(os.path.join(top, "etc", "keep"))
    drv.put("C")
    assert _native(drv, "C", "B") == _naive(drv, "C", "B")


def test_changes_of_a_layer_applied_with_aufs_whiteouts_equal_the_naive_walk(drv, home):
    drv.create("A")
    _base_tree(drv.get("A"))
    drv.put("A")
    drv.create("B", "A")
    drv.apply_diff("B", "A", _layer_tar([
        ("etc/.wh.gone", b""), ("var/opaque/.wh..wh..opq", b""), ("var/opaque/fresh", b"f"),
        ("var/dir/sub/.wh.b", b""), ("etc/hostname", b"from a tar")]))
    assert os.path.isfile(os.path.join(home, "B", "diff", "etc", ".wh.gone"))
    naive = _naive(drv, "B", "A")
    assert ("D", "/etc/gone") in naive and ("D", "/var/opaque/x") in naive
    assert _native(drv, "B", "A") == naive


def test_a_copied_up_hard_link_leaves_changes_to_the_walk(drv, home):
    """fuse-overlayfs shows both names of a lower hard link as one inode:
    after one is written, what the other shows depends on the mount's
    lookups, so only the walk of the mount can answer as Docker does."""
    drv.create("A")
    _base_tree(drv.get("A"))
    drv.put("A")
    drv.create_read_write("B", "A")
    merged = drv.get("B")
    try:
        with open(os.path.join(merged, "bin", "tool"), "ab") as f:
            f.write(b" changed")
        with pytest.raises(changes.NeedsMount):
            changes.upper_changes(os.path.join(home, "B", "diff"), drv._lower_dirs("B"),
                                  changes.FUSE_OVERLAYFS)
        got = [(c.kind, c.path) for c in drv.changes("B", "A")]
        assert got == _naive(drv, "B", "A") and ("C", "/bin/tool") in got
    finally:
        drv.put("B")
