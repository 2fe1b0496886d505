"""Check mode changes nothing on the host, for every module.

Each case runs one module with --check on real storage and compares the
host before and after (tests/support/host_state.py: the data-root tree, the
mount table, loop devices, device bytes, ZFS, reference counts).
driver_migration's check mode is compared the same way in
test_modules_driver_migration.py, on a data-root a real dockerd wrote.
"""

import contextlib
import os
import subprocess

import pytest

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import new
from tests.integration.test_modules_layer import make_tar
from tests.support.backends import Unavailable
from tests.support.host_state import differences, host_state
from tests.support.playbook import run_module
from tests.support.signatures import signature_templates
from tests.support.zfs_fuse import zfs_fuse_daemon

pytestmark = pytest.mark.root


def check_changes_nothing(module, params, trees=(), devices=(), expect_failure=False):
    before = host_state(trees, devices)
    run, res = run_module(module, params, check=True, diff=True)
    after = host_state(trees, devices)
    assert res["failed"] is expect_failure, res
    assert differences(before, after) == [], "%s in check mode changed the host" % module
    return res


@pytest.fixture
def populated(tmp_path):
    """A data-root with an overlay2 store: a base layer and a mounted child."""
    data_root = str(tmp_path / "docker")
    drv = new("overlay2", os.path.join(data_root, "overlay2"))
    drv.create("base")
    drv.create_read_write("ctr", "base")
    drv.get("ctr")
    try:
        yield data_root
    finally:
        drv.cleanup()


def test_driver_info_on_a_fresh_data_root_writes_nothing(tmp_path):
    data_root = str(tmp_path / "docker")
    res = check_changes_nothing("driver_info", {"data_root": data_root, "daemon_json": str(tmp_path / "no.json")},
                                trees=[str(tmp_path)])
    assert not os.path.exists(data_root)
    assert res["drivers"]["overlay2"]["supported"] is True
    assert res["drivers"]["devicemapper"]["supported"] is False


def test_driver_info_on_a_store_in_use_writes_nothing(populated, tmp_path):
    res = check_changes_nothing("driver_info", {"data_root": populated, "daemon_json": str(tmp_path / "no.json")},
                                trees=[str(tmp_path)])
    assert res["prior_state"] == ["overlay2"]


def test_storage_driver_writes_nothing(tmp_path):
    conf = str(tmp_path / "daemon.json")
    res = check_changes_nothing("storage_driver", {"name": "overlay2", "data_root": str(tmp_path / "docker"),
                                                   "daemon_json": conf}, trees=[str(tmp_path)])
    assert res["changed"] is True and not os.path.exists(conf)


@pytest.mark.parametrize("driver", ["overlay2", "vfs", "fuse-overlayfs"])
def test_layer_on_a_fresh_data_root_makes_no_home(driver, tmp_path):
    # Docker counts a non-empty <data-root>/<driver> as prior state: a dry run must not make one.
    tar = make_tar(str(tmp_path / "base.tar"))
    data_root = str(tmp_path / "docker")
    res = check_changes_nothing("layer", {"driver": driver, "data_root": data_root, "id": "base", "tar": tar},
                                trees=[str(tmp_path)])
    assert res["changed"] is True and res["exists"] is True and res["mounted"] is False
    assert not os.path.exists(data_root)


@pytest.mark.parametrize("state,params", [
    ("mounted", {"id": "c2", "parent": "base", "read_write": True}),
    ("unmounted", {"id": "ctr"}),
    ("absent", {"id": "ctr", "force": True}),
])
def test_layer_on_a_store_in_use_changes_nothing(populated, state, params, tmp_path):
    p = {"driver": "overlay2", "data_root": populated, "state": state}
    p.update(params)
    res = check_changes_nothing("layer", p, trees=[str(tmp_path)])
    assert res["changed"] is True


@contextlib.contextmanager
def _loop(image):
    dev = subprocess.run(["losetup", "--find", "--show", image], check=True, stdout=subprocess.PIPE,
                         universal_newlines=True).stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


@pytest.fixture
def devices(tmp_path):
    """{kind: (loop device, its image)} for a blank image, a second blank one and a GPT disk."""
    with signature_templates(str(tmp_path), kinds=("open", "gpt")) as t:
        blank2 = str(tmp_path / "blank2.img")
        subprocess.run(["cp", "--sparse=always", t["open"], blank2], check=True)
        with _loop(t["open"]) as a, _loop(blank2) as b, _loop(t["gpt"]) as g:
            yield {"blank": (a, t["open"]), "blank2": (b, blank2), "gpt": (g, t["gpt"])}


def _images(devices):
    return [image for _, image in devices.values()]


@pytest.mark.parametrize("params", [{"fstype": "xfs"}, {"fstype": "ext4", "label": "docker"}])
def test_filesystem_writes_no_device(devices, params, tmp_path):
    dev = devices["blank"][0]
    res = check_changes_nothing("filesystem", dict(params, device=dev), trees=[str(tmp_path)],
                                devices=_images(devices))
    assert res["changed"] is True and res["commands"][-1].startswith("mkfs.%s" % params["fstype"])
    gpt = devices["gpt"][0]
    res = check_changes_nothing("filesystem", dict(params, device=gpt, force=True), devices=_images(devices))
    assert res["commands"][0] == "wipefs --all %s" % gpt


def test_btrfs_filesystem_writes_no_device(devices, tmp_path):
    a, b = devices["blank"][0], devices["blank2"][0]
    res = check_changes_nothing("btrfs_filesystem", {"devices": [a, b], "label": "docker"},
                                devices=_images(devices))
    assert res["commands"] == ["mkfs.btrfs -L docker %s %s" % (a, b)]
    subprocess.run(["mkfs.btrfs", "-q", "-L", "docker", a], check=True)
    res = check_changes_nothing("btrfs_filesystem", {"devices": [a, b]}, devices=_images(devices))
    assert res["added"] == [b]


def test_zfs_pool_writes_no_device(devices, tmp_path):
    try:
        with zfs_fuse_daemon():
            dev = devices["blank"][0]
            res = check_changes_nothing("zfs_pool", {
                "name": "strata-check-%d" % os.getpid(), "vdevs": [{"type": "stripe", "devices": [dev]}],
                "dataset": "docker", "mountpoint": str(tmp_path / "docker")},
                trees=[str(tmp_path)], devices=_images(devices))
            assert res["changed"] is True and res["commands"][0].startswith("zpool create")
    except Unavailable as e:
        pytest.skip("zfs-fuse unavailable: %s" % e)
