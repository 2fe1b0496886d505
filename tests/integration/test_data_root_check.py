"""strata.graphdriver.data_root_check on stores a real dockerd wrote: vfs,
overlay2, fuse-overlayfs, btrfs (on a loop file), zfs (on zfs-fuse) and
devicemapper (loop-lvm, in the session's qemu VM).

A healthy store is found healthy. Then every kind of problem is made the
way it happens (a crash mid-registration or mid-removal, a full disk, a
hand-deleted directory, a changed file, a forgotten mount): each is found
once, with its path; check mode changes nothing; a repair with force
removes exactly the orphans, write sets and unfinished removals and
nothing that an image or a container uses, and the real layers still
verify.

Who writes each store: dockerd 20.10, once per driver, copied per test
(cp -a, sparse: a devicemapper store is its loop files and metadata, and
the copy's pool takes its name from the copy's home); on btrfs each test
has dockerd write its own (its layers are subvolumes, which cp -a cannot
copy). dockerd refuses zfs-fuse (see test_migration_from_drivers), so the
zfs store is the vfs store dockerd wrote, migrated to zfs by our driver on
a fresh zfs-fuse pool for each test. This kernel has no device-mapper:
``test_in_qemu_vm`` runs the devicemapper cases in the VM.
"""

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
from unittest import mock

import pytest

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import (
    fsck, migrate, new, tarsplit)
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.layerstore import (
    LayerStore, random_id)
from tests.integration.test_migration import KEEPER
from tests.support import backend_devicemapper
from tests.support import dockerd as dockerd_support
from tests.support import images
from tests.support.backends import Unavailable, backend_home
from tests.support.loop import loop_filesystem
from tests.support.playbook import run_module
from tests.support.qemu_vm import run_pytest
from tests.support.signatures import fingerprint

pytestmark = pytest.mark.root

IN_VM = os.environ.get("STRATA_IN_VM") == "1"
DRIVERS = ["vfs", "overlay2", "fuse-overlayfs", "btrfs", "zfs", "devicemapper"]
COPIED = ("vfs", "overlay2", "fuse-overlayfs", "devicemapper")
# where Docker's Get mounts a layer (moby's drivers): a stray mount is made there
MOUNT_DIR = {"vfs": "dir/{}", "btrfs": "subvolumes/{}", "zfs": "graph/{}", "devicemapper": "mnt/{}"}


class Store(object):
    def __init__(self, driver, data_root, image_count, options=None):
        self.driver, self.data_root, self.image_count = driver, data_root, image_count
        self.options = options or {}

    def module_args(self, **extra):
        args = {"data_root": self.data_root, "daemon_json": "/nonexistent"}
        if self.options:
            args["storage_opts"] = ["%s=%s" % kv for kv in sorted(self.options.items())]
        return dict(args, **extra)


def _write_store(driver, work, data_root, options=None):
    """dockerd writes the test image, a created container and keeper; returns the image count."""
    opts = ["%s=%s" % kv for kv in sorted((options or {}).items())]
    with dockerd_support.dockerd(os.path.join(work, "d"), driver, data_root, storage_opts=opts) as d:
        images.build_into(d, work)
        d.docker("create", "--name", "created", "--network", "none", images.TAG)
        assert d.docker("run", "--name", "keeper", "--network", "none", images.TAG,
                        "/bin/sh", "-c", KEEPER) == "first\n"
        return len(set(d.docker("images", "-a", "-q", "--no-trunc").split()))


@pytest.fixture(scope="module", params=DRIVERS)
def template(request, tmp_path_factory):
    """A Store dockerd wrote, to copy (on btrfs only the driver: each test writes its own)."""
    driver = request.param
    reason = dockerd_support.available() or images.busybox_available()
    if reason:
        pytest.skip(reason)
    if driver == "btrfs":
        yield Store(driver, None, None)
        return
    work = str(tmp_path_factory.mktemp("fsck-" + driver))
    data_root = os.path.join(work, "docker")
    if driver == "devicemapper":
        reason = backend_devicemapper.unavailable_reason()
        if reason:
            pytest.skip("no device-mapper here (%s); test_in_qemu_vm runs this in a VM" % reason)
        with backend_home("devicemapper", data_root) as (home, options):
            # the VM has no udev: without this dockerd refuses the driver
            options = dict(options, **{"dm.override_udev_sync_check": "true"})
            yield Store(driver, data_root, _write_store(driver, work, data_root, options), options)
        return
    # zfs: the store starts as dockerd's vfs store (dockerd refuses zfs-fuse)
    yield Store(driver, data_root, _write_store("vfs" if driver == "zfs" else driver, work, data_root))


