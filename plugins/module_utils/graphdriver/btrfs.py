"""The btrfs driver: every layer a subvolume, children are snapshots.

Docker's layout (daemon/graphdriver/btrfs/btrfs.go): layer ``id`` is the
subvolume ``<home>/subvolumes/<id>``; a base layer is an empty subvolume,
a child a (writable) snapshot of its parent, so creating one is O(1) however
big the parent. A ``size`` becomes a qgroup limit on the layer's subvolume,
remembered in ``<home>/quotas/<id>`` (bytes, as text) and re-applied by
``get``. ``get`` returns the subvolume directory; nothing is mounted.

Every subvolume and quota operation is a kernel ioctl (btrfs_ioctl.py), as
Docker does from cgo; the ``btrfs`` tool is not needed.
"""

import contextlib
import errno
import os
import re

from . import btrfs_ioctl as ioc
from .backingfs import NAME_TO_MAGIC, fs_magic, fs_name, nearest_existing
from .command import run
from .driver import check_id, register
from .errors import (CommandError, GraphDriverError, IncompatibleFS, LayerExists,
                     LayerNotFound, QuotaError)
from .fileutil import atomic_write, entry_names, makedirs, mkdir, read_text, remove_tree
from .naive import NaiveDiffDriver

NAME = "btrfs"
BTRFS_MAGIC = NAME_TO_MAGIC["btrfs"]

_RAM_SIZE = re.compile(r"^(\d+(?:\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$")


def ram_in_bytes(text):
    """Docker's units.RAMInBytes: '50M', '1.5g', '10GiB' in powers of 1024."""
    m = _RAM_SIZE.match(str(text).strip())
    if not m:
        raise ValueError("invalid size: %r" % (text,))
    power = " kmgtp".index((m.group(2) or " ").lower())
    return int(float(m.group(1)) * (1024 ** power))


def _human(n):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return ("%d%s" if unit == "B" else "%.4g%s") % (n, unit)
        n /= 1024.0


