"""The layerdb written by LayerStore, on the vfs driver in a temp dir."""

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile

import pytest

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import (
    GraphDriverError, LayerNotFound, layerstore, new)

# Two real DiffIDs (the test image's layers) and their ChainID, computed
# outside this code: printf '%s' "<d1> <d2>" | sha256sum
D1 = "sha256:3440d3041f856840c8809563a9872ac02638e4e2acb2a95ad29154908501f8ee"
D2 = "sha256:66762581c3144a54aa448f4362db411bc3493be6a12a783e7fcac32d7934e0ce"
C2 = "sha256:0e7629468d24d4d1c3b68edb048f5ee34f1b1aa3822ef8b42d7ef3f775a90234"


def test_chain_ids_known_values():
    assert layerstore.chain_ids([D1]) == [D1]
    assert layerstore.chain_ids([D1, D2]) == [D1, C2]
    d3 = "sha256:" + "ab" * 32
    c3 = "sha256:" + hashlib.sha256((C2 + " " + d3).encode()).hexdigest()
    assert layerstore.chain_ids([D1, D2, d3]) == [D1, C2, c3]
    assert layerstore.chain_id(None, D2) == D2


def make_tar(files, pax=True):
    buf = io.BytesIO()
    fmt = tarfile.PAX_FORMAT if pax else tarfile.GNU_FORMAT
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for name, data in files:
            if name.endswith("/"):
                ti = tarfile.TarInfo(name)
                ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 1600000000
                t.addfile(ti)
                continue
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(data), 0o644, 1600000000
            t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(tmp_path):
    root = str(tmp_path / "docker")
    drv = new("vfs", os.path.join(root, "vfs"))
    return layerstore.LayerStore(root, drv)


def vfs_ids(store):
    return sorted(os.listdir(os.path.join(store.driver.home, "dir")))


BASE = make_tar([("etc/", None), ("etc/hostname", b"strata\n"), ("bin/tool", b"x" * 3000)])
CHILD = make_tar([("etc/", None), ("etc/motd", b"welcome\n")])


def test_register_writes_dockers_files(store):
    base = store.register(io.BytesIO(BASE))
    child = store.register(io.BytesIO(CHILD), base.chain_id)
    assert base.diff_id == sha(BASE) and base.chain_id == base.diff_id
    assert child.diff_id == sha(CHILD)
    assert child.chain_id == sha(("%s %s" % (base.chain_id, child.diff_id)).encode())

    d = os.path.join(store.root, "sha256", child.chain_id[7:])
    assert sorted(os.listdir(d)) == ["cache-id", "diff", "parent", "size", "tar-split.json.gz"]
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700  # ioutil.TempDir, renamed
    for name in os.listdir(d):
        assert stat.S_IMODE(os.stat(os.path.join(d, name)).st_mode) == 0o644

    def read(name):
        with open(os.path.join(d, name)) as f:
            return f.read()

    assert read("diff") == child.diff_id  # no newline, as Docker writes it
    assert read("parent") == base.chain_id
    assert read("cache-id") == child.cache_id and len(child.cache_id) == 64
    assert int(read("size")) == child.size
    assert not os.path.exists(os.path.join(store.root, "sha256", base.chain_id[7:], "parent"))
    assert sorted(vfs_ids(store)) == sorted([base.cache_id, child.cache_id])
    assert os.listdir(os.path.join(store.root, "tmp")) == []
    with open(os.path.join(store.driver.get(child.cache_id), "etc", "hostname")) as f:
        assert f.read() == "strata\n"
    # tar-split records each entry
    with gzip.open(os.path.join(d, "tar-split.json.gz")) as f:
        names = [json.loads(l).get("name") for l in f if b'"type":1' in l]
    assert names == ["etc/", "etc/motd"]


def test_exact_tar_comes_back(store):
    base = store.register(io.BytesIO(BASE))
    out = io.BytesIO()
    store.tar_stream_to(base.chain_id, out)
    assert out.getvalue() == BASE
    assert store.verify(base.chain_id).diff_id == sha(BASE)


def test_register_is_idempotent(store):
    base = store.register(io.BytesIO(BASE))
    child = store.register(io.BytesIO(CHILD), base.chain_id)
    before = vfs_ids(store)
    again = store.register(io.BytesIO(CHILD), base.chain_id)
    assert again == child
    assert vfs_ids(store) == before  # the duplicate driver layer was dropped

    class Unreadable(object):
        def read(self, n=-1):
            raise AssertionError("a known chain must not be read again")

    assert store.register(Unreadable(), base.chain_id, diff_id=child.diff_id) == child
    assert vfs_ids(store) == before


