"""overlay2: Docker's layout, real mounts, shared refcounts, limits, diffs."""

import io
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile

import pytest

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import (
    GraphDriverError, LayerExists, LayerNotFound, NotSupported, new)
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import (
    changes, overlay2 as ov)
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.mount import (
    mounts, mounts_under)
from tests.support.backends import BACKENDS, Unavailable, backend_home
from tests.support.loop import loop_filesystem

BUILD = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), ".build")
LID = re.compile(r"^[A-Z2-7]{26}$")
LOWER = re.compile(r"^l/[A-Z2-7]{26}(:l/[A-Z2-7]{26})*$")

DRIVER = "overlay2"


@pytest.fixture
def home(tmp_path):
    with backend_home(DRIVER, tmp_path) as (path, _):
        yield path


@pytest.fixture
def drv(home):
    try:
        d = new(DRIVER, home)
    except NotSupported as e:
        pytest.skip(str(e))
    try:
        yield d
    finally:
        d.cleanup()


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def read(path):
    with open(path) as f:
        return f.read()


def overlay_mount(path):
    real = os.path.realpath(path)
    found = [m for m in mounts() if m.mountpoint == real]
    return found[-1] if found else None


def chain(drv, names, rw_top=True):
    parent = None
    for i, name in enumerate(names):
        if rw_top and i == len(names) - 1:
            drv.create_read_write(name, parent)
        else:
            drv.create(name, parent)
        parent = name


def layout_shape(home, layer):
    """What a layer dir holds, minus content: names -> (kind, mode, shape)."""
    d = os.path.join(home, layer)
    shape = {".": ("dir", mode(d))}
    for name in sorted(os.listdir(d)):
        p = os.path.join(d, name)
        st = os.lstat(p)
        if stat.S_ISDIR(st.st_mode):
            shape[name] = ("dir", stat.S_IMODE(st.st_mode))
        else:
            text = read(p)
            if name == "link":
                form = "LID" if LID.match(text) else text
            elif name == "lower":
                form = "lowers:%d" % len(text.split(":")) if LOWER.match(text) else text
            else:
                form = text
            shape[name] = ("file", stat.S_IMODE(st.st_mode), form)
    return shape


# --- layout ---------------------------------------------------------------

def test_layout_is_dockers(drv, home):
    chain(drv, ["A", "B", "C"])
    assert mode(home) == 0o710
    assert mode(os.path.join(home, "l")) == 0o700
    lids = {n: read(os.path.join(home, n, "link")) for n in "ABC"}
    for n, lid in lids.items():
        assert LID.match(lid), lid
        link = os.path.join(home, "l", lid)
        assert os.readlink(link) == "../%s/diff" % n
        assert os.path.samefile(link, os.path.join(home, n, "diff"))
    assert sorted(os.listdir(os.path.join(home, "l"))) == sorted(lids.values())
    assert layout_shape(home, "A") == {
        ".": ("dir", 0o710), "diff": ("dir", 0o755),
        "link": ("file", 0o644, "LID"), "committed": ("file", 0o600, "")}
    assert layout_shape(home, "B") == {
        ".": ("dir", 0o710), "diff": ("dir", 0o755), "work": ("dir", 0o700),
        "link": ("file", 0o644, "LID"), "lower": ("file", 0o644, "lowers:1"),
        "committed": ("file", 0o600, "")}
    assert layout_shape(home, "C") == {
        ".": ("dir", 0o710), "diff": ("dir", 0o755), "work": ("dir", 0o700),
        "link": ("file", 0o644, "LID"), "lower": ("file", 0o644, "lowers:2")}
    # nearest parent first, as l/<LID> paths relative to the home
    assert read(os.path.join(home, "B", "lower")) == "l/" + lids["A"]
    assert read(os.path.join(home, "C", "lower")) == "l/%s:l/%s" % (lids["B"], lids["A"])
    for n in "ABC":
        st = os.stat(os.path.join(home, n))
        assert (st.st_uid, st.st_gid) == (0, 0)
    # nothing else in the home: no temp files, no probes left behind
    extra = set(os.listdir(home)) - {"A", "B", "C", "l", "backingFsBlockDev"}
    assert extra == set()


