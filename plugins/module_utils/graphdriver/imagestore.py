"""Docker's image store, and offline import of ``docker save`` archives.

What ``docker load`` leaves in a data-root, written without an engine:

- the layers, through the layer store (``image/<driver>/layerdb``);
- ``image/<driver>/imagedb/content/sha256/<id>``: the image config bytes as
  they came (the image id is their sha256), mode 0600;
- ``image/<driver>/imagedb/metadata/sha256/<id>/parent`` when the archive
  says the image has a parent (``docker load`` does the same);
- ``image/<driver>/repositories.json``: ``{"Repositories": {familiar name:
  {familiar "name:tag": "sha256:<id>"}}}``, merged and written atomically.

Order makes a crash harmless: layers first (each appears whole), then the
config, then the tags, so a tag never points at a missing image and an
image never at a missing layer. Archives may be Docker's classic layout
(``manifest.json``, ``<id>/layer.tar``) or OCI (``index.json``,
``blobs/sha256``, possibly gzip-compressed layers); Docker 25+ writes both.
"""

import hashlib
import io
import json
import os
import tarfile
import zlib

from . import engine
from .dataroot import DataRoot
from .errors import ArchiveError, GraphDriverError
from .fileutil import atomic_write, makedirs
from .layerstore import LayerStore, chain_id, chain_ids

_OCI_INDEX_MEDIA = ("application/vnd.oci.image.index.v1+json",
                    "application/vnd.docker.distribution.manifest.list.v2+json")


class ImageStoreError(GraphDriverError):
    pass


# --- references, as github.com/docker/distribution/reference ---------------

def parse_reference(ref):
    """``ref`` -> (familiar name, tag). Docker's ParseNormalizedNamed + Familiar*."""
    name, tag = ref, None
    if "@" in name:
        raise ImageStoreError("digest references cannot be loaded as tags: %r" % ref)
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1:]
    if not tag:
        raise ImageStoreError("invalid tag %r: a tag is required" % ref)
    first, sep, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        domain, path = first, rest
    else:
        domain, path = "docker.io", name
    if domain in ("docker.io", "index.docker.io"):
        if path.startswith("library/") and "/" not in path[len("library/"):]:
            path = path[len("library/"):]
        familiar = path
    else:
        familiar = domain + "/" + path
    if familiar != familiar.lower() or not familiar:
        raise ImageStoreError("invalid reference format %r: repository name must be lowercase"
                              % ref)
    return familiar, tag


class ImageStore(object):
    """``image/<driver>/imagedb`` and ``repositories.json`` of a data-root."""

    def __init__(self, data_root, driver_name):
        root = DataRoot(data_root)
        self.data_root = root.path
        self.root = root.image_root(driver_name)
        self.content = os.path.join(root.imagedb(driver_name), "content", "sha256")
        self.metadata = os.path.join(root.imagedb(driver_name), "metadata", "sha256")
        self.repositories_path = os.path.join(self.root, "repositories.json")

    def images(self):
        """{image id "sha256:<hex>": config dict}."""
        out = {}
        if os.path.isdir(self.content):
            for name in sorted(os.listdir(self.content)):
                path = os.path.join(self.content, name)
                with open(path, "rb") as f:
                    data = f.read()
                if hashlib.sha256(data).hexdigest() == name:  # Docker checks too
                    out["sha256:" + name] = json.loads(data.decode("utf-8"))
        return out

    def repositories(self):
        try:
            with open(self.repositories_path) as f:
                data = json.load(f)
        except FileNotFoundError:
            return {}
        except ValueError as e:
            raise ImageStoreError("%s is not valid JSON: %s" % (self.repositories_path, e))
        return data.get("Repositories") or {}

    def tags(self):
        """{familiar "name:tag": image id}."""
        out = {}
        for repo in self.repositories().values():
            out.update(repo)
        return out

    def referenced_chains(self):
        """ChainIDs of the top layer of every image (their ancestors are implied)."""
        out = set()
        for config in self.images().values():
            diffs = (config.get("rootfs") or {}).get("diff_ids") or []
            if diffs:
                out.add(chain_ids(diffs)[-1])
        return out

    def add_image(self, config_bytes, parent=None):
        image_id = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
        makedirs(self.content, 0o700)
        makedirs(self.metadata, 0o700)
        path = os.path.join(self.content, image_id[7:])
        if not os.path.exists(path):
            atomic_write(path, config_bytes, mode=0o600)
        if parent:
            meta = os.path.join(self.metadata, image_id[7:])
            makedirs(meta, 0o700)
            atomic_write(os.path.join(meta, "parent"), parent, mode=0o600)
        return image_id

    def add_tags(self, tags):
        """Merge {reference: image id} into repositories.json (force, as docker load)."""
        if not tags:
            return
        repos = self.repositories()
        for ref, image_id in tags.items():
            name, tag = parse_reference(ref)
            repos.setdefault(name, {})["%s:%s" % (name, tag)] = image_id
        makedirs(self.root, 0o700)
        atomic_write(self.repositories_path,
                     json.dumps({"Repositories": repos}, separators=(",", ":")), mode=0o600)


