"""Move a stopped engine's images and containers from a graphdriver store
into Docker's containerd image store on the same data-root.

Docker Engine 24+ with ``features.containerd-snapshotter`` reads images from
containerd, not from ``image/<driver>/``; switching the feature on hides
every image and container the graphdriver store held. We carry them:

- images: one ``docker save`` stream, made from the source layers' exact
  tars (tar-split plus the driver's files, the bytes of every DiffID),
  goes into ``ctr images import``, which is containerd's own import and
  unpack, the code ``docker load`` runs on that store. Config, DiffIDs and
  tags stay; the image ID the containerd store shows is the manifest's
  digest (Docker 24+ does so for every image there). RepoDigests are not
  carried: the registry's manifest is not in a graphdriver store.
- stopped containers: the two snapshots and the lease Docker makes for one
  (see containerd.py), filled from the source driver's init and RW diffs,
  then ``Driver``, ``Image`` and ``ImageManifest`` in config.v2.json.

The graphdriver store is not written; the rollback is turning the feature
off again after ``restore_containers`` has set each carried container's
config.v2.json back.
"""

import json
import os
import tarfile
import time

from . import containerd as c8d
from . import containers, engine
from .unpack import apply_layer
from .backingfs import nearest_existing
from .dataroot import DataRoot
from .errors import GraphDriverError
from .imagestore import ImageStore
from .layerstore import LayerStore, chain_ids
from .progress import Progress
from . import tarsplit

TARGET = "containerd"
# Each snapshotter Docker's containerd store runs on, and the graphdriver
# whose support check on a host stands for its own (the same kernel feature).
SNAPSHOTTERS = {"overlayfs": "overlay2", "native": "vfs", "btrfs": "btrfs", "zfs": "zfs",
                "fuse-overlayfs": "fuse-overlayfs"}
DEFAULT_SNAPSHOTTER = "overlayfs"    # moby daemon/containerd: DefaultSnapshotter
# Untagged images get this name while ctr imports them, then the name
# Docker gives an untagged image (moby daemon/containerd/soft_delete.go).
_IMPORT_NAME = "strata-graphdriver.invalid/import:%s"
_DANGLING = "moby-dangling@%s"


class ContainerdMigrationError(GraphDriverError):
    pass


class Options(object):
    """The target's options: which snapshotter, which containerd."""

    def __init__(self, options=None):
        options = dict(options or {})
        self.snapshotter = options.pop("snapshotter", None) or DEFAULT_SNAPSHOTTER
        # a running containerd to use (the host's, as dockerd uses it when
        # /run/containerd/containerd.sock exists); else a private one
        self.address = options.pop("address", None)
        self.containerd = options.pop("containerd", None) or "containerd"
        self.ctr = options.pop("ctr", None) or "ctr"
        if options:
            raise ContainerdMigrationError("unknown containerd target options: %s"
                                           % ", ".join(sorted(options)))
        if self.snapshotter not in SNAPSHOTTERS:
            raise ContainerdMigrationError("snapshotter %r: not one Docker's containerd store runs on "
                                           "(%s)" % (self.snapshotter, ", ".join(SNAPSHOTTERS)))


class Plan(object):
    """What a migration into the containerd store would do, or did."""

    def __init__(self, data_root, source, snapshotter):
        self.data_root, self.source, self.snapshotter = data_root, source, snapshotter
        self.target = TARGET
        self.images = []            # image ids (config digests) carried
        self.tags = []
        self.images_to_copy = []
        self.images_present = []
        self.image_targets = {}     # image id -> manifest digest, once known
        self.containers = []
        self.containers_to_copy = []
        self.containers_copied = []
        self.bytes_to_copy = 0
        self.bytes_free = 0
        self.layers_to_copy = []    # ChainIDs the import brings (for progress)
        self.layers_present = []
        self.layers_copied = []
        self.metadata_changed = False
        self.seconds = 0.0

    @property
    def changed(self):
        return bool(self.images_to_copy or self.containers_copied) or self.metadata_changed

    def as_dict(self):
        return {
            "data_root": self.data_root, "source": self.source, "target": self.target,
            "snapshotter": self.snapshotter, "images": self.images, "tags": self.tags,
            "images_to_copy": self.images_to_copy, "images_present": self.images_present,
            "image_ids": self.image_targets,
            "layers_to_copy": self.layers_to_copy, "layers_present": self.layers_present,
            "layers_copied": self.layers_copied,
            "containers": self.containers, "containers_to_copy": self.containers_to_copy,
            "containers_copied": self.containers_copied, "bytes_to_copy": self.bytes_to_copy,
            "bytes_free": self.bytes_free,
            "changed": self.changed, "seconds": round(self.seconds, 3),
        }


