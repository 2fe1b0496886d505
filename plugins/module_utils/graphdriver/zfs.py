"""The zfs driver: every layer a ZFS dataset, children are clones.

Docker's layout (daemon/graphdriver/zfs/zfs.go): layer ``id`` is the dataset
``<fsname>/<id>`` with ``mountpoint=legacy``; a base layer is ``zfs create``,
a child is a clone of a snapshot ``<parent>@<nanoseconds>`` whose destroy is
deferred (``zfs destroy -d``), so that the snapshot vanishes with its last
clone. ``get`` mounts the dataset at ``<home>/graph/<id>``.

Two ZFS implementations are handled:

- kernel ZFS (/dev/zfs, 'zfs' in /proc/filesystems): mounted with
  mount(2) type ``zfs``, exactly as Docker does;
- zfs-fuse (the user-space daemon; no kernel ``zfs`` mount type): mounted by
  setting the dataset's ``mountpoint`` to the target, and put back to
  ``legacy`` on ``put``, so that at rest the datasets are Docker's.
"""

import contextlib
import filecmp
import os
import socket
import stat
import time

from . import mount as mountlib
from .archive import export_changes
from .backingfs import NAME_TO_MAGIC, fs_magic, fs_name
from .changes import changes_dirs
from .command import run, require_tool
from .driver import Change, check_id, register
from .errors import (CommandError, GraphDriverError, IncompatibleFS, LayerNotFound,
                     PrerequisitesMissing)
from .fileutil import makedirs, mkdir
from .naive import NaiveDiffDriver
from .refcount import RefCounter

NAME = "zfs"
ZFS_MAGIC = NAME_TO_MAGIC["zfs"]
FUSE_MAGIC = NAME_TO_MAGIC["fuse"]
DEV_ZFS = "/dev/zfs"
# zfs-fuse's tools find the daemon at this path, compiled in.
ZFS_FUSE_SOCKET = "/var/run/zfs/zfs_socket"
FUSE_FSTYPE = "fuse.zfs"  # how zfs-fuse datasets show in mountinfo
KERNEL, FUSE = "kernel", "zfs-fuse"


def kernel_zfs_present():
    if not os.path.exists(DEV_ZFS):
        return False
    try:
        with open("/proc/filesystems") as f:
            return any(line.split()[-1:] == ["zfs"] for line in f)
    except OSError:
        return False


def zfs_fuse_running():
    """A zfs-fuse daemon answers on its socket (a stale socket refuses)."""
    if not os.path.exists(ZFS_FUSE_SOCKET):
        return False
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(2)
        s.connect(ZFS_FUSE_SOCKET)
        return True
    except OSError:
        return False
    finally:
        s.close()


def detect_implementation():
    """'kernel' or 'zfs-fuse'; PrerequisitesMissing saying what is absent."""
    if kernel_zfs_present():
        # Docker's own check: /dev/zfs must open read-write.
        try:
            os.close(os.open(DEV_ZFS, os.O_RDWR))
        except OSError as e:
            raise PrerequisitesMissing(NAME, "cannot open %s: %s" % (DEV_ZFS, e.strerror))
        return KERNEL
    if zfs_fuse_running():
        return FUSE
    raise PrerequisitesMissing(
        NAME, "no ZFS here: neither kernel ZFS (%s and 'zfs' in /proc/filesystems) "
        "nor a running zfs-fuse daemon (socket %s)" % (DEV_ZFS, ZFS_FUSE_SOCKET))


def _dataset_mount_of(path):
    """The mount entry of the ZFS dataset mounted at or above ``path``
    (same device, as Docker's lookupZfsDataset), or None."""
    want = os.stat(path).st_dev
    for m in mountlib.mounts():
        if m.fstype not in ("zfs", FUSE_FSTYPE):
            continue
        try:
            if os.stat(m.mountpoint).st_dev == want:
                return m
        except OSError:
            continue  # may fail on fuse filesystems (Docker skips them too)
    return None


