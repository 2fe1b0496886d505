"""Hostile and broken layer tars: refused, nothing written outside, layer unchanged.

Each tar first does honest work on a layer that already has content
(replaces a file, deletes a directory, empties an opaque directory, merges
new metadata into a directory, creates files), then one bad thing. The
apply must raise a GraphDriverError naming the bad entry, leave the sentinel
tree outside the layer untouched, and leave the layer exactly as before,
compared through a full snapshot (types, modes, owners, mtimes, contents,
link targets, link counts, xattrs).
"""

import io
import os
import stat
import subprocess

import pytest

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import unpack
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.errors import (
    ArchiveError, BreakoutError, GraphDriverError)
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.tarstream import (
    END_OF_ARCHIVE, encode_header, padding)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: owners, devices")


def snapshot(root):
    snap = {}
    for dirpath, dirnames, filenames in os.walk(root):
        names = dirnames + filenames
        if dirpath == root:
            names = [""] + names
        for name in names:
            p = os.path.join(dirpath, name) if name else dirpath
            st = os.lstat(p)
            item = [stat.filemode(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns,
                    st.st_rdev, st.st_nlink]
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    item.append(f.read())
            elif stat.S_ISLNK(st.st_mode):
                item.append(os.readlink(p))
            if not stat.S_ISLNK(st.st_mode):
                item.append(sorted((k, os.getxattr(p, k)) for k in os.listxattr(p)))
            snap[os.path.relpath(p, root)] = item
    return snap


def member(name, tf="0", data=b"", mode=None, **kw):
    if mode is None:
        mode = 0o755 if tf == "5" else 0o644
    name = name.encode() if isinstance(name, str) else name
    if "linkname" in kw and isinstance(kw["linkname"], str):
        kw["linkname"] = kw["linkname"].encode()
    return encode_header(name, mode, kw.pop("uid", 0), kw.pop("gid", 0), len(data),
                         kw.pop("mtime", 1500000000), tf, **kw) + data + padding(len(data))


def honest_work():
    """Entries that replace, delete, empty and merge prior content."""
    return [
        member("etc", "5", mode=0o700, uid=3, gid=4),          # merge into existing dir
        member("etc/passwd", data=b"replaced"),                  # replace a file
        member("etc/new.conf", data=b"new"),
        member(".wh.var"),                                       # delete a directory
        member("opq/.wh..wh..opq"),                              # empty an opaque dir
        member("link", "0", data=b"was a symlink"),              # replace a symlink
        member("fresh/deep/dir/file", data=b"f"),                # implicit parents
        member("etc/hard", "1", linkname="etc/passwd"),
    ]


@pytest.fixture
def world(tmp_path):
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "secret").write_bytes(b"do not touch")
    (outside / "sub" / "x").write_bytes(b"x")
    layer = tmp_path / "layer"
    layer.mkdir()
    os.chmod(str(layer), 0o755)
    (layer / "etc").mkdir()
    (layer / "etc" / "passwd").write_bytes(b"root:x:0:0")
    os.chmod(str(layer / "etc" / "passwd"), 0o4711)
    os.setxattr(str(layer / "etc"), "user.mark", b"1")
    (layer / "var" / "lib").mkdir(parents=True)
    (layer / "var" / "lib" / "data").write_bytes(b"data")
    (layer / "opq" / "sub").mkdir(parents=True)
    (layer / "opq" / "sub" / "old").write_bytes(b"old")
    (layer / "dir").mkdir()
    os.symlink("etc/passwd", str(layer / "link"))
    os.symlink(str(outside), str(layer / "escape"))              # a legal symlink
    os.symlink("../../outside", str(layer / "relescape"))
    for p in ("etc", "var", "opq", "dir", "opq/sub", ""):
        os.utime(str(layer / p), ns=(10 ** 9, 2 * 10 ** 9))
    return str(layer), str(outside)


def check_refused(world, members, entry, exc=GraphDriverError, tail=b""):
    layer, outside = world
    before_layer, before_outside = snapshot(layer), snapshot(outside)
    data = b"".join(honest_work() + members) + END_OF_ARCHIVE
    if tail is not None:
        data = data + tail
    with pytest.raises(exc) as info:
        unpack.apply_layer(layer, io.BytesIO(data), layer_id="hostile-layer")
    assert entry in str(info.value)
    assert "hostile-layer" in str(info.value)
    assert snapshot(outside) == before_outside, "wrote outside the layer"
    assert snapshot(layer) == before_layer, "layer not restored"
    return info.value


