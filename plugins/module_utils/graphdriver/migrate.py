"""Move a stopped engine's images from one storage driver to another.

Docker hides every image when ``storage-driver`` changes: images live in
``image/<driver>/`` and layers in ``<data-root>/<driver>/``. We carry them
over layer by layer: each layer's exact tar is rebuilt from the source
(tar-split plus the source driver's files, the bytes Docker hashed), and
registered into the target driver's layer store with its DiffID checked, so
every ChainID, and therefore every image ID, stays the same. The image
configs and tags are copied last, so the target never shows an image whose
layers are not all there.

Stopped containers are carried too: their init and RW layers (same ids,
their files applied from the source driver's diffs), ``layerdb/mounts``,
and ``Driver`` in ``containers/<id>/config.v2.json`` (Docker loads only the
containers whose Driver is its own). Volumes live outside the drivers and
stay where they are.

The source driver's store is left as it was. The one thing outside it that
changes is each carried container's ``Driver``, so the rollback is a
migration back (which finds every layer already there and only sets
``Driver`` again), then switching ``storage-driver`` back. A failure
part-way removes the target layers this run added.
"""

import os
import shutil
import time

from . import containers
from .dataroot import DataRoot
from .errors import GraphDriverError
from .backingfs import nearest_existing
from .fileutil import atomic_write, makedirs
from .imagestore import ImageStore
from .selection import check_driver
from .layerstore import LayerStore
from .tarsplit import TarSplitError
from .progress import Metered, Progress

# Copied as they are from image/<source>/ to image/<target>/: the image
# configs and their metadata, and the registry digests of pulled layers.
_IMAGE_TREES = ("imagedb", "distribution")


class MigrationError(GraphDriverError):
    pass


class Plan(object):
    """What a migration would do; also the result of one that ran."""

    def __init__(self, data_root, source, target):
        self.data_root, self.source, self.target = data_root, source, target
        self.images = []            # image ids carried
        self.tags = []              # familiar references carried
        self.layers_to_copy = []    # ChainIDs, parents first
        self.layers_present = []    # already in the target
        self.bytes_to_copy = 0      # the source layers' sizes, and the carried containers' changes
        self.bytes_free = 0         # free on the target's filesystem
        self.containers = []        # container ids carried (or to carry)
        self.containers_to_copy = []  # of those, the ones whose layers the target lacks or whose Driver is not it
        self.containers_copied = []
        self.container_bytes = {}   # id -> bytes, of the containers the target lacks
        self.layers_copied = []
        self.metadata_changed = False
        self.seconds = 0.0

    @property
    def changed(self):
        return bool(self.layers_copied or self.containers_copied) or self.metadata_changed

    def as_dict(self):
        return {
            "data_root": self.data_root, "source": self.source, "target": self.target,
            "images": self.images, "tags": self.tags,
            "layers_to_copy": self.layers_to_copy, "layers_present": self.layers_present,
            "layers_copied": self.layers_copied, "bytes_to_copy": self.bytes_to_copy,
            "bytes_free": self.bytes_free,
            "containers": self.containers, "containers_to_copy": self.containers_to_copy,
            "containers_copied": self.containers_copied, "changed": self.changed,
            "seconds": round(self.seconds, 3),
        }


def plan(data_root, source, target, source_options=None, target_options=None):
    """The Plan, writing nothing (check mode). Refuses while an engine runs.

    Nothing may appear on disk here: an empty ``<data-root>/<target>`` alone
    would count as prior state for Docker's driver pick.
    """
    return _planned(os.path.abspath(data_root), source, target, source_options, target_options)[0]


def _planned(data_root, source, target, source_options, target_options):
    """(Plan, source layers parents first, source store), read-only."""
    root = DataRoot(data_root)
    root.ensure_stopped()
    if source == target:
        raise MigrationError("source and target driver are both %s" % source)
    supported, reason = check_driver(target, root.home(target), target_options)
    if not supported:
        raise MigrationError("cannot migrate to %s here: %s" % (target, reason))
    if not root.has_layer_store(source):
        raise MigrationError("%s has no %s layer store (image/%s/layerdb)"
                             % (data_root, source, source))
    # The source is read, never written: switching back is the rollback.
    src_store = LayerStore(data_root, root.driver(source, source_options, read_only=True), recover=False)
    dst_store = None
    if root.has_layer_store(target):
        dst_store = LayerStore(data_root, root.driver(target, target_options, read_only=True), recover=False)
    p, layers = _plan(data_root, src_store, dst_store, target)
    return p, layers, src_store


