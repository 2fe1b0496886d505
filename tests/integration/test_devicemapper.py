"""devicemapper: NotSupported where the kernel has no device-mapper (this
host), and the real thing inside a qemu VM booted with Debian's kernel.

``test_in_qemu_vm`` boots one VM (tests/support/qemu_vm.py) that runs, on
the repository shared from the host, the conformance suite for devicemapper
and every ``test_dm_*`` test of this file. Those run only where device-mapper
thin pools exist (so here they skip, saying so, and the VM runs them).
"""

import json
import os
import re
import shutil
import subprocess
import time

import pytest

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import (
    GraphDriverError, NotSupported, QuotaError, check_support, new)
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import (
    devicemapper as dm)
from tests.support import backend_devicemapper, host_state
from tests.support.host_state import differences
from tests.support.qemu_vm import run_pytest
from tests.support.signatures import fingerprint

from . import graphtest

IN_VM = os.environ.get("STRATA_IN_VM") == "1"
REASON = backend_devicemapper.unavailable_reason()
needs_dm = pytest.mark.skipif(
    REASON is not None,
    reason="no device-mapper here (%s); test_in_qemu_vm runs this in a VM" % REASON)

MiB = 1 << 20
DEVINFO_KEYS = ["device_id", "size", "transaction_id", "initialized", "deleted"]


# --- on this host ---------------------------------------------------------

def test_not_supported_without_device_mapper(tmp_path):
    if REASON is None:
        pytest.skip("this kernel has device-mapper thin pools")
    home = tmp_path / "devicemapper"
    with pytest.raises(NotSupported) as e:
        new("devicemapper", str(home), {})
    assert "device-mapper" in e.value.reason
    # refused before touching anything
    assert not home.exists()


def test_in_qemu_vm(qemu_vm):
    """The conformance suite and the test_dm_* tests, in the session's VM."""
    if IN_VM:
        pytest.skip("already inside the VM")
    _, summary = run_pytest(qemu_vm(), "-k devicemapper tests/integration/test_conformance.py "
                            "tests/integration/test_layerstore_drivers.py "
                            "tests/integration/test_devicemapper.py")
    passed = int(re.search(r"(\d+) passed", summary).group(1))
    # 6 conformance tests (set_quota skips: below xfs base size), 2 layer store tests, test_dm_*
    dm_tests = sum(1 for name in globals() if name.startswith("test_dm_"))
    assert passed >= 6 + 2 + dm_tests, summary
    assert "failed" not in summary and "error" not in summary, summary


# --- where device-mapper exists (inside the VM) -----------------------------

@pytest.fixture
def home(tmp_path):
    path = str(tmp_path / "devicemapper")
    try:
        yield path
    finally:
        backend_devicemapper.teardown(path)
        # the VM's /tmp is a tmpfs (half its memory): each pool's written
        # blocks would stay there and fill it for the tests after
        shutil.rmtree(path, ignore_errors=True)


def start(home, **extra):
    options = dict(backend_devicemapper.OPTIONS)
    options.update(extra)
    return new("devicemapper", home, options)


def read_json(path):
    with open(path) as f:
        return json.load(f)


def dmsetup(*args):
    return subprocess.run(["dmsetup"] + list(args), check=True, stdout=subprocess.PIPE,
                          universal_newlines=True).stdout


def pool_state(home):
    """The pool's loop files (mtime, size and data bytes) and the driver's
    metadata tree, host_state-style; the mountpoints' directory is left out
    (a get makes a mountpoint there, as Docker's does)."""
    loops = os.path.join(home, "devicemapper")
    return {"trees": {"metadata": host_state.tree(os.path.join(home, "metadata"))},
            "devices": {name: (os.stat(os.path.join(loops, name)).st_mtime_ns,
                               fingerprint(os.path.join(loops, name))) for name in ("data", "metadata")}}


def pool_can_create_thin(drv, device_id):
    """True if the pool has no thin device ``device_id`` (made and deleted)."""
    try:
        dmsetup("message", drv.pool_name, "0", "create_thin %d" % device_id)
    except subprocess.CalledProcessError:
        return False
    dmsetup("message", drv.pool_name, "0", "delete %d" % device_id)
    return True


