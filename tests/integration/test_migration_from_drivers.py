"""Every copy-on-write driver as a migration source: btrfs, zfs,
fuse-overlayfs and devicemapper to overlay2.

Per source driver, a data-root on that driver's own backing storage holds
the busybox test image and a stopped container, ``keeper``, that wrote
/kept and deleted /hello.txt. We migrate it to overlay2; a real dockerd on
overlay2 then lists the same image IDs, runs the image and starts keeper,
which sees what it wrote; and the source store still verifies as it was.

Who writes the source store:

- btrfs (a loop-file btrfs), fuse-overlayfs: a real dockerd on it, 20.10
  and 26.1, and the same engine runs the migrated overlay2 store;
- devicemapper (loop-lvm): a real dockerd too, inside a qemu VM, since this
  kernel has no thin pools; ``test_in_qemu_vm`` runs the devicemapper case
  there, target dockerd and all;
- zfs: dockerd cannot run zfs on zfs-fuse, the only ZFS here: its driver
  opens /dev/zfs, which only kernel ZFS has (its debug log: "cannot open
  /dev/zfs"; ``test_dockerd_refuses_zfs_fuse`` shows the refusal), and past
  that would mount(2) each layer as type "zfs" (moby zfs.go Get), which
  this kernel lacks: zfs-fuse mounts through FUSE. So
  OUR zfs driver writes the store, from a data-root a real dockerd wrote on
  vfs (migrate vfs -> zfs, then the vfs store removed), as the aufs source
  test does. The zfs -> overlay2 migration and the dockerd after it are real.
"""

import contextlib
import os
import re
import shutil
from unittest import mock

import pytest

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import migrate, new
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.layerstore import LayerStore
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.mount import mounts_under
from tests.integration.test_migration import KEEPER, KEPT, containers, image_metadata
from tests.support import backend_devicemapper
from tests.support import dockerd as dockerd_support
from tests.support import images
from tests.support.backends import Unavailable, backend_home
from tests.support.loop import loop_filesystem
from tests.support.qemu_vm import run_pytest

pytestmark = pytest.mark.root

IN_VM = os.environ.get("STRATA_IN_VM") == "1"
DRIVERS = ["btrfs", "devicemapper", "fuse-overlayfs", "zfs"]
# Engine 26.1 too where it can write the source: it has no devicemapper
# (removed in 25.0), and no engine runs zfs here
CASES = [("20.10", d) for d in DRIVERS] + [("26.1", "btrfs"), ("26.1", "fuse-overlayfs")]


class Source(object):
    """A data-root whose ``driver`` store holds the image and keeper."""

    def __init__(self, driver, data_root, options, image_id, ids, keeper, engine="20.10"):
        self.driver, self.data_root, self.options = driver, data_root, options
        self.image_id, self.ids, self.keeper = image_id, ids, keeper
        self.engine = engine

    def store(self):
        drv = new(self.driver, os.path.join(self.data_root, self.driver), self.options,
                  read_only=True)
        return LayerStore(self.data_root, drv, recover=False)


def _written_by_dockerd(workdir, driver, data_root, options=None, engine="20.10"):
    """The image and keeper, written by a real dockerd on ``driver``."""
    opts = ["%s=%s" % kv for kv in sorted((options or {}).items())]
    with dockerd_support.dockerd(os.path.join(workdir, "d-" + driver), driver, data_root,
                                 storage_opts=opts, engine=engine) as d:
        assert d.docker("info", "-f", "{{.Driver}}").strip() == driver
        image_id = images.build_into(d, workdir)
        assert d.docker("run", "--name", "keeper", "--network", "none", images.TAG,
                        "/bin/sh", "-c", KEEPER) == "first\n"
        keeper = d.docker("inspect", "-f", "{{.Id}}", "keeper").strip()
        ids = sorted(d.docker("images", "-q", "--no-trunc").split())
    return Source(driver, data_root, options or {}, image_id, ids, keeper, engine)


@contextlib.contextmanager
def _btrfs(workdir, engine):
    # a subdirectory, not the mount itself: dockerd's teardown unmounts its data-root
    with loop_filesystem("btrfs", size_mb=512) as mnt:
        yield _written_by_dockerd(workdir, "btrfs", os.path.join(mnt, "docker"), engine=engine)


@contextlib.contextmanager
def _fuse_overlayfs(workdir, engine):
    with backend_home("fuse-overlayfs", os.path.join(workdir, "docker")) as (home, options):
        yield _written_by_dockerd(workdir, "fuse-overlayfs", os.path.dirname(home), options,
                                  engine=engine)


@contextlib.contextmanager
def _devicemapper(workdir, engine):
    reason = backend_devicemapper.unavailable_reason()
    if reason:
        pytest.skip("no device-mapper here (%s); test_in_qemu_vm runs this in a VM" % reason)
    with backend_home("devicemapper", os.path.join(workdir, "docker")) as (home, options):
        # the VM has no udev: without this dockerd refuses the driver
        options = dict(options, **{"dm.override_udev_sync_check": "true"})
        yield _written_by_dockerd(workdir, "devicemapper", os.path.dirname(home), options,
                                  engine=engine)


