"""A check of Docker's data-root, per driver: what ``docker system prune``
does not see, as podman's ``system check`` finds it for its own store.

``check()`` reads and never writes. Each Finding names a kind, the path
and the reason:

    orphan            a driver layer no layerdb entry or container mount references
    write_set         layerdb/tmp/write-set-*: a registration that never finished
    removing          layerdb/sha256/<hex>-<random>-removing: a removal that never finished
    broken_layer      a layerdb entry Docker cannot load (metadata missing or bad)
    layer_files       a layerdb entry whose driver layer (cache-id) is gone
    missing_parent    a layerdb entry whose parent is not in the layerdb
    corrupt_layer     a layer whose files no longer rebuild its DiffID (full check only)
    image_layers      an image whose layers are not all in the layerdb
    broken_mount      a container mount whose layers are gone or whose files are bad
    container_layer   a container of this driver without its mount in the layerdb
    stray_mount       something mounted under the driver's home with no engine running

``repair()`` removes only what nothing references: orphans, write sets and
unfinished removals (``LayerStore.gc``), the kinds marked repairable. The
others lose data someone may still want (an image's files, a container's
changes); they are reported with what to do, never deleted.
"""

import json
import os
import re

from . import engine
from .dataroot import DataRoot
from .errors import GraphDriverError
from .imagestore import ImageStore
from .layerstore import LayerCorrupt, LayerStore, chain_ids
from .mount import mounts_under

REPAIRABLE = ("orphan", "write_set", "removing")
_HEX = re.compile(r"^[0-9a-f]{64}$")


class Finding(object):
    __slots__ = ("kind", "item", "path", "reason")

    def __init__(self, kind, item, path, reason):
        self.kind, self.item, self.path, self.reason = kind, item, path, reason

    @property
    def repairable(self):
        return self.kind in REPAIRABLE

    def as_dict(self):
        return {"kind": self.kind, "item": self.item, "path": self.path, "reason": self.reason,
                "repairable": self.repairable}

    def __repr__(self):
        return "Finding(%s, %s)" % (self.kind, self.item)


class Report(object):
    def __init__(self, data_root, driver, verified):
        self.data_root, self.driver, self.verified = data_root, driver, verified
        self.findings = []
        self.layers = 0
        self.images = 0
        self.containers = 0
        self.engine_running = False

    def add(self, kind, item, path, reason):
        self.findings.append(Finding(kind, item, path, reason))

    def kinds(self):
        out = {}
        for f in self.findings:
            out[f.kind] = out.get(f.kind, 0) + 1
        return out

    @property
    def healthy(self):
        return not self.findings


def _open(data_root, driver, options, read_only=True):
    root = DataRoot(data_root)
    if not root.has_layer_store(driver):
        raise GraphDriverError("%s has no %s layer store (%s)" % (data_root, driver, root.layerdb(driver)))
    drv = root.driver(driver, options, read_only=read_only)
    return LayerStore(data_root, drv, check_engine=not read_only, recover=False)


def check(data_root, driver, options=None, verify=True):
    """The Report of ``driver``'s store under ``data_root``; writes nothing.

    ``verify``: rebuild every layer's tar and hash it against its DiffID
    (reads every file: the slow part); without it the metadata only.
    """
    data_root = os.path.abspath(data_root)
    store = _open(data_root, driver, options)
    report = Report(data_root, driver, verify)
    report.engine_running = bool(engine.running_evidence(data_root))
    referenced = _check_layers(store, report, verify)
    referenced |= _check_mounts(store, report)
    referenced |= _check_unfinished(store, report)
    for cache in sorted(set(store.driver.layer_ids()) - referenced):
        report.add("orphan", cache, store.driver.layer_path(cache),
                   "driver layer that no layerdb entry or container references")
    _check_images(data_root, driver, store, report)
    _check_containers(data_root, driver, store, report)
    if not report.engine_running:
        for mp in mounts_under(store.driver.home):
            if mp != os.path.realpath(store.driver.home):
                report.add("stray_mount", mp, mp, "mounted with no engine running: unmount it "
                           "(Docker unmounts its layers when it stops)")
    return report


