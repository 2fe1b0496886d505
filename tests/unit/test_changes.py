"""changes: Docker's ChangesDirs, AUFSChanges and ChangesSize; the upper-dir read of overlay layers."""

import os
import shutil

import pytest

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.changes import (
    FUSE_OVERLAYFS, NeedsMount, Union, aufs_changes, changes_dirs, changes_size,
    union_changes, upper_changes)
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.driver import Change
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.errors import (
    GraphDriverError)

ROOT = os.geteuid() == 0


def write(path, data=b"", mtime=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    if mtime is not None:
        os.utime(path, ns=(mtime, mtime))


def pairs(changes):
    return [(c.kind, c.path) for c in changes]


@pytest.fixture
def trees(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    for t in (old, new):
        write(str(t / "etc" / "hostname"), b"a", 10 ** 18)
        write(str(t / "etc" / "same"), b"s", 10 ** 18)
        write(str(t / "bin" / "sh"), b"sh", 10 ** 18)
        write(str(t / "var" / "gone" / "x"), b"x", 10 ** 18)
    return str(old), str(new)


def test_add_change_delete_and_parent_dirs(trees):
    old, new = trees
    write(os.path.join(new, "etc", "hostname"), b"b", 10 ** 18)      # same size+time, ...
    write(os.path.join(new, "etc", "hostname"), b"bb", 10 ** 18)     # ... size differs
    write(os.path.join(new, "usr", "new", "f"), b"n")
    shutil.rmtree(os.path.join(new, "var", "gone"))
    got = pairs(changes_dirs(new, old))
    assert got == [("C", "/etc"), ("C", "/etc/hostname"), ("A", "/usr"), ("A", "/usr/new"),
                   ("A", "/usr/new/f"), ("C", "/var"), ("D", "/var/gone")]


def test_no_parent_means_everything_added(trees):
    old, new = trees
    got = pairs(changes_dirs(new, None))
    assert ("A", "/etc") in got and ("A", "/var/gone/x") in got
    assert all(k == "A" for k, _path in got) and len(got) == 8
    assert pairs(changes_dirs(new, "")) == got


def test_second_granularity_mtime_rule(trees):
    old, new = trees
    f_old, f_new = os.path.join(old, "bin", "sh"), os.path.join(new, "bin", "sh")
    os.utime(f_old, ns=(0, 5 * 10 ** 9))
    os.utime(f_new, ns=(0, 5 * 10 ** 9 + 123))          # same second, old has 0 ns
    assert changes_dirs(new, old) == []
    os.utime(f_old, ns=(0, 5 * 10 ** 9 + 7))            # both have ns, and they differ
    assert pairs(changes_dirs(new, old)) == [("C", "/bin"), ("C", "/bin/sh")]
    os.utime(f_old, ns=(0, 6 * 10 ** 9))                # another second
    assert pairs(changes_dirs(new, old)) == [("C", "/bin"), ("C", "/bin/sh")]


def test_directory_mtime_and_size_are_ignored(trees):
    old, new = trees
    os.utime(os.path.join(new, "etc"), ns=(0, 1))
    assert changes_dirs(new, old) == []
    os.chmod(os.path.join(new, "etc"), 0o700)
    assert pairs(changes_dirs(new, old)) == [("C", "/etc")]


def test_mode_and_type_changes(trees):
    old, new = trees
    os.chmod(os.path.join(new, "etc", "same"), 0o600)
    os.unlink(os.path.join(new, "bin", "sh"))
    os.mkdir(os.path.join(new, "bin", "sh"))
    write(os.path.join(new, "bin", "sh", "inner"))
    shutil.rmtree(os.path.join(new, "var"))
    write(os.path.join(new, "var"), b"now a file")
    got = pairs(changes_dirs(new, old))
    # A directory that became a file: no deletions reported below it.
    assert got == [("C", "/bin"), ("C", "/bin/sh"), ("A", "/bin/sh/inner"),
                   ("C", "/etc"), ("C", "/etc/same"), ("C", "/var")]


def test_same_inode_is_pruned(tmp_path):
    # Hard links share an inode: a tree of hard links to the old tree has no
    # changes even where the stat data (nlink, ctime) moved.
    old = tmp_path / "old"
    write(str(old / "d" / "f"), b"x")
    new = tmp_path / "new"
    (new / "d").mkdir(parents=True)
    os.link(str(old / "d" / "f"), str(new / "d" / "f"))
    os.chmod(str(old / "d" / "f"), 0o600)               # shared inode: same on both sides
    assert changes_dirs(str(new), str(old)) == []


@pytest.mark.skipif(not ROOT, reason="setting security.capability needs CAP_SETFCAP")
def test_capability_difference_is_a_change(trees):
    old, new = trees
    cap = b"\x01\x00\x00\x02\x00\x20\x00\x00" + b"\x00" * 12
    os.setxattr(os.path.join(new, "bin", "sh"), "security.capability", cap)
    assert pairs(changes_dirs(new, old)) == [("C", "/bin"), ("C", "/bin/sh")]


def test_paths_sorted_bytewise(tmp_path):
    new = tmp_path / "new"
    write(str(new / "a" / "b"))
    write(str(new / "a.txt"))
    assert pairs(changes_dirs(str(new), None)) == [("A", "/a"), ("A", "/a.txt"), ("A", "/a/b")]


def test_missing_tree_is_a_graphdriver_error(tmp_path):
    with pytest.raises(GraphDriverError, match="nope"):
        changes_dirs(str(tmp_path / "nope"), None)


def test_changes_size_counts_hard_links_once(tmp_path):
    root = tmp_path / "r"
    write(str(root / "a"), b"x" * 100)
    os.link(str(root / "a"), str(root / "b"))
    write(str(root / "d" / "c"), b"y" * 10)
    changes = [Change("/a", "A"), Change("/b", "A"), Change("/d", "C"),
               Change("/d/c", "C"), Change("/gone", "D"), Change("/missing", "A")]
    assert changes_size(str(root), changes) == 110


def test_graphtest_changes_shape(tmp_path):
    # Docker's graphtest "Changes": 20 files, a third rewritten, a third
    # added, a third deleted -> 21 changes (the parent directory's C).
    old, new = tmp_path / "old", tmp_path / "new"
    for i in range(20):
        write(str(old / "dir" / ("file-%d" % i)), b"x" * 64, 10 ** 18)
    shutil.copytree(str(old), str(new))
    for i in range(20):
        p = str(new / "dir" / ("file-%d" % i))
        if i % 3 == 0:
            write(p, b"y" * 65)
        elif i % 3 == 1:
            os.unlink(p)
        else:
            write(str(new / "dir" / ("new-%d" % i)), b"z")
    got = changes_dirs(str(new), str(old))
    assert len(got) == 21 and got[0] == Change("/dir", "C")


def test_aufs_changes(tmp_path):
    lower, rw = tmp_path / "lower", tmp_path / "rw"
    write(str(lower / "etc" / "passwd"), b"p")
    write(str(lower / "etc" / "group"), b"g")
    write(str(rw / "etc" / "passwd"), b"changed")
    write(str(rw / "etc" / ".wh.group"))
    write(str(rw / ".wh..wh.aufs"))
    write(str(rw / "new"))
    got = pairs(aufs_changes([str(lower)], str(rw)))
    assert got == [("C", "/etc"), ("D", "/etc/group"), ("C", "/etc/passwd"), ("A", "/new")]


def _overlay_layers(tmp_path):
    """Two lowers (the nearer one with a whiteout and an opaque dir) and an
    upper with every kind of change, as overlay writes them."""
    t = 10 ** 18
    low, mid, up = tmp_path / "low", tmp_path / "mid", tmp_path / "up"
    for rel in ("etc/passwd", "etc/group", "etc/same", "opq/old", "opq/sub/deep", "var/a",
                "var/sub/b", "was-dir/x", "hidden/h"):
        write(str(low / rel), rel.encode(), t)
    os.makedirs(str(mid / "var"))
    os.mknod(str(mid / "hidden"), 0o20000, 0)            # mid deleted hidden/
    write(str(mid / "var" / "mid"), b"m", t)
    write(str(up / "etc" / "passwd"), b"changed", t)      # content
    write(str(up / "etc" / "same"), b"etc/same", t)       # copied up, unchanged
    os.chmod(str(up / "etc"), 0o700)                      # dir metadata
    os.mknod(str(up / "etc" / "group"), 0o20000, 0)       # deleted
    os.mknod(str(up / "etc" / "never-was"), 0o20000, 0)   # whiteout of nothing
    write(str(up / "opq" / "sub" / "new"), b"n", t)
    os.setxattr(str(up / "opq"), "trusted.overlay.opaque", b"y")
    write(str(up / "was-dir"), b"file now", t)
    write(str(up / "hidden" / "again"), b"a", t)          # over mid's whiteout
    write(str(up / "brand" / "new" / "f"), b"f", t)
    os.mknod(str(up / "brand" / "wh"), 0o20000, 0)        # hidden in a new dir
    os.makedirs(str(up / "var" / "sub"))                  # a parent, only
    os.utime(str(up / "var"), ns=(t, t))
    return str(up), [str(mid), str(low)]


@pytest.mark.skipif(not ROOT, reason="overlay whiteouts are character devices: mknod needs root")
def test_upper_changes_equal_the_union_walk(tmp_path):
    """upper_changes (the upper dir alone) against union_changes, which walks
    the whole of both trees as the kernel would show them."""
    upper, lowers = _overlay_layers(tmp_path)
    got = pairs(upper_changes(upper, lowers))
    assert got == pairs(union_changes(Union([upper] + lowers), Union(lowers)))
    assert got == [("A", "/brand"), ("A", "/brand/new"), ("A", "/brand/new/f"),
                   ("C", "/etc"), ("D", "/etc/group"), ("C", "/etc/passwd"),
                   ("A", "/hidden"), ("A", "/hidden/again"),
                   ("C", "/opq"), ("D", "/opq/old"), ("C", "/opq/sub"), ("D", "/opq/sub/deep"),
                   ("A", "/opq/sub/new"), ("C", "/was-dir")]


@pytest.mark.skipif(not ROOT, reason="overlay xattrs are trusted.*: setting them needs root")
def test_upper_changes_refuse_redirects(tmp_path):
    upper, lowers = _overlay_layers(tmp_path)
    os.makedirs(os.path.join(upper, "moved"))
    os.setxattr(os.path.join(upper, "moved"), "trusted.overlay.redirect", b"/var")
    with pytest.raises(NeedsMount):
        upper_changes(upper, lowers)


@pytest.mark.skipif(not ROOT, reason="overlay whiteouts are character devices: mknod needs root")
def test_upper_changes_by_fuse_overlayfs_rules(tmp_path):
    """fuse-overlayfs also reads .wh.<name> files and .wh..wh..opq, in the
    upper dir and in the lowers, and never shows a .wh. name."""
    upper, lowers = _overlay_layers(tmp_path)
    write(os.path.join(upper, "var", ".wh.a"))                  # a deletion, as a file
    write(os.path.join(upper, "etc", ".wh..wh..opq"))           # etc/ made opaque
    write(os.path.join(lowers[0], ".wh.was-dir"))               # mid deleted was-dir/
    write(os.path.join(lowers[1], "etc", "only-below"))         # hidden by the opaque etc/
    got = pairs(upper_changes(upper, lowers, FUSE_OVERLAYFS))
    assert got == pairs(union_changes(Union([upper] + lowers, FUSE_OVERLAYFS),
                                      Union(lowers, FUSE_OVERLAYFS)))
    assert ("D", "/var/a") in got and ("D", "/etc/only-below") in got and ("A", "/was-dir") in got
    assert not [p for k, p in got if ".wh." in p]
    # the kernel shows those files as files
    assert ("A", "/var/.wh.a") in pairs(upper_changes(upper, lowers))
