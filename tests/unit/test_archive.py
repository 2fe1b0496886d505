"""archive: Docker's layer tar rules, one by one."""

import grp
import io
import os
import pwd
import stat
import tarfile

import pytest

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import apply_journal, archive, unpack, whiteouts
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.driver import Change
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.errors import (
    ArchiveError, GraphDriverError)
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.tarstream import (
    END_OF_ARCHIVE, encode_header, iter_entries, padding)

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="needs root: chown, mknod, security.* xattrs")


def build(*members):
    """A layer tar from (name, typeflag, kwargs) with payload in kwargs['data']."""
    out = []
    for name, tf, kw in members:
        kw = dict(kw)
        data = kw.pop("data", b"")
        mode = kw.pop("mode", 0o755 if tf == "5" else 0o644)
        out.append(encode_header(name.encode() if isinstance(name, str) else name, mode,
                                 kw.pop("uid", 0), kw.pop("gid", 0), len(data),
                                 kw.pop("mtime", 1500000000), tf, **kw))
        out.append(data)
        out.append(padding(len(data)))
    out.append(END_OF_ARCHIVE)
    return io.BytesIO(b"".join(out))


def entries(stream):
    out = []
    for e in iter_entries(stream):
        out.append((e.name.decode(), e.typeflag, e.read() if e.isreg() else None, e))
    stream.close()
    return out


def snapshot(root):
    """Everything observable about a tree, for exact before/after comparisons."""
    snap = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [""] + dirnames + filenames:
            p = os.path.join(dirpath, name) if name else dirpath
            if not name and dirpath != root:
                continue
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            item = [stat.filemode(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns,
                    st.st_rdev, st.st_nlink]
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    item.append(f.read())
            elif stat.S_ISLNK(st.st_mode):
                item.append(os.readlink(p))
            else:
                item.append(st.st_size if not stat.S_ISDIR(st.st_mode) else None)
            if not stat.S_ISLNK(st.st_mode):
                item.append(sorted((k, os.getxattr(p, k)) for k in os.listxattr(p)))
            snap[rel] = item
    return snap


def without_time(snap):
    """A snapshot without its time field, compared apart."""
    return {k: v[:3] + v[4:] for k, v in snap.items()}


@pytest.fixture
def layer(tmp_path):
    d = tmp_path / "layer"
    d.mkdir()
    os.chmod(str(d), 0o755)
    return str(d)


# -- tar_tree: what Docker writes ------------------------------------------------

def test_tar_tree_docker_format(tmp_path):
    src = tmp_path / "src"
    (src / "dir").mkdir(parents=True)
    (src / "dir" / "file").write_bytes(b"content")
    os.utime(str(src / "dir" / "file"), ns=(1, 1600000000999999999))
    os.link(str(src / "dir" / "file"), str(src / "hard"))
    os.symlink("/abs/target", str(src / "sym"))
    os.mkfifo(str(src / "fifo"))
    os.setxattr(str(src / "dir" / "file"), "user.other", b"not exported")
    import socket
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(src / "sock"))
    s.close()
    raw = archive.tar_tree(str(src)).read()
    assert raw.endswith(END_OF_ARCHIVE) and len(raw) % 512 == 0
    got = entries(io.BytesIO(raw))
    names = [n for n, _t, _s, _e in got]
    # Walk order: depth first, names sorted; no root entry; no socket.
    assert names == ["dir/", "dir/file", "fifo", "hard", "sym"]
    by = {n: e for n, _t, _s, e in got}
    # the newest engine's headers (23+): permission bits only in the mode
    assert by["dir/"].typeflag == "5" and by["dir/"].mode & 0o170000 == 0
    assert by["dir/file"].mode == os.lstat(str(src / "hard")).st_mode & 0o7777
    assert by["dir/file"].mtime == 1600000000              # truncated, not rounded
    assert by["dir/file"].atime_ns is None and by["dir/file"].xattrs == {}
    assert by["dir/file"].uname == b"" and by["dir/file"].gname == b""
    assert (by["hard"].typeflag, by["hard"].linkname, by["hard"].size) == ("1", b"dir/file", 0)
    assert (by["sym"].typeflag, by["sym"].linkname) == ("2", b"/abs/target")
    assert by["fifo"].typeflag == "6"
    assert raw.count(b"\0" * 1024) >= 1 and raw[-1024:] == END_OF_ARCHIVE
    # Engine 20.10: the file type bits (fillGo18FileTypeBits) and the owner's
    # names looked up on this host; otherwise the same bytes
    old = {n: e for n, _t, _s, e in entries(io.BytesIO(
        archive.tar_tree(str(src), engine_version="20.10").read()))}
    assert old["dir/"].mode & 0o170000 == 0o40000 and old["fifo"].mode & 0o170000 == 0o10000
    assert old["dir/file"].mode == 0o100000 | by["dir/file"].mode
    assert old["sym"].mode & 0o170000 == 0o120000
    st = os.lstat(str(src / "hard"))
    assert old["dir/file"].uname == pwd.getpwuid(st.st_uid).pw_name.encode()
    assert old["dir/file"].gname == grp.getgrgid(st.st_gid).gr_name.encode()
    assert archive.tar_tree(str(src), engine_version="26.1").read() == raw


