"""archive rules that need root: the overlay whiteout format (on disk 0/0
character devices and trusted.overlay.opaque=y, on the wire .wh.<name> and
.wh..wh..opq), devices, owners, and the apply fast path's owner/mode shortcut
under setgid directories and default ACLs."""

import io
import os
import shutil
import stat
import subprocess
import tempfile

import pytest

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import archive, unpack, whiteouts
from tests.support.loop import loop_filesystem
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.tarstream import (
    END_OF_ARCHIVE, encode_header, iter_entries, padding)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: mknod, trusted.* xattrs")


def member(name, tf="0", data=b"", mode=0o644, uid=0, gid=0, mtime=1500000000, **kw):
    return encode_header(name.encode(), mode, uid, gid, len(data), mtime, tf, **kw) + \
        data + padding(len(data))


def test_apply_overlay_whiteouts(tmp_path):
    upper = tmp_path / "diff"
    upper.mkdir()
    (upper / "keep").mkdir()
    (upper / "keep" / "written-before").write_bytes(b"")
    data = (member("d", "5", mode=0o755) + member("d/.wh..wh..opq") +
            member("d/new", data=b"n") + member(".wh.gone", uid=5, gid=6) +
            member("keep/.wh..wh..opq") + END_OF_ARCHIVE)
    unpack.apply_layer(str(upper), io.BytesIO(data), whiteout_format=whiteouts.OVERLAY)
    st = os.lstat(str(upper / "gone"))
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0 and (st.st_uid, st.st_gid) == (5, 6)
    assert os.getxattr(str(upper / "d"), "trusted.overlay.opaque") == b"y"
    assert os.getxattr(str(upper / "keep"), "trusted.overlay.opaque") == b"y"
    # Opaque on disk hides the lower layers; nothing is deleted from this one.
    assert os.listdir(str(upper / "keep")) == ["written-before"]
    assert not os.path.lexists(str(upper / ".wh.gone"))
    assert not os.path.lexists(str(upper / "d" / ".wh..wh..opq"))


def test_tar_tree_overlay_to_wire_form(tmp_path):
    upper = tmp_path / "diff"
    (upper / "opq").mkdir(parents=True)
    os.chmod(str(upper / "opq"), 0o751)
    os.chown(str(upper / "opq"), 7, 8)
    os.setxattr(str(upper / "opq"), "trusted.overlay.opaque", b"y")
    (upper / "opq" / "f").write_bytes(b"f")
    os.mknod(str(upper / "deleted"), stat.S_IFCHR | 0o600, 0)
    os.mknod(str(upper / "realdev"), stat.S_IFCHR | 0o600, os.makedev(1, 3))
    def entries(**engine):
        return [(e.name, e.typeflag, e.mode, e.uid, e.gid, e.size, e.xattrs)
                for e in iter_entries(archive.tar_tree(str(upper), whiteout_format=whiteouts.OVERLAY,
                                                       **engine))]
    # Engine 23.0+ writes the permission bits alone in a header's mode
    assert entries() == [
        (b".wh.deleted", "0", 0o600, 0, 0, 0, {}),
        (b"opq/", "5", 0o751, 7, 8, 0, {}),
        (b"opq/.wh..wh..opq", "0", 0o751, 7, 8, 0, {}),
        (b"opq/f", "0", 0o644, 0, 0, 1, {}),
        (b"realdev", "3", 0o600, 0, 0, 0, {}),
    ]
    # 20.10 adds the file type bits (c_ISDIR, ...) to the mode
    assert entries(engine_version="20.10") == [
        (b".wh.deleted", "0", 0o600, 0, 0, 0, {}),
        (b"opq/", "5", 0o40751, 7, 8, 0, {}),
        (b"opq/.wh..wh..opq", "0", 0o751, 7, 8, 0, {}),
        (b"opq/f", "0", 0o100644, 0, 0, 1, {}),
        (b"realdev", "3", 0o20600, 0, 0, 0, {}),
    ]


def test_overlay_round_trip(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
    data = (member("o", "5") + member("o/.wh..wh..opq") + member("o/x", data=b"x") +
            member(".wh.w") + END_OF_ARCHIVE)
    unpack.apply_layer(str(a), io.BytesIO(data), whiteout_format=whiteouts.OVERLAY)
    with archive.tar_tree(str(a), whiteout_format=whiteouts.OVERLAY) as s:
        unpack.apply_layer(str(b), s, whiteout_format=whiteouts.OVERLAY)
    for d in (a, b):
        assert os.getxattr(str(d / "o"), "trusted.overlay.opaque") == b"y"
        assert stat.S_ISCHR(os.lstat(str(d / "w")).st_mode)
        assert open(str(d / "o" / "x"), "rb").read() == b"x"


def test_aufs_apply_of_devices_and_owners(tmp_path):
    layer = tmp_path / "l"
    layer.mkdir()
    data = (member("dev/null", "3", mode=0o666, devmajor=1, devminor=3) +
            member("dev/loop0", "4", mode=0o660, gid=6, devmajor=7, devminor=0) +
            member("home/u", "5", mode=0o700, uid=1000, gid=1000) + END_OF_ARCHIVE)
    unpack.apply_layer(str(layer), io.BytesIO(data))
    st = os.lstat(str(layer / "dev" / "null"))
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
    assert stat.S_IMODE(st.st_mode) == 0o666
    st = os.lstat(str(layer / "dev" / "loop0"))
    assert stat.S_ISBLK(st.st_mode) and st.st_gid == 6
    st = os.lstat(str(layer / "home" / "u"))
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 1000, 0o700)


