"""overlay, Docker's first overlayfs driver, read without mounting anything,
so that a migration can carry a store people are stuck with.

    <home>/                 0710
      <id>/root/            an image layer: its whole tree (the parent's
                            root/ copied as hard links, then its own tar
                            applied; a base layer is only its tar)
      <id>/lower-id         a container layer (-init or rw): the image layer
                            whose root/ is its lower directory
      <id>/upper/           its changes, overlay style: a deletion is a 0/0
                            character device, an opaque directory has
                            trusted.overlay.opaque=y (an rw layer starts as a
                            copy of its -init layer's upper/)
      <id>/work/, merged/   the kernel's, and where Docker mounted it

moby daemon/graphdriver/overlay (Engine 1.12 to 23; deprecated, removed in
Engine 24). Docker's overlay has no diff of its own: NaiveDiffDriver compares
the mounted trees, and a layer's tar is rebuilt from ``Get``, which for an
image layer is ``root/`` itself, unmounted. A container layer's tree is the
union of its upper/ over its lower root/; mounting that with upper and work
directories writes into the store, so it is read from the directories
instead (changes.Union, the kernel's rules), and ``get`` of one refuses.

Layers are never created or written here: overlay2 is the driver to use.
``remove`` deletes a layer's directory as Docker's does, for a migration's
``remove_source``. The driver is not offered by ``registered()``, but
``new("overlay", home, read_only=True)`` opens a store.
"""

import os

from . import archive
from .backingfs import fs_name, nearest_existing
from .changes import Union, changes_dirs, changes_size, union_changes
from .driver import Driver, check_id, register
from .errors import GraphDriverError, LayerNotFound
from .fileutil import entry_names, read_text, remove_tree
from .mount import mounts_under

ROOT, UPPER, LOWER_ID, WORK, MERGED = "root", "upper", "lower-id", "work", "merged"


@register
class OverlayDriver(Driver):
    name = "overlay"

    def __init__(self, home, options=None, read_only=False):
        super().__init__(home, options, read_only)
        if self.options:
            raise GraphDriverError("overlay: unknown option %s" % ", ".join(sorted(self.options)))

    # --- layers as directories ----------------------------------------------

    def _dir(self, layer_id):
        return os.path.join(self.home, check_id(layer_id))

    def _root(self, layer_id):
        """An image layer's root/, or None for a container layer."""
        path = os.path.join(self._dir(layer_id), ROOT)
        return path if os.path.isdir(path) else None

    def _layers(self, layer_id):
        """The directories of the layer's tree, top first: [root/] for an
        image layer, [upper/, <lower-id>/root/] for a container layer."""
        root = self._root(layer_id)
        if root is not None:
            return [root]
        d = self._dir(layer_id)
        if not os.path.isdir(d):
            raise LayerNotFound(layer_id, d)
        lower = read_text(os.path.join(d, LOWER_ID), "").strip()
        upper = os.path.join(d, UPPER)
        lower_root = self._root(lower) if lower else None
        if lower_root is None or not os.path.isdir(upper):
            raise GraphDriverError("overlay: layer %s at %s has neither root/ nor upper/ with a lower-id naming "
                                   "an image layer: not a layer Docker's overlay wrote" % (layer_id, d))
        return [upper, lower_root]

    # --- ProtoDriver ---------------------------------------------------------

    def _refuse(self, what, layer_id):
        raise GraphDriverError("overlay: %s of layer %s refused: Docker removed the overlay driver in "
                               "Engine 24 and this library only reads its stores, to migrate them (use overlay2)"
                               % (what, layer_id))

    def create(self, id, parent=None, opts=None):
        self._refuse("create", id)

    def create_read_write(self, id, parent=None, opts=None):
        self._refuse("create", id)

    def apply_diff(self, id, parent, stream):
        self._refuse("apply_diff", id)

    def remove(self, id):
        # Docker: EnsureRemoveAll of the layer's directory. Something mounted
        # in it (merged/) means an engine still uses it: nothing is removed
        # through a mount.
        busy = mounts_under(self._dir(id))
        if busy:
            raise GraphDriverError("overlay: layer %s is mounted at %s: stop the engine first" % (id, busy[0]))
        remove_tree(self._dir(id))

    def get(self, id, mount_label=""):
        layers = self._layers(id)
        if len(layers) > 1:
            raise GraphDriverError("overlay: layer %s is a container layer: its tree is an overlay mount of "
                                   "%s on %s, which this library reads from the directories instead of "
                                   "mounting (diff, changes, diff_size)" % (id, layers[0], layers[1]))
        return layers[0]

    def put(self, id):
        pass

    def exists(self, id):
        return os.path.exists(self._dir(id))

    def layer_ids(self):
        return {n for n in entry_names(self.home) if os.path.isdir(os.path.join(self.home, n))}

    def status(self):
        return [("Root Dir", self.home), ("Backing Filesystem", fs_name(nearest_existing(self.home))),
                ("Layers", str(len(self.layer_ids()))), ("Read", "from the directories, never mounted")]

    def metadata(self, id):
        # Docker's GetMetadata
        layers = self._layers(id)
        if len(layers) == 1:
            return {"RootDir": layers[0]}
        d = self._dir(id)
        return {"LowerDir": layers[1], "UpperDir": layers[0], "WorkDir": os.path.join(d, WORK),
                "MergedDir": os.path.join(d, MERGED)}

    def diff_dir(self, id):
        # The files of the layer's own tar: an image layer's are in root/
        # (with its parents' files, which its tar-split does not name), a
        # container layer's in upper/.
        return self._layers(id)[0], lambda: None

    # --- DiffDriver: Docker's naive diff, of the trees the mounts would show --

    def _changes(self, id, parent):
        new = self._layers(id)
        old = self._layers(parent) if parent else []
        if len(new) == 1 and len(old) <= 1:
            # image layers: plain trees, as Docker walks them
            return changes_dirs(new[0], old[0] if old else None), new[0]
        union = Union(new)
        return union_changes(union, Union(old) if old else None), union.path

    def changes(self, id, parent=None):
        return self._changes(id, parent)[0]

    def diff(self, id, parent=None):
        layers = self._layers(id)
        if not parent and len(layers) == 1:
            return archive.tar_tree(layers[0], engine_version=self.engine_version)
        changes, root = self._changes(id, parent)
        return archive.export_changes(root, changes, engine_version=self.engine_version)

    def diff_size(self, id, parent=None):
        changes, root = self._changes(id, parent)
        return changes_size(root, changes)