@needs_dm
def test_dm_metadata_files_as_docker(home):
    """Hand-written from moby v20.10.24 daemon/graphdriver/devmapper/
    deviceset.go (devicemapper left Docker at 25.0, and this expectation is
    not compared with a dockerd-written store): devInfo, transaction and
    DeviceSet's JSON tags, writeMetaFile, maxDeviceID."""
    drv = start(home)
    try:
        drv.create("l1")
        drv.create("l2", "l1")
        meta = os.path.join(home, "metadata")
        # metadataFile(info): metadata/<hash>; deviceSetMetaFile,
        # transactionMetaFile: "deviceset-metadata", "transaction-metadata"
        assert sorted(os.listdir(meta)) == ["base", "deviceset-metadata", "l1", "l2",
                                            "transaction-metadata"]
        infos = {n: read_json(os.path.join(meta, n)) for n in ("base", "l1", "l2")}
        for info in infos.values():
            # devInfo's json tags, in field order (Hash is json:"-")
            assert list(info) == DEVINFO_KEYS
            # maxDeviceID = 0xffffff (24 bit, pool limit)
            assert 0 < info["device_id"] <= 0xffffff
            assert info["deleted"] is False
        assert infos["base"]["initialized"] is True
        assert len({i["device_id"] for i in infos.values()}) == 3
        tx = [infos[n]["transaction_id"] for n in ("base", "l1", "l2")]
        assert tx == sorted(tx) and len(set(tx)) == 3
        # closeTransaction: updatePoolTransactionID, so the pool's own
        # transaction id is the last one closed; openTransaction saved
        # {"open_transaction_id", "device_hash", "device_id"} first
        assert drv.pool_status()[0] == tx[-1]
        assert read_json(os.path.join(meta, "transaction-metadata")) == {
            "open_transaction_id": tx[-1], "device_hash": "l2",
            "device_id": infos["l2"]["device_id"]}
        # saveDeviceSetMetaData: DeviceSet's exported fields (NextDeviceID as
        # json:"next_device_id", BaseDeviceUUID, BaseDeviceFilesystem)
        dsm = read_json(os.path.join(meta, "deviceset-metadata"))
        assert dsm["BaseDeviceFilesystem"] == "xfs"
        assert dsm["next_device_id"] == infos["l2"]["device_id"]
        assert re.match(r"^[0-9a-f-]{36}$", dsm["BaseDeviceUUID"])
        # writeMetaFile: os.CreateTemp (0600), Sync, Rename
        for name in os.listdir(meta):
            assert os.stat(os.path.join(meta, name)).st_mode & 0o777 == 0o600
    finally:
        drv.cleanup()


@needs_dm
def test_dm_support_check_makes_nothing(home, tmp_path):
    """driver_info's question on a devicemapper host: answered with no
    home, no loop file or device and no dm device made."""
    def host():
        return (subprocess.run(["losetup", "-a"], stdout=subprocess.PIPE, universal_newlines=True).stdout,
                dmsetup("ls"), sorted(os.listdir(str(tmp_path))))
    before = host()
    drv = check_support("devicemapper", home, backend_devicemapper.OPTIONS)
    assert drv.engine_refusal() is None and not drv.exists("anything")
    with pytest.raises(GraphDriverError, match="opened read-only"):
        drv.create("l1")
    with pytest.raises(GraphDriverError, match="Unable to find thin pool"):
        check_support("devicemapper", home, {"dm.thinpooldev": "no-such-pool"})
    assert host() == before and not os.path.exists(home)


