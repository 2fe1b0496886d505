"""A graphdriver store becomes Docker's containerd image store, proven by
Engine 26.1 running it offline.

Per source driver (vfs, overlay2, btrfs on a loop file, fuse-overlayfs),
Engine 20.10 writes a data-root: the two-layer busybox test image with a
second tag, an untagged image committed from a container, and two stopped
containers: ``writer`` (wrote /data.txt, deleted /second.txt) and ``keep``
(created, never started). We migrate it into the containerd store of the
same data-root; then Engine 26.1 with ``features.containerd-snapshotter``
on that data-root must list every tag with the same config and DiffIDs,
run the image, start ``writer`` and see what it wrote, and free the
container's lease on ``docker rm``. A second migration changes nothing.
Then the rollback: ``restore_containers`` and Engine 20.10 on the
graphdriver again starts ``writer`` with its data.

For overlay2 the image IDs are also compared with Docker's own path: the
20.10 ``docker save`` loaded by 26.1 on the containerd store.
"""

import json
import os

import pytest

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import (
    containerd as c8d, to_containerd)
from tests.support import dockerd as dockerd_support
from tests.support import images
from tests.support.loop import loop_filesystem

pytestmark = pytest.mark.root

DRIVERS = ["vfs", "overlay2", "btrfs", "fuse-overlayfs"]
FEATURE = {"features": {"containerd-snapshotter": True}}
WRITER_CMD = "test -e /data.txt && cat /data.txt; echo kept > /data.txt; rm -f /second.txt"


def _skip_unless_possible():
    for reason in (dockerd_support.available("20.10"), dockerd_support.available("26.1"),
                   images.busybox_available()):
        if reason:
            pytest.skip(reason)


@pytest.fixture
def engine26_path(monkeypatch):
    """containerd and ctr of Engine 26.1 first in PATH, as on a host that runs it."""
    monkeypatch.setenv("PATH", dockerd_support.ENGINES["26.1"].path)


class Source(object):
    def __init__(self, driver, data_root, workdir, d):
        self.driver, self.data_root, self.workdir = driver, data_root, workdir
        self.image_id = images.build_into(d, workdir)
        d.docker("tag", images.TAG, "busybox:mine")
        d.docker("create", "--name", "keep", "--network", "none", images.TAG, "/bin/cat", "/hello.txt")
        d.docker("run", "--name", "writer", "--network", "none", images.TAG, "/bin/sh", "-c", WRITER_CMD)
        self.untagged = d.docker("commit", "writer").strip()
        self.tags = sorted(l for l in d.docker("images", "--format", "{{.Repository}}:{{.Tag}}").split()
                           if not l.endswith(":<none>"))
        self.configs = {}   # config digest -> DiffIDs
        for image_id in d.docker("images", "-q", "--no-trunc").split():
            self.configs[image_id] = json.loads(d.docker("image", "inspect", "-f",
                                                         "{{json .RootFS.Layers}}", image_id))
        self.containers = {n: d.docker("inspect", "-f", "{{.Id}}", n).strip() for n in ("writer", "keep")}

    def engine(self, name, version="20.10", **kw):
        return dockerd_support.dockerd(os.path.join(self.workdir, name), data_root=self.data_root,
                                       engine=version, **kw)


@pytest.fixture(params=DRIVERS)
def source(request, tmp_path):
    driver = request.param
    request.node.user_properties.append(("driver", driver))
    _skip_unless_possible()

    def build(data_root):
        with dockerd_support.dockerd(str(tmp_path / "d20"), storage_driver=driver,
                                     data_root=data_root) as d:
            return Source(driver, data_root, str(tmp_path), d)

    if driver == "btrfs":
        with loop_filesystem("btrfs", size_mb=400) as mnt:
            yield build(os.path.join(mnt, "docker"))
        return
    yield build(str(tmp_path / "docker"))