def same_second_rewrites(new_root, old_root, changes, since=0):
    """``changes`` plus the modifications that whole-second times hide.

    zfs-fuse reports every time in whole seconds (ZFS stores nanoseconds;
    its FUSE stat reply drops them), so Docker's rule "same size and same
    mtime second with a zero nanosecond part means unchanged" misses a file
    rewritten within the second its parent was written, which kernel ZFS
    would report. Only for such ambiguous files the content (or symlink
    target) is compared; a difference is a C, and so is each directory
    above it, as in Docker's change walk.

    ``since`` (seconds): the new tree was cloned off the old one then, so an
    ambiguous file whose mtime second is earlier was not written in between
    (or had its time set back, which Docker's rule cannot see either) and is
    left to Docker's rule: only the last second's files are read.
    """
    found = {c.path: c.kind for c in changes}
    extra = []
    for dirpath, dirnames, filenames in os.walk(new_root):
        rel_dir = "/" + os.path.relpath(dirpath, new_root) if dirpath != new_root else ""
        for name in filenames + [d for d in dirnames
                                 if os.path.islink(os.path.join(dirpath, d))]:
            rel = rel_dir + "/" + name
            if rel in found:
                continue
            new, old = os.path.join(dirpath, name), old_root + rel
            try:
                sn, so = os.lstat(new), os.lstat(old)
            except FileNotFoundError:
                continue
            if (stat.S_IFMT(sn.st_mode) != stat.S_IFMT(so.st_mode)
                    or sn.st_size != so.st_size or sn.st_mtime_ns % 1000000000
                    or so.st_mtime_ns % 1000000000
                    or sn.st_mtime_ns // 1000000000 != so.st_mtime_ns // 1000000000
                    or sn.st_mtime_ns // 1000000000 < since):
                continue  # Docker's rule decided this one
            if stat.S_ISLNK(sn.st_mode):
                same = os.readlink(new) == os.readlink(old)
            elif stat.S_ISREG(sn.st_mode):
                same = filecmp.cmp(new, old, shallow=False)
            else:
                continue
            if not same:
                extra.append(rel)
    if not extra:
        return changes
    for rel in extra:
        found[rel] = "C"
        parent = os.path.dirname(rel)
        while parent not in ("/", "") and parent not in found:
            found[parent] = "C"
            parent = os.path.dirname(parent)
    return [Change(p, k) for p, k in sorted(found.items(), key=lambda i: os.fsencode(i[0]))]


def parse_options(options):
    fsname = ""
    for key, value in options.items():
        if key.lower() == "zfs.fsname":
            fsname = str(value)
        else:
            raise GraphDriverError("zfs: unknown option %s" % key)
    return fsname


def parse_storage_opt(layer_id, opts):
    """The ``size`` (ZFS's own size syntax: '50M', '1G'); '' when none."""
    size = ""
    for key, value in (opts or {}).items():
        if key.lower() == "size":
            size = str(value).strip()
        else:
            raise GraphDriverError("zfs: layer %s: unknown storage option %s" % (layer_id, key))
    return "" if size in ("", "0") else size


@register
class ZfsDriver(NaiveDiffDriver):
    name = NAME

    def __init__(self, home, options=None, read_only=False):
        super().__init__(home, options, read_only)
        self.zfs_tool = require_tool(NAME, "zfs")
        self.implementation = detect_implementation()
        self.fsname = parse_options(self.options)
        # Docker checks the data-root's filesystem only when it must find
        # the dataset itself.
        self.backing_fs = "not checked (zfs.fsname given)"
        rootdir = os.path.dirname(self.home)
        if not self.fsname:
            self.fsname = self._lookup_dataset(rootdir)
        try:
            names = self._zfs("list", "-rH", "-o", "name", "-t", "filesystem",
                              self.fsname).split()
        except CommandError as e:
            raise GraphDriverError("zfs: cannot find root filesystem %s: %s"
                                   % (self.fsname, e.stderr.strip()))
        if self.fsname not in names:
            raise GraphDriverError("zfs: zfs list -r %s did not list %s"
                                   % (self.fsname, self.fsname))
        # Like Docker, existence is answered from a cache of the datasets,
        # filled here and kept by create/remove (a miss asks zfs again).
        self._datasets = set(names)
        self.refs = RefCounter(NAME, self.home)
        if read_only:
            return
        try:
            mkdir(self.home, 0o710)
        except OSError as e:
            raise GraphDriverError("zfs: cannot create %s: %s" % (self.home, e.strerror))

    def engine_refusal(self):
        # moby's zfs driver opens /dev/zfs, which only kernel ZFS provides
        if self.implementation != KERNEL:
            return ("zfs through zfs-fuse works with this library, but Docker Engine"
                    " needs kernel ZFS (/dev/zfs is missing)")
        return None

    # --- helpers -----------------------------------------------------------

    def _zfs(self, *args):
        return run([self.zfs_tool] + list(args))

    def _lookup_dataset(self, rootdir):
        try:
            magic = fs_magic(rootdir)
        except GraphDriverError:
            raise IncompatibleFS(NAME, "%s does not exist" % rootdir)
        entry = _dataset_mount_of(rootdir)
        if magic == ZFS_MAGIC and entry is not None:
            self.backing_fs = "zfs"
            return entry.source
        if magic == FUSE_MAGIC and entry is not None and entry.fstype == FUSE_FSTYPE:
            # zfs-fuse: statfs says fuse, the mount table says which dataset.
            self.backing_fs = "fuse (zfs-fuse dataset %s)" % entry.source
            return entry.source
        if magic == ZFS_MAGIC:
            raise GraphDriverError("zfs: failed to find the zfs dataset mounted on %s "
                                   "in the mount table" % rootdir)
        raise IncompatibleFS(
            NAME, "%s is on %s, not on a ZFS dataset (kernel zfs or zfs-fuse); "
            "put it on a dataset or name one with the zfs.fsname option"
            % (rootdir, fs_name(rootdir)))

    def zfs_path(self, layer_id):
        return "%s/%s" % (self.fsname, layer_id)

    def mount_path(self, layer_id):
        return os.path.join(self.home, "graph", layer_id)

    def _has_dataset(self, name):
        try:
            self._zfs("list", "-H", "-o", "name", "-t", "filesystem", name)
            return True
        except CommandError:
            return False

    # --- ProtoDriver ---------------------------------------------------------

    def create(self, id, parent=None, opts=None):
        check_id(id)
        quota = parse_storage_opt(id, opts)
        try:
            self._create(id, parent, quota)
        except CommandError as e:
            if not e.stderr.rstrip().endswith("dataset already exists"):
                raise self._error("create", id, e)
            # An aborted build left it behind: Docker destroys it and retries.
            try:
                self._zfs("destroy", "-R", self.zfs_path(id))
                self._create(id, parent, quota)
            except CommandError as e2:
                raise self._error("create", id, e2)

    def create_read_write(self, id, parent=None, opts=None):
        self.create(id, parent, opts)

    def _create(self, layer_id, parent, quota):
        name = self.zfs_path(layer_id)
        props = ["-o", "mountpoint=legacy"]
        if quota:
            # Docker sets quota= right after creating; one command is the same
            # at rest and saves a tool run per layer.
            props += ["-o", "quota=%s" % quota]
        if not parent:
            self._zfs("create", *(props + [name]))
        else:
            if not self.exists(parent):
                raise LayerNotFound(parent, "parent of %s (dataset %s)"
                                    % (layer_id, self.zfs_path(parent)))
            self._clone(name, self.zfs_path(parent), props)
        self._datasets.add(name)

    def _clone(self, name, parent_name, props):
        # Docker names the snapshot after time.Now().Nanosecond().
        for attempt in range(5):
            snapshot = "%s@%d" % (parent_name, time.time_ns() % 1000000000)
            try:
                self._zfs("snapshot", snapshot)
                break
            except CommandError as e:
                if "dataset already exists" not in e.stderr:
                    raise
        else:
            raise GraphDriverError("zfs: cannot snapshot %s for %s: every name taken"
                                   % (parent_name, name))
        try:
            self._zfs("clone", "-p", *(props + [snapshot, name]))
        finally:
            # Deferred: the snapshot goes when its last clone goes, so the
            # parent is free to be removed after its children.
            self._zfs("destroy", "-d", snapshot)

    def remove(self, id):
        check_id(id)
        name = self.zfs_path(id)
        with self.refs.transaction(id) as count:
            if mountlib.is_mountpoint(self.mount_path(id)):
                self._unmount(id)
            count.value = 0
        try:
            # -r, not -R, as Docker: a layer whose clones (children) still
            # exist is refused ("filesystem has dependent clones").
            self._zfs("destroy", "-r", name)
        except CommandError as e:
            if not e.stderr.strip().endswith("dataset does not exist"):
                raise self._error("remove", id, e)
        self._datasets.discard(name)
        with contextlib.suppress(OSError):
            os.rmdir(self.mount_path(id))

    def get(self, id, mount_label=""):
        check_id(id)
        if not self.exists(id):
            raise LayerNotFound(id, "no dataset %s" % self.zfs_path(id))
        target = self.mount_path(id)
        with self.refs.transaction(id) as count:
            if mountlib.is_mountpoint(target):
                # Mounted: by an earlier get, or left over (then it is ours,
                # as Docker's mount counter adopts a mount it finds).
                count.value = max(count.value, 0) + 1
                return target
            makedirs(os.path.join(self.home, "graph"), 0o755)
            mkdir(target, 0o755)
            try:
                self._mount(id, target, mount_label)
                # The dataset root may still carry the mode/owner it was made with.
                os.chown(target, 0, 0)
            except BaseException:
                with contextlib.suppress(GraphDriverError, OSError):
                    self._unmount(id)
                with contextlib.suppress(OSError):
                    os.rmdir(target)
                raise
            count.value = 1
        return target

    def get_mounts(self, id, parent=None):
        return True

    def references(self, id):
        return self.refs.count(id)

    def put(self, id):
        check_id(id)
        target = self.mount_path(id)

        def release():
            if mountlib.is_mountpoint(target):
                self._unmount(id)
            with contextlib.suppress(OSError):
                os.rmdir(target)
        self.refs.put(id, release)

    def _mount(self, layer_id, target, mount_label):
        name = self.zfs_path(layer_id)
        if self.implementation == KERNEL:
            data = 'context="%s"' % mount_label if mount_label else ""
            mountlib.mount(name, target, "zfs", 0, data)
            return
        # zfs-fuse has no kernel mount type: the daemon mounts a dataset
        # when its mountpoint property names a directory.
        try:
            self._zfs("set", "mountpoint=%s" % target, name)
        except CommandError as e:
            raise self._error("mount", layer_id, e)
        if not mountlib.is_mountpoint(target):
            raise GraphDriverError("zfs: layer %s: zfs-fuse did not mount %s at %s"
                                   % (layer_id, name, target))

    def _unmount(self, layer_id):
        target = self.mount_path(layer_id)
        if self.implementation == KERNEL:
            mountlib.unmount(target, mountlib.MNT_DETACH)
            return
        name = self.zfs_path(layer_id)
        try:
            # Back to legacy: zfs-fuse unmounts it, and at rest it is Docker's.
            self._zfs("set", "mountpoint=legacy", name)
        except CommandError as e:
            raise self._error("unmount", layer_id, e)

    def layer_path(self, id):
        return self.zfs_path(check_id(id))     # a dataset, not a directory

    def layer_ids(self):
        names = self._zfs("list", "-H", "-o", "name", "-t", "filesystem", "-d", "1",
                          self.fsname).split()
        prefix = self.fsname + "/"
        return {n[len(prefix):] for n in names if n.startswith(prefix)}

    def exists(self, id):
        name = self.zfs_path(id)
        if name in self._datasets:
            return True
        if self._has_dataset(name):
            self._datasets.add(name)
            return True
        return False

    # --- diff under zfs-fuse ------------------------------------------------

    def changes(self, id, parent=None):
        if self.implementation != FUSE or not parent:
            return super().changes(id, parent)
        layer_fs = self.get(id, "")
        try:
            parent_fs = self.get(parent, "")
            try:
                return same_second_rewrites(layer_fs, parent_fs,
                                            changes_dirs(layer_fs, parent_fs),
                                            self._cloned_since(id, parent))
            finally:
                self.put(parent)
        finally:
            self.put(id)

    def _cloned_since(self, layer_id, ancestor):
        """When the first clone off ``ancestor`` on the way to ``layer_id``
        was made (epoch seconds); 0 when ``ancestor`` is not an ancestor."""
        name, target = self.zfs_path(layer_id), self.zfs_path(ancestor)
        for depth in range(256):
            try:
                origin, creation = self._zfs("get", "-Hp", "-o", "value", "origin,creation",
                                             name).split()
            except (CommandError, ValueError):
                return 0
            origin_fs = origin.split("@")[0]
            if origin_fs == target:
                return int(creation)
            if origin == "-":
                return 0
            name = origin_fs
        return 0

    def diff(self, id, parent=None):
        if self.implementation != FUSE or not parent:
            return super().diff(id, parent)
        start = time.time()
        changes = self.changes(id, parent)
        layer_fs = self.get(id, "")

        def close():
            try:
                self.put(id)
            finally:
                # As Docker's naive diff: no write may follow in the same
                # whole second (here every time is whole seconds).
                delay = int(start) + 1 - time.time()
                if delay > 0:
                    time.sleep(delay)
        try:
            return export_changes(layer_fs, changes, on_close=close,
                                  engine_version=self.engine_version)
        except BaseException:
            self.put(id)
            raise

    def metadata(self, id):
        return {"Mountpoint": self.mount_path(id), "Dataset": self.zfs_path(id)}

    def status(self):
        pool = self.fsname.split("/")[0]
        try:
            pool_name, health = self._run_zpool("list", "-H", "-o", "name,health", pool).split()[:2]
        except (CommandError, ValueError) as e:
            pool_name, health = "error while getting pool information %s" % e, "not available"
        props = {}
        with contextlib.suppress(CommandError):
            for line in self._zfs("get", "-Hp", "-o", "property,value",
                                  "used,available,quota,compression", self.fsname).splitlines():
                key, tab, value = line.partition("\t")
                props[key] = value
        quota = props.get("quota", "0")
        if self.implementation == KERNEL:
            impl = "kernel (%s)" % DEV_ZFS
        else:
            impl = "zfs-fuse (user-space daemon at %s; mounts through the " \
                   "mountpoint property, legacy at rest)" % ZFS_FUSE_SOCKET
        return [
            ("Zpool", pool_name),
            ("Zpool Health", health),
            ("Parent Dataset", self.fsname),
            ("Space Used By Parent", props.get("used", "")),
            ("Space Available", props.get("available", "")),
            ("Parent Quota", "no" if quota in ("0", "-", "") else quota),
            ("Compression", props.get("compression", "")),
            ("ZFS Implementation", impl),
            ("Backing Filesystem", self.backing_fs),
        ]

    def _run_zpool(self, *args):
        zpool = os.path.join(os.path.dirname(self.zfs_tool), "zpool")
        return run([zpool] + list(args))

    def cleanup(self):
        """Unmount every layer this driver has mounted under graph/.

        Docker's zfs Cleanup does nothing (the daemon's mounts die with the
        host); here a task ends its process, so the mounts are undone."""
        graph = os.path.join(self.home, "graph")
        for entry in reversed(mountlib.mounts()):
            if os.path.dirname(entry.mountpoint) != graph:
                continue
            layer_id = os.path.basename(entry.mountpoint)
            with self.refs.transaction(layer_id) as count:
                self._unmount(layer_id)
                count.value = 0
            with contextlib.suppress(OSError):
                os.rmdir(entry.mountpoint)
        for layer_id in self.refs.active():
            self.refs.forget(layer_id)

    def _error(self, op, layer_id, err):
        return GraphDriverError("zfs: %s layer %s (dataset %s): %s"
                                % (op, layer_id, self.zfs_path(layer_id),
                                   err.stderr.strip() if isinstance(err, CommandError) else err))
