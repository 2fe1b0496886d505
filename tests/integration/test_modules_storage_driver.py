"""strata.graphdriver.storage_driver through ansible-playbook: daemon.json on real filesystems,
verified against a real dockerd."""

import collections
import json
import os
import tempfile

import pytest

from tests.support.dockerd import DockerdUnavailable, dockerd
from tests.support.loop import loop_filesystem
from tests.support.playbook import run_module

pytestmark = pytest.mark.root

OTHER_KEYS = collections.OrderedDict([
    ("log-driver", "json-file"),
    ("registry-mirrors", ["https://mirror.example"]),
    ("storage-driver", "vfs"),
    ("live-restore", True),
])


@pytest.fixture(scope="module")
def xfs():
    with loop_filesystem("xfs", 300) as mnt:
        yield mnt


@pytest.fixture
def lab(xfs):
    work = tempfile.mkdtemp(prefix="strata-sd-", dir=xfs)
    conf = os.path.join(work, "etc", "daemon.json")
    os.makedirs(os.path.dirname(conf))
    with open(conf, "w") as f:
        json.dump(OTHER_KEYS, f, indent=4)
    return work, os.path.join(work, "data"), conf


def read(path):
    with open(path) as f:
        return f.read()


def declare(root, conf, check=False, diff=False, **params):
    p = {"data_root": root, "daemon_json": conf, "docker_host": "unix:///nonexistent.sock",
         "engine_version": "20.10.24"}
    p.update(params)
    return run_module("storage_driver", p, check=check, diff=diff)


def test_auto_declares_pick_and_keeps_other_keys(lab):
    work, root, conf = lab
    before = read(conf)
    run, res = declare(root, conf, check=True, diff=True, name="auto")
    assert run.rc == 0, run
    assert res["changed"] is True and res["driver"] == "overlay2"
    assert '"storage-driver": "overlay2"' in res["diff"]["after"]
    assert read(conf) == before, "check mode wrote the file"

    run, res = declare(root, conf, name="auto")
    assert run.rc == 0, run
    assert res["changed"] is True and res["restart_required"] is True
    data = json.loads(read(conf), object_pairs_hook=collections.OrderedDict)
    assert list(data) == list(OTHER_KEYS)
    assert data["storage-driver"] == "overlay2"
    assert data["registry-mirrors"] == ["https://mirror.example"] and data["live-restore"] is True

    after = read(conf)
    run, res = declare(root, conf, name="auto")
    assert res["changed"] is False and res["restart_required"] is False
    assert read(conf) == after


def test_storage_opts_set_kept_and_removed():
    with loop_filesystem("btrfs", 300) as mnt:
        root, conf = os.path.join(mnt, "data"), os.path.join(mnt, "daemon.json")
        run, res = declare(root, conf, name="btrfs", storage_opts=["btrfs.min_space=10M"])
        assert run.rc == 0, run
        assert json.loads(read(conf))["storage-opts"] == ["btrfs.min_space=10M"]
        run, res = declare(root, conf, name="btrfs")
        assert res["changed"] is False and res["storage_opts"] == ["btrfs.min_space=10M"]
        run, res = declare(root, conf, name="btrfs", storage_opts=[])
        assert res["changed"] is True
        assert json.loads(read(conf)) == {"storage-driver": "btrfs"}


def test_storage_opts_checked_with_the_driver(lab):
    work, root, conf = lab
    before = read(conf)
    # overlay2.size needs xfs project quotas (mount option pquota): refused, as dockerd would fail.
    run, res = declare(root, conf, name="overlay2", storage_opts=["overlay2.size=10M"])
    assert res["failed"] is True
    assert "overlay2" in res["msg"] and "Quota" in res["msg"]
    assert read(conf) == before


def test_unsupported_driver_refused_with_reason(lab):
    work, root, conf = lab
    before = read(conf)
    run, res = declare(root, conf, name="btrfs")
    assert res["failed"] is True
    assert "btrfs cannot run on this host" in res["msg"] and root in res["msg"] and "xfs" in res["msg"]
    assert read(conf) == before


def test_switch_hiding_images_needs_force(lab):
    work, root, conf = lab
    os.makedirs(os.path.join(root, "overlay2", "l"))
    before = read(conf)
    run, res = declare(root, conf, name="fuse-overlayfs")
    assert res["failed"] is True
    assert "hide the images kept by overlay2" in res["msg"] and "force: true" in res["msg"]
    assert read(conf) == before
    run, res = declare(root, conf, name="fuse-overlayfs", force=True)
    assert run.rc == 0, run
    assert json.loads(read(conf))["storage-driver"] == "fuse-overlayfs"
    # auto follows the prior state, as dockerd does.
    run, res = declare(root, conf, name="auto")
    assert res["driver"] == "overlay2" and res["pick_reason"].startswith("prior state")


