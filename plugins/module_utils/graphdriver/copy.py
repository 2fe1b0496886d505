"""Copy a directory tree the way Docker's vfs driver does (copy.DirCopy).

moby daemon/graphdriver/copy/copy.go (v20.10.24 and v26.1.5 alike), in the
same order:

* a pre-order walk in lexical order (Go's filepath.Walk), so the first path of
  a hard-linked inode is copied and the later ones are linked to it;
* regular files: reflink (FICLONE) first, then copy_file_range, then a plain
  copy; a failure of a fast path switches it off for the rest of the walk
  (EXDEV switches off both kernel paths, as Docker does);
* directories, symlinks, FIFOs, device nodes recreated; a socket goes to
  mkfifo with its own mode, as Docker's does (a fallthrough), which the
  kernel refuses (EINVAL): Docker cannot make a vfs child of a layer that
  holds a socket, and neither can we;
* then per entry: lchown, the xattrs Docker names (``security.capability``
  always; ``trusted.overlay.opaque`` too where the caller asks, as overlay
  does, never for vfs): every other xattr (user.*, trusted.*, SELinux
  labels) stays behind, so a child holds what Docker's would and its naive
  diff, hence its DiffID, is Docker's; chmod (after chown: chown clears the
  setuid/setgid bits), times (symlinks with AT_SYMLINK_NOFOLLOW);
* directory times last, deepest first, since creating entries in a
  directory changes its mtime.
"""

import errno
import fcntl
import os
import stat

from .errors import GraphDriverError

# Docker's copy modes: copy the content, or hard-link every regular file.
CONTENT = "content"
HARDLINK = "hardlink"

# _IOW(0x94, 9, int): the generic reflink ioctl (btrfs, xfs reflink=1, ...).
FICLONE = 0x40049409

_COPY_CHUNK = 1 << 30

CAPABILITY = "security.capability"
OPAQUE = "trusted.overlay.opaque"
# DirCopy(..., copyOpaqueXattrs): false for vfs, true for overlay's copy-up
VFS_XATTRS = (CAPABILITY,)
OVERLAY_XATTRS = (CAPABILITY, OPAQUE)


class CopyError(GraphDriverError):
    def __init__(self, src, dst, err):
        detail = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        super().__init__("copy %s -> %s: %s" % (src, dst, detail))
        self.src = src
        self.dst = dst
        self.errno = getattr(err, "errno", None)


class _FastPaths(object):
    """Which kernel copy paths still work in this walk (Docker's two bools)."""

    def __init__(self):
        self.clone = True
        self.file_range = hasattr(os, "copy_file_range")
        self.sendfile = hasattr(os, "sendfile")


def _copy_regular(src, dst, st, fast):
    sfd = os.open(src, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        # O_EXCL: an existing destination is never overwritten.
        dfd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                      stat.S_IMODE(st.st_mode))
        try:
            _copy_data(sfd, dfd, st.st_size, fast)
        finally:
            os.close(dfd)
    finally:
        os.close(sfd)


def _copy_data(sfd, dfd, size, fast):
    if fast.clone:
        try:
            fcntl.ioctl(dfd, FICLONE, sfd)
            return
        except OSError as e:
            fast.clone = False
            if e.errno == errno.EXDEV:
                fast.file_range = False
    if fast.file_range and size > 0:
        try:
            left = size
            while left > 0:
                n = os.copy_file_range(sfd, dfd, min(left, _COPY_CHUNK))
                if n == 0:      # the source shrank under us
                    break
                left -= n
            return
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            fast.file_range = False
            os.lseek(sfd, 0, os.SEEK_SET)
            os.lseek(dfd, 0, os.SEEK_SET)
            os.ftruncate(dfd, 0)
    if fast.sendfile and size > 0:
        try:
            offset = 0
            while offset < size:
                n = os.sendfile(dfd, sfd, offset, min(size - offset, _COPY_CHUNK))
                if n == 0:
                    break
                offset += n
            return
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.ENOSYS):
                raise
            fast.sendfile = False
            os.lseek(dfd, 0, os.SEEK_SET)
            os.ftruncate(dfd, 0)
    os.lseek(sfd, 0, os.SEEK_SET)
    while True:
        buf = os.read(sfd, 1 << 20)
        if not buf:
            break
        view = memoryview(buf)
        while view:
            view = view[os.write(dfd, view):]


