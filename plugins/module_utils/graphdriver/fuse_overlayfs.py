"""The fuse-overlayfs driver (moby daemon/graphdriver/fuse-overlayfs).

overlay2's layout, byte for byte (see overlay2.py), with three differences
that are Docker's:

* the union is mounted by the ``fuse-overlayfs`` program with the same
  ``lowerdir=…,upperdir=…,workdir=…`` data (no index=off, no page-size
  fallback: it is an argv, not a page of mount data), and unmounted by
  ``fusermount3 -u`` (then ``fusermount -u``, then umount2);
* ``work/`` is 0710, and no ``size`` storage option is accepted;
* diffs are always naive, except that applying onto the direct parent
  untars into ``diff/`` with aufs-style ``.wh.`` whiteout files, which
  fuse-overlayfs understands (as containers/storage does); changes against
  the direct parent are read from ``diff/`` (see changes.upper_changes).
"""

import contextlib
import os

from . import unpack, whiteouts
from .backingfs import fs_name, nearest_existing
from .changes import FUSE_OVERLAYFS, NeedsMount, upper_changes
from .command import require_tool, run
from .driver import register
from .errors import CommandError, GraphDriverError, NotSupported, QuotaError
from .fileutil import mkdir
from .mount import MNT_DETACH, mounts, unmount
from .naive import NaiveDiffDriver
from .overlay2 import MERGED_DIR, Overlay2Driver, format_mount_label
from .overlayutils import directory_size, kernel_version
from .refcount import RefCounter

BINARY = "fuse-overlayfs"
UNMOUNT_TOOLS = ("fusermount3", "fusermount")


@register
class FuseOverlayfsDriver(Overlay2Driver):
    name = "fuse-overlayfs"
    work_mode = 0o710

    def _check_and_prepare(self):
        # Docker's checks: the program on PATH and kernel 4.18 (FUSE
        # features it needs); no test mount, no d_type check, no quota.
        if self.options:
            raise GraphDriverError("%s: unknown option %s"
                                   % (self.name, ", ".join(sorted(self.options))))
        self.binary = require_tool(self.name, BINARY)
        if kernel_version() < (4, 18, 0):
            raise NotSupported(self.name, "kernel %s is older than 4.18" % os.uname().release)
        self.backing_fs = fs_name(nearest_existing(self.home))
        self.supports_d_type = None     # not probed by Docker for this driver
        self._default_size = 0
        self._quota = None
        self._index_off = ""
        self._userxattr = ""
        if not self.read_only:
            self._make_home()
        self._refs = RefCounter(self.name, self.home)

    def create(self, id, parent=None, opts=None):
        self._refuse_storage_opts(id, opts)
        self._create(id, parent, None)

    def create_read_write(self, id, parent=None, opts=None):
        self._refuse_storage_opts(id, opts)
        self._create(id, parent, None)

    @staticmethod
    def _refuse_storage_opts(id, opts):
        # Docker: errors.New("--storage-opt is not supported"); a size is
        # a QuotaError here so that callers can tell "no quota" apart.
        if opts:
            cls = QuotaError if "size" in opts else GraphDriverError
            raise cls("layer %s: --storage-opt is not supported" % id)

    def status(self):
        return []

    # --- mounting ------------------------------------------------------

    def _is_mounted(self, merged):
        real = os.path.realpath(merged)
        return any(m.mountpoint == real and m.fstype.startswith("fuse")
                   for m in mounts())

    def _mount_layer(self, id, path, lowers, mount_label):
        merged = os.path.join(path, MERGED_DIR)
        data = format_mount_label(self._mount_options(id, path, lowers, False), mount_label)
        mkdir(merged, 0o700)
        try:
            run([self.binary, "-o", data, merged])
        except CommandError as e:
            with contextlib.suppress(OSError):
                os.rmdir(merged)
            raise GraphDriverError("layer %s: using mount program %s: %s"
                                   % (id, BINARY, e.stderr.strip() or "<stderr empty>"))

    def _unmount(self, mountpoint):
        # containers/storage's fusermountU, as Docker copies it
        for tool in UNMOUNT_TOOLS:
            try:
                run([tool, "-u", mountpoint])
                return
            except CommandError:
                continue
        # flush what the daemon holds before the kernel drops it
        os.sync()
        unmount(mountpoint, MNT_DETACH)

    # --- diffs: naive, but apply onto the direct parent natively -------

    def _use_naive_diff(self):
        return True

    def naive_diff_reason(self):
        return "fuse-overlayfs always uses the naive diff"

    def changes(self, id, parent=None):
        # Docker walks both mounts; the upper dir tells the same in
        # O(changed), read by fuse-overlayfs's own marks (it has no
        # redirect_dir: a renamed directory is copied whole), except for a
        # copied-up hard link (NeedsMount).
        if self.is_parent(id, parent):
            with contextlib.suppress(NeedsMount):
                return upper_changes(self._diff_path(id), self._lower_dirs(id), FUSE_OVERLAYFS)
        return NaiveDiffDriver.changes(self, id, parent)

    def diff(self, id, parent=None):
        return NaiveDiffDriver.diff(self, id, parent)

    def diff_size(self, id, parent=None):
        return NaiveDiffDriver.diff_size(self, id, parent)

    def apply_diff(self, id, parent, stream):
        if not self.is_parent(id, parent):
            return NaiveDiffDriver.apply_diff(self, id, parent, stream)
        diff = self._diff_path(id)
        unpack.apply_layer(diff, stream, whiteout_format=whiteouts.LITERAL, layer_id=id,
                           engine_version=self.engine_version)
        return directory_size(diff)
