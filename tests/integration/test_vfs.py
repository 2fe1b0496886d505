"""vfs: Docker's layout, and a child layer that is the copy Docker makes."""

import json
import os
import socket
import stat
import tarfile

import pytest

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import (
    GraphDriverError, LayerExists, LayerNotFound, QuotaError, new)
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import copy as gcopy
from tests.support import dockerd as dockerd_support
from tests.support.backends import backend_home, quota_missing

DRIVER = "vfs"
CAP = "security.capability"
# a valid VFS_CAP_REVISION_2 blob: cap_net_bind_service=ep
CAP_VALUE = bytes.fromhex("0100000200040000000000000000000000000000")


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


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_layout_is_dockers(drv, home):
    drv.create("A")
    drv.create_read_write("B", "A")
    assert mode(home) == 0o710
    assert mode(os.path.join(home, "dir")) == 0o710
    for n in "AB":
        p = os.path.join(home, "dir", n)
        st = os.lstat(p)
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o755
        assert (st.st_uid, st.st_gid) == (0, 0)
    assert sorted(os.listdir(os.path.join(home, "dir"))) == ["A", "B"]
    # Docker probes project quota on every backing fs: the node stays
    dev = os.path.join(home, "backingFsBlockDev")
    st = os.lstat(dev)
    assert stat.S_ISBLK(st.st_mode) and st.st_rdev == os.stat(home).st_dev
    assert sorted(os.listdir(home)) == ["backingFsBlockDev", "dir"]
    assert drv.get("B") == os.path.join(home, "dir", "B")
    assert drv.metadata("B") == {"SourceDir": os.path.join(home, "dir", "B")}
    assert drv.status() == []


def test_layer_root_mode_ignores_umask(drv, home):
    old = os.umask(0o077)
    try:
        drv.create("A")
    finally:
        os.umask(old)
    assert mode(drv.get("A")) == 0o755


