"""Read-only sources: stores of drivers Docker removed in Engine 24.

aufs, readable without the aufs kernel module. No kernel here has aufs, so
no dockerd can write an aufs store. It is made the way Docker's aufs driver
lays one out (diff/<id> with .wh. files as files, layers/<id>, mnt/<id>),
from a data-root a real dockerd wrote on vfs (an image and a container that
wrote a file and deleted one of the image's): migrate vfs -> aufs, then drop
the vfs store. Then aufs -> overlay2, and a real dockerd on overlay2 lists
the same image IDs, runs the image and starts the container, which sees
what it wrote.

overlay (v1), read without mounting. Debian 12's dockerd 20.10 still has
the driver, so the store is Docker's own: the same image and container,
written by ``dockerd --storage-driver overlay``. Our reading of a container
layer's union is checked against the kernel's (read-only overlay mounts of
the same directories, in a private directory), then overlay -> overlay2 as
for aufs, and the overlay store is unchanged to the byte.
"""

import contextlib
import hashlib
import json
import os
import shutil
import stat

import pytest

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import migrate, new, unpack
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.copy import dir_copy
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.changes import changes_dirs
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.layerstore import LayerStore
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.mount import (
    MS_RDONLY, mount, mounts_under, unmount)
from tests.integration.test_migration import KEEPER, KEPT, containers
from tests.support import dockerd as dockerd_support
from tests.support import images
from tests.support.playbook import run_module

pytestmark = pytest.mark.root


@pytest.fixture
def aufs_data_root(tmp_path):
    reason = dockerd_support.available() or images.busybox_available()
    if reason:
        pytest.skip(reason)
    data_root = str(tmp_path / "docker")
    with dockerd_support.dockerd(str(tmp_path / "d-vfs"), "vfs", data_root) as d:
        images.build_into(d, str(tmp_path))
        assert d.docker("run", "--name", "keeper", "--network", "none", images.TAG,
                        "/bin/sh", "-c", KEEPER) == "first\n"
        ids = sorted(d.docker("images", "-q", "--no-trunc").split())
    migrate.migrate(data_root, "vfs", "aufs")
    new("vfs", os.path.join(data_root, "vfs")).cleanup()
    shutil.rmtree(os.path.join(data_root, "vfs"))
    shutil.rmtree(os.path.join(data_root, "image", "vfs"))
    return data_root, ids


def test_aufs_store_is_laid_out_as_docker_did(aufs_data_root):
    data_root, _ = aufs_data_root
    home = os.path.join(data_root, "aufs")
    assert sorted(os.listdir(home)) == ["diff", "layers", "mnt"]
    store = LayerStore(data_root, new("aufs", home, read_only=True), recover=False)
    (mount,) = store.mounts()
    rw = os.path.join(home, "diff", mount.mount_id)
    # the container's deletion is an aufs whiteout file in its rw branch
    assert os.path.isfile(os.path.join(rw, ".wh.hello.txt"))
    with open(os.path.join(rw, "kept")) as f:
        assert f.read() == "kept-data\n"
    with open(os.path.join(home, "layers", mount.mount_id)) as f:
        ancestors = f.read().split()
    top = store.get(mount.parent)
    assert ancestors[0] == mount.init_id and ancestors[1] == top.cache_id
    assert all(err is None for err in store.verify_all().values())


def test_aufs_to_overlay2_keeps_images_and_containers(aufs_data_root, tmp_path):
    data_root, ids = aufs_data_root
    plan = migrate.plan(data_root, "aufs", "overlay2")
    assert plan.images == ids and len(plan.containers_to_copy) == 1
    result = migrate.migrate(data_root, "aufs", "overlay2")
    assert result.layers_copied == plan.layers_to_copy and result.containers_copied == plan.containers
    with dockerd_support.dockerd(str(tmp_path / "d-ovl"), "overlay2", data_root) as d:
        assert sorted(d.docker("images", "-q", "--no-trunc").split()) == ids
        assert d.docker("run", "--rm", "--network", "none", images.TAG, *images.RUN_CMD) == images.EXPECTED_OUTPUT
        assert containers(d) == ["keeper"]
        assert d.docker("start", "-a", "keeper") == KEPT


# --- overlay (v1) ------------------------------------------------------------

@pytest.fixture
def overlay_data_root(tmp_path):
    """A data-root written by Docker 20.10's own overlay driver: the image and
    the stopped container "keeper" (wrote /kept, deleted /hello.txt)."""
    reason = dockerd_support.available() or images.busybox_available()
    if reason:
        pytest.skip(reason)
    data_root = str(tmp_path / "docker")
    try:
        with dockerd_support.dockerd(str(tmp_path / "d-ov1"), "overlay", data_root) as d:
            assert d.docker("info", "-f", "{{.Driver}}").strip() == "overlay"
            images.build_into(d, str(tmp_path))
            assert d.docker("run", "--name", "keeper", "--network", "none", images.TAG,
                            "/bin/sh", "-c", KEEPER) == "first\n"
            ids = sorted(d.docker("images", "-q", "--no-trunc").split())
            keeper = d.docker("inspect", "-f", "{{.Id}}", "keeper").strip()
    except dockerd_support.DockerdUnavailable as e:
        pytest.skip("dockerd does not run the overlay driver here: %s" % e)
    return data_root, ids, keeper