def _source(data_root, source, source_options):
    root = DataRoot(data_root)
    if not root.has_layer_store(source):
        raise ContainerdMigrationError("%s has no %s layer store (image/%s/layerdb)"
                                       % (data_root, source, source))
    return LayerStore(data_root, root.driver(source, source_options, read_only=True), recover=False)


def _names(tags):
    """{image id: [familiar tags]}, digest references left out."""
    out = {}
    for ref, image_id in sorted(tags.items()):
        if "@" not in ref:
            out.setdefault(image_id, []).append(ref)
    return out


def _plan(data_root, src_store, opts, client):
    """The Plan, from what the containerd behind ``client`` holds."""
    source = src_store.driver.name
    p = Plan(data_root, source, opts.snapshotter)
    images = ImageStore(data_root, source)
    configs = images.images()
    p.images = sorted(configs)
    p.tags = sorted(images.tags())
    present = _present_images(client, configs, images.tags())
    p.image_targets = {i: d.digest for i, d in present.items()}
    p.images_present = sorted(present)
    p.images_to_copy = [i for i in p.images if i not in present]
    chains_needed = set()
    for image_id in p.images_to_copy:
        chains_needed.update(chain_ids(_diff_ids(configs[image_id])))
    for layer in sorted(src_store.layers(), key=lambda l: src_store.depth(l.chain_id)):
        if layer.chain_id in chains_needed:
            p.layers_to_copy.append(layer.chain_id)
            p.bytes_to_copy += 2 * layer.size   # the content blob and the unpacked snapshot
        else:
            p.layers_present.append(layer.chain_id)
    for mount in src_store.mounts():
        p.containers.append(mount.name)
        if client.snapshot(opts.snapshotter, mount.name) is None:
            p.containers_to_copy.append(mount.name)
            p.bytes_to_copy += containers.layer_bytes(src_store, mount)
    root = c8d.root_of(data_root) if not opts.address else data_root
    where = nearest_existing(root)
    st = os.statvfs(where)
    p.bytes_free = st.f_bavail * st.f_frsize
    if p.bytes_to_copy > p.bytes_free:
        raise ContainerdMigrationError(
            "migrating %s to the containerd store needs %d bytes on the filesystem of %s, "
            "which has %d free: grow it or free space first; nothing was written"
            % (source, p.bytes_to_copy, where, p.bytes_free))
    return p, configs


def _diff_ids(config):
    return (config.get("rootfs") or {}).get("diff_ids") or []


def _present_images(client, configs, tags):
    """{image id: target Descriptor} of the images containerd already has
    under every name they need, their manifest naming the same config."""
    by_name = {i.name: i for i in client.images()}
    names = _names(tags)
    present = {}
    for image_id in configs:
        wanted = [_full_name(t) for t in names.get(image_id, [])]
        found = [by_name.get(n) for n in wanted]
        if not wanted:
            found = [i for i in by_name.values() if i.name.startswith("moby-dangling@")
                     and _config_of(client, i.target) == image_id][:1] or [None]
        if all(found) and all(_config_of(client, i.target) == image_id for i in found):
            present[image_id] = found[0].target
    return present


def _config_of(client, target):
    try:
        manifest = json.loads(client.read_content(target.digest).decode())
    except (c8d.ContainerdError, ValueError):
        return None
    return (manifest.get("config") or {}).get("digest")