def test_layout_matches_a_real_dockerd(tmp_path, home):
    """dockerd 20.10 writes overlay2 layers; ours have the same shape."""
    from tests.support import dockerd as dockerd_mod
    reason = dockerd_mod.available()
    if reason:
        pytest.skip(reason)
    data_root = os.path.join(os.path.dirname(home), "docker")
    rootfs = tmp_path / "rootfs.tar"
    with tarfile.open(str(rootfs), "w") as tf:
        info = tarfile.TarInfo("hello.txt")
        data = b"hello\n"
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    try:
        with dockerd_mod.dockerd(str(tmp_path / "d"), storage_driver=DRIVER,
                                 data_root=data_root) as d:
            image = d.docker("import", str(rootfs), "strata/layout:1").strip()
            d.docker("create", "--network", "none", "--name", "strata-layout", image, "/x")
            assert image
    except dockerd_mod.DockerdUnavailable as e:
        pytest.skip(str(e))
    docker_home = os.path.join(data_root, "overlay2")
    layers = [n for n in os.listdir(docker_home) if n not in ("l", "backingFsBlockDev")]
    # image layer (base, committed), <rw>-init (committed), <rw> container layer
    init = [n for n in layers if n.endswith("-init")]
    assert len(init) == 1 and len(layers) == 3, layers
    rw = init[0][:-len("-init")]
    base = [n for n in layers if n not in (rw, init[0])][0]
    drv = new(DRIVER, home)
    try:
        chain(drv, ["A", "B", "C"])
        for ours, docker in (("A", base), ("B", init[0]), ("C", rw)):
            assert layout_shape(home, ours) == layout_shape(docker_home, docker), docker
        assert mode(docker_home) == mode(home)
        assert mode(os.path.join(docker_home, "l")) == mode(os.path.join(home, "l"))
        for layer in (base, init[0], rw):
            lid = read(os.path.join(docker_home, layer, "link"))
            assert os.readlink(os.path.join(docker_home, "l", lid)) == "../%s/diff" % layer
    finally:
        drv.cleanup()


def test_metadata_like_moby(drv, home):
    chain(drv, ["A", "B", "C"])
    meta = drv.metadata("C")
    assert meta == {
        "LowerDir": "%s/B/diff:%s/A/diff" % (home, home),
        "UpperDir": "%s/C/diff" % home,
        "WorkDir": "%s/C/work" % home,
        "MergedDir": "%s/C/merged" % home,
    }
    assert "LowerDir" not in drv.metadata("A")
    with pytest.raises(LayerNotFound):
        drv.metadata("nope")


def test_status_like_docker_info(drv, home):
    status = dict(drv.status())
    assert list(status) == ["Backing Filesystem", "Supports d_type", "Native Overlay Diff",
                            "userxattr"]
    assert status["Backing Filesystem"] == "xfs"
    assert status["Supports d_type"] == "true"
    assert status["Native Overlay Diff"] == ("true" if drv.naive_diff_reason() is None
                                             else "false")
    assert status["userxattr"] == "false"
    assert not [n for n in os.listdir(home) if n.startswith("opaque-bug-check")]


# --- mounts -----------------------------------------------------------------

