"""Migrating a real dockerd's data-root from one driver to another.

dockerd (vfs) builds a two-layer image, leaves a created container and one
that ran and wrote a file and deleted one of the image's; we stop it,
migrate to overlay2 (or fuse-overlayfs), and a dockerd of the same engine
started on the target lists the same image IDs, runs the image and starts
the carried container, which sees what it wrote. Migrating back gives the
containers to vfs again (the rollback). On Engine 20.10 and 26.1.
Then (20.10: the engine only wrote the source): a second run copies
nothing; a corrupted source layer stops the migration and leaves the target
as it was; a running engine is refused.
"""

import io
import os
import shutil
import subprocess
import tarfile

import pytest

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import (
    engine, migrate, new)
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.layerstore import (
    LayerStore)
from tests.support import dockerd as dockerd_support
from tests.support import images
from tests.support.backends import backend_home
from tests.support.host_state import differences, host_state
from tests.support.loop import loop_filesystem


@pytest.fixture
def vfs_data_root(request, tmp_path):
    """A data-root written by a real dockerd on vfs: an image and a container.
    The engine's version is the fixture's parameter (20.10 when none)."""
    engine_version = getattr(request, "param", "20.10")
    reason = dockerd_support.available(engine_version) or images.busybox_available()
    if reason:
        pytest.skip(reason)
    data_root = str(tmp_path / "docker")
    with dockerd_support.dockerd(str(tmp_path / "d-vfs"), "vfs", data_root,
                                 engine=engine_version) as d:
        image_id = images.build_into(d, str(tmp_path))
        d.docker("create", "--name", "left-behind", "--network", "none", images.TAG)
        assert d.docker("run", "--name", "keeper", "--network", "none", images.TAG,
                        "/bin/sh", "-c", KEEPER) == "first\n"
        ids = sorted(d.docker("images", "-q", "--no-trunc").split())
    return data_root, image_id, ids, engine_version


# First run: writes /kept and deletes an image file; later starts say what they see.
KEEPER = ("if [ -f /kept ]; then cat /kept; test -e /hello.txt && echo hello-back || echo hello-gone; "
          "else echo kept-data > /kept; rm /hello.txt; echo first; fi")
KEPT = "kept-data\nhello-gone\n"


def image_metadata(data_root, driver):
    """Everything Docker reads from image/<driver>/ but what the driver itself
    decides (cache-id, and size: the driver's ApplyDiff result, which Docker's
    drivers compute differently): imagedb, distribution, repositories.json,
    per layer its diff, parent and tar-split bytes, per container its ids."""
    top = os.path.join(data_root, "image", driver)
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, top)
            if name in ("cache-id", "size") or rel.startswith("layerdb/tmp"):
                continue
            with open(path, "rb") as f:
                out[rel] = f.read()
    return out


def containers(d):
    return sorted(d.docker("ps", "-a", "--format", "{{.Names}}").split())