def test_setgid_parent_does_not_leak_its_group(tmp_path):
    # A new file in a setgid directory gets the directory's group: the fast
    # path must then chown back to what the entry says.
    layer = tmp_path / "l"
    layer.mkdir()
    data = (member("shared", "5", mode=0o2775, gid=5) +
            member("shared/first", data=b"1") + member("shared/second", data=b"2") +
            END_OF_ARCHIVE)
    unpack.apply_layer(str(layer), io.BytesIO(data))
    for name in ("first", "second"):
        st = os.lstat(str(layer / "shared" / name))
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o644)


def test_default_acl_does_not_change_modes(tmp_path):
    # A default ACL on the parent replaces the umask for new files: the fast
    # path must then set the mode explicitly.
    import struct
    layer = tmp_path / "l"
    (layer / "acl").mkdir(parents=True)
    # The kernel's xattr form of "default: u::rw-,g::---,o::---".
    acl = struct.pack("<I", 2) + b"".join(
        struct.pack("<HHI", tag, perm, 0xFFFFFFFF)
        for tag, perm in ((0x01, 6), (0x04, 0), (0x20, 0)))
    try:
        os.setxattr(str(layer / "acl"), "system.posix_acl_default", acl)
    except OSError as e:
        pytest.skip("POSIX ACLs unsupported on %s: %s" % (tmp_path, e))
    data = (member("acl/a", data=b"1", mode=0o644) + member("acl/b", data=b"2", mode=0o644) +
            END_OF_ARCHIVE)
    unpack.apply_layer(str(layer), io.BytesIO(data))
    for name in ("a", "b"):
        assert stat.S_IMODE(os.lstat(str(layer / "acl" / name)).st_mode) == 0o644


# -- cloning payloads from the files they were read from (a migration's stream) --------------------

def _stream_of(src, names):
    """A layer tar of ``names`` under ``src``, as a stream that says its payloads are those files."""
    tar = io.BytesIO()
    for name in names:
        with open(os.path.join(src, name), "rb") as f:
            tar.write(member(name, data=f.read()))
    tar.write(bytes(1024))
    stream = archive.ChunkStream(iter([tar.getvalue()]))
    stream.files_root = src
    return stream


def _shared(path):
    """Whether FIEMAP calls any extent of ``path`` shared (a reflink)."""
    out = subprocess.run(["filefrag", "-v", path], stdout=subprocess.PIPE, universal_newlines=True,
                         check=True).stdout
    return "shared" in out


BIG = os.urandom(3 * 1024 * 1024 + 5)
SMALL = b"small file\n"


@pytest.mark.skipif(shutil.which("mkfs.btrfs") is None, reason="btrfs-progs not installed")
def test_big_payloads_are_cloned_on_a_filesystem_with_reflinks():
    with loop_filesystem("btrfs", size_mb=256) as mnt:
        src, dst = os.path.join(mnt, "src"), os.path.join(mnt, "dst")
        os.mkdir(src)
        os.mkdir(dst)
        for name, data in (("big", BIG), ("small", SMALL)):
            with open(os.path.join(src, name), "wb") as f:
                f.write(data)
        os.sync()   # extents allocated: FIEMAP shows them
        unpack.apply_layer(dst, _stream_of(src, ["big", "small"]))
        os.sync()
        for name, data in (("big", BIG), ("small", SMALL)):
            with open(os.path.join(dst, name), "rb") as f:
                assert f.read() == data
        assert _shared(os.path.join(dst, "big")), "the big file was written, not cloned"
        assert not _shared(os.path.join(dst, "small"))


def test_without_reflinks_the_payload_is_written(tmp_path):
    # /dev/shm: tmpfs has no FICLONE; a file that is not the payload's size is not cloned either
    with tempfile.TemporaryDirectory(dir="/dev/shm") as shm:
        src, dst = os.path.join(shm, "src"), os.path.join(shm, "dst")
        os.mkdir(src)
        os.mkdir(dst)
        with open(os.path.join(src, "big"), "wb") as f:
            f.write(BIG)
        stream = _stream_of(src, ["big"])
        unpack.apply_layer(dst, stream)
        with open(os.path.join(dst, "big"), "rb") as f:
            assert f.read() == BIG
