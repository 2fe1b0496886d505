"""strata.graphdriver.layer through ansible-playbook with every driver that has a test backend
here, each on its real backing storage."""

import contextlib
import hashlib
import io
import os
import shutil
import tarfile
import tempfile

import pytest

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import new
from tests.support.backends import BACKENDS, Unavailable
from tests.support.playbook import run_module

pytestmark = pytest.mark.root

# Drivers whose Get mounts and counts references; vfs and btrfs layers are plain directories.
COUNTING = ("overlay2", "fuse-overlayfs", "zfs")
# Of those, overlay's base layers are their diff directory, never mounted; zfs mounts every dataset.
MOUNTS_BASE = ("zfs",)
FILES = {"etc/hostname": b"strata\n", "usr/share/doc/readme": b"x" * 128}


def make_tar(path, files=FILES, extra=()):
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
        dirs = set()
        for name in files:
            parts = name.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                dirs.add("/".join(parts[:i]))
        for d in sorted(dirs):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            t.addfile(info)
        for name, data in sorted(files.items()) + list(extra):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            t.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(params=sorted(BACKENDS))
def store(request):
    """(driver, home, workdir, options) for one driver on its real backing storage
    (tests/support/backend_<driver>.py: loop xfs, loop btrfs, a zfs-fuse pool …)."""
    driver = request.param
    work = tempfile.mkdtemp(prefix="strata-layer-")
    try:
        with contextlib.ExitStack() as stack:
            try:
                home, options = stack.enter_context(BACKENDS[driver](work))
            except Unavailable as e:
                pytest.skip("%s: %s" % (driver, e))
            try:
                yield driver, home, os.path.dirname(home), options
            finally:
                new(driver, home, options).cleanup()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def layer(store, check=False, diff=False, **params):
    driver, home, _, options = store
    p = {"driver": driver, "home": home, "options": options}
    p.update(params)
    return run_module("layer", p, check=check, diff=diff)


def test_present_from_tar_then_idempotent(store):
    driver, home, work, options = store
    tar = make_tar(os.path.join(work, "base.tar"))

    run, res = layer(store, check=True, id="base", tar=tar)
    assert run.rc == 0, run
    assert res["changed"] is True and res["exists"] is True and res["mounted"] is False
    assert res["commands"] == ["%s.create('base')" % driver, "%s.apply_diff('base', None, %r)" % (driver, tar)]
    assert not new(driver, home, options).exists("base"), "check mode created the layer"

    run, res = layer(store, diff=True, id="base", tar=tar)
    assert run.rc == 0, run
    assert res["changed"] is True
    assert res["diff"] == {"before": {"exists": False, "mounted": False},
                           "after": {"exists": True, "mounted": False}}
    assert res["size"] == sum(len(v) for v in FILES.values())
    assert res["diff_id"].startswith("sha256:") and len(res["diff_id"]) == 71
    assert new(driver, home, options).exists("base")

    run, again = layer(store, id="base", tar=tar)
    assert again["changed"] is False and again["commands"] == []
    assert again["diff_id"] == res["diff_id"] and again["size"] == res["size"]