def snapshot(*tops):
    """Every entry below ``tops``: metadata, xattrs and content (what
    "unchanged to the byte" means; access times aside)."""
    out = {}
    for top in tops:
        for dirpath, dirnames, filenames in os.walk(top):
            for path in [dirpath] + [os.path.join(dirpath, n) for n in dirnames + filenames]:
                st = os.lstat(path)
                xattrs = {n: os.getxattr(path, n, follow_symlinks=False)
                          for n in os.listxattr(path, follow_symlinks=False)}
                if stat.S_ISREG(st.st_mode):
                    with open(path, "rb") as f:
                        content = hashlib.sha256(f.read()).hexdigest()
                elif stat.S_ISLNK(st.st_mode):
                    content = os.readlink(path)
                else:
                    content = None
                out[path] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_rdev, st.st_ino,
                             st.st_nlink, st.st_mtime_ns, st.st_ctime_ns, sorted(xattrs.items()), content)
    return out


@contextlib.contextmanager
def kernel_views(drv, workdir):
    """view(layer): the layer's tree as the kernel shows it: an image
    layer's root/, a container layer's upper/ over its lower root/ mounted
    read-only (lower directories only: nothing is written to the store).
    Every mount is undone on the way out."""
    made = {}

    def view(layer):
        md = drv.metadata(layer)
        if "RootDir" in md:
            return md["RootDir"]
        if layer not in made:
            path = os.path.join(workdir, layer)
            os.makedirs(path)
            mount("overlay", path, "overlay", MS_RDONLY, "lowerdir=%s:%s" % (md["UpperDir"], md["LowerDir"]))
            made[layer] = path
        return made[layer]

    try:
        yield view
    finally:
        for path in made.values():
            unmount(path)


@contextlib.contextmanager
def overlay_mounted(lower, upper, work, at):
    """A read-write overlay mount, as Docker's overlay driver makes for a
    container: what is done through it lands in ``upper`` as the kernel
    writes it (whiteouts, opaque directories)."""
    os.makedirs(at)
    mount("overlay", at, "overlay", 0, "lowerdir=%s,upperdir=%s,workdir=%s" % (lower, upper, work))
    try:
        yield at
    finally:
        unmount(at)