# --- reading a docker save archive -------------------------------------------

class _Archive(object):
    def __init__(self, path):
        self.path = path
        try:
            self.tar = tarfile.open(path, "r:*")
        except (OSError, tarfile.TarError) as e:
            raise ArchiveError("cannot read image archive %s: %s" % (path, e))
        self.members = {}
        try:
            members = self.tar.getmembers()
        except (OSError, EOFError, zlib.error, tarfile.TarError) as e:
            self.tar.close()
            raise ArchiveError("cannot read image archive %s (truncated or corrupt?): %s" % (path, e))
        for m in members:
            self.members[os.path.normpath(m.name.lstrip("/"))] = m
        # tarfile takes a plain archive that stops inside its last member as
        # ending there: the member's data would read short much later.
        fileobj = self.tar.fileobj
        self._size = os.fstat(fileobj.fileno()).st_size if isinstance(fileobj, io.BufferedReader) else None

    def member(self, name):
        key = os.path.normpath(name.lstrip("/"))
        m = self.members.get(key)
        if m is None:
            raise ArchiveError("image archive %s has no %s" % (self.path, name), entry=name)
        # docker save uses symlinks for layers shared between images
        seen = 0
        while m.issym() or m.islnk():
            target = m.linkname if m.islnk() else os.path.normpath(
                os.path.join(os.path.dirname(key), m.linkname))
            key = os.path.normpath(target.lstrip("/"))
            m = self.members.get(key)
            seen += 1
            if m is None or seen > 16:
                raise ArchiveError("image archive %s: broken link %s" % (self.path, name),
                                   entry=name)
        if self._size is not None and m.isfile() and m.offset_data + m.size > self._size:
            raise ArchiveError("image archive %s is truncated: %s needs %d bytes, %d are there"
                               % (self.path, name, m.size, max(0, self._size - m.offset_data)),
                               entry=name)
        return m

    def check_file(self, name):
        """Refuse now, before anything is written, a member that would fail to read."""
        if not self.member(name).isfile():
            raise ArchiveError("image archive %s: %s is not a file" % (self.path, name),
                               entry=name)

    def read(self, name):
        f = self.tar.extractfile(self.member(name))
        if f is None:
            raise ArchiveError("image archive %s: %s is not a file" % (self.path, name),
                               entry=name)
        with f:
            return f.read()

    def open(self, name):
        f = self.tar.extractfile(self.member(name))
        if f is None:
            raise ArchiveError("image archive %s: %s is not a file" % (self.path, name),
                               entry=name)
        return f

    def has(self, name):
        return os.path.normpath(name.lstrip("/")) in self.members

    def close(self):
        self.tar.close()


def _blob(digest):
    algo, sep, hexpart = digest.partition(":")
    return "blobs/%s/%s" % (algo, hexpart)


def _manifest_from_oci(archive):
    """The classic manifest items for an OCI layout archive."""
    index = json.loads(archive.read("index.json").decode("utf-8"))
    items = []

    def walk(desc, name):
        blob = json.loads(archive.read(_blob(desc["digest"])).decode("utf-8"))
        media = desc.get("mediaType") or blob.get("mediaType")
        if media in _OCI_INDEX_MEDIA or "manifests" in blob:
            for sub in blob.get("manifests", []):
                plat = sub.get("platform") or {}
                if plat and (plat.get("os") != "linux" or plat.get("architecture") not in
                             (None, "amd64", _machine_arch())):
                    continue
                walk(sub, name)
            return
        items.append({
            "Config": _blob(blob["config"]["digest"]),
            "Layers": [_blob(l["digest"]) for l in blob.get("layers", [])],
            "RepoTags": [name] if name else [],
        })

    for desc in index.get("manifests", []):
        ann = desc.get("annotations") or {}
        name = ann.get("io.containerd.image.name")
        ref = ann.get("org.opencontainers.image.ref.name")
        if not name and ref and ("/" in ref or ":" in ref):
            name = ref
        if name:
            # RepoTags as Docker's own manifest.json has them: familiar names
            name = "%s:%s" % parse_reference(name)
        walk(desc, name)
    return items


def _machine_arch():
    m = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(m, m)


class _Decompressed(object):
    """A layer stream, gunzipped when it is gzip (Docker's DecompressStream).

    Read errors name the layer: a truncated archive or gzip stream, or a
    corrupt one, is an ArchiveError, not zlib's or tarfile's own exception.
    """

    # A file in the archive: the layer store may read it from a thread (one
    # at a time) while the driver applies what was read (see layerstore._Tee).
    read_ahead = True

    def __init__(self, raw, name, archive_path):
        self.name, self.archive_path = name, archive_path
        head = self._guard(raw.read, 6)
        raw.seek(0)
        self.compressed = head[:2] == b"\x1f\x8b"
        if self.compressed:
            self.stream = _Gunzip(raw)
        elif head[:4] == b"\x28\xb5\x2f\xfd":
            raise ArchiveError("zstd-compressed layers need zstd support, not in the"
                               " standard library", entry=name)
        elif head[:3] == b"BZh" or head[:6] == b"\xfd7zXZ\x00":
            raise ArchiveError("bzip2/xz-compressed layers are not supported", entry=name)
        else:
            self.stream = raw

    def read(self, n=-1):
        return self._guard(self.stream.read, n)

    def _guard(self, read, n):
        try:
            return read(n)
        except EOFError:
            raise ArchiveError("image archive %s: layer %s: the gzip stream is truncated"
                               % (self.archive_path, self.name), entry=self.name)
        except zlib.error as e:
            raise ArchiveError("image archive %s: layer %s: corrupt gzip stream: %s"
                               % (self.archive_path, self.name, e), entry=self.name)
        except tarfile.TarError as e:
            raise ArchiveError("image archive %s: layer %s: %s (the archive is truncated?)"
                               % (self.archive_path, self.name, e), entry=self.name)