def test_failed_register_leaves_nothing(store):
    base = store.register(io.BytesIO(BASE))
    before = vfs_ids(store)
    with pytest.raises(GraphDriverError):
        store.register(io.BytesIO(CHILD[:700]), base.chain_id)  # truncated tar
    with pytest.raises(GraphDriverError):
        store.register(io.BytesIO(CHILD), base.chain_id, diff_id="sha256:" + "0" * 64)
    assert vfs_ids(store) == before
    assert [l.chain_id for l in store.layers()] == [base.chain_id]
    assert os.listdir(os.path.join(store.root, "tmp")) == []
    with pytest.raises(LayerNotFound):
        store.register(io.BytesIO(CHILD), "sha256:" + "1" * 64)


def test_verify_names_the_changed_file(store):
    base = store.register(io.BytesIO(BASE))
    child = store.register(io.BytesIO(CHILD), base.chain_id)
    path = os.path.join(store.driver.get(base.cache_id), "bin", "tool")
    with open(path, "r+b") as f:
        f.seek(100)
        f.write(b"y")
    with pytest.raises(layerstore.LayerCorrupt) as e:
        store.verify(base.chain_id)
    assert e.value.chain_id == base.chain_id and e.value.path == "bin/tool"
    assert base.chain_id in str(e.value) and "bin/tool" in str(e.value)
    assert store.verify(child.chain_id)  # vfs child is a full copy: unaffected
    result = store.verify_all()
    assert result[child.chain_id] is None and result[base.chain_id] is not None


def test_remove_refuses_while_referenced(store):
    base = store.register(io.BytesIO(BASE))
    child = store.register(io.BytesIO(CHILD), base.chain_id)
    with pytest.raises(layerstore.LayerInUse, match=child.chain_id):
        store.remove(base.chain_id)
    m = store.create_rw_layer("c1", child.chain_id,
                              init=lambda p: open(os.path.join(p, ".dockerenv"), "w").close())
    assert sorted(os.listdir(os.path.join(store.root, "mounts", "c1"))) == [
        "init-id", "mount-id", "parent"]
    assert m.init_id == m.mount_id + "-init"
    with pytest.raises(layerstore.LayerInUse, match="container c1"):
        store.remove(child.chain_id)
    assert store.orphans() == []
    store.remove_rw_layer("c1")
    store.remove(child.chain_id)
    store.remove(base.chain_id)
    assert store.layers() == [] and vfs_ids(store) == []
    assert os.listdir(os.path.join(store.root, "sha256")) == []


def test_orphans_and_gc_touch_only_strays(store):
    base = store.register(io.BytesIO(BASE))
    stray = os.path.join(store.driver.home, "dir", "f" * 64)
    os.mkdir(stray)
    assert store.orphans() == ["f" * 64]
    assert store.gc() == ["f" * 64]
    assert vfs_ids(store) == [base.cache_id]
    assert store.verify(base.chain_id)


def test_open_cleans_what_a_crash_left(store, tmp_path):
    base = store.register(io.BytesIO(BASE))
    # what a registration killed after creating its driver layer leaves
    ws = os.path.join(store.root, "tmp", "write-set-123")
    os.mkdir(ws)
    crashed = layerstore.random_id()
    with open(os.path.join(ws, "cache-id"), "w") as f:
        f.write(crashed)
    store.driver.create(crashed, base.cache_id)
    # and a removal killed after its rename
    child = store.register(io.BytesIO(CHILD), base.chain_id)
    os.rename(child.path, child.path + "-" + layerstore.random_id() + "-removing")
    reopened = layerstore.LayerStore(store.data_root, store.driver)
    assert os.listdir(os.path.join(reopened.root, "tmp")) == []
    assert vfs_ids(reopened) == [base.cache_id]
    assert [l.chain_id for l in reopened.layers()] == [base.chain_id]


def test_max_depth(store):
    parent = None
    for i in range(layerstore.MAX_DEPTH):
        parent = store.register(io.BytesIO(make_tar([("f%d" % i, b"%d" % i)])),
                                parent.chain_id if parent else None)
    assert store.depth(parent.chain_id) == layerstore.MAX_DEPTH
    with pytest.raises(layerstore.LayerStoreError, match="max depth"):
        store.register(io.BytesIO(make_tar([("last", b"x")])), parent.chain_id)