def test_honest_work_alone_applies(world):
    layer, outside = world
    before = snapshot(outside)
    data = b"".join(honest_work()) + END_OF_ARCHIVE
    unpack.apply_layer(layer, io.BytesIO(data))
    assert open(os.path.join(layer, "etc", "passwd"), "rb").read() == b"replaced"
    assert not os.path.exists(os.path.join(layer, "var"))
    assert os.listdir(os.path.join(layer, "opq")) == []
    assert sorted(n for n in os.listdir(layer)) == sorted(
        ["etc", "opq", "dir", "link", "escape", "relescape", "fresh"])
    assert snapshot(outside) == before


def test_dotdot(world):
    check_refused(world, [member("../outside/pwned", data=b"!")], "../outside/pwned",
                  BreakoutError)


def test_nested_dotdot(world):
    check_refused(world, [member("etc/../../outside/pwned", data=b"!")],
                  "etc/../../outside/pwned", BreakoutError)


def test_dotdot_whiteout(world):
    check_refused(world, [member("../outside/.wh.secret")], ".wh.secret", BreakoutError)


def test_absolute_name_stays_inside(world):
    layer, outside = world
    before = snapshot(outside)
    name = os.path.join(outside, "abs")       # absolute host path: relative to the layer
    unpack.apply_layer(layer, io.BytesIO(member(name, data=b"in") + END_OF_ARCHIVE))
    assert open(os.path.join(layer, name.lstrip("/")), "rb").read() == b"in"
    assert snapshot(outside) == before


def test_symlink_target_escaping_the_root(world):
    check_refused(world, [member("up", "2", linkname="../../../../../../../tmp")], "up",
                  BreakoutError)


def test_write_through_existing_symlink(world):
    check_refused(world, [member("escape/pwned", data=b"!")], "escape/pwned", BreakoutError)


def test_write_through_existing_relative_symlink(world):
    check_refused(world, [member("relescape/secret", data=b"!")], "relescape/secret",
                  BreakoutError)


def test_symlink_then_file_under_it(world):
    layer, outside = world
    check_refused(world, [member("evil", "2", linkname=outside), member("evil/pwned",
                                                                        data=b"!")],
                  "evil/pwned", BreakoutError)


def test_inner_symlink_then_file_under_it_lands_where_docker_puts_it(world):
    # Docker's chroot follows a relative symlink that stays inside the root.
    layer, outside = world
    before = snapshot(outside)
    data = member("alias", "2", linkname="dir") + member("alias/x", data=b"in") + \
        member("alias/sub", "5", mode=0o755) + END_OF_ARCHIVE
    unpack.apply_layer(layer, io.BytesIO(data))
    assert open(os.path.join(layer, "dir", "x"), "rb").read() == b"in"
    assert os.path.isdir(os.path.join(layer, "dir", "sub"))
    assert os.readlink(os.path.join(layer, "alias")) == "dir"
    assert snapshot(outside) == before


def test_usrmerge_bin_symlink_is_followed(world):
    # A usrmerge base (bin -> usr/bin) and a layer that says bin/tool.
    layer, outside = world
    os.makedirs(os.path.join(layer, "usr", "bin"))
    os.symlink("usr/bin", os.path.join(layer, "bin"))
    data = member("bin/tool", data=b"#!/bin/sh\n", mode=0o755) + \
        member("bin/tool2", "1", linkname="bin/tool") + END_OF_ARCHIVE
    unpack.apply_layer(layer, io.BytesIO(data))
    tool = os.path.join(layer, "usr", "bin", "tool")
    assert open(tool, "rb").read() == b"#!/bin/sh\n"
    assert os.stat(tool).st_ino == os.stat(os.path.join(layer, "usr", "bin", "tool2")).st_ino
    assert os.path.islink(os.path.join(layer, "bin"))


def test_inner_symlink_climbing_out_is_refused(world):
    # Each link is legal alone (up2's target is "d1" lexically), but followed
    # physically d1/up/.. is the root's parent.
    check_refused(world, [member("d1", "5", mode=0o755),
                          member("d1/up", "2", linkname=".."),
                          member("up2", "2", linkname="d1/up/.."),
                          member("up2/pwned", data=b"!")], "up2/pwned", BreakoutError)


def test_symlink_loop_is_refused(world):
    check_refused(world, [member("a", "2", linkname="b"), member("b", "2", linkname="a"),
                          member("a/x", data=b"!")], "a/x", BreakoutError)


def test_symlink_then_directory_under_it(world):
    layer, outside = world
    check_refused(world, [member("evil", "2", linkname=outside),
                          member("evil/sub", "5", mode=0o777)],
                  "evil/sub", BreakoutError)


# The applier remembers the directories it resolved (and their descriptors)
# so that later entries there skip the walk. An entry that swaps a symlink
# in for such a directory must make the next entry below it walk again.