@needs_root
def test_tar_tree_exports_only_security_capability(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    f = src / "ping"
    f.write_bytes(b"x")
    cap = b"\x01\x00\x00\x02\x00\x20\x00\x00" + b"\x00" * 12
    os.setxattr(str(f), "security.capability", cap)
    os.setxattr(str(f), "trusted.other", b"nope")
    (e,) = [e for _n, _t, _s, e in entries(archive.tar_tree(str(src)))]
    assert e.xattrs == {"security.capability": cap}


def test_tar_tree_include_and_exclude(tmp_path):
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "c").write_bytes(b"")
    (src / "z").write_bytes(b"")
    (src / ".wh..wh.plnk").mkdir()
    (src / ".wh..wh..opq").write_bytes(b"")
    names = [n for n, _t, _s, _e in entries(archive.tar_tree(str(src), include=["z", "a/b"]))]
    assert names == ["z", "a/b/", "a/b/c"]
    names = [n for n, _t, _s, _e in entries(archive.tar_tree(
        str(src), exclude=[".wh..wh.*", "!.wh..wh..opq"]))]
    assert names == [".wh..wh..opq", "a/", "a/b/", "a/b/c", "z"]


def test_close_stops_the_stream_and_calls_on_close(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "big").write_bytes(b"x" * (3 << 20))
    closed = []
    s = archive.tar_tree(str(src), on_close=lambda: closed.append(True))
    assert len(s.read(1000)) == 1000
    s.close()
    s.close()
    assert closed == [True]
    with pytest.raises(ValueError):
        s.read(1)
    # A standard raw stream: it can be buffered; dropped unclosed, it closes.
    with io.BufferedReader(archive.tar_tree(str(src))) as b:
        assert len(b.read()) == 512 + (3 << 20) + 1024
    import gc
    s = archive.tar_tree(str(src), on_close=lambda: closed.append("gc"))
    s.read(10)
    del s
    gc.collect()
    assert closed == [True, "gc"]


def test_export_changes_whiteouts_and_entries(tmp_path):
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "new").write_bytes(b"n")
    os.link(str(src / "d" / "new"), str(src / "d" / "new2"))
    changes = [Change("/d/new2", "A"), Change("/gone", "D"), Change("/d", "C"),
               Change("/d/new", "A"), Change("/d/old", "D")]
    got = entries(archive.export_changes(str(src), changes))
    assert [(n, t) for n, t, _s, _e in got] == [
        ("d/", "5"), ("d/.wh.old", "0"), ("d/new", "0"), ("d/new2", "1"), (".wh.gone", "0")
    ] or [(n, t) for n, t, _s, _e in got] == [
        ("d/", "5"), ("d/new", "0"), ("d/new2", "1"), ("d/.wh.old", "0"), (".wh.gone", "0")]
    wh = [e for n, _t, _s, e in got if n == ".wh.gone"][0]
    assert wh.size == 0 and wh.mode == 0 and wh.uid == 0


def test_export_changes_sorted_by_path_bytes(tmp_path):
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"")
    (src / "a" / "b").write_bytes(b"")
    changes = [Change("/a/b", "A"), Change("/a", "A"), Change("/a.txt", "A")]
    # Go sorts the full paths: "/a" < "/a.txt" < "/a/b" ('.' < '/').
    assert [n for n, _t, _s, _e in entries(archive.export_changes(str(src), changes))] == [
        "a/", "a.txt", "a/b"]


# -- apply_layer: UnpackLayer rules ---------------------------------------------------