def test_missing_file_is_created(xfs):
    work = tempfile.mkdtemp(prefix="strata-sd-", dir=xfs)
    conf = os.path.join(work, "etc", "docker", "daemon.json")
    run, res = declare(os.path.join(work, "data"), conf, name="vfs")
    assert run.rc == 0, run
    assert json.loads(read(conf)) == {"storage-driver": "vfs"}
    assert oct(os.stat(conf).st_mode & 0o777) == oct(0o644)


def test_check_running_against_real_engine(lab):
    work, root, conf = lab
    try:
        with dockerd(work, storage_driver="vfs", data_root=root) as d:
            host = "unix://" + d.socket
            run, res = declare(root, conf, name="overlay2", docker_host=host, engine_version=None, force=True,
                               check_running=True)
            assert res["failed"] is True
            assert "runs the vfs driver" in res["msg"] and "restart the engine" in res["msg"]
            assert res["restart_required"] is True and res["running_driver"] == "vfs"
            assert json.loads(read(conf))["storage-driver"] == "overlay2"

            # The engine already runs vfs: declaring it needs no restart.
            run, res = declare(root, conf, name="vfs", docker_host=host, engine_version=None, check_running=True)
            assert run.rc == 0, run
            assert res["changed"] is True
            assert res["running_driver"] == "vfs" and res["restart_required"] is False
            run, res = declare(root, conf, name="vfs", docker_host=host, engine_version=None, check_running=True)
            assert res["changed"] is False and res["restart_required"] is False
    except DockerdUnavailable as e:
        pytest.skip(str(e))


def test_containerd_image_store_declared_only_when_nothing_is_hidden(tmp_path, monkeypatch):
    """image_store: containerd refuses while 20.10's vfs store holds what the containerd store lacks;
    after driver_migration to containerd it declares the feature, and Engine 26.1 on that file runs
    the image; turning it off again refuses without force."""
    from tests.support import dockerd as dockerd_support
    from tests.support import images
    for reason in (dockerd_support.available("20.10"), dockerd_support.available("26.1"),
                   images.busybox_available()):
        if reason:
            pytest.skip(reason)
    monkeypatch.setenv("PATH", dockerd_support.ENGINES["26.1"].path)
    root = str(tmp_path / "docker")
    conf = str(tmp_path / "daemon.json")
    with open(conf, "w") as f:
        json.dump({"data-root": root, "storage-driver": "vfs", "log-driver": "json-file"}, f)
    with dockerd(str(tmp_path / "d20"), "vfs", root) as d:
        images.build_into(d, str(tmp_path))
    p = dict(name="auto", image_store="containerd", engine_version="26.1.5")

    run, res = declare(root, conf, **p)
    assert res["failed"] and "would hide 2 images and 0 containers of the vfs store" in res["msg"], res
    run, res = declare(root, conf, **dict(p, engine_version="20.10.24"))
    assert res["failed"] and "Engine 20.10.24 has no containerd image store" in res["msg"]
    run, res = declare(root, conf, **dict(p, name="overlay2"))
    assert res["failed"] and "name is a snapshotter" in res["msg"]

    run, res = run_module("driver_migration", {"target": "containerd", "daemon_json": conf})
    assert run.rc == 0 and res["changed"], res
    before = read(conf)
    run, res = declare(root, conf, check=True, **p)
    assert res["changed"] and res["image_store"] == "containerd" and res["driver"] == "overlayfs"
    assert read(conf) == before, "check mode wrote the file"
    run, res = declare(root, conf, **p)
    assert run.rc == 0 and res["changed"], res
    written = json.loads(read(conf))
    assert written == {"data-root": root, "log-driver": "json-file",
                       "features": {"containerd-snapshotter": True}}
    run, again = declare(root, conf, **p)
    assert again["changed"] is False

    config = {k: v for k, v in written.items() if k != "data-root"}
    with dockerd(str(tmp_path / "d26"), None, root, engine="26.1", config=config) as d:
        assert d.api("GET", "/info")[1]["Driver"] == "overlayfs"
        assert d.docker("run", "--rm", "--network", "none", images.TAG,
                        *images.RUN_CMD) == images.EXPECTED_OUTPUT

    run, res = declare(root, conf, name="vfs", image_store="graphdriver")
    assert res["failed"] and "would hide the images it keeps" in res["msg"]
    run, res = declare(root, conf, name="vfs", image_store="graphdriver", force=True)
    assert run.rc == 0 and json.loads(read(conf)) == {"data-root": root, "log-driver": "json-file",
                                                      "storage-driver": "vfs"}