def _full_name(familiar):
    """docker.io/library/busybox:latest for busybox:latest, as containerd
    names what Docker calls familiar names."""
    name, _colon, tag = familiar.rpartition(":")
    if "/" in tag or not name:
        name, tag = familiar, "latest"
    first = name.split("/", 1)[0]
    if "/" not in name:
        name = "docker.io/library/" + name
    elif not ("." in first or ":" in first or first == "localhost"):
        name = "docker.io/" + name
    return "%s:%s" % (name, tag)


class _Containerd(object):
    """The containerd to talk to: the one given, or a private one."""

    def __init__(self, data_root, opts):
        self.data_root, self.opts = data_root, opts
        self._daemon = None

    def __enter__(self):
        if self.opts.address:
            address = self.opts.address
        else:
            self._daemon = c8d.Daemon(c8d.root_of(self.data_root), self.opts.containerd).__enter__()
            address = self._daemon.address
        self.address = address
        self.client = c8d.Client(address)
        return self

    def __exit__(self, *exc):
        self.client.close()
        if self._daemon is not None:
            self._daemon.__exit__(*exc)


def plan(data_root, source, source_options=None, target_options=None):
    """The Plan, changing nothing: containerd's state is read only when a
    running containerd is given (a private one would write its root)."""
    data_root = os.path.abspath(data_root)
    engine.ensure_stopped(data_root)
    opts = Options(target_options)
    src_store = _source(data_root, source, source_options)
    if opts.address:
        with c8d.Client(opts.address) as client:
            return _plan(data_root, src_store, opts, client)[0]
    root = c8d.root_of(data_root)
    if not os.path.isdir(root):
        return _plan(data_root, src_store, opts, _EmptyContainerd())[0]
    # what a containerd on the data-root already holds, read through a
    # private one on an overlay of its root: its writes never reach it
    with c8d.Daemon(root, opts.containerd, read_only=True) as daemon:
        with c8d.Client(daemon.address) as client:
            return _plan(data_root, src_store, opts, client)[0]


class _EmptyContainerd(object):
    """A containerd root that does not exist yet holds nothing."""

    def images(self):
        return []

    def snapshot(self, snapshotter, key):
        return None


def migrate(data_root, source, source_options=None, target_options=None, progress=None):
    """Carry every image and stopped container of the ``source`` graphdriver
    into the containerd store; returns the Plan. Idempotent."""
    started = time.monotonic()
    data_root = os.path.abspath(data_root)
    engine.ensure_stopped(data_root)
    opts = Options(target_options)
    src_store = _source(data_root, source, source_options)
    with _Containerd(data_root, opts) as ctd:
        p, configs = _plan(data_root, src_store, opts, ctd.client)
        meter = Progress(p, progress, started)
        if p.images_to_copy:
            _import_images(ctd, src_store, p, configs, meter)
        meter.phase("containers")
        _carry_containers(data_root, ctd.client, src_store, p, opts, meter)
    p.seconds = time.monotonic() - started
    meter.phase("done")
    return p


def _import_images(ctd, src_store, p, configs, meter):
    images = ImageStore(src_store.data_root, src_store.driver.name)
    names = _names(images.tags())
    repo_tags = {i: names.get(i) or [_IMPORT_NAME % i[7:]] for i in p.images_to_copy}
    chunks = _save_chunks(src_store, images, p, configs, repo_tags, meter)
    try:
        c8d.import_archive(ctd.address, _metered(chunks, meter), p.snapshotter, ctd.opts.ctr)
    finally:
        chunks.close()  # releases the layer being read, if the import stopped half-way
    for image_id in p.images_to_copy:
        first = ctd.client.image(_full_name(repo_tags[image_id][0]))
        if first is None or _config_of(ctd.client, first.target) != image_id:
            raise ContainerdMigrationError("image %s: containerd did not list it after the import"
                                           % image_id)
        if image_id not in names:
            # untagged: named as Docker names an untagged image, not as we imported it
            ctd.client.create_image(c8d.Image(_DANGLING % first.target.digest, first.target))
            ctd.client.delete_image(first.name)
        p.image_targets[image_id] = first.target.digest
    p.layers_copied = list(p.layers_to_copy)