def populate(root):
    """Every kind of entry DirCopy copies, with metadata, and xattrs it keeps
    (security.capability) and leaves behind (user.*, trusted.*)."""
    def p(*parts):
        return os.path.join(root, *parts)
    os.mkdir(p("etc"), 0o755)
    with open(p("etc", "hostname"), "w") as f:
        f.write("box\n")
    with open(p("suid"), "wb") as f:
        f.write(b"\x7fELF" + b"x" * 5000)
    os.chown(p("suid"), 1000, 1001)
    os.chmod(p("suid"), 0o4751)
    os.link(p("suid"), p("suid-link"))
    os.link(p("suid"), p("etc", "z-link"))
    with open(p("ping"), "wb") as f:
        f.write(b"ping")
    os.setxattr(p("ping"), CAP, CAP_VALUE)
    os.setxattr(p("ping"), "user.note", b"kept")
    os.setxattr(p("ping"), "trusted.any", b"kept too")
    os.mkdir(p("tmp"), 0o1777)
    os.mkdir(p("opaque"), 0o700)
    os.setxattr(p("opaque"), "trusted.overlay.opaque", b"y")
    os.symlink("/etc/hostname", p("abs-link"))
    os.symlink("etc/../etc", p("rel-link"))
    os.lchown(p("rel-link"), 7, 8)
    os.mkfifo(p("fifo"), 0o640)
    os.mknod(p("null"), stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(p("loop9"), stat.S_IFBLK | 0o660, os.makedev(7, 9))
    open(p("empty"), "wb").close()
    with open(p("sparse"), "wb") as f:
        f.truncate(3 << 20)
        f.write(b"head")
    # times: files and directories, nanoseconds, set last (deepest first)
    os.utime(p("etc", "hostname"), ns=(1_000_000_001, 1_500_000_123))
    os.utime(p("abs-link"), ns=(2_000_000_002, 2_500_000_456), follow_symlinks=False)
    os.utime(p("etc"), ns=(3_000_000_003, 3_500_000_789))
    os.utime(root, ns=(4_000_000_004, 4_500_000_999))


def add_socket(path):
    # bind() takes at most 107 bytes of path: bind relative to the directory
    cwd = os.getcwd()
    os.chdir(os.path.dirname(path))
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(os.path.basename(path))
    finally:
        s.close()
        os.chdir(cwd)


def kept_by_docker(tree):
    """``entries`` as Docker's DirCopy leaves them: only security.capability."""
    return {rel: e[:6] + ({k: v for k, v in e[6].items() if k == CAP},) + e[7:]
            for rel, e in tree.items()}


def entries(root):
    """(relpath, type+mode, uid, gid, rdev, size, mtime_ns, xattrs, link, data)."""
    out = {}
    for path, st in gcopy.walk(root):
        rel = os.path.relpath(path, root)
        link = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
        data = None
        if stat.S_ISREG(st.st_mode):
            with open(path, "rb") as f:
                data = f.read()
        try:
            names = os.listxattr(path, follow_symlinks=False)
        except OSError:
            names = []
        xattrs = {n: os.getxattr(path, n, follow_symlinks=False) for n in sorted(names)}
        mtime = None if stat.S_ISDIR(st.st_mode) and rel == "." else st.st_mtime_ns
        out[rel] = (st.st_mode, st.st_uid, st.st_gid, st.st_rdev,
                    None if stat.S_ISDIR(st.st_mode) else st.st_size, mtime,
                    xattrs, link, data)
    return out


def test_child_is_dockers_copy(drv, home):
    drv.create("A")
    parent = drv.get("A")
    populate(parent)
    before = entries(parent)
    assert before["ping"][6] == {CAP: CAP_VALUE, "trusted.any": b"kept too",
                                 "user.note": b"kept"}
    drv.create("B", "A")
    child = drv.get("B")
    after = entries(child)
    assert entries(parent) == before             # the parent is untouched
    assert sorted(after) == sorted(before)
    expected = kept_by_docker(before)
    for rel in before:
        assert after[rel] == expected[rel], rel
    assert after["ping"][6] == {CAP: CAP_VALUE}
    assert after["opaque"][6] == {}              # vfs never copies the opaque xattr
    # the root's own metadata comes along too (Walk includes the root)
    assert os.stat(child).st_mtime_ns == os.stat(parent).st_mtime_ns
    # hard links stay links, among the copies only
    ino = os.lstat(os.path.join(child, "suid")).st_ino
    assert os.lstat(os.path.join(child, "suid-link")).st_ino == ino
    assert os.lstat(os.path.join(child, "etc", "z-link")).st_ino == ino
    assert os.lstat(os.path.join(child, "suid")).st_nlink == 3
    assert ino != os.lstat(os.path.join(parent, "suid")).st_ino
    # a copy, not a shared inode: writing the child leaves the parent alone
    with open(os.path.join(child, "etc", "hostname"), "w") as f:
        f.write("changed\n")
    with open(os.path.join(parent, "etc", "hostname")) as f:
        assert f.read() == "box\n"


def test_dir_copy_without_reflink(tmp_path):
    """On the host filesystem (no FICLONE): copy_file_range/sendfile path."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    populate(str(src))
    gcopy.dir_copy(str(src), str(dst))
    assert entries(str(dst)) == kept_by_docker(entries(str(src)))


def test_dir_copy_for_overlay_keeps_the_opaque_xattr_too(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    populate(str(src))
    gcopy.dir_copy(str(src), str(dst), xattrs=gcopy.OVERLAY_XATTRS)
    got = entries(str(dst))
    assert got["opaque"][6] == {"trusted.overlay.opaque": b"y"}
    assert got["ping"][6] == {CAP: CAP_VALUE}


def test_child_of_a_layer_with_a_socket_is_refused_as_docker_refuses(drv, home):
    drv.create("A")
    add_socket(os.path.join(drv.get("A"), "sock"))
    with pytest.raises(gcopy.CopyError) as err:
        drv.create("B", "A")
    assert os.path.join(drv.get("A"), "sock") in str(err.value)
    assert "a socket" in str(err.value) and "Docker cannot copy this layer" in str(err.value)
    assert not drv.exists("B")                   # all or nothing


def _image_layer(d, data_root, workdir):
    """Import a one-directory image into the vfs dockerd ``d``: the image
    layer's vfs directory."""
    tar = os.path.join(workdir, "t.tar")
    with tarfile.open(tar, "w") as t:
        ti = tarfile.TarInfo("t")
        ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 1700000000
        t.addfile(ti)
    d.docker("import", tar, "strata/vfs-copy:1")
    chain = json.loads(d.docker("inspect", "-f", "{{json .RootFS.Layers}}",
                                "strata/vfs-copy:1"))[0]            # one layer: ChainID = DiffID
    with open(os.path.join(data_root, "image", "vfs", "layerdb", "sha256",
                           chain.split(":", 1)[1], "cache-id")) as f:
        return f.read()


@pytest.mark.parametrize("engine", sorted(dockerd_support.ENGINES))
def test_child_equals_the_one_dockerd_makes(engine, home, tmp_path):
    """dockerd makes a container (its init layer, then its RW layer: two
    DirCopy runs) over an image layer we filled with every kind of entry and
    xattr; our child of the same layer must hold what dockerd's holds. A
    socket in the layer: dockerd refuses the container, we refuse the child."""
    reason = dockerd_support.available(engine)
    if reason:
        pytest.skip(reason)
    data_root = os.path.dirname(home)
    drv = new(DRIVER, home)
    with dockerd_support.dockerd(str(tmp_path / "engine"), storage_driver="vfs",
                                 data_root=data_root, engine=engine) as d:
        parent = _image_layer(d, data_root, str(tmp_path))
        populate(os.path.join(drv.get(parent), "t"))
        cid = d.docker("create", "--network", "none", "strata/vfs-copy:1", "/x").strip()
        with open(os.path.join(data_root, "image", "vfs", "layerdb", "mounts", cid,
                               "mount-id")) as f:
            theirs = entries(os.path.join(drv.get(f.read()), "t"))
        drv.create("ours", parent)
        assert entries(os.path.join(drv.get("ours"), "t")) == theirs
        assert theirs["ping"][6] == {CAP: CAP_VALUE}       # what Docker keeps

        add_socket(os.path.join(drv.get(parent), "t", "sock"))
        out = d.docker("create", "--network", "none", "strata/vfs-copy:1", "/x", check=False)
        assert out == "" and "invalid argument" in d.log_tail(3), d.log_tail(3)
        with pytest.raises(gcopy.CopyError):
            drv.create("ours-2", parent)
        assert not drv.exists("ours-2")


def test_dir_copy_of_a_very_deep_tree(tmp_path):
    """Deeper than Python's recursion limit: the walk is iterative."""
    import sys
    depth = sys.getrecursionlimit() + 100
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    path = src
    os.mkdir(path)
    for _ in range(depth):                 # os.makedirs itself recurses
        path = os.path.join(path, "d")
        os.mkdir(path)
    with open(os.path.join(path, "leaf"), "w") as f:
        f.write("leaf")
    try:
        gcopy.dir_copy(src, dst)
        with open(os.path.join(dst, *(["d"] * depth + ["leaf"]))) as f:
            assert f.read() == "leaf"
    finally:
        for top in (src, dst):             # rmtree recurses too
            leaf = os.path.join(top, *(["d"] * depth))
            if os.path.exists(os.path.join(leaf, "leaf")):
                os.unlink(os.path.join(leaf, "leaf"))
            while leaf != top and os.path.isdir(leaf):
                os.rmdir(leaf)
                leaf = os.path.dirname(leaf)


def test_dir_copy_hardlink_mode(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "f").write_bytes(b"x")
    gcopy.dir_copy(str(src), str(dst), mode=gcopy.HARDLINK)
    assert os.lstat(str(dst / "f")).st_ino == os.lstat(str(src / "f")).st_ino


def test_dir_copy_error_names_the_entry(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "f").write_bytes(b"x")
    dst.mkdir()
    (dst / "f").write_bytes(b"already here")      # O_EXCL: never overwritten
    with pytest.raises(gcopy.CopyError) as err:
        gcopy.dir_copy(str(src), str(dst))
    assert str(src / "f") in str(err.value)
    assert (dst / "f").read_bytes() == b"already here"


def test_edge_cases(drv, home):
    drv.create("A")
    drv.put("A")                    # no-op, also when never got
    drv.put("missing")
    drv.remove("missing")           # no-op
    with pytest.raises(LayerNotFound):
        drv.get("missing")
    with pytest.raises(LayerNotFound):
        drv.create("B", "missing")
    assert not drv.exists("B")
    with pytest.raises(LayerExists):
        drv.create("A")
    with pytest.raises(GraphDriverError):
        drv.create("C", None, {"size": "10M"})      # read-only layers take no opts
    with pytest.raises(GraphDriverError):
        drv.create_read_write("C", None, {"bogus": "1"})
    assert not drv.exists("C")
    drv.remove("A")
    assert not drv.exists("A")


def test_size_quota_exactly_where_the_kernel_has_project_quota(drv, home):
    """With CONFIG_XFS_QUOTA the backend is mounted with pquota and vfs must
    take a size; without it, vfs refuses one with Docker's error."""
    if quota_missing(DRIVER) is None:
        assert drv._quota is not None, "pquota is mounted but vfs found no project quota"
        drv.create_read_write("Q", None, {"size": "50M"})
        assert drv.exists("Q")
        new(DRIVER, home, {"size": "1G"}).cleanup()
        return
    with pytest.raises(QuotaError) as err:
        drv.create_read_write("Q", None, {"size": "50M"})
    assert "Filesystem does not support, or has not enabled quotas" in str(err.value)
    assert not drv.exists("Q")
    with pytest.raises(QuotaError):
        new(DRIVER, home, {"size": "1G"})