@register
class BtrfsDriver(NaiveDiffDriver):
    name = NAME

    def __init__(self, home, options=None, read_only=False):
        super().__init__(home, options, read_only)
        # Docker tests the home if it exists (it may be a mount of its own),
        # else where it will be made.
        testdir = nearest_existing(self.home)
        if fs_magic(testdir) != BTRFS_MAGIC:
            raise IncompatibleFS(NAME, "%s is on %s, not btrfs; the btrfs driver "
                                 "needs its home on a btrfs filesystem"
                                 % (testdir, fs_name(testdir)))
        self.min_space = 0
        user_disk_quota = False
        for key, value in self.options.items():
            if key.lower() == "btrfs.min_space":
                try:
                    self.min_space = ram_in_bytes(value)
                except ValueError:
                    raise GraphDriverError("btrfs: invalid btrfs.min_space %r" % (value,))
                user_disk_quota = True
            else:
                raise GraphDriverError("btrfs: unknown option %s" % key)
        self._quota_enabled = None
        if read_only:
            return
        try:
            makedirs(self.home, 0o710)
        except OSError as e:
            raise GraphDriverError("btrfs: cannot create %s: %s" % (self.home, e.strerror))
        # Docker bind-mounts the home onto itself here, to make mount
        # propagation into containers work; no container runs from this
        # library, and a mount left by every (short-lived) Ansible task would
        # leak, so the home is left as it is.
        if user_disk_quota:
            self._enable_quota()

    # --- paths ---------------------------------------------------------------

    @property
    def subvolumes_dir(self):
        return os.path.join(self.home, "subvolumes")

    @property
    def quotas_dir(self):
        return os.path.join(self.home, "quotas")

    def subvolume_path(self, layer_id):
        return os.path.join(self.subvolumes_dir, layer_id)

    def quota_path(self, layer_id):
        return os.path.join(self.quotas_dir, layer_id)

    # --- quota ---------------------------------------------------------------

    def quota_enabled(self):
        if not self._quota_enabled:
            # Someone (another process, `btrfs quota enable`) may have turned
            # it on since: ask the filesystem, as Docker's updateQuotaStatus.
            self._quota_enabled = ioc.quota_enabled(self.home)
        return self._quota_enabled

    def _enable_quota(self):
        if self.quota_enabled():
            return
        try:
            ioc.quota_enable(self.home)
        except OSError as e:
            raise QuotaError("btrfs: cannot enable quota on %s: %s" % (self.home, e.strerror))
        self._quota_enabled = True

    def _parse_size(self, layer_id, opts):
        size = None
        for key, value in (opts or {}).items():
            if key.lower() != "size":
                raise GraphDriverError("btrfs: layer %s: unknown storage option %s"
                                       % (layer_id, key))
            try:
                size = ram_in_bytes(value)
            except ValueError:
                raise QuotaError("btrfs: layer %s: invalid size %r" % (layer_id, value))
        if size is None:
            return None
        if size == 0:
            raise QuotaError("btrfs: layer %s: invalid storage size: %s" % (layer_id, _human(0)))
        if self.min_space and size < self.min_space:
            raise QuotaError("btrfs: layer %s: storage size cannot be less than %s"
                             % (layer_id, _human(self.min_space)))
        return size

    def _limit(self, layer_id, size):
        self._enable_quota()
        path = self.subvolume_path(layer_id)
        try:
            ioc.qgroup_limit(path, size)
        except OSError as e:
            raise QuotaError("btrfs: layer %s: cannot limit qgroup of %s to %d bytes: %s"
                             % (layer_id, path, size, e.strerror))

    # --- ProtoDriver -----------------------------------------------------------

    def create(self, id, parent=None, opts=None):
        check_id(id)
        size = self._parse_size(id, opts)
        mkdir(self.subvolumes_dir, 0o710)
        target = self.subvolume_path(id)
        try:
            if not parent:
                ioc.subvol_create(self.subvolumes_dir, id)
                # The kernel applies the caller's umask to a new subvolume's root.
                os.chmod(target, 0o755)
            else:
                parent_dir = self.subvolume_path(parent)
                if not os.path.isdir(parent_dir):
                    raise LayerNotFound(parent, "parent of %s: %s is not a directory"
                                        % (id, parent_dir))
                ioc.snapshot(parent_dir, self.subvolumes_dir, id)
        except OSError as e:
            if e.errno == errno.EEXIST:
                raise LayerExists(id)
            raise GraphDriverError("btrfs: create layer %s at %s: %s"
                                   % (id, target, e.strerror))
        if size is None:
            return
        try:
            self._limit(id, size)
            mkdir(self.quotas_dir, 0o700)
            atomic_write(self.quota_path(id), str(size), 0o644)
        except BaseException:
            # All or nothing (Docker would leave the subvolume behind).
            with contextlib.suppress(GraphDriverError):
                self.remove(id)
            raise

    def create_read_write(self, id, parent=None, opts=None):
        self.create(id, parent, opts)

    def remove(self, id):
        check_id(id)
        target = self.subvolume_path(id)
        if not os.path.lexists(target):
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.quota_path(id))
        quota = self.quota_enabled()
        try:
            self._delete_subvolume(target, quota)
        except OSError as e:
            if quota or e.errno != errno.EPERM:
                raise GraphDriverError("btrfs: remove layer %s: cannot delete subvolume %s: %s"
                                       % (id, e.filename or target, e.strerror))
            # No right to delete a subvolume (a user namespace): Docker
            # falls back to rmdir, which kernels >= 4.18 allow on one.
            remove_tree(target)
        if quota:
            with contextlib.suppress(OSError):
                ioc.quota_rescan_wait(self.home)

    def _delete_subvolume(self, path, quota):
        """Delete ``path`` and, first, every subvolume nested in it."""
        try:
            children = ioc.child_subvolumes(path)
        except OSError as e:
            e.filename = e.filename or path
            raise
        for child in children:
            self._delete_subvolume(child, quota)
        if not ioc.is_subvolume(path):
            remove_tree(path)  # a plain directory, now free of subvolumes
            return
        qgroupid = None
        if quota:
            with contextlib.suppress(OSError):
                qgroupid = ioc.subvolume_id(path)
        if qgroupid:
            try:
                ioc.qgroup_destroy(self.home, qgroupid)
            except OSError:
                # Kernels since 6.x refuse (EBUSY) while the subvolume lives,
                # and drop the qgroup themselves once it is cleaned up.
                pass
        try:
            ioc.snap_destroy(os.path.dirname(path), os.path.basename(path))
        except OSError as e:
            e.filename = e.filename or path
            raise

    def get(self, id, mount_label=""):
        check_id(id)
        path = self.subvolume_path(id)
        if not os.path.isdir(path):
            if os.path.lexists(path):
                raise GraphDriverError("btrfs: layer %s: %s is not a directory" % (id, path))
            raise LayerNotFound(id, "no subvolume %s" % path)
        text = read_text(self.quota_path(id), "").strip()
        if text.isdigit() and int(text) >= self.min_space:
            # The limit may have been lost (quota disabled and re-enabled):
            # Docker sets it again on every Get.
            self._limit(id, int(text))
        return path

    def put(self, id):
        # Get mounts nothing.
        check_id(id)

    def exists(self, id):
        return os.path.isdir(self.subvolume_path(id))

    def layer_path(self, id):
        return self.subvolume_path(check_id(id))

    def layer_ids(self):
        return entry_names(self.subvolumes_dir)

    def status(self):
        progs = "-"
        with contextlib.suppress(CommandError):
            # 'btrfs-progs v6.2': Docker shows the btrfs-progs it was built
            # with; we need none, so say which one is installed, if any.
            progs = run(["btrfs", "--version"]).strip() or "-"
        return [
            ("Build Version", "strata ioctl interface (linux/btrfs.h), kernel %s"
             % os.uname().release),
            ("Library Version", progs),
            ("Subvolume Operations", "ioctl"),
            ("Quota", "enabled (qgroups, ioctl)" if self.quota_enabled() else "disabled"),
        ]

    def metadata(self, id):
        return {}

    def cleanup(self):
        # Nothing is mounted by this driver (see __init__).
        pass