def test_get_mounts_with_mobys_options(drv, home):
    chain(drv, ["A", "B", "C"])
    lid = {n: read(os.path.join(home, n, "link")) for n in "AB"}
    assert drv.get("A") == os.path.join(home, "A", "diff")     # base: no mount
    assert overlay_mount(os.path.join(home, "A", "diff")) is None
    top = drv.get("C")
    assert top == os.path.join(home, "C", "merged")
    m = overlay_mount(top)
    assert m is not None and m.fstype == "overlay"
    opts = m.super_options.split(",")
    assert "lowerdir=%s/l/%s:%s/l/%s" % (home, lid["B"], home, lid["A"]) in opts
    assert "upperdir=%s/C/diff" % home in opts
    assert "workdir=%s/C/work" % home in opts
    index = "/sys/module/overlay/parameters/index"
    if os.path.exists(index):
        data = drv._mount_options("C", os.path.join(home, "C"),
                                  read(os.path.join(home, "C", "lower")), False)
        assert data.startswith("index=off,lowerdir=")
        if read(index).strip() == "Y":      # the kernel shows it only when not default
            assert "index=off" in opts
    assert mode(top) == 0o755          # the root of the union is diff/'s
    mid = drv.get("B")                  # committed: read-only, no upper
    m = overlay_mount(mid)
    assert "lowerdir=%s/B/diff:%s/l/%s" % (home, home, lid["A"]) in m.super_options.split(",")
    assert "upperdir" not in m.super_options
    with pytest.raises(OSError):
        open(os.path.join(mid, "x"), "w").close()
    drv.put("B")
    drv.put("C")
    assert overlay_mount(top) is None
    assert not os.path.exists(top)      # merged/ is removed by Put


def _get_in_other_process(home, layer):
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver "
            "import new\n"
            "print(new(%r, %r).get(%r))\n" % (BUILD, DRIVER, home, layer))
    out = subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.PIPE,
                         universal_newlines=True).stdout
    return out.strip()


def _put_in_other_process(home, layer):
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver "
            "import new\n"
            "new(%r, %r).put(%r)\n" % (BUILD, DRIVER, home, layer))
    subprocess.run([sys.executable, "-c", code], check=True)


def test_refcounts_are_shared_between_processes(drv, home):
    chain(drv, ["A", "B"])
    merged = _get_in_other_process(home, "B")      # another process mounts
    assert merged == os.path.join(home, "B", "merged")
    assert overlay_mount(merged) is not None
    assert drv.get("B") == merged                  # we reuse its mount
    drv.put("B")
    assert overlay_mount(merged) is not None, "unmounted while another process holds it"
    _put_in_other_process(home, "B")               # the last user lets go
    assert overlay_mount(merged) is None
    assert not os.path.exists(merged)


def test_page_size_fallback_mounts_with_relative_paths(tmp_path):
    """Lowers whose absolute paths exceed a page are mounted as l/ paths."""
    try:
        backend = BACKENDS[DRIVER](tmp_path)
        root, _ = backend.__enter__()
    except Unavailable as e:
        pytest.skip("overlay2 backend unavailable: %s" % e)
    try:
        home = os.path.join(os.path.dirname(root), "h" * 200, "overlay2")
        drv = new(DRIVER, home)
        try:
            names = ["layer%02d" % i for i in range(20)]
            chain(drv, names)
            with open(os.path.join(home, names[0], "diff", "bottom"), "w") as f:
                f.write("from the bottom layer")
            lowers = read(os.path.join(home, names[-1], "lower"))
            absolute = drv._mount_options(names[-1], os.path.join(home, names[-1]), lowers,
                                          False)
            assert len(absolute) > ov.PAGE_SIZE, "test layers too short to overflow a page"
            cwd = os.getcwd()
            top = drv.get(names[-1])
            assert os.getcwd() == cwd
            assert overlay_mount(top) is not None
            assert read(os.path.join(top, "bottom")) == "from the bottom layer"
            with open(os.path.join(top, "new"), "w") as f:
                f.write("up")
            assert read(os.path.join(home, names[-1], "diff", "new")) == "up"
            drv.put(names[-1])
            assert overlay_mount(top) is None
        finally:
            drv.cleanup()
    finally:
        backend.__exit__(None, None, None)


