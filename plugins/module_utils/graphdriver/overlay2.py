"""The overlay2 driver (moby daemon/graphdriver/overlay2), Docker's layout.

::

    <home>/                     0710
    <home>/l/                   0700; <LID> -> ../<id>/diff for every layer
    <home>/<id>/                0710
    <home>/<id>/diff/           0755, the layer's own files (the upper dir)
    <home>/<id>/link            the layer's LID
    <home>/<id>/lower           l/<LID>:l/<LID>... nearest parent first
                                (absent for a base layer)
    <home>/<id>/work/           0700, overlay's workdir (layers with a parent)
    <home>/<id>/merged/         0700, the mount point, while mounted
    <home>/<id>/committed       empty, 0600: a child exists, mount read-only
    <home>/backingFsBlockDev    on xfs, for project quota

Get mounts overlay with mount(2); its reference count is persisted (see
refcount.py), so separate processes share a mount. The fuse-overlayfs
driver reuses all of this and only mounts differently.
"""

import contextlib
import os
import threading

from . import archive, unpack, whiteouts
from . import projectquota
from .backingfs import fs_name, nearest_existing
from .changes import NeedsMount, upper_changes
from .driver import check_id, register
from .errors import GraphDriverError, LayerExists, LayerNotFound, NotSupported, QuotaError
from .fileutil import atomic_write, entry_names, makedirs, mkdir, read_text, remove_tree
from .mount import MNT_DETACH, MountError, is_mountpoint, mount, mounts_under, unmount
from .naive import NaiveDiffDriver
from .overlayutils import (d_type_error, directory_size, generate_id, kernel_version,
                           native_diff_problem, overlay_in_kernel, run_in_directory,
                           running_in_userns, supports_d_type, supports_overlay)
from .refcount import RefCounter

LINK_DIR = "l"
DIFF_DIR = "diff"
WORK_DIR = "work"
MERGED_DIR = "merged"
LOWER_FILE = "lower"
LINK_FILE = "link"
COMMITTED_FILE = "committed"

# A layer's lowers are written, and mounted, as "l/<LID>" paths relative to
# the home so that 128 of them fit in one page of mount data:
# (ID_LENGTH + len("l/") + len(":")) * MAX_DEPTH = 29 * 128 = 3712 bytes,
# which leaves 4096 - 3712 = 384 for upperdir, workdir and options
# (Docker: ((idLength + len(linkDir) + 1) * maxDepth) <= (pageSize - 512)).
MAX_DEPTH = 128
ID_LENGTH = 26

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

# Docker probes once per daemon; we cache per home for this process.
_native_diff_cache = {}
_native_diff_lock = threading.Lock()


class MaxDepthExceeded(GraphDriverError):
    def __init__(self, layer_id, parent):
        super().__init__("layer %s: max depth exceeded: parent %s already has %d lowers"
                         % (layer_id, parent, MAX_DEPTH - 1))


def format_mount_label(opts, label):
    """go-selinux FormatMountLabel: append context="<label>" when given."""
    if label:
        return '%s,context="%s"' % (opts, label) if opts else 'context="%s"' % label
    return opts


def _mount_from(home, source, target, fstype, flags, data):
    """mount(2) with relative paths resolved from ``home``.

    The cwd is process-wide, so it is changed in a thread that unshares it,
    as moby's mountFrom does with unshare.Go (older engines re-executed
    docker-mountfrom; a thread costs far less than a process).
    """
    try:
        run_in_directory(home, lambda: mount(source, target, fstype, flags, data))
    except MountError as e:
        raise MountError("mount", os.path.join(home, target), e.errno,
                         "type %s, data %s (relative to %s)" % (fstype, data, home))