class _Gunzip(object):
    """gzip members one after another (zero bytes between them skipped), as
    GzipFile reads them, but inflated by zlib with its own header, CRC-32
    and length checks: GzipFile's reader goes through Python every 8 KiB of
    input. A stream cut short raises EOFError, anything malformed zlib.error."""

    _INPUT = 256 * 1024

    def __init__(self, raw):
        self._raw = raw
        self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._input = b""       # read, not yet taken by the decompressor
        self._done = False

    def read(self, n=-1):
        if n is None or n < 0:
            parts = []
            while True:
                part = self.read(1024 * 1024)
                if not part:
                    return b"".join(parts)
                parts.append(part)
        while not self._done:
            inflate = self._inflate
            if inflate.eof:
                rest = inflate.unused_data.lstrip(b"\0")
                while not rest:
                    more = self._raw.read(self._INPUT)
                    if not more:
                        self._done = True
                        return b""
                    rest = more.lstrip(b"\0")
                self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
                self._input = rest
                continue
            data = self._input or self._raw.read(self._INPUT)
            if not data:
                raise EOFError("gzip stream ends inside a member")
            out = inflate.decompress(data, n)
            self._input = inflate.unconsumed_tail
            if out:
                return out
        return b""


class ImportedImage(object):
    def __init__(self, image_id, tags, layers):
        self.id, self.tags, self.layers = image_id, tags, layers

    def __repr__(self):
        return "<ImportedImage %s %s>" % (self.id, self.tags)


def import_archive(data_root, driver, archive_path, exec_root=None, pidfile=None,
                   sockets=None, layer_store=None, engine_version=None):
    """Import a ``docker save`` archive into a stopped engine's data-root.

    ``driver`` is our driver over ``<data_root>/<driver name>``. Refuses with
    engine.EngineRunning while an engine uses the data-root. Returns the
    ImportedImage list. Idempotent: layers and images already present are
    reused; tags are (re)pointed as ``docker load`` does. ``engine_version``:
    write what ``docker load`` of that engine writes (the newest when not
    given; see LayerStore).
    """
    engine.ensure_stopped(data_root, exec_root, pidfile, sockets)
    store = layer_store or LayerStore(data_root, driver, engine_version=engine_version)
    images = ImageStore(data_root, driver.name)
    archive = _Archive(archive_path)
    try:
        if archive.has("manifest.json"):
            manifest = json.loads(archive.read("manifest.json").decode("utf-8"))
        elif archive.has("index.json"):
            manifest = _manifest_from_oci(archive)
        else:
            raise ArchiveError("%s is not a docker save archive (no manifest.json nor"
                               " index.json)" % archive_path)
        # Everything the manifest names is read or checked before the first
        # layer is registered: a broken archive leaves nothing behind.
        plan = []
        for item in manifest:
            config_bytes = archive.read(item["Config"])
            try:
                config = json.loads(config_bytes.decode("utf-8"))
            except ValueError as e:
                raise ArchiveError("image config %s: %s" % (item["Config"], e),
                                   entry=item["Config"])
            diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
            layers = item.get("Layers") or []
            if len(layers) != len(diff_ids):
                raise ArchiveError("invalid manifest, layers length mismatch: expected %d,"
                                   " got %d" % (len(layers), len(diff_ids)),
                                   entry=item["Config"])
            for name in layers:
                archive.check_file(name)
            plan.append((item, config_bytes, layers, diff_ids))
        imported = []
        for item, config_bytes, layers, diff_ids in plan:
            parent_chain = None
            registered = []
            for name, diff_id in zip(layers, diff_ids):
                chain = chain_id(parent_chain, diff_id)
                if store.exists(chain):
                    layer = store.get(chain)
                else:
                    raw = archive.open(name)
                    try:
                        layer = store.register(_Decompressed(raw, name, archive_path), parent_chain,
                                               diff_id=diff_id)
                    finally:
                        raw.close()
                registered.append(layer)
                parent_chain = layer.chain_id
            image_id = images.add_image(config_bytes, parent=item.get("Parent"))
            tags = item.get("RepoTags") or []
            images.add_tags({t: image_id for t in tags})
            imported.append(ImportedImage(image_id, tags, registered))
        return imported
    finally:
        archive.close()