def write(path, data=b"x"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def test_overlay_union_reads_as_the_kernel_mounts_it(tmp_path):
    """What a container can do, done through real mounts in a store laid
    out as Docker's overlay does, then read back without mounting: the
    changes are the kernel's, and the diffs applied in turn on a plain copy
    of the image give the tree the kernel shows."""
    home = tmp_path / "overlay"
    base, init, rw = "b" * 64, "b" * 64 + "-init", "c" * 64
    root = str(home / base / "root")
    for rel in ("etc/passwd", "etc/group", "dir/a", "dir/sub/b", "data/x", "keep/y", "bin/busybox"):
        write(os.path.join(root, rel), rel.encode())
    os.link(os.path.join(root, "bin/busybox"), os.path.join(root, "bin/sh"))
    os.symlink("busybox", os.path.join(root, "bin/ls"))
    for layer in (init, rw):
        for sub in ("upper", "work"):
            os.makedirs(str(home / layer / sub))
        (home / layer / "lower-id").write_text(base)
    with overlay_mounted(root, str(home / init / "upper"), str(home / init / "work"), str(tmp_path / "m1")) as m:
        write(m + "/etc/hosts", b"127.0.0.1 localhost\n")     # what Docker's init layer adds
        os.makedirs(m + "/dev/shm")
    # Docker's Create of the rw layer: a copy of the init layer's upper/
    shutil.rmtree(str(home / rw / "upper"))
    dir_copy(str(home / init / "upper"), str(home / rw / "upper"), xattrs=("trusted.overlay.opaque",))
    with overlay_mounted(root, str(home / rw / "upper"), str(home / rw / "work"), str(tmp_path / "m2")) as m:
        os.unlink(m + "/etc/group")                 # a lower file: a whiteout
        os.unlink(m + "/etc/hosts")                 # an init file: simply gone from upper/
        shutil.rmtree(m + "/dir")
        write(m + "/dir/fresh")                     # recreated: an opaque directory
        shutil.rmtree(m + "/data")
        write(m + "/data", b"a file now")           # a directory replaced by a file
        os.chmod(m + "/keep/y", 0o600)              # copied up, metadata changed
        write(m + "/bin/busybox", b"rewritten")     # one name of a hard-linked pair
        os.link(m + "/etc/passwd", m + "/etc/passwd2")
        os.symlink("/nowhere", m + "/dangling")
    drv = new("overlay", str(home), read_only=True)
    assert drv.changes(rw, init) != []
    with kernel_views(drv, str(tmp_path / "views")) as view:
        for layer, parent in ((init, base), (rw, init), (rw, base), (rw, None), (init, None)):
            assert drv.changes(layer, parent) == changes_dirs(view(layer), parent and view(parent)), (layer, parent)
        applied = str(tmp_path / "applied")
        dir_copy(root, applied)
        for layer, parent in ((init, base), (rw, init)):
            with drv.diff(layer, parent) as stream:
                unpack.apply_layer(applied, stream)
        assert changes_dirs(view(rw), applied) == []
    assert mounts_under(str(tmp_path)) == []


def test_overlay_store_written_by_dockerd_reads_and_verifies(overlay_data_root, tmp_path):
    data_root, _, keeper = overlay_data_root
    home = os.path.join(data_root, "overlay")
    drv = new("overlay", home, read_only=True)
    store = LayerStore(data_root, drv, recover=False)
    (mount_,) = store.mounts()
    assert mount_.name == keeper
    top = store.get(mount_.parent).cache_id
    # Docker's layout: image layers are whole root/ trees, container layers
    # an upper/ over the top image layer's root/
    for layer in store.layers():
        assert os.listdir(os.path.join(home, layer.cache_id)) == ["root"]
    for layer_id in (mount_.init_id, mount_.mount_id):
        assert sorted(os.listdir(os.path.join(home, layer_id))) == ["lower-id", "upper", "work"]
        with open(os.path.join(home, layer_id, "lower-id")) as f:
            assert f.read() == top
    rw = os.path.join(home, mount_.mount_id, "upper")
    gone = os.lstat(os.path.join(rw, "hello.txt"))
    assert stat.S_ISCHR(gone.st_mode) and gone.st_rdev == 0, "the deletion is an overlay whiteout"
    with open(os.path.join(rw, "kept")) as f:
        assert f.read() == "kept-data\n"
    # every image layer's tar, rebuilt from tar-split and root/, has its DiffID
    assert all(err is None for err in store.verify_all().values())
    assert [str(c) for c in drv.changes(mount_.mount_id, mount_.init_id)] == ["D /hello.txt", "A /kept"]
    # the union read from the directories is the one the kernel mounts
    with kernel_views(drv, str(tmp_path / "views")) as view:
        for layer, parent in ((mount_.init_id, top), (mount_.mount_id, mount_.init_id),
                              (mount_.mount_id, top), (mount_.mount_id, None)):
            assert drv.changes(layer, parent) == changes_dirs(view(layer), parent and view(parent))
    assert mounts_under(str(tmp_path)) == []
    assert migrate.plan(data_root, "overlay", "overlay2").containers == [keeper]


def test_overlay_to_overlay2_keeps_images_and_containers(overlay_data_root, tmp_path):
    data_root, ids, keeper = overlay_data_root
    source = (os.path.join(data_root, "overlay"), os.path.join(data_root, "image", "overlay"))
    before = snapshot(*source)
    # a 20.10 host configured with overlay: the module takes the source from daemon.json
    conf = str(tmp_path / "daemon.json")
    with open(conf, "w") as f:
        json.dump({"data-root": data_root, "storage-driver": "overlay"}, f)
    run, checked = run_module("driver_migration", {"target": "overlay2", "daemon_json": conf}, check=True)
    assert run.rc == 0 and not checked["failed"], run.stdout[-5000:]
    assert checked["source"] == "overlay" and checked["images"] == ids and checked["containers"] == [keeper]
    plan = migrate.plan(data_root, "overlay", "overlay2")
    assert plan.images == ids and len(plan.layers_to_copy) == 2 and plan.containers_to_copy == [keeper]
    result = migrate.migrate(data_root, "overlay", "overlay2")
    assert result.layers_copied == plan.layers_to_copy and result.containers_copied == [keeper]
    with dockerd_support.dockerd(str(tmp_path / "d-ovl2"), "overlay2", data_root) as d:
        assert sorted(d.docker("images", "-q", "--no-trunc").split()) == ids
        assert d.docker("run", "--rm", "--network", "none", images.TAG, *images.RUN_CMD) == images.EXPECTED_OUTPUT
        assert containers(d) == ["keeper"]
        assert d.docker("start", "-a", "keeper") == KEPT
    assert snapshot(*source) == before, "the overlay store is read, never written"
    # once overlay2 is proven, the old store can go (Docker's Remove per layer)
    migrate.remove_source(data_root, "overlay")
    assert os.listdir(source[0]) == [] and not os.path.exists(source[1])
    target = LayerStore(data_root, new("overlay2", os.path.join(data_root, "overlay2"), read_only=True), recover=False)
    assert all(err is None for err in target.verify_all().values())
