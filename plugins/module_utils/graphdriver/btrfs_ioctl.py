"""The btrfs ioctls the btrfs driver needs, through fcntl.ioctl.

Docker's driver calls them from cgo with linux/btrfs.h; the struct layouts
below are that header's (every one of these argument structs is padded to
4096 bytes but the quota ones). One ioctl replaces a ``btrfs`` tool run, so
a snapshot costs microseconds instead of a process.
"""

import contextlib
import errno
import fcntl
import os
import struct

_MAGIC = 0x94
_WRITE, _READ = 1, 2


def _ioc(direction, nr, size):
    return (direction << 30) | (size << 16) | (_MAGIC << 8) | nr


VOL_ARGS_SIZE = 4096        # struct btrfs_ioctl_vol_args: s64 fd; char name[4088]
VOL_ARGS_V2_SIZE = 4096     # fd, transid, flags, unused[4], name[4040]
SEARCH_ARGS_SIZE = 4096     # key (104) + buf
SEARCH_KEY_SIZE = 104
SEARCH_HEADER_SIZE = 32
ROOTREF_ARGS_SIZE = 4096    # min_treeid, rootref[255]{treeid, dirid}, num_items
INO_LOOKUP_USER_SIZE = 4096  # dirid, treeid, name[256], path[3824]

IOC_SUBVOL_CREATE = _ioc(_WRITE, 14, VOL_ARGS_SIZE)
IOC_SNAP_DESTROY = _ioc(_WRITE, 15, VOL_ARGS_SIZE)
IOC_TREE_SEARCH = _ioc(_READ | _WRITE, 17, SEARCH_ARGS_SIZE)
IOC_INO_LOOKUP = _ioc(_READ | _WRITE, 18, 4096)
IOC_SNAP_CREATE_V2 = _ioc(_WRITE, 23, VOL_ARGS_V2_SIZE)
IOC_QUOTA_CTL = _ioc(_READ | _WRITE, 40, 16)
IOC_QGROUP_CREATE = _ioc(_WRITE, 42, 16)
# Declared _IOR in linux/btrfs.h although it only takes input: keep the quirk.
IOC_QGROUP_LIMIT = _ioc(_READ, 43, 48)
IOC_QUOTA_RESCAN_WAIT = _ioc(0, 46, 0)
IOC_GET_SUBVOL_ROOTREF = _ioc(_READ | _WRITE, 61, ROOTREF_ARGS_SIZE)
IOC_INO_LOOKUP_USER = _ioc(_READ | _WRITE, 62, INO_LOOKUP_USER_SIZE)

FIRST_FREE_OBJECTID = 256   # the inode number of every subvolume's root dir
QUOTA_TREE_OBJECTID = 8
QGROUP_STATUS_KEY = 240
QUOTA_CTL_ENABLE = 1
QGROUP_LIMIT_MAX_RFER = 1
SUBVOL_NAME_MAX = 4039
VOL_NAME_MAX = 255