def test_128_lower_limit(drv, home):
    names = ["L%03d" % i for i in range(ov.MAX_DEPTH + 1)]
    chain(drv, names, rw_top=False)     # the last one has 128 lowers
    last = names[-1]
    assert len(read(os.path.join(home, last, "lower")).split(":")) == ov.MAX_DEPTH
    links_before = sorted(os.listdir(os.path.join(home, "l")))
    with pytest.raises(ov.MaxDepthExceeded) as err:
        drv.create("too-deep", last)
    assert "too-deep" in str(err.value) and "max depth exceeded" in str(err.value)
    assert not os.path.exists(os.path.join(home, "too-deep"))
    assert sorted(os.listdir(os.path.join(home, "l"))) == links_before
    # the deepest allowed layer still mounts (through the page-size fallback)
    top = drv.get(last)
    assert sorted(os.listdir(top)) == []
    drv.put(last)


# --- idempotence and errors -------------------------------------------------

def test_put_remove_get_edge_cases(drv, home):
    chain(drv, ["A", "B"])
    drv.put("B")                 # never mounted: no-op
    drv.put("A")                 # base layer: no-op
    drv.put("missing")           # no such layer: no-op
    drv.remove("missing")        # no-op
    with pytest.raises(LayerNotFound):
        drv.get("missing")
    with pytest.raises(LayerExists):
        drv.create("A")
    with pytest.raises(LayerNotFound):
        drv.create("orphan", "missing")
    assert not os.path.exists(os.path.join(home, "orphan"))
    with pytest.raises(GraphDriverError):
        drv.create("sized", "A", {"size": "10M"})
    assert not drv.exists("sized")
    assert len(os.listdir(os.path.join(home, "l"))) == 2


def test_remove_drops_link_and_unmounts(drv, home):
    chain(drv, ["A", "B"])
    lid = read(os.path.join(home, "B", "link"))
    merged = drv.get("B")
    drv.remove("B")
    assert overlay_mount(merged) is None
    assert not os.path.lexists(os.path.join(home, "l", lid))
    assert not drv.exists("B")
    assert drv.exists("A")


def test_cleanup_unmounts_everything(drv, home):
    chain(drv, ["A", "B", "C", "D"])
    for n in ("B", "C", "C", "D"):
        drv.get(n)
    assert len(mounts_under(home)) == 3
    drv.cleanup()
    assert mounts_under(home) == []
    assert drv._refs.active() == []
    assert drv.get("C") == os.path.join(home, "C", "merged")   # usable again
    drv.put("C")


# --- d_type ----------------------------------------------------------------

def _xfs_v4_in_kernel():
    import gzip
    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            return "# CONFIG_XFS_SUPPORT_V4 is not set" not in f.read()
    except OSError:
        return True


def test_refuses_a_filesystem_without_d_type(tmp_path):
    try:
        fs = loop_filesystem("xfs-noftype", size_mb=300)
        mnt = fs.__enter__()
    except subprocess.CalledProcessError as e:
        pytest.skip("cannot mount an xfs ftype=0 filesystem here: %s" % (
            "this kernel has no XFS v4 support (CONFIG_XFS_SUPPORT_V4 is not set) and "
            "XFS v5 always has ftype=1" if not _xfs_v4_in_kernel()
            else (e.stderr or str(e)).strip()))
    try:
        home = os.path.join(mnt, "overlay2")
        with pytest.raises(NotSupported) as err:
            new(DRIVER, home)
        assert "the backing xfs filesystem is formatted without d_type support" in str(err.value)
        assert "Reformat the filesystem with ftype=1 to enable d_type support." in str(err.value)
        assert not os.path.exists(home)
        assert [n for n in os.listdir(mnt) if n != "lost+found"] == []
    finally:
        fs.__exit__(None, None, None)


# --- diffs -------------------------------------------------------------------

def _norm(name):
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/") or "."


def _tar_names(stream):
    try:
        with tarfile.open(fileobj=io.BytesIO(stream.read()), mode="r:") as tf:
            return sorted(_norm(m.name) for m in tf.getmembers())
    finally:
        stream.close()