def test_apply_each_entry_type(layer):
    tar = build(("d", "5", {"mode": 0o750}),
                ("d/f", "0", {"data": b"hello", "mode": 0o640}),
                ("d/h", "1", {"linkname": b"d/f", "mode": 0o640}),
                ("d/s", "2", {"linkname": b"/etc/passwd"}),
                ("d/p", "6", {"mode": 0o600}))
    size = unpack.apply_layer(layer, tar)
    assert size == 5        # the sum of header sizes
    d = os.path.join(layer, "d")
    assert stat.S_IMODE(os.lstat(d).st_mode) == 0o750
    assert open(os.path.join(d, "f"), "rb").read() == b"hello"
    assert os.lstat(os.path.join(d, "f")).st_ino == os.lstat(os.path.join(d, "h")).st_ino
    assert os.readlink(os.path.join(d, "s")) == "/etc/passwd"
    assert stat.S_ISFIFO(os.lstat(os.path.join(d, "p")).st_mode)
    assert os.lstat(os.path.join(d, "f")).st_mtime_ns == 1500000000 * 10 ** 9
    assert os.lstat(os.path.join(d, "s")).st_mtime_ns == 1500000000 * 10 ** 9


def test_apply_special_mode_bits_under_restrictive_umask(layer):
    old = os.umask(0o077)
    try:
        unpack.apply_layer(layer, build(("sticky", "5", {"mode": 0o1777}),
                                        ("suid", "0", {"mode": 0o4755}),
                                        ("sgid", "0", {"mode": 0o2755}),
                                        ("sticky/x", "0", {"mode": 0o644})))
    finally:
        os.umask(old)

    def mode(name):
        return stat.S_IMODE(os.lstat(os.path.join(layer, name)).st_mode)

    assert (mode("sticky"), mode("suid"), mode("sgid"), mode("sticky/x")) == (
        0o1777, 0o4755, 0o2755, 0o644)


@needs_root
def test_apply_owner_then_mode_keeps_setuid(layer):
    unpack.apply_layer(layer, build(("s", "0", {"mode": 0o6755, "uid": 7, "gid": 8})))
    st = os.lstat(os.path.join(layer, "s"))
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (7, 8, 0o6755)


def test_apply_directory_times_at_the_end(layer):
    unpack.apply_layer(layer, build(("d", "5", {"mtime": 1000}),
                                    ("d/a", "0", {"mtime": 2000}),
                                    ("d/b", "5", {"mtime": 3000}),
                                    ("d/b/c", "0", {})))
    st = os.lstat(os.path.join(layer, "d"))
    assert st.st_mtime_ns == 1000 * 10 ** 9
    assert st.st_atime_ns == 0          # Docker's Chtimes turns a zero atime into the epoch
    assert os.lstat(os.path.join(layer, "d", "b")).st_mtime_ns == 3000 * 10 ** 9
    assert os.lstat(os.path.join(layer, "d", "a")).st_atime_ns == 2000 * 10 ** 9


def test_apply_pax_long_names_and_xattrs(layer):
    long_name = "deep/" + "n" * 200
    tar = build(("deep", "5", {}),
                (long_name, "0", {"data": b"x", "xattrs": {"user.k": b"v"}}),
                ("l", "2", {"linkname": ("t" * 300).encode()}))
    unpack.apply_layer(layer, tar)
    p = os.path.join(layer, long_name)
    assert open(p, "rb").read() == b"x"
    assert os.getxattr(p, "user.k") == b"v"      # all SCHILY.xattr.* are applied
    assert os.readlink(os.path.join(layer, "l")) == "t" * 300


def test_apply_absolute_names_are_relative_to_root(layer):
    unpack.apply_layer(layer, build(("/etc/hostname", "0", {"data": b"h"}),
                                    ("/../../x", "0", {"data": b"x"})))
    assert open(os.path.join(layer, "etc", "hostname"), "rb").read() == b"h"
    assert open(os.path.join(layer, "x"), "rb").read() == b"x"
    # Docker 23+ makes missing parents 0755 (createImpliedDirectories)
    assert stat.S_IMODE(os.lstat(os.path.join(layer, "etc")).st_mode) == 0o755


@pytest.mark.parametrize("whiteouts,mode", [
    (whiteouts.AUFS, 0o600), (whiteouts.OVERLAY, 0o755), (whiteouts.LITERAL, 0o755)])
def test_apply_implied_parents_of_20_10(layer, whiteouts, mode):
    """Engine 20.10's UnpackLayer (the naive apply) made them 0600 (as root;
    0700 otherwise, or they could not be entered); its Unpack (the overlay
    drivers' apply) 0755."""
    unpack.apply_layer(layer, build(("etc/hostname", "0", {"data": b"h"})),
                       whiteout_format=whiteouts, engine_version="20.10")
    want = mode if ROOT or mode == 0o755 else 0o700
    assert stat.S_IMODE(os.lstat(os.path.join(layer, "etc")).st_mode) == want