def swapped(name, linkname, then):
    """``name``/ made and written into, then replaced by a symlink, then ``then``."""
    return [member(name, "5"), member(name + "/first", data=b"first"),
            member(name, "2", linkname=linkname)] + then


@pytest.mark.parametrize("linkname", ["outside", "relescape", "../../outside"],
                         ids=["absolute", "via-escaping-link", "dotdot"])
def test_remembered_directory_swapped_for_symlink_then_file_under_it(world, linkname):
    layer, outside = world
    if linkname == "outside":
        linkname = outside
    check_refused(world, swapped("cdir", linkname, [member("cdir/pwned", data=b"!")]),
                  "cdir" if linkname.startswith("..") else "cdir/pwned", BreakoutError)


def test_remembered_directory_swapped_then_directory_and_link_under_it(world):
    layer, outside = world
    check_refused(world, swapped("cdir", outside, [member("cdir/sub", "5")]), "cdir/sub",
                  BreakoutError)
    check_refused(world, swapped("cdir", outside, [member("cdir/sub", "2", linkname="x")]),
                  "cdir/sub", BreakoutError)
    check_refused(world, swapped("cdir", outside, [member("hl", "1", linkname="cdir/secret")]),
                  "hl", BreakoutError)


def test_remembered_parent_swapped_drops_what_is_below_it(world):
    # d/e was resolved (and held open) below d; d becomes a symlink out.
    layer, outside = world
    check_refused(world, [member("d/e/f", data=b"f"), member("d", "2", linkname=outside),
                          member("d/e/g", data=b"!")], "d/e/g", BreakoutError)


def test_existing_directory_swapped_for_symlink_then_file_under_it(world):
    # etc was there before the layer; resolved by the walk, then written into.
    layer, outside = world
    check_refused(world, [member("etc/one", data=b"1"), member("etc", "2", linkname=outside),
                          member("etc/pwned", data=b"!")], "etc/pwned", BreakoutError)


def test_whited_out_directory_then_symlink_then_file_under_it(world):
    layer, outside = world
    check_refused(world, [member("cdir", "5"), member("cdir/a", data=b"a"),
                          member(".wh.cdir"), member("cdir", "2", linkname=outside),
                          member("cdir/pwned", data=b"!")], "cdir/pwned", BreakoutError)


def test_remembered_directory_swapped_for_file_then_file_under_it(world):
    check_refused(world, [member("cdir", "5"), member("cdir/a", data=b"a"),
                          member("cdir", data=b"now a file"), member("cdir/b", data=b"b")],
                  "cdir/b", ArchiveError)


def test_remembered_directory_swapped_for_inner_symlink_follows_the_new_link(world):
    # Docker's chroot follows the new link; a stale memory would write into
    # the directory the swap moved away (and lose the file).
    layer, outside = world
    before = snapshot(outside)
    data = b"".join(swapped("cdir", "dir", [member("cdir/x", data=b"in")])) + END_OF_ARCHIVE
    unpack.apply_layer(layer, io.BytesIO(data))
    assert os.readlink(os.path.join(layer, "cdir")) == "dir"
    assert open(os.path.join(layer, "dir", "x"), "rb").read() == b"in"
    assert not os.path.exists(os.path.join(layer, "dir", "first"))
    assert snapshot(outside) == before


def test_swap_after_many_directories_resolves_afresh(world):
    # More directories than the applier keeps open: the first ones are
    # remembered without a descriptor, and a swap must forget them too.
    many = [member("m%04d" % i, "5") for i in range(2100)]
    check_refused(world, many + [member("m0000/a", data=b"a"),
                                 member("m0000", "2", linkname=world[1]),
                                 member("m0000/pwned", data=b"!")], "m0000/pwned",
                  BreakoutError)
    layer, outside = world
    unpack.apply_layer(layer, io.BytesIO(b"".join(
        many + swapped("m0000", "dir", [member("m0000/x", data=b"in")])) + END_OF_ARCHIVE))
    assert open(os.path.join(layer, "dir", "x"), "rb").read() == b"in"


def test_whiteout_through_symlink(world):
    check_refused(world, [member("escape/.wh.secret")], "escape/.wh.secret", BreakoutError)


def test_opaque_through_symlink(world):
    check_refused(world, [member("escape/.wh..wh..opq")], "escape/.wh..wh..opq",
                  BreakoutError)


def test_hard_link_to_outside(world):
    check_refused(world, [member("hl", "1", linkname="../outside/secret")], "hl",
                  BreakoutError)


def test_hard_link_through_symlink(world):
    check_refused(world, [member("hl", "1", linkname="escape/secret")], "hl", BreakoutError)