def _metered(chunks, meter):
    for chunk in chunks:
        meter.read(len(chunk))
        yield chunk


def _save_chunks(src_store, images, p, configs, repo_tags, meter):
    """A ``docker save`` archive (manifest.json, configs, one tar per
    DiffID) of the images to copy, as bytes chunks."""
    manifest, written = [], set()
    by_diff = {l.diff_id: l for l in src_store.layers() if l.chain_id in p.layers_to_copy}
    for image_id in p.images_to_copy:
        config_name = image_id[7:] + ".json"
        with open(os.path.join(images.content, image_id[7:]), "rb") as f:
            config_bytes = f.read()
        yield from _member(config_name, config_bytes)
        layer_names = []
        for chain, diff_id in zip(chain_ids(_diff_ids(configs[image_id])), _diff_ids(configs[image_id])):
            name = diff_id[7:] + "/layer.tar"
            layer_names.append(name)
            if diff_id in written:
                continue
            layer = by_diff.get(diff_id) or src_store.get(chain)
            meter.layer_started(layer)
            yield from _layer_member(src_store, layer, name)
            written.add(diff_id)
            meter.layer_done(layer)
        manifest.append({"Config": config_name, "RepoTags": repo_tags[image_id],
                         "Layers": layer_names})
    yield from _member("manifest.json", json.dumps(manifest).encode())
    yield b"\0" * 1024


def _member(name, data):
    yield _header(name, len(data))
    yield data
    yield b"\0" * (-len(data) % 512)


def _layer_member(src_store, layer, name):
    """One layer's exact tar as an archive member, from its tar-split (read
    once: its segments and file sizes give the member's size first) and the
    driver's files. containerd's unpack checks each DiffID."""
    ts = src_store.tar_split_path(layer.chain_id)
    if not (ts and os.path.exists(ts)):
        # without it the layer's exact bytes, and so its DiffID, are gone
        raise ContainerdMigrationError("layer %s has no tar-split.json.gz: its exact tar cannot be "
                                       "rebuilt (docker save would fail on it too)" % layer.chain_id)
    entries = list(tarsplit.read_entries(ts))
    size = sum(len(e.payload) if e.type == tarsplit.SEGMENT_TYPE else e.size for e in entries)
    yield _header(name, size)
    root, release = src_store.driver.diff_dir(layer.cache_id)
    try:
        sent = 0
        for chunk in tarsplit.chunks(entries, root, check_crc=False):
            sent += len(chunk)
            yield chunk
    finally:
        release()
    if sent != size:
        raise ContainerdMigrationError("layer %s: its tar-split describes %d bytes, its files gave %d"
                                       % (layer.chain_id, size, sent))
    yield b"\0" * (-size % 512)


def _header(name, size):
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 0
    return info.tobuf(tarfile.PAX_FORMAT)


def _carry_containers(data_root, client, src_store, p, opts, meter):
    for mount in src_store.mounts():
        path, config = containers.read_config(data_root, mount.name)
        if mount.name in p.containers_to_copy:
            _carry_container(client, src_store, mount, opts, data_root)
            p.containers_copied.append(mount.name)
        if config is not None and _point_at_containerd(client, path, config, p, opts):
            p.metadata_changed = True
        meter.container_done(mount.name, 0)


