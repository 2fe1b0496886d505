"""overlay (v1): a read-only source, its layers read from the directories.

A store laid out as Docker's overlay driver does, made by hand: image layers
are whole ``root/`` trees (a child's files hard links to its parent's), a
container layer is ``lower-id`` + ``upper/`` over the image's root/.
"""

import io
import os
import tarfile

import pytest

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import (
    GraphDriverError, LayerNotFound, new, registered)
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.changes import Union

ROOT = os.geteuid() == 0
BASE, CHILD, RW = "a" * 64, "b" * 64, "c" * 64


def write(path, data=b"x"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def tree(path):
    out = []
    for dirpath, dirnames, filenames in os.walk(path):
        out += [os.path.relpath(os.path.join(dirpath, n), path) for n in dirnames + filenames]
    return sorted(out)


@pytest.fixture
def home(tmp_path):
    h = tmp_path / "overlay"
    write(str(h / BASE / "root" / "etc" / "passwd"), b"root:x:0:0\n")
    write(str(h / BASE / "root" / "bin" / "sh"), b"sh")
    # the child image layer: the parent's root/ as hard links, then its tar
    write(str(h / CHILD / "root" / "etc" / "motd"), b"hi\n")
    os.link(str(h / BASE / "root" / "etc" / "passwd"), str(h / CHILD / "root" / "etc" / "passwd"))
    os.makedirs(str(h / CHILD / "root" / "bin"))
    os.link(str(h / BASE / "root" / "bin" / "sh"), str(h / CHILD / "root" / "bin" / "sh"))
    os.makedirs(str(h / RW / "upper"))
    os.makedirs(str(h / RW / "work"))
    (h / RW / "lower-id").write_text(CHILD)
    write(str(h / RW / "upper" / "kept"), b"kept\n")
    return str(h)


def test_a_source_only(home):
    assert "overlay" not in registered()
    drv = new("overlay", home, read_only=True)
    assert sorted(drv.layer_ids()) == [BASE, CHILD, RW]
    assert drv.exists(CHILD) and not drv.exists("d" * 64)


def test_writes_refused_when_read_only(home):
    drv = new("overlay", home, read_only=True)
    before = tree(home)
    for call in (lambda: drv.create("d" * 64), lambda: drv.create_read_write("d" * 64, CHILD),
                 lambda: drv.remove(RW), lambda: drv.apply_diff(RW, CHILD, io.BytesIO(b""))):
        with pytest.raises(GraphDriverError, match="read-only"):
            call()
    assert tree(home) == before


def test_opened_writable_it_still_only_reads_but_removes(home):
    drv = new("overlay", home)
    with pytest.raises(GraphDriverError, match="Engine 24"):
        drv.create("d" * 64, CHILD)
    with pytest.raises(GraphDriverError, match="Engine 24"):
        drv.apply_diff(RW, CHILD, io.BytesIO(b""))
    drv.remove(RW)      # for a migration's remove_source, as Docker's Remove
    assert not os.path.exists(os.path.join(home, RW)) and drv.exists(CHILD)


def test_unknown_option_refused(home):
    with pytest.raises(GraphDriverError, match="unknown option"):
        new("overlay", home, {"overlay.size": "1G"}, read_only=True)


def test_image_layers_are_their_root(home):
    drv = new("overlay", home, read_only=True)
    assert drv.get(CHILD) == os.path.join(home, CHILD, "root")
    assert drv.diff_dir(BASE)[0] == os.path.join(home, BASE, "root")
    assert drv.metadata(CHILD) == {"RootDir": os.path.join(home, CHILD, "root")}
    # the hard-linked parent files are the same inodes: pruned, not changes
    assert [str(c) for c in drv.changes(CHILD, BASE)] == ["C /etc", "A /etc/motd"]
    with drv.diff(CHILD, BASE) as stream:
        names = tarfile.open(fileobj=io.BytesIO(stream.read())).getnames()
    assert names == ["etc", "etc/motd"]
    assert drv.diff_size(CHILD, BASE) == 3


def test_container_layer_is_read_not_mounted(home):
    drv = new("overlay", home, read_only=True)
    with pytest.raises(GraphDriverError, match="container layer"):
        drv.get(RW)
    assert drv.metadata(RW)["LowerDir"] == os.path.join(home, CHILD, "root")
    assert drv.diff_dir(RW)[0] == os.path.join(home, RW, "upper")
    assert [str(c) for c in drv.changes(RW, CHILD)] == ["A /kept"]
    assert len(drv.changes(RW)) == 6     # everything, from both directories
    with pytest.raises(LayerNotFound):
        drv.changes("d" * 64)


@pytest.mark.skipif(not ROOT, reason="overlay whiteouts are character devices and trusted.* xattrs: needs root")
def test_union_whiteouts_opaque_and_redirects(home, tmp_path):
    upper = os.path.join(home, RW, "upper")
    os.mknod(os.path.join(upper, "etc"), 0o20000, 0)       # /etc deleted
    write(os.path.join(upper, "bin", "new"))
    os.setxattr(os.path.join(upper, "bin"), "trusted.overlay.opaque", b"y")   # /bin recreated
    drv = new("overlay", home, read_only=True)
    assert [str(c) for c in drv.changes(RW, CHILD)] == [
        "C /bin", "A /bin/new", "D /bin/sh", "D /etc", "A /kept"]
    union = Union([upper, os.path.join(home, CHILD, "root")])
    assert union.path("/etc/passwd") is None and union.path("/bin/sh") is None
    assert union.path("/kept") == os.path.join(upper, "kept")
    with drv.diff(RW, CHILD) as stream:
        names = tarfile.open(fileobj=io.BytesIO(stream.read())).getnames()
    assert names == ["bin", "bin/new", "bin/.wh.sh", ".wh.etc", "kept"]
    # a kernel with redirect_dir on wrote what only it can read: refused
    os.setxattr(os.path.join(upper, "bin"), "trusted.overlay.redirect", b"/elsewhere")
    with pytest.raises(GraphDriverError, match="redirect"):
        drv.changes(RW, CHILD)