def test_hard_link_to_absolute_host_path_resolves_inside(world):
    layer, outside = world
    # Taken relative to the layer root, where it does not exist.
    check_refused(world, [member("hl", "1", linkname=os.path.join(outside, "secret"))], "hl",
                  ArchiveError)


def test_hard_link_then_write_through_it_stays_inside(world):
    # A hard link to a file inside, then that name replaced: only the layer changes.
    layer, outside = world
    before = snapshot(outside)
    data = member("a", data=b"a") + member("b", "1", linkname="a") + \
        member("b", data=b"b") + END_OF_ARCHIVE
    unpack.apply_layer(layer, io.BytesIO(data))
    assert open(os.path.join(layer, "a"), "rb").read() == b"a"
    assert open(os.path.join(layer, "b"), "rb").read() == b"b"
    assert snapshot(outside) == before


def test_device_under_symlink(world):
    check_refused(world, [member("escape/null", "3", mode=0o666)], "escape/null",
                  BreakoutError)


def test_root_replaced_by_a_file(world):
    check_refused(world, [member("./", "0", data=b"x")], "./", ArchiveError)


def test_truncated_tar(world):
    layer, outside = world
    before_layer, before_outside = snapshot(layer), snapshot(outside)
    data = b"".join(honest_work() + [member("big", data=b"z" * 100000)]) + END_OF_ARCHIVE
    for cut in (len(data) - 1024 - 50000, len(data) - 1024 - 100000 - 200):
        with pytest.raises(ArchiveError, match="truncated") as info:
            unpack.apply_layer(layer, io.BytesIO(data[:cut]), layer_id="hostile-layer")
        assert "hostile-layer" in str(info.value)
        assert snapshot(layer) == before_layer
        assert snapshot(outside) == before_outside


def test_bad_checksum(world):
    bad = bytearray(member("corrupt-entry", data=b"x"))
    bad[100:108] = b"0000777\0"         # mode changed, checksum not
    check_refused(world, [bytes(bad)], "corrupt-entry", ArchiveError)


def test_malformed_size(world):
    bad = bytearray(member("malformed-entry"))
    bad[124:136] = b"12345678zz1\0"
    bad[148:156] = b"        "
    bad[148:156] = b"%06o\0 " % sum(bad)
    check_refused(world, [bytes(bad)], "malformed-entry", ArchiveError)


def test_pipe_stream_failure_is_restored(world):
    layer, outside = world
    before = snapshot(layer)
    r, w = os.pipe()
    data = b"".join(honest_work() + [member("../x")]) + END_OF_ARCHIVE
    os.write(w, data)
    os.close(w)
    with os.fdopen(r, "rb", buffering=0) as stream, pytest.raises(BreakoutError):
        unpack.apply_layer(layer, stream)
    assert snapshot(layer) == before


@pytest.fixture
def small_fs(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(mnt)],
                   check=True)
    try:
        yield str(mnt)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_disk_full_is_restored(small_fs):
    layer = os.path.join(small_fs, "layer")
    os.mkdir(layer, 0o755)
    os.makedirs(os.path.join(layer, "keep", "inner"))
    with open(os.path.join(layer, "keep", "inner", "f"), "wb") as f:
        f.write(b"k" * 100000)
    os.symlink("keep", os.path.join(layer, "ln"))
    before = snapshot(layer)
    data = (member("keep/inner/f", data=b"r" * 1000) + member(".wh.ln") +
            member("new/file", data=b"n") + member("huge", data=b"h" * (4 << 20)) +
            END_OF_ARCHIVE)
    with pytest.raises(GraphDriverError, match="huge") as info:
        unpack.apply_layer(layer, io.BytesIO(data), layer_id="full-layer")
    assert "No space left" in str(info.value)
    assert snapshot(layer) == before
    assert os.listdir(layer) == sorted(["keep", "ln"]) or sorted(os.listdir(layer)) == [
        "keep", "ln"]


def test_disk_full_on_many_small_files_is_restored(small_fs):
    # Small files take the applier's no-Entry fast path: same guarantees.
    layer = os.path.join(small_fs, "layer")
    os.mkdir(layer, 0o755)
    os.makedirs(os.path.join(layer, "d"))
    with open(os.path.join(layer, "d", "old"), "wb") as f:
        f.write(b"old")
    before = snapshot(layer)
    data = member("d", "5") + member("d/old", data=b"new") + b"".join(
        member("d/file-%04d" % i, data=b"s" * 8000) for i in range(400)) + END_OF_ARCHIVE
    with pytest.raises(GraphDriverError, match=r"d/file-\d{4}.*No space left"):
        unpack.apply_layer(layer, io.BytesIO(data), layer_id="full-layer")
    assert snapshot(layer) == before
