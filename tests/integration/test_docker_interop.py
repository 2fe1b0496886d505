"""Proof against real engines, Docker 20.10 and 26.1 (graphdriver mode), on
every graphdriver both run here: vfs, overlay2, btrfs, fuse-overlayfs.

1. The test image archive, as each engine's ``docker save`` wrote it
   (20.10: classic; 26.1: an OCI layout with manifest.json beside it),
   imported offline by us into an empty data-root: that engine starts on it,
   lists the tag with the same image ID, runs it, and saves layers with the
   same DiffIDs. The 26.1 archive read as OCI alone (index.json, no
   manifest.json) gives Docker's own manifest, and imports and runs too.
2. A data-root written by the engine (load, run, commit): every layer
   verifies, our tar-split of each rebuilt tar equals the engine's byte for
   byte (each engine's own form of it), what our import writes equals what
   its ``docker load`` wrote (layerdb, imagedb, tags, the driver's layer
   layout and files), a corrupted file is named, a stray driver layer is an
   orphan and gc removes only it, and the engine still runs the image.
3. Registration/import killed with SIGKILL at named steps: the store opens
   clean (half-written layer removed), verifies, and the engine starts on it.
   On 20.10 only, every driver: the crash and the recovery are ours and
   the same whichever engine saved the archive; the engine only reads the
   recovered store, a store like any other, which test 1 proves 26.1 reads
   on every driver (and 26.1 starts twice as slowly: six starts a case).
"""

import contextlib
import gzip
import hashlib
import io
import json
import os
import signal
import stat
import subprocess
import sys
import tarfile
import textwrap

import pytest

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import (
    GraphDriverError, NotSupported, engine, imagestore, layerstore, new, tarsplit)
from tests.support import dockerd as dockerd_support
from tests.support import images
from tests.support.backends import backend_home
from tests.support.loop import loop_filesystem

DRIVERS = ["vfs", "overlay2", "btrfs", "fuse-overlayfs"]
ENGINES = dockerd_support.ENGINE_VERSIONS
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _case(engine_version, driver):
    return pytest.param((engine_version, driver), id="%s-%s" % (engine_version, driver))


EVERY = [_case(e, d) for e in ENGINES for d in DRIVERS]
CRASH = [_case("20.10", d) for d in DRIVERS]


@pytest.fixture
def env(request, tmp_path, image_archives):
    """An _Env: engine, driver, an empty data-root on the driver's backing
    storage, and that engine's image archive."""
    engine_version, name = request.param
    request.node.user_properties.append(("driver", name))
    archive = image_archives(engine_version)
    with contextlib.ExitStack() as stack:
        if name == "btrfs":
            # a subdirectory, not the mount: dockerd's teardown unmounts its data-root
            mnt = stack.enter_context(loop_filesystem("btrfs", size_mb=400))
            data_root = os.path.join(mnt, "docker")
        elif name == "fuse-overlayfs":
            home, _ = stack.enter_context(backend_home(name, str(tmp_path / "docker")))
            data_root = os.path.dirname(home)
        else:
            # /tmp here is ext4 with d_type: fine for vfs and overlay2
            data_root = str(tmp_path / "docker")
        yield _Env(engine_version, name, data_root, tmp_path, archive)


class _Env(object):
    def __init__(self, engine_version, name, data_root, workdir, archive):
        self.engine, self.name, self.data_root = engine_version, name, data_root
        self.workdir, self.archive = str(workdir), archive
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

    def driver(self, data_root=None):
        return new(self.name, os.path.join(data_root or self.data_root, self.name))

    def dockerd(self, data_root=None):
        self._n += 1
        return dockerd_support.dockerd(os.path.join(self.workdir, "dockerd-%d" % self._n),
                                       storage_driver=self.name,
                                       data_root=data_root or self.data_root,
                                       engine=self.engine)


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


def _listed(d):
    return d.docker("images", "--no-trunc", "--format",
                    "{{.Repository}}:{{.Tag}} {{.ID}}").split("\n")


# --- 1. offline import, then dockerd ---------------------------------------------