@contextlib.contextmanager
def _zfs(workdir, engine):
    # Docker 20.10's overlay2 refuses a zfs backing filesystem (and the
    # kernel's overlay cannot use a FUSE upper dir), so the data-root is on
    # the host's ext4 and the zfs driver gets its parent dataset by
    # zfs.fsname, a setup Docker documents: the layers are datasets below it,
    # mounted at <data-root>/zfs/graph/<id> only while in use.
    from tests.support.zfs_fuse import zfs_fuse_pool
    with contextlib.ExitStack() as stack:
        try:
            p = stack.enter_context(zfs_fuse_pool(directory=workdir, size_mb=512))
        except Unavailable as e:
            pytest.skip("zfs backend unavailable: %s" % e)
        options = {"zfs.fsname": p.create_dataset("docker", os.path.join(p.mountpoint, "docker"))}
        data_root = os.path.join(workdir, "docker")
        vfs = _written_by_dockerd(workdir, "vfs", data_root, engine=engine)
        # migrate refuses a target Docker Engine cannot run, as zfs on
        # zfs-fuse: lifted for this one step, which only writes the source
        with mock.patch.object(migrate, "check_driver", return_value=(True, "")):
            migrate.migrate(data_root, "vfs", "zfs", target_options=options)
        new("vfs", os.path.join(data_root, "vfs")).cleanup()
        shutil.rmtree(os.path.join(data_root, "vfs"))
        shutil.rmtree(os.path.join(data_root, "image", "vfs"))
        yield Source("zfs", data_root, options, vfs.image_id, vfs.ids, vfs.keeper, engine)


WRITERS = {"btrfs": _btrfs, "devicemapper": _devicemapper,
           "fuse-overlayfs": _fuse_overlayfs, "zfs": _zfs}


@pytest.fixture(params=CASES, ids=["%s-%s" % c for c in CASES])
def source(request, tmp_path):
    engine, driver = request.param
    request.node.user_properties.append(("driver", driver))
    reason = dockerd_support.available(engine) or images.busybox_available()
    if reason:
        pytest.skip(reason)
    with WRITERS[driver](str(tmp_path), engine) as src:
        yield src


def test_migrates_to_overlay2(source, tmp_path):
    s = source
    before = s.store()
    chains = sorted(l.chain_id for l in before.layers())
    metadata = image_metadata(s.data_root, s.driver)
    assert len(chains) == 2 and [m.name for m in before.mounts()] == [s.keeper]

    result = migrate.migrate(s.data_root, s.driver, "overlay2", source_options=s.options)
    assert result.images == s.ids
    assert len(result.layers_copied) == 2 and result.layers_copied == result.layers_to_copy
    assert result.containers_copied == [s.keeper]
    # reading the source left nothing mounted or active (a devicemapper pool)
    assert mounts_under(s.data_root) == []
    if s.driver == "devicemapper":
        assert backend_devicemapper.leftover_devices(os.path.join(s.data_root, s.driver)) == []

    with dockerd_support.dockerd(str(tmp_path / "d-overlay2"), "overlay2", s.data_root,
                                 engine=s.engine) as d:
        assert sorted(d.docker("images", "-q", "--no-trunc").split()) == s.ids
        assert d.docker("inspect", "-f", "{{.Id}}", images.TAG).strip() == s.image_id
        out = d.docker("run", "--rm", "--network", "none", images.TAG, *images.RUN_CMD)
        assert out == images.EXPECTED_OUTPUT
        assert containers(d) == ["keeper"]
        assert d.docker("start", "-a", "keeper") == KEPT

    # the source was only read: the same layers, all verifying, and its
    # image metadata as its engine left it
    after = s.store()
    try:
        assert sorted(l.chain_id for l in after.layers()) == chains
        assert after.verify_all() == {c: None for c in chains}
        assert [m.name for m in after.mounts()] == [s.keeper]
    finally:
        after.driver.cleanup()
    assert image_metadata(s.data_root, s.driver) == metadata


def test_dockerd_refuses_zfs_fuse(tmp_path, request):
    """Why the zfs store is written by our driver: dockerd's zfs driver
    needs /dev/zfs (kernel ZFS), which zfs-fuse does not provide. Should
    dockerd ever start here, write the zfs source with it instead."""
    request.node.user_properties.append(("driver", "zfs"))
    reason = dockerd_support.available()
    if reason:
        pytest.skip(reason)
    from tests.support.zfs_fuse import zfs_fuse_pool
    if os.path.exists("/dev/zfs"):
        pytest.skip("/dev/zfs exists: kernel ZFS here, dockerd may run zfs")
    try:
        with zfs_fuse_pool(directory=str(tmp_path), size_mb=128) as p:
            dataset = p.create_dataset("docker", os.path.join(p.mountpoint, "docker"))
            with pytest.raises(dockerd_support.DockerdUnavailable) as err:
                with dockerd_support.dockerd(str(tmp_path / "d-zfs"), "zfs", str(tmp_path / "docker"),
                                             storage_opts=["zfs.fsname=" + dataset]):
                    pass
            # dockerd's log says only this; with --debug: "cannot open /dev/zfs"
            assert "prerequisites for driver not satisfied" in str(err.value)
            # our driver works on it, and says what Docker lacks
            drv = new("zfs", str(tmp_path / "docker" / "zfs"), {"zfs.fsname": dataset})
            assert "/dev/zfs is missing" in drv.engine_refusal()
    except Unavailable as e:
        pytest.skip("zfs backend unavailable: %s" % e)


@pytest.mark.slow
def test_in_qemu_vm(request, qemu_vm):
    """The devicemapper case, in a VM: a real dockerd on loop-lvm there
    (about two minutes under TCG, most of it dockerd on devicemapper)."""
    request.node.user_properties.append(("driver", "devicemapper"))
    if IN_VM:
        pytest.skip("already inside the VM")
    reason = backend_devicemapper.unavailable_reason()
    if reason is None:
        pytest.skip("device-mapper here: the devicemapper case runs on this host")
    _, summary = run_pytest(qemu_vm(), "-k devicemapper tests/integration/test_migration_from_drivers.py",
                            timeout=600)
    assert re.search(r"\b1 passed", summary) and "skipped" not in summary, summary