def _tree(root):
    """Every path under root, with mode, and size and mtime for files: what
    a dry run must not change. (Directory mtimes are left out: the overlay
    drivers' read-only support probe, shared with every plan, makes and
    removes a directory in their home, as Docker's does.)"""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            out[path] = (st.st_mode,) if name in dirnames else (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


def _image_ids(d):
    return {r: d.docker("image", "inspect", "-f", "{{.Id}}", r).strip()
            for r in d.docker("images", "--format", "{{.Repository}}:{{.Tag}}").split()
            if not r.endswith(":<none>")}


def test_graphdriver_store_becomes_a_containerd_store(source, engine26_path):
    before = _tree(source.data_root)
    plan = to_containerd.plan(source.data_root, source.driver)
    assert _tree(source.data_root) == before, "the plan wrote to the data-root"
    assert sorted(plan.images_to_copy) == sorted(source.configs)
    assert sorted(plan.containers_to_copy) == sorted(source.containers.values())

    done = to_containerd.migrate(source.data_root, source.driver)
    assert done.changed and sorted(done.containers_copied) == sorted(source.containers.values())
    again = to_containerd.migrate(source.data_root, source.driver)
    assert not again.changed, again.as_dict()
    assert sorted(again.images_present) == sorted(source.configs)

    with source.engine("d26", version="26.1", storage_driver=None, config=FEATURE) as d:
        status, info = d.api("GET", "/info")
        assert info["Driver"] == "overlayfs"
        assert sorted(r for r in _image_ids(d)) == source.tags
        # same configs and DiffIDs; the ID the containerd store shows is the manifest's digest
        listed = d.docker("images", "-q", "--no-trunc").split()
        assert len(set(listed)) == len(source.configs)
        for manifest_digest in set(listed):
            layers = json.loads(d.docker("image", "inspect", "-f", "{{json .RootFS.Layers}}",
                                         manifest_digest))
            assert layers in source.configs.values()
        assert d.docker("run", "--rm", "--network", "none", images.TAG,
                        *images.RUN_CMD) == images.EXPECTED_OUTPUT
        ps = d.docker("ps", "-a", "--no-trunc", "--format", "{{.Names}} {{.ID}}").split("\n")
        assert sorted(l for l in ps if l) == sorted("%s %s" % kv for kv in source.containers.items())
        assert d.docker("start", "-a", "writer") == "kept\n"
        assert d.docker("start", "-a", "keep") == images.HELLO.decode()
        # the untagged image is there as Docker keeps one: by digest, no tag
        assert any(r.startswith("<none>") for r in d.docker(
            "images", "--format", "{{.Repository}}:{{.Tag}}").split())
        # docker rm drops the lease we made, and with it the snapshots
        d.docker("rm", "keep")
        with c8d.Client(os.path.join(d.exec_root, "containerd", "containerd.sock")) as client:
            assert source.containers["keep"] not in client.leases()
            assert client.snapshot("overlayfs", source.containers["keep"]) is None
            assert source.containers["writer"] in client.leases()

    # rollback: the feature off again, the graphdriver store as it was
    restored = to_containerd.restore_containers(source.data_root, source.driver)
    assert restored == [source.containers["writer"]]
    with source.engine("d20-again", storage_driver=source.driver) as d:
        assert sorted(_image_ids(d)) == source.tags
        assert d.docker("start", "-a", "writer") == "kept\n"
        assert sorted(set(d.docker("images", "-q", "--no-trunc").split())) == sorted(source.configs)


def test_image_ids_equal_docker_save_and_load(tmp_path, engine26_path):
    """The containerd store's image IDs after our migration are the ones
    Docker's own path gives: 20.10 docker save, 26.1 docker load."""
    _skip_unless_possible()
    data_root = str(tmp_path / "docker")
    archive = str(tmp_path / "saved.tar")
    with dockerd_support.dockerd(str(tmp_path / "d20"), storage_driver="overlay2",
                                 data_root=data_root) as d:
        images.build_into(d, str(tmp_path))
        d.docker("save", "-o", archive, images.TAG, images.BASE_TAG)
    to_containerd.migrate(data_root, "overlay2")
    with dockerd_support.dockerd(str(tmp_path / "d26"), storage_driver=None, data_root=data_root,
                                 engine="26.1", config=FEATURE) as d:
        ours = _image_ids(d)
    with dockerd_support.dockerd(str(tmp_path / "d26-load"), storage_driver=None,
                                 data_root=str(tmp_path / "loaded"), engine="26.1", config=FEATURE) as d:
        d.docker("load", "-i", archive)
        theirs = _image_ids(d)
    assert ours == theirs and len(ours) == 2


def test_refuses_while_the_engine_runs(tmp_path, engine26_path):
    _skip_unless_possible()
    data_root = str(tmp_path / "docker")
    with dockerd_support.dockerd(str(tmp_path / "d20"), storage_driver="vfs", data_root=data_root):
        with pytest.raises(Exception, match="running|engine"):
            to_containerd.plan(data_root, "vfs")


def test_unknown_snapshotter_is_refused(tmp_path):
    with pytest.raises(to_containerd.ContainerdMigrationError, match="snapshotter 'overlay2'"):
        to_containerd.Options({"snapshotter": "overlay2"})