def test_apply_whiteout_removes(layer):
    os.makedirs(os.path.join(layer, "d", "sub"))
    open(os.path.join(layer, "d", "sub", "f"), "w").close()
    open(os.path.join(layer, "keep"), "w").close()
    unpack.apply_layer(layer, build(("d/.wh.sub", "0", {}), (".wh.missing", "0", {})))
    assert sorted(os.listdir(layer)) == ["d", "keep"]
    assert os.listdir(os.path.join(layer, "d")) == []


def test_apply_opaque_keeps_only_this_layers_entries(layer):
    os.makedirs(os.path.join(layer, "d", "old"))
    open(os.path.join(layer, "d", "old", "f"), "w").close()
    open(os.path.join(layer, "d", "oldfile"), "w").close()
    unpack.apply_layer(layer, build(("d", "5", {}), ("d/new", "0", {"data": b"n"}),
                                    ("d/.wh..wh..opq", "0", {}), ("d/later", "0", {})))
    assert sorted(os.listdir(os.path.join(layer, "d"))) == ["later", "new"]


def test_apply_skips_aufs_metadata_and_resolves_plnk_links(layer):
    unpack.apply_layer(layer, build((".wh..wh.aufs", "0", {}),
                                    (".wh..wh.plnk/123.456", "0", {"data": b"shared",
                                                                   "mode": 0o600}),
                                    ("usr/bin/a", "1", {"linkname": b".wh..wh.plnk/123.456"})))
    assert sorted(os.listdir(layer)) == ["usr"]
    p = os.path.join(layer, "usr", "bin", "a")
    assert open(p, "rb").read() == b"shared"
    assert stat.S_IMODE(os.lstat(p).st_mode) == 0o600


def test_apply_replaces_unless_both_directories(layer):
    os.makedirs(os.path.join(layer, "dir", "child"))
    open(os.path.join(layer, "file"), "w").close()
    os.makedirs(os.path.join(layer, "becomes_file", "x"))
    unpack.apply_layer(layer, build(("dir", "5", {"mode": 0o700}),
                                    ("file", "5", {}),
                                    ("becomes_file", "0", {"data": b"f"})))
    assert os.listdir(os.path.join(layer, "dir")) == ["child"]       # merged
    assert stat.S_IMODE(os.lstat(os.path.join(layer, "dir")).st_mode) == 0o700
    assert os.path.isdir(os.path.join(layer, "file"))
    assert open(os.path.join(layer, "becomes_file"), "rb").read() == b"f"


def test_apply_root_entry_sets_root_metadata(layer):
    unpack.apply_layer(layer, build(("./", "5", {"mode": 0o711, "mtime": 42}),
                                    ("f", "0", {})))
    st = os.lstat(layer)
    assert stat.S_IMODE(st.st_mode) == 0o711 and st.st_mtime_ns == 42 * 10 ** 9


def test_apply_leaves_nothing_extra(layer):
    os.makedirs(os.path.join(layer, "a"))
    open(os.path.join(layer, "a", "f"), "w").close()
    before = os.lstat(layer).st_mtime_ns
    unpack.apply_layer(layer, build(("a/.wh.f", "0", {})))
    assert os.listdir(layer) == ["a"]
    # The journal came and went in the root: its times are as they were.
    assert os.lstat(layer).st_mtime_ns == before


def test_apply_failure_restores_everything(layer):
    os.makedirs(os.path.join(layer, "d", "sub"))
    with open(os.path.join(layer, "d", "sub", "f"), "wb") as f:
        f.write(b"original")
    with open(os.path.join(layer, "top"), "wb") as f:
        f.write(b"top")
    os.chmod(os.path.join(layer, "d"), 0o711)
    os.utime(os.path.join(layer, "d"), ns=(5, 6))
    before = snapshot(layer)
    raw = build(("d", "5", {"mode": 0o700}),
                ("d/sub/f", "0", {"data": b"replaced"}),
                ("d/new", "0", {"data": b"new"}),
                (".wh.top", "0", {}),
                ("newdir/x/y", "0", {"data": b"y"}),
                ("big", "0", {"data": b"z" * 5000})).getvalue()
    with pytest.raises(ArchiveError, match="truncated"):
        unpack.apply_layer(layer, io.BytesIO(raw[:-3000]), layer_id="L1")
    assert snapshot(layer) == before