def _plan(data_root, src_store, dst_store, target):
    """The Plan and the source layers, parents first; ``dst_store`` is None
    while the target has no layer store yet."""
    source = src_store.driver.name
    p = Plan(data_root, source, target)
    src_images = ImageStore(data_root, source)
    p.images = sorted(src_images.images())
    p.tags = sorted(src_images.tags())
    layers = sorted(src_store.layers(), key=lambda l: src_store.depth(l.chain_id))
    for layer in layers:
        if dst_store is not None and dst_store.exists(layer.chain_id):
            p.layers_present.append(layer.chain_id)
        else:
            p.layers_to_copy.append(layer.chain_id)
            p.bytes_to_copy += layer.size
    p.containers = [m.name for m in src_store.mounts()]
    p.containers_to_copy = [c for c in p.containers
                            if dst_store is None or not dst_store.has_mount(c)
                            or _container_driver(data_root, c) not in (None, target)]
    for mount in src_store.mounts():
        if dst_store is None or not dst_store.has_mount(mount.name):
            p.container_bytes[mount.name] = containers.layer_bytes(src_store, mount)
            p.bytes_to_copy += p.container_bytes[mount.name]
    # Refused before anything is written: a target filled up half-way is a
    # failure at the worst moment (the engine is stopped).
    where = nearest_existing(DataRoot(data_root).home(target))
    st = os.statvfs(where)
    p.bytes_free = st.f_bavail * st.f_frsize
    if p.bytes_to_copy > p.bytes_free:
        raise MigrationError("migrating %s to %s needs %d bytes on the filesystem of %s, which has %d free: "
                             "grow it or free space first; nothing was written"
                             % (source, target, p.bytes_to_copy, where, p.bytes_free))
    return p, layers


def migrate(data_root, source, target, source_options=None, target_options=None,
            progress=None, engine_version=None):
    """Carry every image of ``source`` over to ``target``; returns the Plan.

    ``progress(state)``, when given, is called as the work goes on: at each
    phase, after each layer and container, and every 64 MiB within a
    layer. ``state`` is a dict (see Progress.state) that can be written out
    as JSON as it is.
    Idempotent: layers and images already in the target are not copied again.
    ``engine_version``: the engine that will run the target, whose rules
    the carried containers' files are written by where engines differ (the
    mode of a directory a diff implies); the newest engine's when not given.
    """
    started = time.monotonic()
    data_root = os.path.abspath(data_root)
    # Everything that refuses (engine, target support, space) before the
    # target's home or layer store is made; what the target lacks does not
    # change when it is opened for writing.
    p, layers, src_store = _planned(data_root, source, target, source_options, target_options)
    dst = DataRoot(data_root).driver(target, target_options, engine_version=engine_version)
    dst_store = LayerStore(data_root, dst, engine_version=engine_version)
    meter = Progress(p, progress, started)
    todo = set(p.layers_to_copy)
    try:
        for layer in layers:
            if layer.chain_id not in todo:
                continue
            meter.layer_started(layer)
            _copy_layer(src_store, dst_store, layer, meter)
            p.layers_copied.append(layer.chain_id)
            meter.layer_done(layer)
    except BaseException:
        for chain in reversed(p.layers_copied):
            try:
                dst_store.remove(chain)
            except GraphDriverError:
                pass  # left for `gc`; the error below is the one that matters
        raise
    meter.phase("metadata")
    p.metadata_changed = _copy_image_metadata(data_root, source, target)
    meter.phase("containers")
    _carry_containers(data_root, src_store, dst_store, p, meter)
    p.seconds = time.monotonic() - started
    meter.phase("done")
    return p