def copy_xattrs(src, dst, names):
    """Docker's copyXattr for each of ``names``, without following symlinks:
    absent on ``src`` (or xattrs unsupported there) copies nothing; a
    destination that refuses one is an error, as in Docker."""
    for name in names:
        try:
            value = os.getxattr(src, name, follow_symlinks=False)
        except OSError as e:
            if e.errno in (errno.ENODATA, errno.EOPNOTSUPP, errno.ENOTSUP):
                continue
            raise
        os.setxattr(dst, name, value, follow_symlinks=False)


def _sorted_entries(top):
    with os.scandir(top) as it:
        return iter(sorted(it, key=lambda e: e.name))


def walk(root):
    """Pre-order, lexical order, like Go's filepath.Walk: (path, lstat).

    Iterative, so that a hostile layer nested thousands of directories deep
    cannot exhaust Python's recursion limit.
    """
    yield root, os.lstat(root)
    stack = [_sorted_entries(root)]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        st = entry.stat(follow_symlinks=False)
        yield entry.path, st
        if stat.S_ISDIR(st.st_mode):
            stack.append(_sorted_entries(entry.path))


def dir_copy(src_dir, dst_dir, mode=CONTENT, xattrs=VFS_XATTRS):
    """Copy ``src_dir`` into the existing or new directory ``dst_dir``.

    ``xattrs``: the names copied (VFS_XATTRS, Docker's vfs; OVERLAY_XATTRS,
    its overlay copy-up).
    """
    fast = _FastPaths()
    copied = {}          # (st_dev, st_ino) -> destination path, for hard links
    dir_times = []       # (dst, st) in walk order; applied in reverse
    src_dir = os.path.abspath(src_dir).rstrip("/") or "/"
    dst_dir = dst_dir.rstrip("/") or "/"
    cut = 0 if src_dir == "/" else len(src_dir)
    for src, st in walk(src_dir):
        # walk() yields paths under src_dir: slicing beats relpath on deep trees
        dst = dst_dir if src == src_dir else dst_dir + src[cut:]
        try:
            _copy_entry(src, dst, st, mode, fast, copied, dir_times, xattrs)
        except OSError as e:
            if stat.S_ISSOCK(st.st_mode):
                e = OSError(e.errno, "%s: a socket, which Docker's DirCopy passes to mkfifo; "
                            "Docker cannot copy this layer either (remove the socket from "
                            "the parent layer)" % e.strerror)
            raise CopyError(src, dst, e)
    for dst, st in reversed(dir_times):
        try:
            os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
        except OSError as e:
            raise CopyError(dst, dst, e)


def _copy_entry(src, dst, st, mode, fast, copied, dir_times, xattrs):
    fmt = stat.S_IFMT(st.st_mode)
    if fmt == stat.S_IFREG:
        key = (st.st_dev, st.st_ino)
        if mode == HARDLINK:
            os.link(src, dst)
            return
        if key in copied:
            os.link(copied[key], dst)
            return   # metadata is the inode's, already set
        _copy_regular(src, dst, st, fast)
        copied[key] = dst
    elif fmt == stat.S_IFDIR:
        try:
            os.mkdir(dst, stat.S_IMODE(st.st_mode))
        except FileExistsError:
            pass
    elif fmt == stat.S_IFLNK:
        os.symlink(os.readlink(src), dst)
    elif fmt in (stat.S_IFIFO, stat.S_IFSOCK):
        os.mkfifo(dst, st.st_mode)      # unix.Mkfifo(dstPath, stat.Mode)
    elif fmt in (stat.S_IFCHR, stat.S_IFBLK):
        os.mknod(dst, st.st_mode, st.st_rdev)
    else:
        raise OSError(errno.EINVAL, "unknown file type 0o%o" % fmt)

    os.lchown(dst, st.st_uid, st.st_gid)
    copy_xattrs(src, dst, xattrs)
    if fmt == stat.S_IFLNK:
        os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
        return
    # after chown, which clears setuid/setgid
    os.chmod(dst, stat.S_IMODE(st.st_mode))
    if fmt == stat.S_IFDIR:
        dir_times.append((dst, st))
    else:
        os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
