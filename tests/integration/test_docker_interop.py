"""Proof against a real dockerd (Debian docker.io 20.10) on each driver.

1. An image archive imported offline by us into an empty data-root: dockerd
   starts on it, lists the tag with the same image ID, runs it, and saves
   layers with the same DiffIDs.
2. A data-root written by dockerd (load, run, commit): every layer verifies,
   our tar-split of each rebuilt tar equals dockerd's byte for byte, a
   corrupted file is named, a stray driver layer is an orphan and gc removes
   only it — and dockerd still runs the image afterwards.
3. Registration/import killed with SIGKILL at named steps: the store opens
   clean (half-written layer removed), verifies, and dockerd starts on it.
"""

import gzip
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap

import pytest

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import (
    GraphDriverError, NotSupported, engine, imagestore, layerstore, new, tarsplit)
from tests.support import dockerd as dockerd_support
from tests.support import images
from tests.support.loop import loop_filesystem

DRIVERS = ["vfs", "overlay2", "btrfs"]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _skip_unless_possible():
    reason = dockerd_support.available() or images.busybox_available()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def image_archive(tmp_path_factory):
    _skip_unless_possible()
    return images.build_image_archive(str(tmp_path_factory.mktemp("interop-image")))


@pytest.fixture(params=DRIVERS)
def env(request, tmp_path):
    """(driver name, data_root, driver factory) with the right backing fs."""
    name = request.param
    request.node.user_properties.append(("driver", name))
    _skip_unless_possible()
    if name == "btrfs":
        with loop_filesystem("btrfs", size_mb=400) as mnt:
            yield _Env(name, os.path.join(mnt, "docker"), tmp_path)
        return
    # /tmp here is ext4 with d_type: fine for vfs and overlay2
    yield _Env(name, str(tmp_path / "docker"), tmp_path)


class _Env(object):
    def __init__(self, name, data_root, workdir):
        self.name, self.data_root, self.workdir = name, data_root, str(workdir)
        self.home = os.path.join(data_root, name)
        self._n = 0
        try:
            self.driver()
        except NotSupported as e:
            pytest.skip("%s driver not usable here: %s" % (name, e))
        except GraphDriverError as e:
            if "not available in this version" in str(e):
                pytest.skip("%s driver not in the library yet: %s" % (name, e))
            raise

    def driver(self):
        return new(self.name, self.home)

    def dockerd(self):
        self._n += 1
        return dockerd_support.dockerd(os.path.join(self.workdir, "dockerd-%d" % self._n),
                                       storage_driver=self.name, data_root=self.data_root)


def _saved_diff_ids(path):
    """DiffIDs of the layers in a docker save archive, hashed by us."""
    with tarfile.open(path) as t:
        manifest = json.load(t.extractfile("manifest.json"))[0]
        config = json.load(t.extractfile(manifest["Config"]))
        hashed = []
        for name in manifest["Layers"]:
            h = hashlib.sha256()
            f = t.extractfile(name)
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
            hashed.append("sha256:" + h.hexdigest())
    return hashed, config["rootfs"]["diff_ids"]


def _run_image(d, tag):
    return d.docker("run", "--rm", "--network", "none", tag, *images.RUN_CMD)


# --- 1. offline import, then dockerd ---------------------------------------------

def test_offline_import_then_dockerd_runs_it(env, image_archive):
    drv = env.driver()
    result = imagestore.import_archive(env.data_root, drv, image_archive.path)
    assert [i.id for i in result] == [image_archive.image_id]
    assert [l.diff_id for l in result[0].layers] == image_archive.diff_ids
    # a second import changes nothing: same layers, no new driver layer
    before = layerstore.LayerStore(env.data_root, drv).referenced_ids()
    imagestore.import_archive(env.data_root, drv, image_archive.path)
    assert layerstore.LayerStore(env.data_root, drv).referenced_ids() == before
    drv.cleanup()

    with env.dockerd() as d:
        listed = d.docker("images", "--no-trunc", "--format",
                          "{{.Repository}}:{{.Tag}} {{.ID}}").split("\n")
        assert "%s %s" % (images.TAG, image_archive.image_id) in listed
        assert _run_image(d, images.TAG) == images.EXPECTED_OUTPUT
        saved = os.path.join(env.workdir, "resaved.tar")
        d.docker("save", "-o", saved, images.TAG)
        hashed, declared = _saved_diff_ids(saved)
        assert hashed == declared == image_archive.diff_ids
        # the engine is up: offline writers must refuse
        with pytest.raises(engine.EngineRunning, match=env.data_root):
            imagestore.import_archive(env.data_root, env.driver(), image_archive.path)
        with pytest.raises(engine.EngineRunning):
            layerstore.LayerStore(env.data_root, env.driver()).gc()


# --- 2. what dockerd wrote, read and verified by us --------------------------------