def _carry_containers(data_root, src_store, dst_store, p, meter):
    """Every container's layers, then its Driver; on a failure the Drivers
    this run set are set back, so that the source engine still loads them."""
    flipped = []
    try:
        for mount in src_store.mounts():
            try:
                if dst_store.copy_rw_layer(src_store, mount):
                    p.containers_copied.append(mount.name)
            except GraphDriverError as e:
                raise MigrationError("container %s: carrying its layers to %s failed: %s"
                                     % (mount.name, p.target, e))
            if _set_container_driver(data_root, mount.name, p.target):
                flipped.append(mount.name)
                p.metadata_changed = True
            meter.container_done(mount.name, p.container_bytes.get(mount.name, 0))
    except BaseException:
        for name in flipped:
            _set_container_driver(data_root, name, p.source)
        raise


def _copy_layer(src_store, dst_store, layer, meter):
    """Apply the source layer's exact tar, read straight from its files, in
    the target store.

    The source's tar-split describes that stream exactly (it was made from
    it): it is copied, not disassembled again. The stream is hashed once,
    against the DiffID, which also stands for tar-split's per-file CRC-64.
    """
    try:
        stream = src_store.tar_stream(layer.chain_id, check_crc=False)
    except GraphDriverError as e:
        raise MigrationError("layer %s: reading it from %s failed: %s"
                             % (layer.chain_id, src_store.driver.name, e))
    try:
        dst_store.register(Metered(stream, meter), layer.parent, diff_id=layer.diff_id,
                           tar_split=src_store.tar_split_path(layer.chain_id))
    except TarSplitError as e:
        raise MigrationError("layer %s: reading it from %s failed: %s"
                             % (layer.chain_id, src_store.driver.name, e))
    except GraphDriverError as e:
        raise MigrationError("layer %s: writing it into %s failed: %s"
                             % (layer.chain_id, dst_store.driver.name, e))
    finally:
        stream.close()


def _copy_image_metadata(data_root, source, target):
    """image/<source>/{imagedb,distribution} and tags into image/<target>/."""
    src_root, dst_root = DataRoot(data_root).image_root(source), DataRoot(data_root).image_root(target)
    changed = False
    for tree in _IMAGE_TREES:
        top = os.path.join(src_root, tree)
        for dirpath, dirnames, filenames in os.walk(top):
            rel = os.path.relpath(dirpath, src_root)
            makedirs(os.path.join(dst_root, rel), 0o700)
            for name in filenames:
                src_file = os.path.join(dirpath, name)
                dst_file = os.path.join(dst_root, rel, name)
                with open(src_file, "rb") as f:
                    data = f.read()
                if _read_bytes(dst_file) != data:
                    atomic_write(dst_file, data, mode=os.stat(src_file).st_mode & 0o777)
                    changed = True
    tags = ImageStore(data_root, source).tags()
    dst_images = ImageStore(data_root, target)
    if any(dst_images.tags().get(ref) != image for ref, image in tags.items()):
        dst_images.add_tags(tags)
        changed = True
    return changed


def _container_driver(data_root, container):
    return (containers.read_config(data_root, container)[1] or {}).get("Driver")


def _set_container_driver(data_root, container, driver):
    """config.v2.json's Driver, which decides whether Docker loads it."""
    path, config = containers.read_config(data_root, container)
    if config is None or config.get("Driver") == driver:
        return False
    config["Driver"] = driver
    containers.write_config(path, config)
    return True


def _read_bytes(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def remove_source(data_root, source, source_options=None):
    """Delete the source driver's layers and image metadata (after a migration)."""
    data_root = os.path.abspath(data_root)
    root = DataRoot(data_root)
    root.ensure_stopped()
    drv = root.driver(source, source_options)
    store = LayerStore(data_root, drv)
    for mount in store.mounts():
        store.remove_rw_layer(mount.name)
    for layer in sorted(store.layers(), key=lambda l: -store.depth(l.chain_id)):
        store.remove(layer.chain_id)
    drv.cleanup()
    shutil.rmtree(root.image_root(source), ignore_errors=True)