@needs_dm
def test_dm_device_names_and_mount(home):
    drv = start(home)
    try:
        drv.create("layer")
        st = os.stat(home)
        # deviceset.go (v20.10.24) initDevmapper: devicePrefix
        # "docker-<major>:<minor>-<inode of the home>"; getPoolName: + "-pool"
        prefix = "docker-%d:%d-%d" % (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
        assert drv.pool_name == prefix + "-pool"
        root = drv.get("layer")
        # devmapper/driver.go (v20.10.24) Get: mnt/<id>/rootfs, and an "id"
        # file holding the id beside it
        assert root == os.path.join(home, "mnt", "layer", "rootfs")
        names = dmsetup("ls").split()
        assert prefix + "-layer" in names and prefix + "-pool" in names
        with open(os.path.join(home, "mnt", "layer", "id")) as f:
            assert f.read() == "layer"
        assert drv.get("layer") == root           # counted twice
        drv.put("layer")
        assert os.path.ismount(os.path.dirname(root))
        drv.put("layer")
        assert not os.path.ismount(os.path.dirname(root))
        assert prefix + "-layer" not in dmsetup("ls").split()   # deactivated
        assert drv.metadata("layer")["DeviceName"] == prefix + "-layer"
    finally:
        drv.cleanup()


@needs_dm
def test_dm_loop_files_are_sparse(home):
    # deviceset.go (v20.10.24) ensureImage: sparse files devicemapper/data and
    # devicemapper/metadata (sizes from the backend's options);
    # driver.go Status: the keys and units.HumanSize values (64K blocks:
    # defaultThinpBlockSize = 128 sectors)
    drv = start(home)
    try:
        for name, size in (("data", 2 << 30), ("metadata", 64 * MiB)):
            st = os.stat(os.path.join(home, "devicemapper", name))
            assert st.st_size == size
            assert st.st_blocks * 512 < st.st_size // 4, name
        status = dict(drv.status())
        assert status["Data loop file"] == os.path.join(home, "devicemapper", "data")
        assert status["Data file"].startswith("/dev/loop")
        assert status["Backing Filesystem"] == "xfs"
        assert status["Pool Blocksize"] == "65.54kB"
        assert status["Base Device Size"] == "335.5MB"
    finally:
        drv.cleanup()
    # the pool is gone and autoclear freed its loop devices
    assert drv.pool_name not in dmsetup("ls")
    assert os.path.join(home, "devicemapper") not in subprocess.run(
        ["losetup", "-a"], stdout=subprocess.PIPE, universal_newlines=True).stdout


@needs_dm
def test_dm_rollback_crash_before_metadata(home):
    drv = start(home)
    base = read_json(os.path.join(home, "metadata", "base"))
    tx = drv.pool_status()[0]
    new_id = base["device_id"] + 1
    # What Docker would have done before dying: transaction opened and saved,
    # snapshot made in the pool; no metadata/<hash>, no set_transaction_id.
    with open(os.path.join(home, "metadata", "transaction-metadata"), "w") as f:
        json.dump({"open_transaction_id": tx + 1, "device_hash": "crashed",
                   "device_id": new_id}, f)
    dmsetup("message", drv.pool_name, "0", "create_snap %d %d" % (new_id, base["device_id"]))
    assert not pool_can_create_thin(drv, new_id)
    drv = start(home)       # the next start rolls back
    try:
        assert pool_can_create_thin(drv, new_id)
        assert not drv.exists("crashed")
        assert drv.pool_status()[0] == tx
        drv.create("after")
        assert read_json(os.path.join(home, "metadata", "after"))["transaction_id"] == tx + 1
    finally:
        drv.cleanup()


@needs_dm
def test_dm_rollback_crash_before_set_transaction_id(home, monkeypatch):
    drv = start(home)
    tx = drv.pool_status()[0]

    class Crash(BaseException):
        pass

    def crash():
        raise Crash()
    monkeypatch.setattr(drv, "_close_transaction", crash)
    with pytest.raises(Crash):
        drv.create("crashed")
    device_id = read_json(os.path.join(home, "metadata", "crashed"))["device_id"]
    monkeypatch.undo()
    drv = start(home)
    try:
        assert not os.path.exists(os.path.join(home, "metadata", "crashed"))
        assert not drv.exists("crashed")
        assert pool_can_create_thin(drv, device_id)
        assert drv.pool_status()[0] == tx
    finally:
        drv.cleanup()


@needs_dm
def test_dm_remove_frees_thin_device(home):
    drv = start(home)
    try:
        drv.create("layer")
        device_id = drv.lookup("layer").device_id
        root = drv.get("layer")
        graphtest.write_random_file(os.path.join(root, "blob"), 8 * MiB)
        drv.put("layer")
        used = drv.pool_status()[3]
        drv.remove("layer")
        assert not drv.exists("layer")
        assert not os.path.exists(os.path.join(home, "metadata", "layer"))
        assert not os.path.exists(os.path.join(home, "mnt", "layer"))
        assert drv.pool_status()[3] < used
        assert pool_can_create_thin(drv, device_id)
        drv.remove("layer")      # idempotent
    finally:
        drv.cleanup()


@needs_dm
def test_dm_size_is_base_size(home):
    drv = start(home)
    try:
        drv.create("layer")
        assert drv.lookup("layer").size == 320 * MiB
        assert drv.metadata("layer")["DeviceSize"] == str(320 * MiB)
        st = os.statvfs(drv.get("layer"))
        # xfs counts its internal log (64M at this size) out of f_blocks
        assert 0.7 * 320 * MiB < st.f_blocks * st.f_frsize <= 320 * MiB
        drv.put("layer")
        with pytest.raises(QuotaError):
            drv.create_read_write("small", "layer", {"size": "100M"})
        assert not drv.exists("small")
    finally:
        drv.cleanup()


@needs_dm
def test_dm_ext4_size_opt_grows_and_is_enforced(home):
    drv = start(home, **{"dm.fs": "ext4", "dm.basesize": "32M"})
    try:
        graphtest.driver_test_set_quota(drv, required=True)
        drv.create_read_write("big", None, {"size": "96M"})
        st = os.statvfs(drv.get("big"))
        assert st.f_blocks * st.f_frsize > 64 * MiB
        drv.put("big")
        assert read_json(os.path.join(home, "metadata", "deviceset-metadata"))[
            "BaseDeviceFilesystem"] == "ext4"
    finally:
        drv.cleanup()


@needs_dm
def test_dm_restart_keeps_layers(home):
    drv = start(home)
    try:
        drv.create("l1")
        root = drv.get("l1")
        with open(os.path.join(root, "hello"), "w") as f:
            f.write("world")
        drv.put("l1")
        tx = drv.pool_status()[0]
    finally:
        drv.cleanup()
    drv = start(home)
    try:
        assert drv.pool_status()[0] == tx
        drv.create("l2", "l1")
        with open(os.path.join(drv.get("l2"), "hello")) as f:
            assert f.read() == "world"
        drv.put("l2")
    finally:
        drv.cleanup()


@needs_dm
@pytest.mark.parametrize("fs", ["xfs", "ext4"])
def test_dm_read_only_reads_a_stopped_store(home, fs):
    """A migration source (or a data-root check) is opened read-only, after
    its engine's Shutdown removed the pool: its layers read (the pool is
    made again from the loop files, attached read-only), nothing is
    written, and once the last layer is put no device is left."""
    options = dict(backend_devicemapper.OPTIONS, **{"dm.fs": fs})
    drv = new("devicemapper", home, options)
    try:
        drv.create("l1")
        with open(os.path.join(drv.get("l1"), "hello"), "w") as f:
            f.write("world")
        drv.put("l1")
        drv.create("l2", "l1")
    finally:
        drv.cleanup()
    time.sleep(0.05)    # a write now would show in the files' mtimes
    before = pool_state(home)
    ro = new("devicemapper", home, options, read_only=True)
    assert backend_devicemapper.leftover_devices(home) == [], "opening makes no device"
    try:
        with open(os.path.join(ro.get("l2"), "hello")) as f:
            assert f.read() == "world"
        loops = subprocess.run(["losetup", "--noheadings", "-O", "RO,BACK-FILE", "--list"], check=True,
                               stdout=subprocess.PIPE, universal_newlines=True).stdout.split("\n")
        assert sorted(line.split()[0] for line in loops if home in line) == ["1", "1"], loops
        assert "READ-ONLY" in dmsetup("info", ro.dm_name("l2"))
        ro.put("l2")
        assert ro.changes("l2", "l1") == []
        assert backend_devicemapper.leftover_devices(home) == [], "the last put removes the pool it made"
    finally:
        ro.cleanup()
    # the pool's files (so every thin device's bytes) and the metadata are
    # as they were: reading a layer wrote nothing (xfs mounted ro wrote
    # to its device, and so to the data and metadata loop files, before
    # the loop devices and thin devices were made read-only)
    assert differences(before, pool_state(home)) == []


@needs_dm
def test_dm_unknown_option(home):
    with pytest.raises(dm.GraphDriverError, match="Unknown option dm.nosuch"):
        start(home, **{"dm.nosuch": "1"})


LVM_CONFIG = ("activation{udev_sync=0 udev_rules=0} devices{obtain_device_list_from_udev=0} "
              "backup{backup=0 archive=0}")


def lvm(*args):
    return subprocess.run(["lvm", args[0], "--config", LVM_CONFIG] + list(args[1:]),
                          check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True).stdout


@needs_dm
def test_dm_direct_lvm_thinpooldev(tmp_path, home):
    """direct-lvm: an LVM thin pool given as dm.thinpooldev; the driver keeps
    no loop files and leaves the pool in place on cleanup."""
    if not os.path.exists("/usr/sbin/lvm") and not os.path.exists("/sbin/lvm"):
        pytest.skip("lvm2 is not installed")
    disk = str(tmp_path / "disk")
    with open(disk, "wb") as f:
        f.truncate(640 * MiB)
    loop = subprocess.run(["losetup", "-f", "--show", disk], check=True,
                          stdout=subprocess.PIPE, universal_newlines=True).stdout.strip()
    vg = "stratadm%d" % os.getpid()
    try:
        lvm("pvcreate", "-q", loop)
        lvm("vgcreate", "-q", vg, loop)
        lvm("lvcreate", "-q", "--type", "thin-pool", "-L", "480M", "-n", "thinpool", vg)
        pool = "/dev/mapper/%s-thinpool" % vg
        drv = new("devicemapper", home, {"dm.thinpooldev": pool, "dm.basesize": "320M"})
        try:
            assert drv.pool_name == "%s-thinpool" % vg
            drv.create("l1")
            with open(os.path.join(drv.get("l1"), "f"), "w") as f:
                f.write("direct")
            drv.put("l1")
            drv.create("l2", "l1")
            with open(os.path.join(drv.get("l2"), "f")) as f:
                assert f.read() == "direct"
            drv.put("l2")
            assert not os.path.exists(os.path.join(home, "devicemapper"))
            status = dict(drv.status())
            assert status["Pool Name"] == "%s-thinpool" % vg
            assert "Data loop file" not in status
            tx = drv.pool_status()[0]
            assert read_json(os.path.join(home, "metadata", "l2"))["transaction_id"] == tx
        finally:
            drv.cleanup()
        assert "%s-thinpool" % vg in dmsetup("ls")      # the user's pool stays
    finally:
        backend_devicemapper.teardown(home)
        subprocess.run(["dmsetup", "remove", "--retry", "%s-thinpool" % vg],
                       stderr=subprocess.DEVNULL)
        for name in dmsetup("ls").split():
            if name.startswith(vg + "-"):
                subprocess.run(["dmsetup", "remove", name], stderr=subprocess.DEVNULL)
        subprocess.run(["losetup", "-d", loop])


DEFERRED = {"dm.use_deferred_removal": "true", "dm.use_deferred_deletion": "true"}


def test_deferred_deletion_needs_deferred_removal(tmp_path):
    # Docker's rule, checked before anything is made
    with pytest.raises(GraphDriverError, match="Enable deferred removal using --storage-opt "
                                               "dm.use_deferred_removal=true"):
        new("devicemapper", str(tmp_path / "devicemapper"), {"dm.use_deferred_deletion": "true"})
    assert not (tmp_path / "devicemapper").exists()


def _wait_gone(name):
    # the kernel completes a deferred removal from a work queue, after the last close
    for attempt in range(600):   # pylint: disable=unused-variable
        if name not in dmsetup("ls").split():
            return
        time.sleep(0.1)
    raise AssertionError("%s still exists after its last close" % name)


@needs_dm
def test_dm_deferred_deletion_of_a_busy_device(home):
    """A layer removed while its thin device is still open elsewhere (a
    mount leaked into another namespace): removal is deferred to the last
    close, the layer is marked deleted and gone from the API, its device id
    stays taken; once closed, the next remove deletes it for good."""
    drv = start(home, **DEFERRED)
    try:
        status = dict(drv.status())
        assert (status["Deferred Removal Enabled"], status["Deferred Deletion Enabled"]) == ("true", "true")
        drv.create("busy")
        drv.create("other")
        device_id = drv.lookup("busy").device_id
        name = drv.metadata("busy")["DeviceName"]
        drv.get("busy")
        holder = os.open("/dev/mapper/" + name, os.O_RDONLY)
        try:
            drv.put("busy")
            assert "DEFERRED REMOVE" in dmsetup("info", name)
            drv.remove("busy")
            assert not drv.exists("busy") and "busy" not in drv.layer_ids()
            assert read_json(os.path.join(home, "metadata", "busy"))["deleted"] is True
            assert dict(drv.status())["Deferred Deleted Device Count"] == "1"
            assert not pool_can_create_thin(drv, device_id)
            with pytest.raises(GraphDriverError, match="Deleted=true"):
                drv.create("busy")
        finally:
            os.close(holder)
        _wait_gone(name)
        drv.remove("other")          # retries the marked deletion
        assert not os.path.exists(os.path.join(home, "metadata", "busy"))
        assert dict(drv.status())["Deferred Deleted Device Count"] == "0"
        assert pool_can_create_thin(drv, device_id)
    finally:
        drv.cleanup()


@needs_dm
def test_dm_get_cancels_a_deferred_removal(home):
    drv = start(home, **DEFERRED)
    try:
        drv.create("layer")
        with open(os.path.join(drv.get("layer"), "f"), "w") as f:
            f.write("kept")
        name = drv.metadata("layer")["DeviceName"]
        holder = os.open("/dev/mapper/" + name, os.O_RDONLY)
        try:
            drv.put("layer")
            assert "DEFERRED REMOVE" in dmsetup("info", name)
            with open(os.path.join(drv.get("layer"), "f")) as f:
                assert f.read() == "kept"
            assert "DEFERRED REMOVE" not in dmsetup("info", name)
        finally:
            os.close(holder)
        assert name in dmsetup("ls").split()      # still in use: the get kept it
        drv.put("layer")
        _wait_gone(name)
    finally:
        drv.cleanup()
