"""Offline import of docker save archives (classic and OCI layout) on vfs."""

import gzip
import hashlib
import io
import json
import os
import tarfile

import pytest

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import (
    ArchiveError, imagestore, layerstore, new, tarsplit_worker)


def _layer(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in files:
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime = len(data), 1600000000
            t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


L1 = _layer([("hello.txt", b"hello\n")])
L2 = _layer([("second.txt", b"second\n")])
CONFIG = json.dumps({
    "architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
    "rootfs": {"type": "layers", "diff_ids": [sha(L1), sha(L2)]},
    "history": [{"created_by": "a"}, {"created_by": "b"}]}).encode()
IMAGE_ID = sha(CONFIG)


def _archive(path, members):
    with tarfile.open(path, "w") as t:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
    return path


def classic_archive(path, tags=("strata/unit:1",)):
    manifest = [{"Config": IMAGE_ID[7:] + ".json", "RepoTags": list(tags),
                 "Layers": ["a/layer.tar", "b/layer.tar"]}]
    return _archive(path, [("manifest.json", json.dumps(manifest).encode()),
                           (IMAGE_ID[7:] + ".json", CONFIG),
                           ("a/layer.tar", L1), ("b/layer.tar", L2)])


def oci_archive(path, ref="docker.io/strata/unit:oci"):
    gz2 = gzip.compress(L2)  # registries ship compressed layers
    blobs = {sha(CONFIG): CONFIG, sha(L1): L1, sha(gz2): gz2}
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha(CONFIG), "size": len(CONFIG)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": sha(L1), "size": len(L1)},
                   {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": sha(gz2), "size": len(gz2)}]}).encode()
    blobs[sha(manifest)] = manifest
    index = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": sha(manifest), "size": len(manifest),
        "annotations": {"io.containerd.image.name": ref,
                        "org.opencontainers.image.ref.name": "oci"}}]}).encode()
    members = [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index)]
    members += [("blobs/sha256/" + d[7:], data) for d, data in sorted(blobs.items())]
    return _archive(path, members)


@pytest.fixture
def root(tmp_path):
    return str(tmp_path / "docker")


def _driver(root):
    return new("vfs", os.path.join(root, "vfs"))


@pytest.mark.parametrize("layout", ["classic", "oci"])
def test_import_writes_layers_config_and_tags(tmp_path, root, layout, parallel):
    make = classic_archive if layout == "classic" else oci_archive
    archive = make(str(tmp_path / "image.tar"))
    result = imagestore.import_archive(root, _driver(root), archive)
    assert [i.id for i in result] == [IMAGE_ID]
    # familiar names, as in Docker's manifest.json ("docker.io/strata/unit:oci" in index.json)
    assert result[0].tags == (["strata/unit:1"] if layout == "classic" else ["strata/unit:oci"])
    store = layerstore.LayerStore(root, _driver(root))
    chains = layerstore.chain_ids([sha(L1), sha(L2)])
    assert sorted(l.chain_id for l in store.layers()) == sorted(chains)
    for chain in chains:
        store.verify(chain)
    content = os.path.join(root, "image", "vfs", "imagedb", "content", "sha256", IMAGE_ID[7:])
    with open(content, "rb") as f:
        assert f.read() == CONFIG
    assert oct(os.stat(content).st_mode & 0o777) == "0o600"
    assert os.path.isdir(os.path.join(root, "image", "vfs", "imagedb", "metadata", "sha256"))
    with open(os.path.join(root, "image", "vfs", "repositories.json")) as f:
        repos = json.load(f)
    tag = "strata/unit:1" if layout == "classic" else "strata/unit:oci"
    assert repos == {"Repositories": {"strata/unit": {tag: IMAGE_ID}}}


def test_import_is_idempotent_and_merges_tags(tmp_path, root):
    first = classic_archive(str(tmp_path / "a.tar"), tags=("strata/unit:1", "busybox:mine"))
    imagestore.import_archive(root, _driver(root), first)
    ids = sorted(os.listdir(os.path.join(root, "vfs", "dir")))
    imagestore.import_archive(root, _driver(root), oci_archive(str(tmp_path / "b.tar")))
    assert sorted(os.listdir(os.path.join(root, "vfs", "dir"))) == ids
    tags = imagestore.ImageStore(root, "vfs").tags()
    assert tags == {"strata/unit:1": IMAGE_ID, "strata/unit:oci": IMAGE_ID,
                    "busybox:mine": IMAGE_ID}


