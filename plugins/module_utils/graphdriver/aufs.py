"""aufs as Docker Engine up to 23 kept it, read and written without the aufs
kernel module, so that a migration can carry a store people are stuck with.

    <home>/                 0700
      diff/<id>/            the layer's own files, as its tar had them: a
                            deleted path is a ``.wh.<name>`` file, an opaque
                            directory holds ``.wh..wh..opq``
      layers/<id>           the ancestors' ids, nearest first, one a line
      mnt/<id>/             where Docker mounted the union

Docker removed aufs in Engine 24 and kernels stopped shipping it. Nothing
here needs it: a layer's files and its diff against its direct parent are
``diff/<id>`` itself (moby aufs Diff and ApplyDiff). Only the union of a
layer with parents needs the kernel: ``get`` of such a layer refuses.
The driver is not offered by ``registered()`` (no host here can run it), but
``new("aufs", home)`` opens a store.
"""

import os

from . import archive, unpack, whiteouts
from .changes import aufs_changes
from .driver import check_id, register
from .errors import GraphDriverError, LayerExists, LayerNotFound
from .fileutil import atomic_write, entry_names, makedirs, mkdir, read_text, remove_tree
from .naive import NaiveDiffDriver
from .overlayutils import directory_size

PATHS = ("diff", "layers", "mnt")
# moby aufs Diff: the rw branch without aufs's own metadata, but opaque markers.
EXCLUDE = [whiteouts.WHITEOUT_META_PREFIX + "*", "!" + whiteouts.WHITEOUT_OPAQUE]


@register
class AufsDriver(NaiveDiffDriver):
    name = "aufs"

    def __init__(self, home, options=None, read_only=False):
        super().__init__(home, options, read_only)
        if self.options:
            raise GraphDriverError("aufs: unknown option %s" % ", ".join(sorted(self.options)))
        if not read_only:
            makedirs(os.path.dirname(self.home), 0o755)
            mkdir(self.home, 0o700)
            for p in PATHS:
                mkdir(os.path.join(self.home, p), 0o700)

    # --- paths ---------------------------------------------------------------

    def _path(self, kind, layer_id):
        return os.path.join(self.home, kind, check_id(layer_id))

    def diff_path(self, layer_id):
        path = self._path("diff", layer_id)
        if not os.path.isdir(path):
            raise LayerNotFound(layer_id, path)
        return path

    def parent_ids(self, layer_id):
        """Ancestors, nearest first (``layers/<id>``)."""
        text = read_text(self._path("layers", layer_id))
        if text is None:
            raise LayerNotFound(layer_id, self._path("layers", layer_id))
        return [line for line in text.splitlines() if line]

    def is_parent(self, layer_id, parent):
        ids = self.parent_ids(layer_id)
        return (ids[0] == parent) if parent else not ids

    # --- ProtoDriver ---------------------------------------------------------

    def create(self, id, parent=None, opts=None):
        if opts:
            raise GraphDriverError("layer %s: --storage-opt is not supported for aufs" % id)
        if self.exists(id):
            raise LayerExists(id)
        ancestors = ([parent] + self.parent_ids(parent)) if parent else []
        for kind in ("mnt", "diff"):
            mkdir(self._path(kind, id), 0o755)
        atomic_write(self._path("layers", id), "".join(a + "\n" for a in ancestors), mode=0o644)

    def create_read_write(self, id, parent=None, opts=None):
        self.create(id, parent, opts)

    def remove(self, id):
        # layers/ last: it is what exists() asks
        for kind in ("mnt", "diff"):
            remove_tree(self._path(kind, id))
        try:
            os.unlink(self._path("layers", id))
        except FileNotFoundError:
            pass

    def get(self, id, mount_label=""):
        if self.parent_ids(id):
            raise GraphDriverError("aufs: layer %s has parents: their union needs the aufs kernel module, "
                                   "which this host has not" % id)
        return self.diff_path(id)

    def put(self, id):
        pass

    def exists(self, id):
        return os.path.exists(self._path("layers", id))

    def layer_path(self, id):
        return os.path.join(self.home, "diff", check_id(id))

    def layer_ids(self):
        return entry_names(os.path.join(self.home, "layers"))

    def status(self):
        return [("Root Dir", self.home), ("Backing Filesystem", "read without the aufs kernel module"),
                ("Dirs", str(len(self.layer_ids())))]

    def diff_dir(self, id):
        return self.diff_path(id), lambda: None

    # --- DiffDriver ----------------------------------------------------------

    def diff(self, id, parent=None):
        if not self.is_parent(id, parent):
            return super().diff(id, parent)
        return archive.tar_tree(self.diff_path(id), whiteout_format=whiteouts.AUFS, exclude=EXCLUDE,
                                engine_version=self.engine_version)

    def changes(self, id, parent=None):
        if not self.is_parent(id, parent):
            return super().changes(id, parent)
        return aufs_changes([self.diff_path(p) for p in self.parent_ids(id)], self.diff_path(id))

    def apply_diff(self, id, parent, stream):
        if not self.is_parent(id, parent):
            return super().apply_diff(id, parent, stream)
        diff = self.diff_path(id)
        unpack.apply_layer(diff, stream, whiteout_format=whiteouts.LITERAL, layer_id=id,
                           engine_version=self.engine_version)
        return directory_size(diff)

    def diff_size(self, id, parent=None):
        if not self.is_parent(id, parent):
            return super().diff_size(id, parent)
        return directory_size(self.diff_path(id))
