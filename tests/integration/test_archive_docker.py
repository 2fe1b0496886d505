"""tar_tree writes Docker's bytes: compared with a real dockerd's `docker export`.

`docker export` is pkg/archive's TarWithOptions over the container's root
filesystem, the function tar_tree reproduces. The exported tar is extracted
with GNU tar (owners, modes, times, hard links, the capability xattr kept)
and archived again with tar_tree: the two tars must be equal byte for byte.

Each test runs against Engine 20.10 and 26.1, ours with ``engine_version``
set to the engine's. Where they differ (archive.py's module doc): 20.10
writes the owner's names ("root"/"root") and the file type bits into the
headers, so the same tree gives other tar bytes and a committed layer
another DiffID; and its UnpackLayer (vfs's apply) makes implied parent
directories 0600, 26.1's 0755.
"""

import os
import subprocess
import tarfile

import pytest

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import archive, unpack
from tests.support import dockerd as dockerd_support

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: a private dockerd")

CAP = b"\x01\x00\x00\x02\x00\x20\x00\x00" + b"\x00" * 12     # cap_net_raw+ep


def _rootfs(root):
    os.makedirs(os.path.join(root, "usr", "bin"))
    os.makedirs(os.path.join(root, "empty"))
    with open(os.path.join(root, "usr", "bin", "tool"), "wb") as f:
        f.write(os.urandom(70000))
    os.chmod(os.path.join(root, "usr", "bin", "tool"), 0o4755)
    os.setxattr(os.path.join(root, "usr", "bin", "tool"), "security.capability", CAP)
    os.link(os.path.join(root, "usr", "bin", "tool"), os.path.join(root, "usr", "bin", "alias"))
    os.symlink("/usr/bin/tool", os.path.join(root, "abs-link"))
    os.symlink("l" * 150, os.path.join(root, "long-target"))
    deep = os.path.join(root, "d" * 60, "e" * 60)
    os.makedirs(deep)
    with open(os.path.join(deep, "f" * 90), "wb") as f:        # splittable long name
        f.write(b"split")
    with open(os.path.join(root, "n" * 180), "wb") as f:       # needs a PAX path
        f.write(b"pax")
    with open(os.path.join(root, "caf\u00e9"), "wb") as f:     # non-ASCII: PAX too
        f.write(b"utf8")
    big = os.path.join(root, "big-uid")
    with open(big, "wb") as f:
        f.write(b"u")
    os.chown(big, 3000000, 3000001)
    os.mkfifo(os.path.join(root, "fifo"))
    os.chmod(os.path.join(root, "empty"), 0o1777)
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            os.utime(os.path.join(dirpath, n), ns=(10 ** 9, 1600000000123456789),
                     follow_symlinks=False)


ENGINES = pytest.mark.parametrize("engine", dockerd_support.ENGINE_VERSIONS)


def _names(engine):
    """Does this engine write owner names into the tars it makes?"""
    return engine == "20.10"


