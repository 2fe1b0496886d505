"""Read-only sources: an aufs store, readable without the aufs kernel module.

No kernel here has aufs, so no dockerd can write an aufs store. It is made
the way Docker's aufs driver lays one out (diff/<id> with .wh. files as
files, layers/<id>, mnt/<id>), from a data-root a real dockerd wrote on vfs
(an image and a container that wrote a file and deleted one of the image's):
migrate vfs -> aufs, then drop the vfs store. Then aufs -> overlay2, and a
real dockerd on overlay2 lists the same image IDs, runs the image and
starts the container, which sees what it wrote.
"""

import os
import shutil

import pytest

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import migrate, new
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.layerstore import LayerStore
from tests.integration.test_migration import KEEPER, KEPT, containers
from tests.support import dockerd as dockerd_support
from tests.support import images

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