def test_native_diff_only_against_the_direct_parent(drv, home):
    if drv.naive_diff_reason() is not None:
        pytest.skip("this kernel forces the naive diff: %s" % drv.naive_diff_reason())
    parent = None
    for layer, name in (("A", "a"), ("B", "b")):
        drv.create(layer, parent)
        with open(os.path.join(drv.get(layer), name), "w") as f:
            f.write(name)
        drv.put(layer)
        parent = layer
    drv.create_read_write("C", "B")
    top = drv.get("C")
    with open(os.path.join(top, "c"), "w") as f:
        f.write("c")
    os.unlink(os.path.join(top, "a"))            # an overlay whiteout in C/diff
    drv.put("C")
    assert stat.S_ISCHR(os.lstat(os.path.join(home, "C", "diff", "a")).st_mode)
    assert drv.is_parent("C", "B") and not drv.is_parent("C", "A")
    assert drv.is_parent("A", "") and not drv.is_parent("B", "")
    # native: C/diff only, the whiteout device converted to .wh.a
    assert [n for n in _tar_names(drv.diff("C", "B")) if n != "."] == [".wh.a", "c"]
    # naive against the grandparent: B's file is a change too
    assert [n for n in _tar_names(drv.diff("C", "A")) if n != "."] == [".wh.a", "b", "c"]
    assert drv.diff_size("C", "B") == 1
    assert overlay_mount(os.path.join(home, "C", "merged")) is None


# --- changes(): the upper directory read against the naive walk -----------