def _check_layers(store, report, verify):
    """Every layerdb entry; returns the driver layer ids they reference."""
    referenced = set()
    base = os.path.join(store.root, "sha256")
    known = set(os.listdir(base)) if os.path.isdir(base) else set()
    for name in sorted(n for n in known if _HEX.match(n)):
        chain = "sha256:" + name
        path = os.path.join(base, name)
        try:
            layer = store.get(chain)
        except GraphDriverError as e:
            report.add("broken_layer", chain, path, "%s: Docker skips it, and the images on it with it" % e)
            continue
        report.layers += 1
        referenced.add(layer.cache_id)
        orphaned = layer.parent and layer.parent[len("sha256:"):] not in known
        if orphaned:
            report.add("missing_parent", chain, path, "its parent %s is not in the layerdb" % layer.parent)
        if not store.driver.exists(layer.cache_id):
            report.add("layer_files", chain, path, "its driver layer %s is gone: pull or load the images "
                       "on it again" % layer.cache_id)
        elif verify and not orphaned:   # without its parent there is no tree to rebuild it from
            try:
                store.verify(chain)
            except LayerCorrupt as e:
                report.add("corrupt_layer", chain, e.path or path, "%s: pull or load the images on it again" % e)
    return referenced


def _check_mounts(store, report):
    referenced = set()
    base = os.path.join(store.root, "mounts")
    for name in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        path = os.path.join(base, name)
        ids = [_read(os.path.join(path, f)) for f in ("mount-id", "init-id")]
        referenced |= {i for i in ids if i}
        parent = _read(os.path.join(path, "parent"))
        if not ids[0]:
            report.add("broken_mount", name, path, "no mount-id: Docker cannot load this container's layer")
            continue
        missing = [i for i in ids if i and not store.driver.exists(i)]
        if missing:
            report.add("broken_mount", name, path, "driver layer %s is gone: the container's changes are lost"
                       % ", ".join(missing))
        if parent and not store.exists(parent):
            report.add("broken_mount", name, path, "its image layer %s is not in the layerdb" % parent)
    return referenced


def _check_unfinished(store, report):
    """Write sets and marked removals; returns the driver layers they hold."""
    held = set()
    tmp = os.path.join(store.root, "tmp")
    for name in sorted(os.listdir(tmp)) if os.path.isdir(tmp) else []:
        if name.startswith("write-set-"):
            path = os.path.join(tmp, name)
            cache = _read(os.path.join(path, "cache-id"))
            held.add(cache)
            report.add("write_set", name, path, "a layer registration that never finished%s"
                       % (" (driver layer %s)" % cache if cache else ""))
    base = os.path.join(store.root, "sha256")
    for name in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        if name.endswith("-removing"):
            path = os.path.join(base, name)
            held.add(_read(os.path.join(path, "cache-id")))
            report.add("removing", name, path, "a layer removal that never finished")
    held.discard(None)
    return held


def _check_images(data_root, driver, store, report):
    images = ImageStore(data_root, driver)
    for image_id, config in sorted(images.images().items()):
        report.images += 1
        diffs = (config.get("rootfs") or {}).get("diff_ids") or []
        missing = [c for c in chain_ids(diffs) if not store.exists(c)]
        if missing:
            report.add("image_layers", image_id, os.path.join(images.content, image_id[len("sha256:"):]),
                       "%d of its %d layers are not in the layerdb (first: %s): pull or load it again"
                       % (len(missing), len(diffs), missing[0]))


def _check_containers(data_root, driver, store, report):
    top = DataRoot(data_root).containers
    for name in sorted(os.listdir(top)) if os.path.isdir(top) else []:
        path = DataRoot(data_root).container_config(name)
        try:
            with open(path) as f:
                config = json.load(f)
        except (OSError, ValueError):
            continue    # not a container Docker would load either
        if config.get("Driver") != driver:
            continue
        report.containers += 1
        if not store.has_mount(name):
            report.add("container_layer", name, path, "Docker loads it, but its layer (layerdb/mounts/%s) "
                       "is gone: remove the container" % name)


def repair(data_root, driver, options=None):
    """Remove orphans, write sets and unfinished removals; returns what went.

    Refuses while an engine runs on the data-root (its own write sets are
    in tmp/ too). Never touches a layer or container something references.
    """
    data_root = os.path.abspath(data_root)
    engine.ensure_stopped(data_root)
    before = [f for f in check(data_root, driver, options, verify=False).findings if f.repairable]
    if before:
        _open(data_root, driver, options, read_only=False).gc()
    return before


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip() or None
    except (FileNotFoundError, NotADirectoryError):
        return None