@register
class Overlay2Driver(NaiveDiffDriver):
    name = "overlay2"
    # overlay2 makes work/ 0700; fuse-overlayfs 0710 (Docker's two drivers differ)
    work_mode = 0o700
    size_option = "overlay2.size"

    def __init__(self, home, options=None, read_only=False):
        super().__init__(home, options, read_only)
        self._check_and_prepare()

    # --- initialisation, the parts fuse-overlayfs replaces ---------------

    def _check_and_prepare(self):
        """The rest of Docker's Init: the checks that refuse a driver which
        cannot run here, then home's layout and the quota set-up."""
        self._default_size = self._parse_options(self.options)
        # Docker probes home if it exists (it may be its own mount), else
        # its parent; we go up to the nearest existing directory.
        testdir = self.home if os.path.isdir(self.home) else nearest_existing(self.home)
        self.backing_fs = fs_name(testdir)
        self._check_support(testdir)
        self.supports_d_type = supports_d_type(testdir)
        # Refused even for an existing home: 20.10 still tolerated that
        # (moby #27443), later engines do not, and overlay misbehaves there.
        if not self.supports_d_type:
            raise d_type_error(self.name, self.backing_fs)
        self._refs = RefCounter(self.name, self.home)
        self._quota = None
        if self.read_only:
            if self._default_size and not (self.backing_fs == "xfs" and projectquota.supported(testdir)):
                raise QuotaError("Storage option overlay2.size not supported. Filesystem does not "
                                 "support Project Quota (on %s, %s)" % (testdir, self.backing_fs))
        else:
            self._make_home()
            self._setup_quota()
        self._index_off = ("index=off,"
                           if os.path.exists("/sys/module/overlay/parameters/index") else "")
        self._userxattr = ("userxattr,"
                           if running_in_userns() and kernel_version() >= (5, 11, 0) else "")

    def _parse_options(self, options):
        size = 0
        for key, value in options.items():
            if key.lower() == self.size_option:
                size = projectquota.parse_size(value)
            else:
                raise GraphDriverError("%s: unknown option %s" % (self.name, key))
        return size

    def _check_support(self, testdir):
        # No list of refused backing filesystems: Docker dropped it in 20.10
        # (moby e226aea2, "overlay[2]: rm fs checks"); the test mount decides.
        if not overlay_in_kernel():
            raise NotSupported(self.name, "the overlay filesystem is not in the kernel "
                               "(not in /proc/filesystems, modprobe overlay failed)")
        problem = supports_overlay(testdir, True)
        if problem:
            raise NotSupported(self.name, "%s (on %s, %s)" % (problem, testdir, self.backing_fs))

    def _make_home(self):
        parent = os.path.dirname(self.home)
        if not os.path.isdir(parent):
            makedirs(parent, 0o755)
        mkdir(self.home, 0o710)
        mkdir(os.path.join(self.home, LINK_DIR), 0o700)

    def _setup_quota(self):
        if self.backing_fs == "xfs":
            try:
                self._quota = projectquota.QuotaControl(self.home)
            except (QuotaError, OSError) as e:
                if self._default_size:
                    raise QuotaError("Storage option overlay2.size not supported. Filesystem"
                                     " does not support Project Quota: %s" % e)
        elif self._default_size:
            raise QuotaError("Storage Option overlay2.size only supported for backingFS "
                             "XFS. Found %s" % self.backing_fs)

    # --- paths ---------------------------------------------------------

    def dir(self, layer_id):
        return os.path.join(self.home, check_id(layer_id))

    def _lower_dirs(self, layer_id):
        """Absolute diff dirs of the lowers, nearest first (LowerDir)."""
        text = read_text(os.path.join(self.dir(layer_id), LOWER_FILE), "")
        result = []
        for rel in text.split(":") if text else []:
            try:
                target = os.readlink(os.path.join(self.home, rel))
            except OSError as e:
                raise GraphDriverError("layer %s: lower %s: %s" % (layer_id, rel, e.strerror))
            result.append(os.path.normpath(os.path.join(self.home, LINK_DIR, target)))
        return result

    def _lower_for_child(self, layer_id, parent):
        """The ``lower`` file content of a new child of ``parent``."""
        parent_dir = self.dir(parent)
        try:
            link = read_text(os.path.join(parent_dir, LINK_FILE))
        except FileNotFoundError:
            raise LayerNotFound(parent, "parent of %s" % layer_id)
        lowers = [LINK_DIR + "/" + link]
        parent_lower = read_text(os.path.join(parent_dir, LOWER_FILE), "")
        if parent_lower:
            lowers.extend(parent_lower.split(":"))
        if len(lowers) > MAX_DEPTH:
            raise MaxDepthExceeded(layer_id, parent)
        return ":".join(lowers)

    # --- ProtoDriver ---------------------------------------------------

    def create(self, id, parent=None, opts=None):
        if opts and "size" in opts:
            raise GraphDriverError(
                "layer %s: --storage-opt size is only supported for ReadWrite Layers" % id)
        self._create(id, parent, opts)

    def create_read_write(self, id, parent=None, opts=None):
        opts = dict(opts or {})
        if "size" not in opts and self._default_size:
            opts["size"] = str(self._default_size)
        if "size" in opts and self._quota is None:
            raise QuotaError("layer %s: --storage-opt is supported only for overlay over xfs "
                             "with 'pquota' mount option" % id)
        self._create(id, parent, opts)

    def _storage_size(self, opts):
        size = 0
        for key, value in (opts or {}).items():
            if key.lower() != "size":
                raise GraphDriverError("Unknown option %s" % key)
            size = projectquota.parse_size(value)
        return size

    def _create(self, id, parent, opts):
        path = self.dir(id)
        if os.path.lexists(path):
            raise LayerExists(id)
        size = self._storage_size(opts)
        lower = self._lower_for_child(id, parent) if parent else None
        link_path = None
        mkdir(path, 0o710, 0, 0)
        try:
            if size:
                self._quota.set_quota(path, size)
            mkdir(os.path.join(path, DIFF_DIR), 0o755)
            link_path, lid = self._new_link(id)
            atomic_write(os.path.join(path, LINK_FILE), lid, 0o644)
            if parent:
                mkdir(os.path.join(path, WORK_DIR), self.work_mode)
                atomic_write(os.path.join(self.dir(parent), COMMITTED_FILE), b"", 0o600)
                atomic_write(os.path.join(path, LOWER_FILE), lower, 0o644)
        except BaseException:
            if link_path:
                with contextlib.suppress(OSError):
                    os.unlink(link_path)
            remove_tree(path)
            raise

    def _new_link(self, id):
        target = "../%s/%s" % (id, DIFF_DIR)
        for attempt in range(8):
            lid = generate_id(ID_LENGTH)
            link_path = os.path.join(self.home, LINK_DIR, lid)
            try:
                os.symlink(target, link_path)
                return link_path, lid
            except FileExistsError:
                continue      # 130 random bits: only a broken RNG gets here
        raise GraphDriverError("layer %s: cannot create a unique link in %s"
                               % (id, os.path.join(self.home, LINK_DIR)))

    def remove(self, id):
        path = self.dir(id)
        if not os.path.lexists(path):
            return
        lid = read_text(os.path.join(path, LINK_FILE), "").strip()
        if lid and "/" not in lid and lid not in (".", ".."):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.home, LINK_DIR, lid))
        # Docker's EnsureRemoveAll: nothing mounted may stay under the layer.
        for mp in mounts_under(path):
            self._unmount(mp)
        self._refs.forget(id)
        remove_tree(path)

    def exists(self, id):
        return os.path.exists(self.dir(id))

    def diff_dir(self, id):
        # moby overlay2 is a DiffGetterDriver: the layer's own diff directory
        return self._diff_path(id), lambda: None

    def layer_ids(self):
        return {n for n in entry_names(self.home, skip=(LINK_DIR,))
                if os.path.isdir(os.path.join(self.home, n))}

    def get(self, id, mount_label=""):
        path = self.dir(id)
        if not os.path.isdir(path):
            raise LayerNotFound(id, path)
        diff = os.path.join(path, DIFF_DIR)
        lowers = read_text(os.path.join(path, LOWER_FILE), "")
        if not lowers:
            return diff          # a base layer is its diff dir, never mounted
        merged = os.path.join(path, MERGED_DIR)
        with self._refs.transaction(id) as count:
            mounted = self._is_mounted(merged)
            if mounted:
                # Docker adopts a mount it did not count as one more user
                count.value = max(count.value, 1) + 1
                return merged
            count.value = 0      # a count without a mount is stale
            self._mount_layer(id, path, lowers, mount_label)
            count.value = 1
        return merged

    def put(self, id):
        path = self.dir(id)
        if not os.path.exists(os.path.join(path, LOWER_FILE)):
            return               # base layer or missing: nothing was mounted
        merged = os.path.join(path, MERGED_DIR)

        def release():
            if self._is_mounted(merged):
                self._unmount(merged)
            # rmdir also drops the mount in other mount namespaces
            with contextlib.suppress(OSError):
                os.rmdir(merged)
        self._refs.put(id, release)

    def status(self):
        return [
            ("Backing Filesystem", self.backing_fs),
            ("Supports d_type", "true" if self.supports_d_type else "false"),
            ("Native Overlay Diff", "false" if self._use_naive_diff() else "true"),
            ("userxattr", "true" if self._userxattr else "false"),
        ]

    def metadata(self, id):
        path = self.dir(id)
        if not os.path.isdir(path):
            raise LayerNotFound(id, path)
        meta = {
            "WorkDir": os.path.join(path, WORK_DIR),
            "MergedDir": os.path.join(path, MERGED_DIR),
            "UpperDir": os.path.join(path, DIFF_DIR),
        }
        lowers = self._lower_dirs(id)
        if lowers:
            meta["LowerDir"] = ":".join(lowers)
        return meta

    def cleanup(self):
        """Unmount everything under the home (Docker's RecursiveUnmount)."""
        for mp in mounts_under(self.home):
            self._unmount(mp)
        for layer_id in self._refs.active():
            self._refs.forget(layer_id)

    # --- mounting ------------------------------------------------------

    def get_mounts(self, id, parent=None):
        # A base layer (no lower file) is its diff directory, never mounted.
        if self.exists(id):
            return os.path.exists(os.path.join(self.home, id, "lower"))
        return bool(parent)

    def references(self, id):
        return self._refs.count(id) if self.get_mounts(id) else 0

    def _is_mounted(self, merged):
        return is_mountpoint(merged)

    def _mount_options(self, id, path, lowers, relative):
        """The mount data string moby builds, absolute or home-relative."""
        prefix = self._index_off + self._userxattr
        readonly = os.path.exists(os.path.join(path, COMMITTED_FILE))
        if relative:
            diff, work = id + "/" + DIFF_DIR, id + "/" + WORK_DIR
            lower = lowers
        else:
            diff, work = os.path.join(path, DIFF_DIR), os.path.join(path, WORK_DIR)
            lower = ":".join(os.path.join(self.home, s) for s in lowers.split(":"))
        if readonly:
            return prefix + "lowerdir=" + diff + ":" + lower
        return prefix + "lowerdir=" + lower + ",upperdir=" + diff + ",workdir=" + work

    def _mount_layer(self, id, path, lowers, mount_label):
        merged = os.path.join(path, MERGED_DIR)
        mkdir(merged, 0o700)
        try:
            data = format_mount_label(self._mount_options(id, path, lowers, False), mount_label)
            # mount(2) takes one page of data; past it use l/ paths relative to home
            if len(data) > PAGE_SIZE - 1:
                data = format_mount_label(self._mount_options(id, path, lowers, True),
                                          mount_label)
                if len(data) > PAGE_SIZE - 1:
                    raise GraphDriverError("layer %s: cannot mount layer, mount label too "
                                           "large %d" % (id, len(data)))
                _mount_from(self.home, "overlay", id + "/" + MERGED_DIR, "overlay", 0, data)
            else:
                mount("overlay", merged, "overlay", 0, data)
        except MountError as e:
            with contextlib.suppress(OSError):
                os.rmdir(merged)
            raise GraphDriverError("layer %s: error creating overlay mount to %s: %s"
                                   % (id, merged, e))
        except BaseException:
            with contextlib.suppress(OSError):
                os.rmdir(merged)
            raise
        if not os.path.exists(os.path.join(path, COMMITTED_FILE)):
            # overlay in a user namespace needs work/work owned by its root
            with contextlib.suppress(FileNotFoundError):
                os.chown(os.path.join(path, WORK_DIR, WORK_DIR), 0, 0)

    def _unmount(self, mountpoint):
        unmount(mountpoint, MNT_DETACH)

    # --- diffs ---------------------------------------------------------

    def _use_naive_diff(self):
        with _native_diff_lock:
            if self.home not in _native_diff_cache:
                # a read-only driver may have no home yet: probe where it would be
                testdir = self.home if os.path.isdir(self.home) else nearest_existing(self.home)
                _native_diff_cache[self.home] = native_diff_problem(testdir)
            return _native_diff_cache[self.home] is not None

    def naive_diff_reason(self):
        """Why native diff is off here, or None when it is on."""
        self._use_naive_diff()
        return _native_diff_cache[self.home]

    def is_parent(self, id, parent):
        """Is ``parent`` the direct parent of ``id`` (moby isParent)?"""
        try:
            lowers = self._lower_dirs(id)
        except GraphDriverError:
            return False
        if not parent:
            return not lowers
        if not lowers:
            return False
        return os.path.dirname(lowers[0]) == self.dir(parent)

    def _native(self, id, parent):
        return not self._use_naive_diff() and self.is_parent(id, parent)

    def _diff_path(self, id):
        path = self.dir(id)
        if not os.path.isdir(path):
            raise LayerNotFound(id, path)
        return os.path.join(path, DIFF_DIR)

    def diff(self, id, parent=None):
        if not self._native(id, parent):
            return super().diff(id, parent)
        return archive.tar_tree(self._diff_path(id), whiteout_format=whiteouts.OVERLAY,
                                engine_version=self.engine_version)

    def apply_diff(self, id, parent, stream):
        if not self._native(id, parent):
            return super().apply_diff(id, parent, stream)
        diff = self._diff_path(id)
        unpack.apply_layer(diff, stream, whiteout_format=whiteouts.OVERLAY, layer_id=id,
                           engine_version=self.engine_version)
        return directory_size(diff)

    def diff_size(self, id, parent=None):
        if not self._native(id, parent):
            return super().diff_size(id, parent)
        return directory_size(self._diff_path(id))

    def changes(self, id, parent=None):
        # Docker walks both mounts since 18.09 (moby ac5d363e: its
        # OverlayChanges reported opaque directories wrongly). Where the
        # native diff is safe the upper dir tells the same in O(changed)
        # (upper_changes reads it by the walk's rules, as containers/storage
        # reads it); redirect or metacopy xattrs leave the walk.
        if self._native(id, parent):
            with contextlib.suppress(NeedsMount):
                return upper_changes(self._diff_path(id), self._lower_dirs(id))
        return super().changes(id, parent)