@contextlib.contextmanager
def _dirfd(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def _name_field(name, size):
    raw = os.fsencode(name)
    if b"/" in raw or len(raw) >= size:
        raise OSError(errno.EINVAL, "invalid subvolume name %r" % name)
    return raw + b"\0" * (size - len(raw))


def subvol_create(parent_dir, name):
    """BTRFS_IOC_SUBVOL_CREATE: an empty subvolume ``parent_dir/name``."""
    buf = bytearray(struct.pack("=q", 0) + _name_field(name, VOL_ARGS_SIZE - 8))
    with _dirfd(parent_dir) as fd:
        fcntl.ioctl(fd, IOC_SUBVOL_CREATE, buf)


def snapshot(source, dest_dir, name, readonly=False):
    """BTRFS_IOC_SNAP_CREATE_V2: ``dest_dir/name`` as a snapshot of ``source``."""
    flags = 1 << 1 if readonly else 0  # BTRFS_SUBVOL_RDONLY
    with _dirfd(source) as src, _dirfd(dest_dir) as dst:
        buf = bytearray(struct.pack("=qQQ4Q", src, 0, flags, 0, 0, 0, 0)
                        + _name_field(name, SUBVOL_NAME_MAX + 1))
        fcntl.ioctl(dst, IOC_SNAP_CREATE_V2, buf)


def snap_destroy(parent_dir, name):
    """BTRFS_IOC_SNAP_DESTROY: delete subvolume ``parent_dir/name`` (its nested
    subvolumes must be gone first, or the kernel says ENOTEMPTY)."""
    buf = bytearray(struct.pack("=q", 0) + _name_field(name, VOL_ARGS_SIZE - 8))
    with _dirfd(parent_dir) as fd:
        fcntl.ioctl(fd, IOC_SNAP_DESTROY, buf)


def is_subvolume(path):
    st = os.lstat(path)
    return (st.st_mode & 0o170000) == 0o040000 and st.st_ino == FIRST_FREE_OBJECTID


def subvolume_id(path):
    """The tree id of the subvolume holding ``path`` (= its level-0 qgroup)."""
    buf = bytearray(struct.pack("=QQ", 0, FIRST_FREE_OBJECTID) + b"\0" * 4080)
    with _dirfd(path) as fd:
        fcntl.ioctl(fd, IOC_INO_LOOKUP, buf)
    return struct.unpack_from("=Q", buf, 0)[0]


def child_subvolumes(path):
    """Subvolumes nested directly in the subvolume rooted at ``path``, as
    absolute paths. Asks the kernel (GET_SUBVOL_ROOTREF + INO_LOOKUP_USER,
    Linux 4.18) instead of walking every file; walks when those are missing
    or ``path`` is a plain directory (the ioctl would answer for the
    subvolume that holds it)."""
    if not is_subvolume(path):
        return _child_subvolumes_walk(path)
    try:
        return _child_subvolumes_ioctl(path)
    except OSError as e:
        if e.errno not in (errno.ENOTTY, errno.EOPNOTSUPP, errno.EINVAL):
            raise
    return _child_subvolumes_walk(path)


def _child_subvolumes_ioctl(path):
    found = []
    with _dirfd(path) as fd:
        min_treeid = 0
        while True:
            buf = bytearray(struct.pack("=Q", min_treeid)
                            + b"\0" * (ROOTREF_ARGS_SIZE - 8))
            more = False
            try:
                fcntl.ioctl(fd, IOC_GET_SUBVOL_ROOTREF, buf)
            except OSError as e:
                if e.errno != errno.EOVERFLOW:  # more than one buffer's worth
                    raise
                more = True
            count = buf[8 + 255 * 16]
            for i in range(count):
                treeid, dirid = struct.unpack_from("=QQ", buf, 8 + i * 16)
                found.append(_lookup_child(fd, path, treeid, dirid))
            if not more or count == 0:
                break
            min_treeid = struct.unpack_from("=Q", buf, 0)[0]
    return found


def _lookup_child(fd, root, treeid, dirid):
    buf = bytearray(struct.pack("=QQ", dirid, treeid) + b"\0" * (INO_LOOKUP_USER_SIZE - 16))
    fcntl.ioctl(fd, IOC_INO_LOOKUP_USER, buf)
    name = bytes(buf[16:16 + VOL_NAME_MAX + 1]).split(b"\0", 1)[0]
    rel = bytes(buf[16 + VOL_NAME_MAX + 1:]).split(b"\0", 1)[0]
    return os.path.join(root, os.fsdecode(rel), os.fsdecode(name))


def _child_subvolumes_walk(path):
    # Docker's way: every directory whose inode is 256 is a subvolume root.
    found = []
    stack = [path]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    # lstat, not d_ino: readdir reports a nested subvolume
                    # by its tree id, stat by its root inode, 256.
                    if entry.stat(follow_symlinks=False).st_ino == FIRST_FREE_OBJECTID:
                        found.append(entry.path)
                    else:
                        stack.append(entry.path)
    return found


def quota_enable(path):
    buf = bytearray(struct.pack("=QQ", QUOTA_CTL_ENABLE, 0))
    with _dirfd(path) as fd:
        fcntl.ioctl(fd, IOC_QUOTA_CTL, buf)


def quota_enabled(path):
    """True when the filesystem has quotas on: its quota tree holds the
    qgroup status item (Docker's qgroupStatus, a TREE_SEARCH)."""
    key = struct.pack("=7Q4I4Q", QUOTA_TREE_OBJECTID, 0, 2 ** 64 - 1, 0, 2 ** 64 - 1,
                      0, 2 ** 64 - 1, QGROUP_STATUS_KEY, QGROUP_STATUS_KEY, 1, 0,
                      0, 0, 0, 0)
    buf = bytearray(key + b"\0" * (SEARCH_ARGS_SIZE - SEARCH_KEY_SIZE))
    try:
        with _dirfd(path) as fd:
            fcntl.ioctl(fd, IOC_TREE_SEARCH, buf)
    except OSError:
        return False  # ENOENT: no quota tree
    nr_items = struct.unpack_from("=I", buf, 64)[0]
    if nr_items == 0:
        return False
    item_type = struct.unpack_from("=I", buf, SEARCH_KEY_SIZE + 24)[0]
    return item_type == QGROUP_STATUS_KEY


def qgroup_limit(path, max_referenced):
    """Limit the subvolume at ``path`` (qgroupid 0: the fd's own) to
    ``max_referenced`` bytes."""
    buf = bytearray(struct.pack("=Q5Q", 0, QGROUP_LIMIT_MAX_RFER, max_referenced, 0, 0, 0))
    with _dirfd(path) as fd:
        fcntl.ioctl(fd, IOC_QGROUP_LIMIT, buf)


def qgroup_destroy(fs_path, qgroupid):
    """BTRFS_IOC_QGROUP_CREATE with create=0 deletes the qgroup."""
    buf = bytearray(struct.pack("=QQ", 0, qgroupid))
    with _dirfd(fs_path) as fd:
        fcntl.ioctl(fd, IOC_QGROUP_CREATE, buf)


def quota_rescan_wait(path):
    with _dirfd(path) as fd:
        fcntl.ioctl(fd, IOC_QUOTA_RESCAN_WAIT, 0)