def _tree(root):
    """Every path under root with its mtime, but vfs's backingFsBlockDev,
    which opening the driver makes anew as Docker does (projectquota)."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if name == "backingFsBlockDev":
                continue
            out.add((path, os.lstat(path).st_mtime_ns if name != "vfs" else 0))
    return out


# fuse-overlayfs as a target on 26.1 only: on both engines it is a source
# already (test_migration_from_drivers), read by us and run after by each
@pytest.mark.parametrize("vfs_data_root,target", [
    pytest.param(e, t, id="%s-%s" % (e, t)) for e, t in (
        ("20.10", "overlay2"), ("26.1", "overlay2"), ("26.1", "fuse-overlayfs"))],
    indirect=["vfs_data_root"])
def test_images_survive_a_driver_switch(vfs_data_root, target, tmp_path):
    data_root, image_id, ids_before, engine_version = vfs_data_root
    if target == "fuse-overlayfs":
        # its backend is the plain directory <data-root>/fuse-overlayfs: this
        # only skips, naming it, when the program or /dev/fuse is missing
        with backend_home(target, data_root):
            pass

    before = _tree(data_root)
    plan = migrate.plan(data_root, "vfs", target)
    assert _tree(data_root) == before, "planning writes nothing"
    assert plan.images == ids_before
    assert len(plan.layers_to_copy) == 2 and plan.layers_present == []
    assert len(plan.containers) == 2 and plan.containers_to_copy == plan.containers

    seen = []
    result = migrate.migrate(data_root, "vfs", target, progress=seen.append)
    assert result.layers_copied == plan.layers_to_copy
    layer_steps = [(s["layers_done"], s["layers_total"]) for s in seen if s["phase"] == "layers"]
    assert layer_steps[-1] == (2, 2) and (1, 2) in layer_steps
    bytes_seen = [s["bytes_done"] for s in seen]
    assert bytes_seen == sorted(bytes_seen), "bytes done only grow"
    assert seen[-1]["phase"] == "done" and seen[-1]["bytes_done"] == plan.bytes_to_copy
    assert seen[-1]["containers_done"] == seen[-1]["containers_total"] == 2

    with dockerd_support.dockerd(str(tmp_path / "d-target"), target, data_root,
                                 engine=engine_version) as d:
        assert d.docker("info", "-f", "{{.Driver}}").strip() == target
        assert sorted(d.docker("images", "-q", "--no-trunc").split()) == ids_before
        out = d.docker("run", "--rm", "--network", "none", images.TAG, *images.RUN_CMD)
        assert out == images.EXPECTED_OUTPUT
        assert d.docker("inspect", "-f", "{{.Id}}", images.TAG).strip() == image_id
        assert containers(d) == ["keeper", "left-behind"]
        assert d.docker("start", "-a", "keeper") == KEPT

    # the source is untouched: vfs still has its layers, all verifying
    vfs_store = LayerStore(data_root, new("vfs", os.path.join(data_root, "vfs")))
    assert all(err is None for err in vfs_store.verify_all().values())

    again = migrate.migrate(data_root, "vfs", target)
    assert again.layers_copied == [] and not again.changed
    assert image_metadata(data_root, target) == image_metadata(data_root, "vfs")

    # the rollback: migrating back copies nothing and gives the containers to vfs
    back = migrate.migrate(data_root, target, "vfs")
    assert back.layers_copied == [] and back.containers_copied == [] and back.changed
    with dockerd_support.dockerd(str(tmp_path / "d-back"), "vfs", data_root,
                                 engine=engine_version) as d:
        assert sorted(d.docker("images", "-q", "--no-trunc").split()) == ids_before
        assert containers(d) == ["keeper", "left-behind"]
        assert d.docker("start", "-a", "keeper") == KEPT


def test_corrupt_source_layer_leaves_target_unchanged(vfs_data_root):
    data_root, _, _, _ = vfs_data_root
    vfs = new("vfs", os.path.join(data_root, "vfs"))
    store = LayerStore(data_root, vfs)
    top = max(store.layers(), key=lambda l: store.depth(l.chain_id))
    with open(os.path.join(vfs.home, "dir", top.cache_id, "second.txt"), "w") as f:
        f.write("tampered\n")

    with pytest.raises(migrate.MigrationError) as err:
        migrate.migrate(data_root, "vfs", "overlay2")
    assert top.chain_id in str(err.value)

    target = LayerStore(data_root, new("overlay2", os.path.join(data_root, "overlay2")))
    assert target.layers() == [], "the base layer copied before the failure is rolled back"
    assert target.orphans() == []
    assert not os.path.exists(os.path.join(data_root, "image", "overlay2", "repositories.json"))


def test_a_target_too_small_is_refused_before_anything_is_written(vfs_data_root):
    data_root, _, _, _ = vfs_data_root
    target = os.path.join(data_root, "overlay2")
    os.mkdir(target)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "strata-small", target], check=True)
    try:
        before = host_state(trees=[data_root])
        for attempt in (migrate.plan, migrate.migrate):
            with pytest.raises(migrate.MigrationError) as err:
                attempt(data_root, "vfs", "overlay2")
            assert "needs" in str(err.value) and target in str(err.value) and "nothing was written" in str(err.value)
        assert differences(before, host_state(trees=[data_root])) == []
    finally:
        subprocess.run(["umount", target], check=False)


def test_refused_while_the_engine_runs(vfs_data_root, tmp_path):
    data_root, _, _, _ = vfs_data_root
    with dockerd_support.dockerd(str(tmp_path / "d-again"), "vfs", data_root):
        with pytest.raises(engine.EngineRunning):
            migrate.migrate(data_root, "vfs", "overlay2")
    assert not os.path.exists(os.path.join(data_root, "overlay2"))


@pytest.mark.skipif(shutil.which("mkfs.btrfs") is None, reason="btrfs-progs not installed")
def test_on_one_btrfs_the_target_shares_the_sources_extents():
    """vfs -> btrfs on the same btrfs: the big files of the layers are reflinks
    of the source's (FICLONE), not second copies, and still verify."""
    big = os.urandom(2 * 1024 * 1024)
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w", format=tarfile.PAX_FORMAT) as t:
        info = tarfile.TarInfo("opt/big.bin")
        info.size = len(big)
        t.addfile(info, io.BytesIO(big))
    with loop_filesystem("btrfs", size_mb=256) as mnt:
        data_root = os.path.join(mnt, "docker")
        src = LayerStore(data_root, new("vfs", os.path.join(data_root, "vfs")))
        layer = src.register(io.BytesIO(tar.getvalue()))
        os.sync()
        migrate.migrate(data_root, "vfs", "btrfs")
        os.sync()
        dst = LayerStore(data_root, new("btrfs", os.path.join(data_root, "btrfs")))
        assert dst.verify(layer.chain_id).diff_id == layer.diff_id
        path = os.path.join(data_root, "btrfs", "subvolumes", dst.get(layer.chain_id).cache_id, "opt", "big.bin")
        with open(path, "rb") as f:
            assert f.read() == big
        frag = subprocess.run(["filefrag", "-v", path], stdout=subprocess.PIPE, universal_newlines=True,
                              check=True).stdout
        assert "shared" in frag, frag