@contextlib.contextmanager
def _zfs_copy(template, tmp_path):
    """The template's vfs store, migrated to zfs on a fresh zfs-fuse pool."""
    from tests.support.zfs_fuse import zfs_fuse_pool
    with contextlib.ExitStack() as stack:
        try:
            pool = stack.enter_context(zfs_fuse_pool(directory=str(tmp_path), size_mb=512))
        except Unavailable as e:
            pytest.skip("zfs backend unavailable: %s" % e)
        # the data-root on ext4, the layers datasets below zfs.fsname (a
        # setup Docker documents): Docker's zfs driver mounts them at
        # <data-root>/zfs/graph/<id> only while in use
        options = {"zfs.fsname": pool.create_dataset("docker", os.path.join(pool.mountpoint, "docker"))}
        data_root = str(tmp_path / "docker")
        subprocess.run(["cp", "-a", template.data_root, data_root], check=True)
        # migrate refuses a target Docker Engine cannot run, as zfs on
        # zfs-fuse: lifted for this one step, which only writes the store
        with mock.patch.object(migrate, "check_driver", return_value=(True, "")):
            migrate.migrate(data_root, "vfs", "zfs", target_options=options)
        shutil.rmtree(os.path.join(data_root, "vfs"))
        shutil.rmtree(os.path.join(data_root, "image", "vfs"))
        yield Store("zfs", data_root, template.image_count, options)


@contextlib.contextmanager
def _own_store(template, tmp_path):
    """A Store of this test's own: a copy of the template, or on btrfs written for it."""
    driver = template.driver
    if driver == "zfs":
        with _zfs_copy(template, tmp_path) as store:
            yield store
    elif driver in COPIED:
        data_root = str(tmp_path / "docker")
        subprocess.run(["cp", "-a", "--sparse=always", template.data_root, data_root], check=True)
        try:
            yield Store(driver, data_root, template.image_count, template.options)
        finally:
            if driver == "devicemapper":
                backend_devicemapper.teardown(os.path.join(data_root, driver))
                # the VM's /tmp is its memory
                shutil.rmtree(data_root, ignore_errors=True)
    else:
        with loop_filesystem("btrfs", size_mb=400) as mnt:
            data_root = os.path.join(mnt, "docker")
            yield Store(driver, data_root, _write_store(driver, str(tmp_path), data_root))


@pytest.fixture
def store(template, tmp_path):
    with _own_store(template, tmp_path) as s:
        yield s