def _write(path, data, mtime=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    if mtime is not None:
        os.utime(path, ns=(mtime, mtime), follow_symlinks=False)


def _base_tree(root):
    """Files that come from tars (whole-second mtimes), as layers do."""
    t = 1600000000 * 10 ** 9
    for rel in ("etc/hostname", "etc/keep", "etc/mode", "etc/owner", "etc/touched",
                "etc/gone", "bin/tool", "bin/capped", "var/dir/a", "var/dir/sub/b",
                "var/opaque/x", "var/opaque/sub/y", "var/renamed/r1", "var/renamed/deep/r2",
                "var/file-to-dir", "usr/share/doc/d1", "usr/share/doc/d2"):
        _write(os.path.join(root, rel), rel.encode(), t)
    os.mkdir(os.path.join(root, "var", "dir-to-file"))
    _write(os.path.join(root, "var", "dir-to-file", "z"), b"z", t)
    os.symlink("hostname", os.path.join(root, "etc", "link"))
    os.link(os.path.join(root, "bin", "tool"), os.path.join(root, "bin", "tool-hardlink"))


def _change_tree(root, lower_hard_links=True):
    """Every kind of change, made through the mounted layer as a container
    makes it: overlay copies up, whites out and makes opaque directories.
    ``lower_hard_links``: also link to a lower file that has two names."""
    _write(os.path.join(root, "etc", "hostname"), b"changed")
    os.chmod(os.path.join(root, "etc", "mode"), 0o600)                 # metadata only
    os.chown(os.path.join(root, "etc", "owner"), 1000, 1000)           # metadata only
    os.utime(os.path.join(root, "etc", "touched"), ns=(10 ** 18, 10 ** 18))
    os.unlink(os.path.join(root, "etc", "gone"))                       # whiteout
    shutil.rmtree(os.path.join(root, "var", "opaque"))                 # then made again:
    _write(os.path.join(root, "var", "opaque", "new"), b"n")           # an opaque dir
    shutil.move(os.path.join(root, "var", "renamed"), os.path.join(root, "var", "moved"))
    os.unlink(os.path.join(root, "var", "file-to-dir"))
    _write(os.path.join(root, "var", "file-to-dir", "inside"), b"i")
    shutil.rmtree(os.path.join(root, "var", "dir-to-file"))
    _write(os.path.join(root, "var", "dir-to-file"), b"now a file")
    if lower_hard_links:
        os.link(os.path.join(root, "bin", "tool"), os.path.join(root, "bin", "new-hardlink"))
    _write(os.path.join(root, "bin", "own"), b"own")
    os.link(os.path.join(root, "bin", "own"), os.path.join(root, "bin", "own-hardlink"))
    os.symlink("/nowhere", os.path.join(root, "etc", "new-link"))
    os.unlink(os.path.join(root, "etc", "link"))
    os.symlink("keep", os.path.join(root, "etc", "link"))
    _write(os.path.join(root, "new", "deep", "file"), b"f")
    os.setxattr(os.path.join(root, "bin", "capped"), "security.capability",
                b"\x01\x00\x00\x02\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00")
    shutil.rmtree(os.path.join(root, "usr", "share", "doc"))           # a whole dir away


def _naive(drv, id, parent):
    return [(c.kind, c.path) for c in ov.NaiveDiffDriver.changes(drv, id, parent)]


def _native(drv, id, parent):
    """drv.changes, checked to be the upper-dir read (not a fallback)."""
    assert drv._native(id, parent)
    got = [(c.kind, c.path) for c in drv.changes(id, parent)]
    upper = changes.upper_changes(os.path.join(drv.home, id, "diff"), drv._lower_dirs(id))
    assert got == [(c.kind, c.path) for c in upper]
    return got


@pytest.fixture
def native_drv(drv):
    if drv.naive_diff_reason() is not None:
        pytest.skip("this kernel forces the naive diff: %s" % drv.naive_diff_reason())
    return drv


def test_changes_from_the_upper_dir_equal_the_naive_walk(native_drv, home):
    drv = native_drv
    drv.create("A")
    _base_tree(drv.get("A"))
    drv.put("A")
    drv.create("B", "A")
    _change_tree(drv.get("B"))
    drv.put("B")
    upper = os.path.join(home, "B", "diff")
    # the upper dir holds what the test means to exercise
    assert stat.S_ISCHR(os.lstat(os.path.join(upper, "etc", "gone")).st_mode)
    assert os.getxattr(os.path.join(upper, "var", "opaque"), "trusted.overlay.opaque") == b"y"
    naive = _naive(drv, "B", "A")
    assert _native(drv, "B", "A") == naive
    kinds = dict((p, k) for k, p in naive)
    assert kinds["/etc/gone"] == "D" and kinds["/var/renamed"] == "D"
    assert kinds["/etc/mode"] == kinds["/etc/owner"] == kinds["/etc/touched"] == "C"
    assert kinds["/var/opaque/x"] == "D" and kinds["/var/opaque/new"] == "A"
    assert kinds["/var/moved/deep/r2"] == "A" and kinds["/bin/new-hardlink"] == "A"
    assert kinds["/bin/own-hardlink"] == "A"
    assert kinds["/bin/capped"] == "C" and "/etc/keep" not in kinds
    # a third layer over two (whiteouts and opaque dirs now in the lowers)
    drv.create_read_write("C", "B")
    top = drv.get("C")
    _write(os.path.join(top, "var", "opaque", "sub", "y"), b"back")    # under B's opaque dir
    _write(os.path.join(top, "etc", "gone"), b"back again")            # over B's whiteout
    shutil.rmtree(os.path.join(top, "var", "dir"))
    os.chmod(os.path.join(top, "var", "moved"), 0o700)
    drv.put("C")
    assert _native(drv, "C", "B") == _naive(drv, "C", "B")
    assert ("A", "/etc/gone") in _naive(drv, "C", "B")
    # and against a grandparent the walk answers (not the direct parent)
    assert not drv._native("C", "A")


def test_changes_of_an_applied_layer_equal_the_naive_walk(native_drv, home, tmp_path):
    drv = native_drv
    drv.create("A")
    _base_tree(drv.get("A"))
    drv.put("A")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in (("etc/.wh.gone", b""), ("var/opaque/.wh..wh..opq", b""),
                           ("var/opaque/fresh", b"f"), ("var/dir/sub/.wh.b", b""),
                           ("etc/hostname", b"from a tar"), ("newdir/.wh.nothing", b"")):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1700000000
            tf.addfile(info, io.BytesIO(data))
    drv.create("B", "A")
    drv.apply_diff("B", "A", io.BytesIO(buf.getvalue()))
    assert _native(drv, "B", "A") == _naive(drv, "B", "A")


def test_redirect_xattr_leaves_changes_to_the_walk(native_drv, home):
    """An upper dir written with redirect_dir on: the kernel follows the
    redirect, reading the directory cannot, so the mounts are walked."""
    drv = native_drv
    drv.create("A")
    _base_tree(drv.get("A"))
    drv.put("A")
    drv.create("B", "A")
    b = os.path.join(home, "B")
    merged = os.path.join(b, "merged")
    os.mkdir(merged)
    ov.mount("overlay", merged, "overlay", 0, "redirect_dir=on,lowerdir=%s,upperdir=%s,workdir=%s"
             % (os.path.join(home, "A", "diff"), os.path.join(b, "diff"), os.path.join(b, "work")))
    try:
        os.rename(os.path.join(merged, "var", "renamed"), os.path.join(merged, "var", "moved"))
    finally:
        ov.unmount(merged, 0)
        os.rmdir(merged)
    moved = os.path.join(b, "diff", "var", "moved")
    assert os.getxattr(moved, "trusted.overlay.redirect")       # the kernel wrote one
    assert not os.path.exists(os.path.join(moved, "deep"))      # and no copy
    naive = _naive(drv, "B", "A")
    assert ("A", "/var/moved/deep/r2") in naive       # the kernel's view, followed
    assert [(c.kind, c.path) for c in drv.changes("B", "A")] == naive


def _times(path):
    st = os.stat(path)
    return st.st_mtime_ns, sorted(os.listdir(path))   # reading it moves atime


def test_support_and_native_diff_probes_leave_the_home_as_it_was(drv, home, tmp_path):
    """Check mode opens drivers read-only: their probes (the test mount,
    d_type, the native-diff mounts) must leave the data-root untouched."""
    parent = os.path.dirname(home)
    before = (_times(home), _times(parent), [m.mountpoint for m in mounts()])
    ov._native_diff_cache.clear()
    ro = new(DRIVER, home, read_only=True)
    status = dict(ro.status())
    assert status["Native Overlay Diff"] in ("true", "false")
    assert (_times(home), _times(parent), [m.mountpoint for m in mounts()]) == before
    # a home that does not exist yet is probed in its nearest parent
    missing = os.path.join(str(tmp_path), "no", "home")
    before = _times(str(tmp_path))
    ro = new(DRIVER, missing, read_only=True)
    ro.status()
    assert _times(str(tmp_path)) == before and not os.path.exists(os.path.dirname(missing))


def test_failed_relative_mount_is_an_error_and_counts_nothing(drv, home):
    """128 lowers are mounted from the home in a thread of its own cwd; a
    mount it cannot make (a lower's l/ link gone) is the driver's error."""
    names = ["L%03d" % i for i in range(ov.MAX_DEPTH + 1)]
    chain(drv, names, rw_top=False)
    top = names[-1]
    lowers = read(os.path.join(home, top, "lower"))
    assert len(drv._mount_options(top, os.path.join(home, top), lowers, False)) > ov.PAGE_SIZE
    os.unlink(os.path.join(home, lowers.split(":")[-1]))
    cwd = os.getcwd()
    with pytest.raises(GraphDriverError, match="relative to %s" % re.escape(home)):
        drv.get(top)
    assert os.getcwd() == cwd
    assert drv.references(top) == 0
    assert not os.path.exists(os.path.join(home, top, "merged"))
