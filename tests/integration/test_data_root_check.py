"""strata.graphdriver.data_root_check on stores a real dockerd wrote (vfs, overlay2, fuse-overlayfs,
btrfs on a loop file).

A healthy store is found healthy. Then every kind of problem is made the
way it happens (a crash mid-registration or mid-removal, a full disk, a
hand-deleted directory, a changed file, a forgotten mount): each is found
once, with its path; check mode changes nothing; a repair with force
removes exactly the orphans, write sets and unfinished removals and
nothing that an image or a container uses, and the real layers still
verify.
"""

import hashlib
import json
import os
import shutil
import subprocess

import contextlib

import pytest

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import fsck, new, tarsplit
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.layerstore import (
    LayerStore, random_id)
from tests.integration.test_migration import KEEPER
from tests.support import dockerd as dockerd_support
from tests.support import images
from tests.support.loop import loop_filesystem
from tests.support.playbook import run_module

pytestmark = pytest.mark.root

DRIVERS = ["vfs", "overlay2", "fuse-overlayfs", "btrfs"]
# A btrfs store's layers are subvolumes: cp -a cannot copy one, so each test
# on btrfs has dockerd write its own, on a fresh loop-file btrfs.
COPIED = ("vfs", "overlay2", "fuse-overlayfs")


def _write_store(driver, work, data_root):
    """dockerd writes the test image, a created container and keeper; returns the image count."""
    with dockerd_support.dockerd(os.path.join(work, "d"), driver, data_root) as d:
        images.build_into(d, work)
        d.docker("create", "--name", "created", "--network", "none", images.TAG)
        assert d.docker("run", "--name", "keeper", "--network", "none", images.TAG,
                        "/bin/sh", "-c", KEEPER) == "first\n"
        return len(set(d.docker("images", "-a", "-q", "--no-trunc").split()))


@pytest.fixture(scope="module", params=DRIVERS)
def template(request, tmp_path_factory):
    reason = dockerd_support.available() or images.busybox_available()
    if reason:
        pytest.skip(reason)
    driver = request.param
    if driver not in COPIED:
        return driver, None, None
    work = str(tmp_path_factory.mktemp("fsck-" + driver))
    data_root = os.path.join(work, "docker")
    return driver, data_root, _write_store(driver, work, data_root)


@contextlib.contextmanager
def _own_store(template, tmp_path):
    """(driver, data_root, image count): a copy of the template, or on btrfs a store of its own."""
    driver, src, image_count = template
    if driver in COPIED:
        data_root = str(tmp_path / "docker")
        subprocess.run(["cp", "-a", src, data_root], check=True)
        yield driver, data_root, image_count
        return
    with loop_filesystem("btrfs", size_mb=400) as mnt:
        data_root = os.path.join(mnt, "docker")
        yield driver, data_root, _write_store(driver, str(tmp_path), data_root)


@pytest.fixture
def store(template, tmp_path):
    with _own_store(template, tmp_path) as s:
        yield s


def tree(root):
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            out[path] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


def mount_table(under):
    """Mountpoints at or below ``under`` (other tests' mounts come and go)."""
    with open("/proc/self/mountinfo") as f:
        return sorted(mp for mp in (line.split()[4] for line in f) if mp.startswith(under))


def test_a_store_dockerd_wrote_is_healthy(store):
    driver, data_root, image_count = store
    report = fsck.check(data_root, driver)
    assert report.findings == []
    assert (report.layers, report.images, report.containers) == (2, image_count, 2)
    run, res = run_module("data_root_check", {"data_root": data_root, "daemon_json": "/nonexistent"})
    assert not res["failed"], res
    assert res["healthy"] and res["counts"] == {} and not res["changed"]
    assert [c["driver"] for c in res["checked"]] == [driver]


def _driver_layer(drv):
    layer_id = random_id()
    drv.create(layer_id, None)
    return layer_id


def _write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(data)


def _break_everything(driver, data_root, stray):
    """One problem of each kind; returns {kind: item} as the check must name them."""
    home = os.path.join(data_root, driver)
    drv = new(driver, home)
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
    # where Docker mounts a container's layer, left mounted after the engine stopped
    rw = store.mounts()[0].mount_id
    where = {"vfs": os.path.join(home, "dir", rw),
             "btrfs": os.path.join(home, "subvolumes", rw)}.get(driver, os.path.join(home, rw, "merged"))
    os.makedirs(where, exist_ok=True)
    subprocess.run(["mount", "--bind", stray, where], check=True)
    made["stray_mount"] = os.path.realpath(where)
    return made, top


def test_every_kind_is_found_and_only_the_unreferenced_is_repaired(store, tmp_path):
    driver, data_root, _images = store
    stray = str(tmp_path / "stray")
    os.mkdir(stray)
    try:
        made, top = _break_everything(driver, data_root, stray)
        report = fsck.check(data_root, driver)
        found = sorted((f.kind, f.item) for f in report.findings)
        assert found == sorted(made.items()), found
        assert all(f.path and f.reason for f in report.findings)

        before, mounts = tree(data_root), mount_table(data_root)
        run, res = run_module("data_root_check", {"data_root": data_root, "daemon_json": "/nonexistent",
                                                  "repair": True, "force": True}, check=True)
        assert not res["failed"], res
        assert tree(data_root) == before and mount_table(data_root) == mounts, "check mode changed the host"
        assert sorted(f["kind"] for f in res["repaired"]) == ["orphan", "removing", "write_set"]
        assert not res["healthy"] and res["counts"] == {kind: 1 for kind in made}

        run, res = run_module("data_root_check", {"data_root": data_root, "daemon_json": "/nonexistent",
                                                  "repair": True})
        assert res["failed"] and "force: true" in res["msg"]

        run, res = run_module("data_root_check", {"data_root": data_root, "daemon_json": "/nonexistent",
                                                  "repair": True, "force": True, "verify": False})
        assert not res["failed"] and res["changed"], res
        drv = new(driver, os.path.join(data_root, driver), read_only=True)
        assert not drv.exists(made["orphan"])
        after = fsck.check(data_root, driver)
        assert sorted(f.kind for f in after.findings) == sorted(k for k in made if k not in fsck.REPAIRABLE)
        # nothing an image or a container uses went: the real layers and mounts are all there
        store_after = LayerStore(data_root, drv, recover=False)
        assert store_after.exists(top.chain_id) and drv.exists(top.cache_id)
        assert store_after.verify(top.parent).chain_id == top.parent
        mounts = store_after.mounts()
        assert len(mounts) == 3 and all(drv.exists(m.mount_id) for m in mounts if m.name != "lost-rw")

        run, res = run_module("data_root_check", {"data_root": data_root, "daemon_json": "/nonexistent",
                                                  "repair": True, "force": True, "verify": False})
        assert not res["changed"] and res["repaired"] == [], "a second repair finds nothing left"
    finally:
        for mp in reversed(mount_table(data_root)):
            subprocess.run(["umount", mp], check=False)


def test_repair_is_refused_while_the_engine_runs(store, tmp_path):
    driver, data_root, _images = store
    with dockerd_support.dockerd(str(tmp_path / "d-again"), driver, data_root):
        run, res = run_module("data_root_check", {"data_root": data_root, "daemon_json": "/nonexistent",
                                                  "verify": False})
        assert not res["failed"] and res["checked"][0]["engine_running"], res
        run, res = run_module("data_root_check", {"data_root": data_root, "daemon_json": "/nonexistent",
                                                  "repair": True, "force": True, "verify": False})
        assert res["failed"] and "repairing needs it stopped" in res["msg"], res