def test_child_mount_unmount_remove(store):
    driver, home, work, options = store
    tar = make_tar(os.path.join(work, "base.tar"))
    assert layer(store, id="base", tar=tar)[0].rc == 0

    run, res = layer(store, id="c1", parent="base", read_write=True, state="mounted")
    assert run.rc == 0, run
    # vfs and btrfs layers are plain directories: nothing is mounted.
    assert res["changed"] is True and res["mounted"] is (driver in COUNTING)
    create = "%s.create_read_write('c1', parent='base')" % driver
    assert res["commands"] == ([create, "%s.get('c1')" % driver] if driver in COUNTING else [create])
    with open(os.path.join(res["layer_path"], "etc", "hostname"), "rb") as f:
        assert f.read() == FILES["etc/hostname"]
    with open(os.path.join(res["layer_path"], "new-file"), "wb") as f:
        f.write(b"written in the container layer\n")

    run, again = layer(store, id="c1", parent="base", read_write=True, state="mounted")
    assert again["changed"] is False and again["layer_path"] == res["layer_path"]
    assert again["size"] == len(b"written in the container layer\n")
    digest = hashlib.sha256(b"").hexdigest()
    assert again["diff_id"] != "sha256:" + digest

    if driver in COUNTING:
        # A mounted layer is not removed without force, and stays as it was.
        run, refused = layer(store, id="c1", state="absent")
        assert refused["failed"] is True
        assert "c1" in refused["msg"] and "mounted" in refused["msg"] and "force" in refused["msg"]
        assert new(driver, home, options).exists("c1")

        run, res = layer(store, id="c1", state="unmounted", check=True)
        assert res["changed"] is True and res["commands"] == ["%s.put('c1')" % driver]
        assert os.path.exists(os.path.join(again["layer_path"], "new-file"))
        run, res = layer(store, id="c1", state="unmounted")
        assert res["changed"] is True and res["mounted"] is False
        assert not os.path.ismount(again["layer_path"])
    run, res = layer(store, id="c1", state="unmounted")
    assert res["changed"] is False

    run, res = layer(store, id="c1", state="absent")
    assert res["changed"] is True and res["exists"] is False
    assert not new(driver, home, options).exists("c1")
    run, res = layer(store, id="c1", state="absent")
    assert res["changed"] is False


def test_absent_with_force_releases_mounts(store):
    driver, home, _, options = store
    assert layer(store, id="m-base")[0].rc == 0
    run, res = layer(store, id="m", parent="m-base", state="mounted")
    assert run.rc == 0, run
    run, res = layer(store, id="m", parent="m-base", state="mounted")
    assert res["changed"] is False, "mounted twice is one mount"
    run, res = layer(store, id="m", state="absent", force=True)
    assert run.rc == 0, run
    puts = ["%s.put('m')" % driver] if driver in COUNTING else []
    assert res["commands"] == puts + ["%s.remove('m')" % driver]
    assert not new(driver, home, options).exists("m")


def test_base_layer_mount_states(store):
    driver, home, _, options = store
    run, res = layer(store, id="b", state="mounted")
    assert run.rc == 0, run
    assert res["changed"] is True and os.path.isdir(res["layer_path"])
    assert res["mounted"] is (driver in MOUNTS_BASE)
    if driver in MOUNTS_BASE:
        expected = [("mounted", False), ("unmounted", True), ("unmounted", False), ("mounted", True)]
    else:
        # A base layer that is a plain directory needs no mount: nothing to change.
        expected = [("mounted", False), ("unmounted", False), ("mounted", False)]
    for state, change in expected:
        run, res = layer(store, id="b", state=state)
        assert res["changed"] is change, (state, res)
    layer(store, id="b", state="absent", force=True)


def test_missing_parent_refused(store):
    driver, home, _, options = store
    run, res = layer(store, id="orphan", parent="nope")
    assert res["failed"] is True
    assert "nope" in res["msg"] and home in res["msg"]
    assert not new(driver, home, options).exists("orphan")


def test_hostile_tar_leaves_no_layer(store):
    driver, home, work, options = store
    evil = make_tar(os.path.join(work, "evil.tar"), files={"ok": b"fine"},
                    extra=[("../../escaped", b"gotcha")])
    run, res = layer(store, id="evil", tar=evil)
    assert res["failed"] is True
    assert "escaped" in res["msg"]
    assert not new(driver, home, options).exists("evil")
    assert not os.path.exists(os.path.join(os.path.dirname(home), "escaped"))
    assert not os.path.exists(os.path.join(work, "..", "escaped"))


def test_refused_while_an_engine_runs_on_the_data_root(tmp_path):
    from tests.support import dockerd as dockerd_support
    reason = dockerd_support.available()
    if reason:
        pytest.skip(reason)
    data_root = str(tmp_path / "docker")
    with dockerd_support.dockerd(str(tmp_path / "d"), "vfs", data_root):
        for check in (True, False):
            run, res = run_module("layer", {"driver": "vfs", "data_root": data_root, "id": "intruder"},
                                  check=check)
            assert res["failed"] is True
            assert data_root in res["msg"] and "running" in res["msg"], res["msg"]
        assert not os.path.exists(os.path.join(data_root, "vfs", "dir", "intruder"))