def test_wrong_diff_id_is_refused_and_leaves_no_layer(tmp_path, root):
    bad = json.loads(CONFIG)
    bad["rootfs"]["diff_ids"][1] = "sha256:" + "0" * 64
    bad_bytes = json.dumps(bad).encode()
    manifest = [{"Config": "c.json", "RepoTags": ["strata/bad:1"],
                 "Layers": ["a.tar", "b.tar"]}]
    archive = _archive(str(tmp_path / "bad.tar"), [
        ("manifest.json", json.dumps(manifest).encode()), ("c.json", bad_bytes),
        ("a.tar", L1), ("b.tar", L2)])
    with pytest.raises(ArchiveError, match="DiffID"):
        imagestore.import_archive(root, _driver(root), archive)
    store = layerstore.LayerStore(root, _driver(root))
    assert [l.chain_id for l in store.layers()] == [sha(L1)]  # the good base stays
    assert store.orphans() == []
    assert imagestore.ImageStore(root, "vfs").tags() == {}


@pytest.mark.parametrize("ref,want", [
    ("busybox:latest", ("busybox", "latest")),
    ("docker.io/library/busybox:1", ("busybox", "1")),
    ("library/busybox:1", ("busybox", "1")),
    ("docker.io/strata/x:2", ("strata/x", "2")),
    ("localhost:5000/a/b:c", ("localhost:5000/a/b", "c")),
    ("quay.io/org/img:v1", ("quay.io/org/img", "v1")),
])
def test_familiar_references(ref, want):
    assert imagestore.parse_reference(ref) == want


def test_references_without_tag_are_refused():
    with pytest.raises(imagestore.ImageStoreError):
        imagestore.parse_reference("busybox")


def _gzip_layer_archive(path, layer_bytes):
    manifest = [{"Config": "c.json", "RepoTags": ["strata/gz:1"], "Layers": ["a.tar", "b.tar.gz"]}]
    return _archive(path, [("manifest.json", json.dumps(manifest).encode()), ("c.json", CONFIG),
                           ("a.tar", L1), ("b.tar.gz", layer_bytes)])


def _left_behind(root):
    """Layers, orphan driver layers, write sets and tags an import left."""
    store = layerstore.LayerStore(root, _driver(root))
    tmp = os.path.join(root, "image", "vfs", "layerdb", "tmp")
    return (sorted(layer.chain_id for layer in store.layers()), store.orphans(),
            os.listdir(tmp) if os.path.isdir(tmp) else [], imagestore.ImageStore(root, "vfs").tags())


GZ2 = gzip.compress(L2)


@pytest.fixture(params=["one process", "read-ahead thread and tar-split child"])
def parallel(request, monkeypatch):
    """Both ways a layer is registered: in one thread, or (where a core is
    idle) read ahead by a thread while a child writes the tar-split."""
    on = request.param != "one process"
    monkeypatch.setattr(tarsplit_worker, "core_idle", lambda: on)
    return on


@pytest.mark.parametrize("data,match", [
    (GZ2[:len(GZ2) // 2], "gzip stream is truncated"),
    (GZ2[:20] + b"\xff" * 10 + GZ2[30:], "corrupt gzip stream"),
    (GZ2[:-8] + b"\0\0\0\0" + GZ2[-4:], "corrupt gzip stream"),
    (GZ2 + b"junk", "corrupt gzip stream"),
], ids=["truncated", "corrupt", "bad-checksum", "trailing-junk"])
def test_broken_gzip_layer_is_named_and_leaves_no_layer(tmp_path, root, data, match, parallel):
    archive = _gzip_layer_archive(str(tmp_path / "gz.tar"), data)
    with pytest.raises(ArchiveError, match=match) as e:
        imagestore.import_archive(root, _driver(root), archive)
    assert "b.tar.gz" in str(e.value)
    # the complete base stays (as docker load leaves it); nothing of the broken layer
    assert _left_behind(root) == ([sha(L1)], [], [], {})


@pytest.mark.parametrize("data", [
    GZ2,
    # gzip(1) and Go read members one after another; GzipFile skips zero padding too
    gzip.compress(L2[:1000]) + gzip.compress(L2[1000:]) + b"\0" * 7,
], ids=["one-member", "two-members-and-padding"])
def test_gzip_layer_imports_like_the_plain_one(tmp_path, root, data, parallel):
    archive = _gzip_layer_archive(str(tmp_path / "gz.tar"), data)
    result = imagestore.import_archive(root, _driver(root), archive)
    assert [i.id for i in result] == [IMAGE_ID]
    store = layerstore.LayerStore(root, _driver(root))
    for chain in layerstore.chain_ids([sha(L1), sha(L2)]):
        store.verify(chain)


@pytest.mark.parametrize("cut", ["inside the last layer", "before the last layer"])
def test_truncated_archive_is_refused_before_any_layer(tmp_path, root, cut, parallel):
    archive = classic_archive(str(tmp_path / "image.tar"))
    with tarfile.open(archive) as t:
        last = t.getmember("b/layer.tar")
    end = last.offset_data + 700 if cut == "inside the last layer" else last.offset - 10
    with open(archive, "rb") as f:
        data = f.read()[:end]
    with open(archive, "wb") as f:
        f.write(data)
    with pytest.raises(ArchiveError, match="truncated|has no b/layer.tar"):
        imagestore.import_archive(root, _driver(root), archive)
    assert _left_behind(root) == ([], [], [], {})