@pytest.mark.parametrize("env", EVERY, indirect=True)
def test_offline_import_then_dockerd_runs_it(env):
    drv = env.driver()
    # written in the newest engine's form (the default): 20.10 reads it too
    result = imagestore.import_archive(env.data_root, drv, env.archive.path)
    assert [i.id for i in result] == [env.archive.image_id]
    assert [l.diff_id for l in result[0].layers] == env.archive.diff_ids
    # a second import changes nothing: same layers, no new driver layer
    before = layerstore.LayerStore(env.data_root, drv).referenced_ids()
    imagestore.import_archive(env.data_root, drv, env.archive.path)
    assert layerstore.LayerStore(env.data_root, drv).referenced_ids() == before
    drv.cleanup()

    with env.dockerd() as d:
        assert d.docker("info", "-f", "{{.Driver}}").strip() == env.name
        assert "%s %s" % (images.TAG, env.archive.image_id) in _listed(d)
        assert _run_image(d, images.TAG) == images.EXPECTED_OUTPUT
        saved = os.path.join(env.workdir, "resaved.tar")
        d.docker("save", "-o", saved, images.TAG)
        hashed, declared = _saved_diff_ids(saved)
        assert hashed == declared == env.archive.diff_ids
        # the engine is up: offline writers must refuse
        with pytest.raises(engine.EngineRunning, match=env.data_root):
            imagestore.import_archive(env.data_root, env.driver(), env.archive.path)
        with pytest.raises(engine.EngineRunning):
            layerstore.LayerStore(env.data_root, env.driver()).gc()


def _members(path):
    with tarfile.open(path) as t:
        return {m.name: (t.extractfile(m).read() if m.isfile() else None)
                for m in t.getmembers()}


