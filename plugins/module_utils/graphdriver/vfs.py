"""The vfs driver (moby daemon/graphdriver/vfs): plain directories, full copies.

Layout, as Docker writes it::

    <home>/                 0710
    <home>/dir/             0710
    <home>/dir/<id>/        0755, the layer root; a child is a full copy
    <home>/backingFsBlockDev   only where xfs project quota is probed

No copy-on-write and no mounts: Get returns the directory, Put does nothing.
A child is Docker's DirCopy of its parent (copy.py): of the xattrs only
``security.capability`` comes along, and a parent holding a socket is
refused, as dockerd refuses it.
Diffs are the naive ones (NaiveDiffDriver). A ``size`` quota needs xfs
project quota (mount option ``pquota``), as in Docker.
"""

import os

from .copy import dir_copy
from .backingfs import nearest_existing
from .driver import check_id, register
from .errors import GraphDriverError, LayerExists, LayerNotFound
from .fileutil import entry_names, makedirs, mkdir, remove_tree
from .naive import NaiveDiffDriver
from . import projectquota

DIR = "dir"


@register
class VFSDriver(NaiveDiffDriver):
    name = "vfs"

    def __init__(self, home, options=None, read_only=False):
        super().__init__(home, options, read_only)
        self._default_size = 0
        for key, value in self.options.items():
            if key == "size":
                self._default_size = projectquota.parse_size(value)
            else:
                raise GraphDriverError("unknown option %s for vfs" % key)
        if read_only:
            self._quota = None
            if self._default_size and not projectquota.supported(nearest_existing(self.home)):
                raise projectquota.QuotaNotSupported("vfs option size on %s" % self.home)
            return
        parent = os.path.dirname(self.home)
        if not os.path.isdir(parent):
            makedirs(parent, 0o755)
        mkdir(self.home, 0o710)
        mkdir(os.path.join(self.home, DIR), 0o710)
        # Docker probes project quota on any backing fs (setupDriverQuota).
        self._quota = projectquota.new_control(self.home)
        if self._default_size and self._quota is None:
            raise projectquota.QuotaNotSupported("vfs option size on %s" % self.home)

    def dir(self, layer_id):
        return os.path.join(self.home, DIR, os.path.basename(check_id(layer_id)))

    def create(self, id, parent=None, opts=None):
        if opts:
            raise GraphDriverError(
                "layer %s: --storage-opt is not supported for vfs on read-only layers" % id)
        self._create(id, parent, 0)

    def create_read_write(self, id, parent=None, opts=None):
        size = self._default_size
        for key, value in (opts or {}).items():
            if key != "size":
                raise GraphDriverError("layer %s: Storage opt %s not supported" % (id, key))
            if self._quota is None:
                raise projectquota.QuotaNotSupported("layer %s on %s" % (id, self.home))
            size = projectquota.parse_size(value)
        self._create(id, parent, size)

    def _create(self, id, parent, size):
        path = self.dir(id)
        if os.path.lexists(path):
            raise LayerExists(id)
        parent_dir = self.get(parent) if parent else None
        mkdir(path, 0o755)
        try:
            if size:
                self._quota.set_quota(path, size)
            if parent_dir:
                dir_copy(parent_dir, path)
        except BaseException:
            # all or nothing: no half-copied layer is left behind
            remove_tree(path)
            raise

    def remove(self, id):
        remove_tree(self.dir(id))

    def get(self, id, mount_label=""):
        path = self.dir(id)
        if not os.path.isdir(path):
            raise LayerNotFound(id, path)
        return path

    def put(self, id):
        # no runtime resources: nothing to release
        return None

    def exists(self, id):
        return os.path.exists(self.dir(id))

    def layer_path(self, id):
        return self.dir(id)

    def layer_ids(self):
        return entry_names(os.path.join(self.home, DIR))

    def status(self):
        return []

    def metadata(self, id):
        return {"SourceDir": self.get(id)}

    def cleanup(self):
        return None