def test_we_verify_what_dockerd_wrote(env, image_archive):
    with env.dockerd() as d:
        d.docker("load", "-i", image_archive.path)
        d.docker("run", "--network", "none", "--name", "c3", images.TAG,
                 "/bin/sh", "-c", "printf 'third\\n' > /third.txt")
        d.docker("commit", "c3", "strata/interop:3")
        diff_ids = json.loads(d.docker("inspect", "-f", "{{json .RootFS.Layers}}",
                                       "strata/interop:3"))
        container_id = d.docker("inspect", "-f", "{{.Id}}", "c3").strip()

    drv = env.driver()
    store = layerstore.LayerStore(env.data_root, drv)
    chains = layerstore.chain_ids(diff_ids)
    assert sorted(l.chain_id for l in store.layers()) == sorted(chains)
    for layer in store.layers():
        store.verify(layer.chain_id)
        # our disassembly of the rebuilt tar is dockerd's tar-split, byte for byte
        tar = io.BytesIO()
        store.tar_stream_to(layer.chain_id, tar)
        ours = io.BytesIO()
        tarsplit.disassemble(io.BytesIO(tar.getvalue()), ours)
        with gzip.open(os.path.join(layer.path, "tar-split.json.gz")) as f:
            assert ours.getvalue() == f.read(), layer.chain_id
    mounts = store.mounts()
    assert [m.name for m in mounts] == [container_id]
    assert mounts[0].parent == chains[1] and mounts[0].init_id == mounts[0].mount_id + "-init"
    assert store.orphans() == []

    # a same-size change in the top layer: verify names the layer and the file
    top = store.get(chains[2])
    root, release = store.driver.diff_dir(top.cache_id)
    try:
        path = os.path.join(root, "third.txt")
        with open(path, "rb") as f:
            original = f.read()
        with open(path, "wb") as f:
            f.write(original.upper())
    finally:
        release()
    with pytest.raises(layerstore.LayerCorrupt) as e:
        store.verify(top.chain_id)
    assert e.value.chain_id == top.chain_id and e.value.path == "third.txt"
    assert top.chain_id in str(e.value) and "third.txt" in str(e.value)
    store.verify(chains[1])
    root, release = store.driver.diff_dir(top.cache_id)
    try:
        with open(os.path.join(root, "third.txt"), "wb") as f:
            f.write(original)
    finally:
        release()
    store.verify(top.chain_id)

    # a driver layer nobody references is an orphan; gc removes only it
    stray = layerstore.random_id()
    drv.create(stray, store.get(chains[0]).cache_id)
    assert store.orphans() == [stray]
    assert store.gc() == [stray]
    assert not drv.exists(stray)
    assert store.orphans() == []
    for chain in chains:
        store.verify(chain)
    drv.cleanup()
    with env.dockerd() as d:
        assert _run_image(d, images.TAG) == images.EXPECTED_OUTPUT
        assert d.docker("run", "--rm", "--network", "none", "strata/interop:3",
                        "/bin/cat", "/third.txt") == "third\n"
        d.docker("start", "-a", "c3")  # the container's layers survived too


# --- 3. crashes ---------------------------------------------------------------------

# The child imports the archive and SIGKILLs itself at the named step.
CHILD = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {build!r}); sys.path.insert(0, {root!r})
    from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import (
        imagestore, layerstore, new)
    step, driver, home, data_root, archive = sys.argv[1:6]

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    if step.startswith("bytes="):
        limit = int(step[6:])
        orig = imagestore._Decompressed.read
        seen = [0]
        def read(self, n=-1):
            data = orig(self, n)
            seen[0] += len(data)
            if seen[0] >= limit:
                die()
            return data
        imagestore._Decompressed.read = read
    elif step == "after-apply":
        drv_cls = type(new(driver, home))
        orig_apply = drv_cls.apply_diff
        def apply_diff(self, *a):
            orig_apply(self, *a)
            die()
        drv_cls.apply_diff = apply_diff
    elif step == "before-commit":
        real_rename = os.rename
        def rename(src, dst):
            if "write-set-" in src:
                die()
            return real_rename(src, dst)
        layerstore.os.rename = rename
    elif step == "between-layers":
        orig_reg = layerstore.LayerStore.register
        def register(self, *a, **k):
            layer = orig_reg(self, *a, **k)
            die()
        layerstore.LayerStore.register = register
    elif step == "before-tags":
        imagestore.ImageStore.add_tags = lambda self, tags: die()
    imagestore.import_archive(data_root, new(driver, home), archive)
    print("finished without crashing")
""")

MID_LAYER_STEPS = ["bytes=700000", "after-apply", "before-commit"]
CRASH_STEPS = MID_LAYER_STEPS + ["between-layers", "before-tags"]


def test_crash_during_import_leaves_a_sound_store(env, image_archive):
    code = CHILD.format(build=os.path.join(ROOT, ".build"), root=ROOT)
    for step in CRASH_STEPS:
        proc = subprocess.run(
            [sys.executable, "-c", code, step, env.name, env.home, env.data_root,
             image_archive.path], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            universal_newlines=True, timeout=300)
        assert proc.returncode == -signal.SIGKILL, (step, proc.stdout, proc.stderr)
        tmp = os.path.join(env.data_root, "image", env.name, "layerdb", "tmp")
        leftovers = os.listdir(tmp) if os.path.isdir(tmp) else []
        drv = env.driver()
        half = layerstore.LayerStore(env.data_root, drv, recover=False).orphans()
        if step in MID_LAYER_STEPS:
            # killed inside a registration: a write set and its driver layer remain
            assert len(leftovers) == 1 and len(half) == 1, (step, leftovers, half)
        store = layerstore.LayerStore(env.data_root, drv)  # opening recovers
        assert os.listdir(tmp) == [], step
        assert store.orphans() == [], (step, leftovers)
        assert not any(drv.exists(h) for h in half), step
        for layer in store.layers():
            store.verify(layer.chain_id)
        with env.dockerd() as d:
            d.docker("images")
            listed = d.docker("images", "-q", "--no-trunc")
            if step == "before-tags":
                # layers and config landed: an untagged image, nothing dangling
                assert image_archive.image_id in listed
    # the interrupted import, run again, completes and the image runs
    imagestore.import_archive(env.data_root, env.driver(), image_archive.path)
    with env.dockerd() as d:
        assert _run_image(d, images.TAG) == images.EXPECTED_OUTPUT