def test_docker_save_of_26_is_an_oci_layout_we_read_as_docker_does(image_archives, tmp_path):
    """Engine 25+ saves an OCI image layout (oci-layout, index.json,
    blobs/sha256, each blob named by its digest) and, for docker load,
    manifest.json with blob paths; 20.10 saves the classic layout only. Our
    OCI reader (index.json -> manifest -> config and layers) gives exactly
    Docker's manifest.json for the real 26.1 archive."""
    new_one = _members(image_archives("26.1").path)
    for name, data in new_one.items():
        if name.startswith("blobs/sha256/") and data is not None:
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1], name
    assert json.loads(new_one["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(new_one["index.json"])
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    (desc,) = index["manifests"]
    assert desc["annotations"] == {"io.containerd.image.name": "docker.io/" + images.TAG,
                                   "org.opencontainers.image.ref.name": images.TAG.split(":")[1]}
    manifest = json.loads(new_one["manifest.json"])
    assert all(p.startswith("blobs/sha256/") for p in manifest[0]["Layers"])
    archive = imagestore._Archive(image_archives("26.1").path)
    try:
        from_oci = imagestore._manifest_from_oci(archive)
    finally:
        archive.close()
    assert from_oci == [{k: manifest[0][k] for k in ("Config", "Layers", "RepoTags")}]
    # 20.10: no OCI layout, per-layer directories
    old_one = _members(image_archives("20.10").path)
    assert "index.json" not in old_one and "oci-layout" not in old_one
    assert all(p.endswith("/layer.tar") for p in json.loads(old_one["manifest.json"])[0]["Layers"])


@pytest.mark.parametrize("env", [_case("26.1", "vfs")], indirect=True)
def test_an_oci_only_archive_imports_and_dockerd_26_runs_it(env):
    """The 26.1 archive without manifest.json (what OCI tools write): read
    through index.json alone, the same image, and Engine 26 runs it."""
    oci_only = os.path.join(env.workdir, "oci-only.tar")
    with tarfile.open(env.archive.path) as src, tarfile.open(oci_only, "w") as dst:
        for m in src.getmembers():
            if m.name not in ("manifest.json", "repositories"):
                dst.addfile(m, src.extractfile(m) if m.isfile() else None)
    result = imagestore.import_archive(env.data_root, env.driver(), oci_only)
    assert [(i.id, i.tags) for i in result] == [(env.archive.image_id, [images.TAG])]
    env.driver().cleanup()
    with env.dockerd() as d:
        assert "%s %s" % (images.TAG, env.archive.image_id) in _listed(d)
        assert _run_image(d, images.TAG) == images.EXPECTED_OUTPUT


# --- 2. what dockerd wrote, read and verified by us --------------------------------

def _tree(drv, cache_id):
    """The files of a driver layer: path -> (mode, owner, size, mtime, target, xattrs)."""
    root, release = drv.diff_dir(cache_id)
    try:
        out = {}
        for dirpath, dirnames, filenames in os.walk(root):
            for n in dirnames + filenames:
                p = os.path.join(dirpath, n)
                st = os.lstat(p)
                link = os.readlink(p) if stat.S_ISLNK(st.st_mode) else None
                xattrs = None if link is not None else sorted(
                    (k, os.getxattr(p, k, follow_symlinks=False)) for k in os.listxattr(p))
                out[os.path.relpath(p, root)] = (
                    stat.filemode(st.st_mode), st.st_uid, st.st_gid,
                    st.st_size if stat.S_ISREG(st.st_mode) else None, st.st_mtime_ns, link, xattrs)
        return out
    finally:
        release()


def _layer_dir_shape(drv, cache_id):
    """What the driver keeps beside a layer's files: overlay2 and
    fuse-overlayfs ``<id>/{diff,link,lower,work,committed}`` (link ids are
    random: their form only); vfs ``dir/<id>`` and btrfs ``subvolumes/<id>``
    are the files themselves: the root's mode."""
    top = os.path.join(drv.home, cache_id)
    if not os.path.isdir(top):
        for sub in ("dir", "subvolumes"):
            if os.path.isdir(os.path.join(drv.home, sub, cache_id)):
                return {".": stat.filemode(os.stat(os.path.join(drv.home, sub, cache_id)).st_mode)}
        raise AssertionError("no layer %s under %s" % (cache_id, drv.home))
    shape = {}
    for n in sorted(os.listdir(top)):
        p = os.path.join(top, n)
        st = os.lstat(p)
        form = None
        if stat.S_ISREG(st.st_mode):
            with open(p) as f:
                text = f.read()
            form = len(text.split(":")) if n == "lower" else len(text) if n == "link" else text
        shape[n] = (stat.filemode(st.st_mode), form)
    return shape


def _what_load_wrote(data_root, drv, chains, image_id):
    """For the loaded image: its layerdb entries (but cache-id), the driver's
    layer layout and files, its imagedb entry and its tag."""
    store = layerstore.LayerStore(data_root, drv, recover=False)
    base = os.path.join(data_root, "image", drv.name)
    out = {}
    for chain in chains:
        layer = store.get(chain)
        for n in sorted(os.listdir(layer.path)):
            if n == "cache-id":
                continue
            with open(os.path.join(layer.path, n), "rb") as f:
                data = f.read()
            if n == "tar-split.json.gz":
                data = gzip.decompress(data)      # the JSON: gzip's own bytes are Go's or ours
            out[(chain, n)] = (stat.filemode(os.stat(os.path.join(layer.path, n)).st_mode), data)
        out[(chain, "layout")] = _layer_dir_shape(drv, layer.cache_id)
        out[(chain, "files")] = _tree(drv, layer.cache_id)
    content = os.path.join(base, "imagedb", "content", "sha256", image_id[7:])
    with open(content, "rb") as f:
        out["config"] = (stat.filemode(os.stat(content).st_mode), f.read())
    out["metadata"] = os.listdir(os.path.join(base, "imagedb", "metadata", "sha256"))
    out["tag"] = imagestore.ImageStore(data_root, drv.name).tags().get(images.TAG)
    return out


@pytest.mark.parametrize("env", EVERY, indirect=True)
def test_we_verify_what_dockerd_wrote(env):
    loaded_chains = layerstore.chain_ids(env.archive.diff_ids)
    with env.dockerd() as d:
        d.docker("load", "-i", env.archive.path)
        # what load alone wrote (the run below marks a parent layer, overlay2's
        # "committed"): read while the engine runs, nothing written
        loaded = _what_load_wrote(env.data_root, env.driver(), loaded_chains,
                                  env.archive.image_id)
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
        # our disassembly of the rebuilt tar is this engine's tar-split, byte for byte
        tar = io.BytesIO()
        store.tar_stream_to(layer.chain_id, tar)
        ours = io.BytesIO()
        tarsplit.disassemble(io.BytesIO(tar.getvalue()), ours, engine_version=env.engine)
        with gzip.open(os.path.join(layer.path, "tar-split.json.gz")) as f:
            assert ours.getvalue() == f.read(), layer.chain_id
    mounts = store.mounts()
    assert [m.name for m in mounts] == [container_id]
    assert mounts[0].parent == chains[1] and mounts[0].init_id == mounts[0].mount_id + "-init"
    assert store.orphans() == []

    # our offline import writes what this engine's docker load wrote
    ours_root = env.data_root + "-ours"
    ours_drv = env.driver(ours_root)
    imagestore.import_archive(ours_root, ours_drv, env.archive.path, engine_version=env.engine)
    try:
        assert _what_load_wrote(ours_root, ours_drv, loaded_chains,
                                env.archive.image_id) == loaded
    finally:
        ours_drv.cleanup()

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


@pytest.mark.parametrize("env", CRASH, indirect=True)
def test_crash_during_import_leaves_a_sound_store(env):
    code = CHILD.format(build=os.path.join(ROOT, ".build"), root=ROOT)
    for step in CRASH_STEPS:
        proc = subprocess.run(
            [sys.executable, "-c", code, step, env.name, env.home, env.data_root,
             env.archive.path], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
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
        drv.cleanup()
        with env.dockerd() as d:
            listed = d.docker("images", "-q", "--no-trunc")
            if step == "before-tags":
                # layers and config landed: an untagged image, nothing dangling
                assert env.archive.image_id in listed
    # the interrupted import, run again, completes and the image runs
    imagestore.import_archive(env.data_root, env.driver(), env.archive.path)
    env.driver().cleanup()
    with env.dockerd() as d:
        assert _run_image(d, images.TAG) == images.EXPECTED_OUTPUT