def test_apply_round_trip(tmp_path, layer):
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "f").write_bytes(os.urandom(200000))
    (src / "a" / "g").write_bytes(b"g")
    os.link(str(src / "a" / "g"), str(src / "h"))
    os.symlink("a/g", str(src / "s"))
    os.mkfifo(str(src / "p"))
    os.chmod(str(src / "a"), 0o2775)
    for p in ("a/b/f", "a/g", "a/b", "a", "p"):
        os.utime(str(src / p), ns=(10 ** 9, 1234 * 10 ** 9))
    os.utime(str(src / "s"), ns=(10 ** 9, 1234 * 10 ** 9), follow_symlinks=False)
    with archive.tar_tree(str(src)) as s:
        unpack.apply_layer(layer, s)
    a, b = snapshot(str(src)), snapshot(layer)
    del a["."], b["."]
    # Directory atimes are the epoch after apply (Docker), the rest must match.
    assert without_time(a) == without_time(b)
    assert {k: v[3] for k, v in a.items()} == {k: v[3] for k, v in b.items()}


def test_apply_unknown_type_is_an_error_naming_entry(layer):
    with pytest.raises(GraphDriverError, match="weird"):
        unpack.apply_layer(layer, build(("weird", "Z", {})))
    assert os.listdir(layer) == []


def test_python_tarfile_gnu_archive_applies(tmp_path, layer):
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w", format=tarfile.GNU_FORMAT) as tf:
        ti = tarfile.TarInfo("x" * 150)
        ti.size = 3
        tf.addfile(ti, io.BytesIO(b"abc"))
    data.seek(0)
    unpack.apply_layer(layer, data)
    assert open(os.path.join(layer, "x" * 150), "rb").read() == b"abc"


def test_gnu_tar_archive_applies_like_gnu_tar_extracts(tmp_path):
    import subprocess
    src = tmp_path / "src"
    (src / "d" / "e").mkdir(parents=True)
    (src / "d" / "f").write_bytes(os.urandom(3000))
    (src / ("long-" + "x" * 120)).write_bytes(b"long")
    os.link(str(src / "d" / "f"), str(src / "hl"))
    os.symlink("d/f", str(src / "sym"))
    os.chmod(str(src / "d"), 0o750)
    os.chmod(str(src), 0o751)
    for p in ("d/f", "d/e", "d", "long-" + "x" * 120, ""):
        os.utime(str(src / p), ns=(7 * 10 ** 9, 9 * 10 ** 9))
    tar = tmp_path / "gnu.tar"
    subprocess.run(["tar", "--format=gnu", "-cf", str(tar), "-C", str(src), "."], check=True)
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ours.mkdir()
    theirs.mkdir()
    with open(str(tar), "rb") as f:
        unpack.apply_layer(str(ours), f)
    subprocess.run(["tar", "-xpf", str(tar), "-C", str(theirs)], check=True)
    a, b = snapshot(str(ours)), snapshot(str(theirs))
    assert without_time(a) == without_time(b)
    assert {k: v[3] for k, v in a.items()} == {k: v[3] for k, v in b.items()}


def test_global_pax_header_has_no_effect_and_no_size(layer):
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w", format=tarfile.PAX_FORMAT,
                      pax_headers={"comment": "x" * 700}) as tf:
        ti = tarfile.TarInfo("f")
        ti.size = 3
        tf.addfile(ti, io.BytesIO(b"abc"))
    data.seek(0)
    assert unpack.apply_layer(layer, data) == 3
    assert os.listdir(layer) == ["f"]


@pytest.mark.skipif(ROOT, reason="root reads unreadable files anyway")
def test_unreadable_file_is_a_graphdriver_error(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "secret").write_bytes(b"x")
    os.chmod(str(src / "secret"), 0)
    with pytest.raises(GraphDriverError, match="secret"):
        archive.tar_tree(str(src)).read()


def test_leftover_journal_is_cleanable(layer):
    # What a crash in the middle of an apply leaves: a journal directory in
    # the root. remove_stale_stash() deletes it (the layer itself is then
    # half applied; Docker's layer store discards such layers).
    stale = os.path.join(layer, apply_journal.STASH_PREFIX + "0123456789abcdef")
    os.makedirs(os.path.join(stale, "1"))
    open(os.path.join(layer, "kept"), "w").close()
    assert apply_journal.remove_stale_stash(layer) == [os.path.basename(stale)]
    assert os.listdir(layer) == ["kept"]
    # A file of the same shape inside a layer tar is just content.
    unpack.apply_layer(layer, build((apply_journal.STASH_PREFIX + "x", "0", {"data": b"c"})))
    assert sorted(os.listdir(layer)) == sorted(["kept", apply_journal.STASH_PREFIX + "x"])