def _carry_container(client, src_store, mount, opts, data_root):
    """The container's lease, ``<id>-init`` and ``<id>`` snapshots, filled
    from the source driver's diffs through a temporary mount."""
    snap, key = opts.snapshotter, mount.name
    for stale in (key, key + "-init", key + "-init-key"):   # an earlier run's, half-made
        if client.snapshot(snap, stale) is not None:
            client.remove_snapshot(snap, stale)
    try:
        client.create_lease(key)
    except c8d.ContainerdError as e:
        if e.code != c8d.ALREADY_EXISTS:
            raise
    src = src_store.driver
    below = src_store.get(mount.parent).cache_id if mount.parent else None
    parent = mount.parent or ""
    work = DataRoot(data_root).tmp
    if not os.path.isdir(work):
        work = None
    try:
        init = [(mount.init_id, key + "-init-key", key + "-init")] if mount.init_id else []
        layers = init + [(mount.mount_id, key, None)]
        for layer_id, snap_key, commit_as in layers:
            mounts = client.prepare(snap, snap_key, parent, lease=key)
            stream = src.diff(layer_id, below)
            try:
                with c8d.TempMount(mounts, work) as root:
                    apply_layer(root, stream)
            finally:
                stream.close()
            if commit_as:
                client.commit(snap, commit_as, snap_key, lease=key)
                parent = commit_as
            below = layer_id
    except BaseException:
        try:
            client.delete_lease(key)    # takes the snapshots made so far with it
        except c8d.ContainerdError:
            pass
        raise


def _point_at_containerd(client, path, config, p, opts):
    """config.v2.json as Docker's containerd store writes it: Driver is the
    snapshotter, Image the manifest digest, ImageManifest its descriptor."""
    image_id = config.get("Image")
    target = _image_target(client, config, image_id, p)
    if target is None:
        raise ContainerdMigrationError("container %s: its image %s is not in the containerd store"
                                       % (config.get("ID"), image_id))
    want = dict(config, Driver=opts.snapshotter, Image=target.digest,
                ImageManifest=target.as_json())
    if want == config:
        return False
    containers.write_config(path, want)
    return True


def _image_target(client, config, image_id, p):
    if image_id in p.image_targets:
        wanted = p.image_targets[image_id]
    else:
        wanted = image_id   # already pointed at the containerd store
    name = (config.get("Config") or {}).get("Image") or ""
    candidates = [client.image(_full_name(name))] if name and not name.startswith("sha256:") else []
    candidates += client.images()
    for image in candidates:
        if image is not None and image.target.digest == wanted:
            return image.target
    return None


def restore_containers(data_root, graphdriver, target_options=None):
    """The rollback: every container carried into the containerd store whose
    graphdriver layers are still there gets its graphdriver config.v2.json
    back (Driver, Image as the config digest, no ImageManifest), so the
    engine finds it again with the feature off. Returns the ids restored."""
    data_root = os.path.abspath(data_root)
    engine.ensure_stopped(data_root)
    opts = Options(target_options)
    store = _source(data_root, graphdriver, None)
    restored = []
    with _Containerd(data_root, opts) as ctd:
        for mount in store.mounts():
            path, config = containers.read_config(data_root, mount.name)
            if config is None or config.get("Driver") == graphdriver:
                continue
            manifest = config.get("ImageManifest") or {}
            descriptor = c8d.Descriptor(manifest.get("mediaType"), manifest.get("digest") or config.get("Image"),
                                        manifest.get("size", 0))
            image_id = _config_of(ctd.client, descriptor)
            if image_id is None:
                raise ContainerdMigrationError("container %s: its image manifest %s is not in "
                                               "containerd" % (mount.name, config.get("Image")))
            want = dict(config, Driver=graphdriver, Image=image_id)
            want.pop("ImageManifest", None)
            containers.write_config(path, want)
            restored.append(mount.name)
    return restored


def containers_to_restore(data_root, graphdriver):
    """Ids of the containers ``restore_containers`` would give back to
    ``graphdriver``: carried ones (config no longer on it) whose layers it
    still has. Reads nothing of containerd."""
    data_root = os.path.abspath(data_root)
    store = _source(data_root, graphdriver, None)
    out = []
    for mount in store.mounts():
        config = containers.read_config(data_root, mount.name)[1]
        if config is not None and config.get("Driver") != graphdriver:
            out.append(mount.name)
    return out