@ENGINES
def test_tar_tree_equals_docker_export(tmp_path, engine):
    reason = dockerd_support.available(engine)
    if reason:
        pytest.skip(reason)
    src = str(tmp_path / "src")
    os.mkdir(src)
    _rootfs(src)
    image_tar = str(tmp_path / "image.tar")
    with archive.tar_tree(src) as stream, open(image_tar, "wb") as out:
        out.write(stream.read())
    exported = str(tmp_path / "exported.tar")
    with dockerd_support.dockerd(str(tmp_path / "dockerd"), engine=engine) as d:
        image = d.docker("import", image_tar).strip()
        container = d.docker("create", image, "/nonexistent").strip()
        d.docker("export", "-o", exported, container)
    unpacked = str(tmp_path / "unpacked")
    os.mkdir(unpacked)
    subprocess.run(["tar", "-xpf", exported, "-C", unpacked, "--numeric-owner", "--xattrs",
                    "--xattrs-include=security.capability"], check=True)
    with archive.tar_tree(unpacked, engine_version=engine) as stream:
        ours = stream.read()
    with open(exported, "rb") as f:
        theirs = f.read()
    with tarfile.open(exported) as t:
        owners = {(m.uname, m.gname) for m in t.getmembers() if m.uid == 0 and m.gid == 0}
    assert owners == ({("root", "root")} if _names(engine) else {("", "")})
    # the first entry, /.dockerenv, a regular file: 20.10 puts S_IFREG in the mode
    assert theirs[:10] == b".dockerenv" and \
        theirs[100:107] == (b"0100755" if _names(engine) else b"0000755")
    if ours != theirs:
        # Name the first differing block for the failure message.
        at = next(i for i in range(min(len(ours), len(theirs))) if ours[i] != theirs[i]) \
            if ours[:len(theirs)] != theirs[:len(ours)] else min(len(ours), len(theirs))
        block = at // 512 * 512
        pytest.fail("differs at byte %d (block %d):\nours   %r\ntheirs %r" % (
            at, block // 512, ours[block:block + 512], theirs[block:block + 512]))


def _layer_tar(saved, layer_index):
    """The layer tar at ``layer_index`` of a `docker save` archive (bytes)."""
    import io
    import json
    import tarfile
    with tarfile.open(saved) as t:
        manifest = json.load(t.extractfile("manifest.json"))
        name = manifest[0]["Layers"][layer_index]
        return t.extractfile(name).read()


@ENGINES
def test_changes_and_diff_equal_dockerd_naive_diff(tmp_path, engine):
    """`docker diff` is ChangesDirs and `docker commit` stores ExportChanges
    (vfs uses the naive diff driver): ours over the same two trees match."""
    from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.changes import (
        changes_dirs)
    from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.tarstream import (
        iter_entries)
    from tests.support import images
    reason = dockerd_support.available(engine) or images.busybox_available()
    if reason:
        pytest.skip(reason)
    rootfs = images.rootfs_tar(str(tmp_path / "rootfs.tar"), extra_files={
        "etc/passwd": b"root:x:0:0::/root:/bin/sh\n", "etc/keep": b"keep\n",
        "var/data/a": b"a" * 3000, "var/data/b": b"b"})
    script = ("echo new > /etc/new && chmod 4755 /etc/new && rm /etc/passwd && "
              "echo changed > /etc/keep && ln /etc/keep /etc/keep-link && rm -r /var/data && "
              "mkdir -p /opt/x && echo z > /opt/x/z && ln -s /opt/x /opt/link && "
              "chmod 600 /hello.txt && chmod 700 /tmp")
    saved = str(tmp_path / "saved.tar")
    with dockerd_support.dockerd(str(tmp_path / "dockerd"), engine=engine) as d:
        d.docker("import", "-c", 'CMD ["/bin/sh"]', rootfs, "strata/archive:base")
        d.docker("run", "--network", "none", "--name", "strata-changes", "strata/archive:base",
                 "/bin/sh", "-c", script)
        theirs_changes = sorted(tuple(line.split(" ", 1))
                                for line in d.docker("diff", "strata-changes").splitlines())
        d.docker("commit", "strata-changes", "strata/archive:top")
        d.docker("save", "-o", saved, "strata/archive:top")
        cid = d.docker("inspect", "-f", "{{.Id}}", "strata-changes").strip()
        layerdb = os.path.join(d.data_root, "image", "vfs", "layerdb", "mounts", cid)
        with open(os.path.join(layerdb, "mount-id")) as f:
            mount_id = f.read().strip()
        rw = os.path.join(d.data_root, "vfs", "dir", mount_id)
        init = rw + "-init"
        ours_changes = changes_dirs(rw, init)
        assert sorted((c.kind, c.path) for c in ours_changes) == theirs_changes
        with archive.export_changes(rw, ours_changes, engine_version=engine) as stream:
            ours = stream.read()
    theirs = _layer_tar(saved, 1)
    import io

    def headers(data):
        out = []
        for e in iter_entries(io.BytesIO(data)):
            payload = e.read() if e.isreg() else b""
            if e.name.rpartition(b"/")[2].startswith(b".wh."):
                # Stamped with the time of the diff: all but the time must match.
                out.append((e.name, e.typeflag, e.mode, e.uid, e.gid, e.size, e.uname))
            else:
                out.append((e.raw, payload))
        return out
    assert headers(ours) == headers(theirs)
    assert len(ours) == len(theirs)


def _tree(root):
    """Everything observable below root, atimes included: each entry is
    lstat'ed before its directory is listed or its content read (both move
    the atime); symlink atimes are left out (the kernel moves them too)."""
    import stat as st_
    stats = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            stats[p] = os.lstat(p)
    out = {}
    for p, s in stats.items():
        item = [st_.filemode(s.st_mode), s.st_uid, s.st_gid, s.st_mtime_ns, s.st_rdev,
                s.st_nlink, None if st_.S_ISLNK(s.st_mode) else s.st_atime_ns]
        if st_.S_ISREG(s.st_mode):
            with open(p, "rb") as f:
                item.append(f.read())
        elif st_.S_ISLNK(s.st_mode):
            item.append(os.readlink(p))
        if not st_.S_ISLNK(s.st_mode):
            item.append(sorted((k, os.getxattr(p, k)) for k in os.listxattr(p)))
        out[os.path.relpath(p, root)] = item
    return out


@ENGINES
def test_apply_layer_equals_dockerd_apply(tmp_path, engine):
    """`docker import` applies a tar with UnpackLayer onto an empty vfs layer:
    apply_layer of the same tar gives the same tree, times and modes included."""
    import io
    from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.tarstream import (
        END_OF_ARCHIVE, encode_header, padding)
    reason = dockerd_support.available(engine)
    if reason:
        pytest.skip(reason)

    def member(name, tf="0", data=b"", mode=0o644, uid=0, gid=0, mtime=1600000000, **kw):
        return encode_header(name.encode(), mode, uid, gid, len(data), mtime, tf, **kw) + \
            data + padding(len(data))
    layer = b"".join([
        member("implicit/parents/file", data=b"x" * 700, mode=0o640, uid=7, gid=8),
        member("d", "5", mode=0o2750, uid=1, gid=2, mtime=1500000000),
        member("d/suid", data=b"s", mode=0o4755),
        member("d/hard", "1", linkname=b"d/suid", mode=0o4755),
        member("d/sym", "2", linkname=b"/no/where", mode=0o777, mtime=1400000000),
        member("d/fifo", "6", mode=0o600),
        member("d/null", "3", mode=0o666, devmajor=1, devminor=3),
        member("x", "0", data=b"xattr", xattrs={"user.k": b"v"}),
        member(".wh.nothing"),
        member("d/.wh..wh..opq"),
        member("d/after", data=b"after the opaque marker"),
        member("e" * 150, data=b"long"),
    ]) + END_OF_ARCHIVE
    tar = str(tmp_path / "layer.tar")
    with open(tar, "wb") as f:
        f.write(layer)
    with dockerd_support.dockerd(str(tmp_path / "dockerd"), engine=engine) as d:
        d.docker("import", tar, "strata/archive:apply")
        layers = os.path.join(d.data_root, "vfs", "dir")
        (theirs,) = [os.path.join(layers, n) for n in os.listdir(layers)]
        theirs_tree = _tree(theirs)
    ours = str(tmp_path / "ours")
    os.mkdir(ours, 0o755)
    unpack.apply_layer(ours, io.BytesIO(layer), engine_version=engine)
    ours_tree = _tree(ours)
    # Implicit parents are created "now": compare all but their times.
    for t in (theirs_tree, ours_tree):
        for k in ("implicit", "implicit/parents"):
            t[k][3] = t[k][6] = None
    differ = {k: (ours_tree.get(k), theirs_tree.get(k))
              for k in set(ours_tree) | set(theirs_tree) if ours_tree.get(k) != theirs_tree.get(k)}
    assert differ == {}, "\n".join("%s:\n ours   %r\n theirs %r" % (k, a, b) for k, (a, b) in differ.items())