def tree(store):
    """Every path under the data-root with its mode, size and mtime, and the
    bytes of devicemapper's pool files (every thin device is in them); but
    on zfs and devicemapper, where reading a layer means mounting it, the
    directory that holds the mountpoints without its mtime (a mountpoint
    made there and removed again touches it, as Docker's own Get does)."""
    loops = os.path.join(store.data_root, "devicemapper", "devicemapper")
    mounts_in = os.path.join(store.data_root, store.driver, MOUNT_DIR.get(store.driver, "").partition("/")[0])
    out = {}
    for dirpath, dirnames, filenames in os.walk(store.data_root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            touched = store.driver in ("zfs", "devicemapper") and path == mounts_in
            out[path] = (st.st_mode, st.st_size, None if touched else st.st_mtime_ns,
                         fingerprint(path) if dirpath == loops else None)
    return out


def mount_table(under):
    """Mountpoints at or below ``under`` (other tests' mounts come and go)."""
    with open("/proc/self/mountinfo") as f:
        return sorted(mp for mp in (line.split()[4] for line in f) if mp.startswith(under))


def test_a_store_dockerd_wrote_is_healthy(store):
    report = fsck.check(store.data_root, store.driver, store.options)
    assert report.findings == []
    assert (report.layers, report.images, report.containers) == (2, store.image_count, 2)
    run, res = run_module("data_root_check", store.module_args())
    assert not res["failed"], res
    assert res["healthy"] and res["counts"] == {} and not res["changed"]
    assert [c["driver"] for c in res["checked"]] == [store.driver]


def _driver_layer(drv):
    layer_id = random_id()
    drv.create(layer_id, None)
    return layer_id


def _write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(data)


def _break_everything(s, stray):
    """One problem of each kind; returns {kind: item} as the check must name them."""
    driver, data_root = s.driver, s.data_root
    home = os.path.join(data_root, driver)
    drv = new(driver, home, s.options)
    try:
        made, top, rw = _break(drv, driver, data_root)
    finally:
        drv.cleanup()       # unmounts what the driver mounted (overlay2 and zfs: all under its home)
    # where Docker mounts a container's layer, left mounted after the engine stopped
    where = os.path.join(home, MOUNT_DIR.get(driver, "{}/merged").format(rw))
    os.makedirs(where, exist_ok=True)
    subprocess.run(["mount", "--bind", stray, where], check=True)
    made["stray_mount"] = os.path.realpath(where)
    return made, top


def _break(drv, driver, data_root):
    layerdb = os.path.join(data_root, "image", driver, "layerdb")
    store = LayerStore(data_root, drv, recover=False)
    top = max(store.layers(), key=lambda l: store.depth(l.chain_id))
    made = {}
    made["orphan"] = _driver_layer(drv)                       # a crash after create, before the write set
    ws_layer = _driver_layer(drv)                             # a crash mid-registration
    _write(os.path.join(layerdb, "tmp", "write-set-1234", "cache-id"), ws_layer)
    made["write_set"] = "write-set-1234"
    rm_layer = _driver_layer(drv)                             # a crash mid-removal
    removing = top.chain_id[len("sha256:"):] + "-deadbeef-removing"
    shutil.copytree(top.path, os.path.join(layerdb, "sha256", removing))
    _write(os.path.join(layerdb, "sha256", removing, "cache-id"), rm_layer)
    made["removing"] = removing
    broken = random_id()                                      # a full disk: metadata half there
    _write(os.path.join(layerdb, "sha256", broken, "cache-id"), random_id())
    made["broken_layer"] = "sha256:" + broken
    gone = random_id()                                        # its files deleted by hand
    for name, data in (("diff", "sha256:" + random_id()), ("size", "0"), ("cache-id", random_id())):
        _write(os.path.join(layerdb, "sha256", gone, name), data)
    made["layer_files"] = "sha256:" + gone
    orphaned_child = random_id()                              # its parent deleted by hand
    for name, data in (("diff", "sha256:" + random_id()), ("size", "0"), ("cache-id", _driver_layer(drv)),
                       ("parent", "sha256:" + random_id())):
        _write(os.path.join(layerdb, "sha256", orphaned_child, name), data)
    made["missing_parent"] = "sha256:" + orphaned_child
    # a changed file of the image's top layer (one its tar holds)
    changed = next(e.name for e in tarsplit.read_entries(store.tar_split_path(top.chain_id))
                   if e.type == tarsplit.FILE_TYPE and e.size)
    files, release = drv.diff_dir(top.cache_id)
    try:
        with open(os.path.join(files, os.fsdecode(changed)), "a") as f:
            f.write("changed behind Docker's back\n")
    finally:
        release()
    made["corrupt_layer"] = top.chain_id
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": ["sha256:" + random_id()]}}).encode()
    image_hex = hashlib.sha256(config).hexdigest()
    with open(os.path.join(data_root, "image", driver, "imagedb", "content", "sha256", image_hex), "wb") as f:
        f.write(config)
    made["image_layers"] = "sha256:" + image_hex
    _write(os.path.join(layerdb, "mounts", "lost-rw", "mount-id"), random_id())
    made["broken_mount"] = "lost-rw"
    container = random_id()
    _write(os.path.join(data_root, "containers", container, "config.v2.json"), json.dumps({"Driver": driver}))
    made["container_layer"] = container
    return made, top, store.mounts()[0].mount_id


def _layer_path_exists(driver, path):
    if driver == "zfs":     # a dataset
        return subprocess.run(["zfs", "list", "-H", "-o", "name", path], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, universal_newlines=True).stdout.strip() == path
    return os.path.lexists(path)


def test_every_kind_is_found_and_only_the_unreferenced_is_repaired(store, tmp_path):
    driver, data_root = store.driver, store.data_root
    stray = str(tmp_path / "stray")
    os.mkdir(stray)
    try:
        made, top = _break_everything(store, stray)
        report = fsck.check(data_root, driver, store.options)
        found = sorted((f.kind, f.item) for f in report.findings)
        assert found == sorted(made.items()), found
        assert all(f.path and f.reason for f in report.findings)
        # the orphan is named where the driver keeps it: its directory, its
        # ZFS dataset, its devicemapper thin device's metadata file
        orphan = next(f for f in report.findings if f.kind == "orphan")
        assert orphan.path.endswith("/" + made["orphan"]) and _layer_path_exists(driver, orphan.path), orphan.path

        before, mounts = tree(store), mount_table(data_root)
        run, res = run_module("data_root_check", store.module_args(repair=True, force=True), check=True)
        assert not res["failed"], res
        after_tree = tree(store)
        wrote = sorted(p for p in set(before) | set(after_tree) if before.get(p) != after_tree.get(p))
        assert mount_table(data_root) == mounts, "check mode left mounts"
        assert wrote == [], "check mode changed the host: %s" % wrote
        assert sorted(f["kind"] for f in res["repaired"]) == ["orphan", "removing", "write_set"]
        assert not res["healthy"] and res["counts"] == {kind: 1 for kind in made}

        run, res = run_module("data_root_check", store.module_args(repair=True))
        assert res["failed"] and "force: true" in res["msg"]

        run, res = run_module("data_root_check", store.module_args(repair=True, force=True, verify=False))
        assert not res["failed"] and res["changed"], res
        after = fsck.check(data_root, driver, store.options)
        assert sorted(f.kind for f in after.findings) == sorted(k for k in made if k not in fsck.REPAIRABLE)
        # nothing an image or a container uses went: the real layers and mounts are all there
        assert not _layer_path_exists(driver, orphan.path), "the repaired orphan is still at %s" % orphan.path
        drv = new(driver, os.path.join(data_root, driver), store.options, read_only=True)
        try:
            assert not drv.exists(made["orphan"])
            store_after = LayerStore(data_root, drv, recover=False)
            assert store_after.exists(top.chain_id) and drv.exists(top.cache_id)
            assert store_after.verify(top.parent).chain_id == top.parent
            mounts = store_after.mounts()
            assert len(mounts) == 3 and all(drv.exists(m.mount_id) for m in mounts if m.name != "lost-rw")
        finally:
            drv.cleanup()

        run, res = run_module("data_root_check", store.module_args(repair=True, force=True, verify=False))
        assert not res["changed"] and res["repaired"] == [], "a second repair finds nothing left"
    finally:
        for mp in reversed(mount_table(data_root)):
            subprocess.run(["umount", mp], check=False)


def test_repair_is_refused_while_the_engine_runs(store, tmp_path):
    # dockerd cannot run zfs here: on the zfs store's data-root a vfs dockerd
    # runs, and an engine on the data-root is what a repair must not race
    engine_driver = "vfs" if store.driver == "zfs" else store.driver
    opts = ["%s=%s" % kv for kv in sorted(store.options.items())] if engine_driver == store.driver else []
    with dockerd_support.dockerd(str(tmp_path / "d-again"), engine_driver, store.data_root, storage_opts=opts):
        run, res = run_module("data_root_check", store.module_args(driver=store.driver, verify=False))
        assert not res["failed"] and res["checked"][0]["engine_running"], res
        run, res = run_module("data_root_check", store.module_args(driver=store.driver, repair=True,
                                                                   force=True, verify=False))
        assert res["failed"] and "repairing needs it stopped" in res["msg"], res


def test_in_qemu_vm(qemu_vm, request):
    """The devicemapper cases, in the session's VM (dockerd 20.10 writes the store there)."""
    request.node.user_properties.append(("driver", "devicemapper"))
    if IN_VM:
        pytest.skip("already inside the VM")
    if backend_devicemapper.unavailable_reason() is None:
        pytest.skip("device-mapper here: the devicemapper cases run on this host")
    _, summary = run_pytest(qemu_vm(), "-k devicemapper tests/integration/test_data_root_check.py")
    tests = sum(1 for name in globals() if name.startswith("test_") and name != "test_in_qemu_vm")
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) == tests and not re.search(r"fail|skipped|error", summary), summary
