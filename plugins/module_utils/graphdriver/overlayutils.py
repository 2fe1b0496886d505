"""Probes and helpers shared by the overlay-family drivers (moby overlayutils).

Everything here answers "can overlay work here, and how": a real test mount,
the d_type check, Docker's native-diff probe, the link-id generator.
"""

import base64
import contextlib
import ctypes
import ctypes.util
import errno
import os
import shutil
import stat
import tempfile
import threading

from . import command
from .errors import GraphDriverError, NotSupported
from .mount import MountError, mount, unmount

OPAQUE_XATTR = "trusted.overlay.opaque"
REDIRECT_XATTR = "trusted.overlay.redirect"


def running_in_userns():
    """True inside a user namespace (the initial one maps all of 0..2^32-1)."""
    try:
        with open("/proc/self/uid_map") as f:
            fields = f.read().split()
    except OSError:
        return False
    return fields[:3] != ["0", "0", "4294967295"]


def kernel_version():
    release = os.uname().release
    parts = []
    for piece in release.split("-")[0].split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit()) or "0"
        parts.append(int(digits))
    while len(parts) < 3:
        parts.append(0)
    return tuple(parts)


def overlay_in_kernel():
    """overlay listed in /proc/filesystems, after a modprobe if it was not."""
    def listed():
        try:
            with open("/proc/filesystems") as f:
                return any(line.split()[-1:] == ["overlay"] for line in f)
        except OSError:
            return False
    if listed():
        return True
    with contextlib.suppress(GraphDriverError):
        command.run(["modprobe", "overlay"], check=False)
    return listed()


def supports_overlay(testdir, multiple_lowers=True):
    """Docker's SupportsOverlay: a real overlay mount in a temp dir of testdir.

    Returns None when it works, else the reason (a string).
    """
    if os.environ.get("_DOCKERD_ROOTLESS_SELINUX") == "1":
        return "overlay is not supported for Rootless with SELinux"
    with _times_kept(testdir):
        return _try_overlay_mount(testdir, multiple_lowers)


@contextlib.contextmanager
def _times_kept(path):
    """The check's temp dir leaves ``path``'s times as they were: a support
    check (check mode, a migration's read-only source) changes nothing."""
    st = os.stat(path)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _try_overlay_mount(testdir, multiple_lowers):
    try:
        td = tempfile.mkdtemp(prefix="check-overlayfs-support", dir=testdir)
    except OSError as e:
        return "cannot create a check directory in %s: %s" % (testdir, e.strerror)
    try:
        for d in ("lower1", "lower2", "upper", "work", "merged"):
            os.mkdir(os.path.join(td, d), 0o755)
        lower = os.path.join(td, "lower2")
        if multiple_lowers:
            lower += ":" + os.path.join(td, "lower1")
        opts = "lowerdir=%s,upperdir=%s,workdir=%s" % (
            lower, os.path.join(td, "upper"), os.path.join(td, "work"))
        merged = os.path.join(td, "merged")
        try:
            mount("overlay", merged, "overlay", 0, opts)
        except MountError as e:
            return "failed to mount overlay: %s" % os.strerror(e.errno)
        unmount(merged, 0)
        return None
    finally:
        shutil.rmtree(td, ignore_errors=True)


def supports_d_type(path):
    """moby fsutils.SupportsDType: does readdir report the type of a file?

    A file is made in a temp dir of ``path`` and the directory is read with
    getdents64, as Go's readdir does: filesystems without d_type (xfs
    ftype=0) report DT_UNKNOWN (0). Python's scandir hides d_type, and
    falls back to stat silently, so it cannot tell.
    """
    with _times_kept(path):
        td = tempfile.mkdtemp(prefix="supports-dtype", dir=path)
        try:
            with open(os.path.join(td, "file"), "w"):
                pass
            return _d_type_of(td, "file") not in (None, DT_UNKNOWN)
        finally:
            shutil.rmtree(td, ignore_errors=True)


DT_UNKNOWN = 0
_SYS_GETDENTS64 = {"x86_64": 217, "aarch64": 61, "riscv64": 61, "s390x": 220,
                   "ppc64le": 202, "ppc64": 202}
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _d_type_of(directory, name):
    """d_type of ``name`` in ``directory``, read with getdents64."""
    nr = _SYS_GETDENTS64.get(os.uname().machine, 217)
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        buf = ctypes.create_string_buffer(65536)
        target = os.fsencode(name)
        while True:
            n = _libc.syscall(nr, fd, buf, len(buf))
            if n < 0:
                raise OSError(ctypes.get_errno(), "getdents64 %s" % directory)
            if n == 0:
                return None
            raw = buf.raw[:n]
            off = 0
            while off < n:
                reclen = int.from_bytes(raw[off + 16:off + 18], "little")
                d_type = raw[off + 18]
                dname = raw[off + 19:off + reclen].split(b"\0", 1)[0]
                if dname == target:
                    return d_type
                off += reclen
    finally:
        os.close(fd)


def d_type_error(driver, backing_fs):
    """Docker's ErrDTypeNotSupported, word for word."""
    msg = ("%s: the backing %s filesystem is formatted without d_type support, "
           "which leads to incorrect behavior." % (driver, backing_fs))
    if backing_fs == "xfs":
        msg += " Reformat the filesystem with ftype=1 to enable d_type support."
    if backing_fs == "extfs":
        msg += (" Reformat the filesystem (or use tune2fs) with -O filetype flag"
                " to enable d_type support.")
    msg += " Backing filesystems without d_type support are not supported."
    return NotSupported(driver, msg)


_CLONE_FS = 0x200


def run_in_directory(directory, fn):
    """``fn()`` with ``directory`` as its working directory, the process's
    own left alone: in a thread of its own that unshares its cwd
    (CLONE_FS), as moby's unshare.Go does for overlay2's mountFrom.

    Returns what ``fn`` returns or raises what it raises.
    """
    if threading.active_count() == 1:
        # No other thread can see the cwd move: change it and put it back,
        # a quarter of a 128-lower get() cheaper than starting a thread.
        back = os.open(".", os.O_PATH | os.O_CLOEXEC)
        try:
            os.chdir(directory)
            return fn()
        finally:
            os.fchdir(back)
            os.close(back)
    result, error = [], []

    def run():
        try:
            if _libc.unshare(_CLONE_FS) != 0:
                err = ctypes.get_errno()
                raise OSError(err, "unshare(CLONE_FS): %s" % os.strerror(err))
            os.chdir(directory)
            result.append(fn())
        except BaseException as e:
            error.append(e)

    thread = threading.Thread(target=run, name="mount-from")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def generate_id(length):
    """overlayutils.GenerateID: base32 of (length*5+7)//8 random bytes, cut."""
    raw = os.urandom((length * 5 + 7) // 8)
    return base64.b32encode(raw).decode("ascii")[:length]


def native_diff_problem(home):
    """Docker's doesSupportNativeDiff: None if native diff is safe, else why.

    Two kernel behaviours break a tar of the upper dir: an opaque flag
    copied up with its directory (fixed in 4.8), and redirect_dir, where a
    renamed directory is an xattr pointing to its old name rather than a
    full copy. Like the support checks, it leaves ``home``'s times as
    they were (check mode, a read-only source).
    """
    if running_in_userns():
        return "running in a user namespace"
    with _times_kept(home):
        return _native_diff_probe(home)


def _native_diff_probe(home):
    try:
        td = tempfile.mkdtemp(prefix="opaque-bug-check", dir=home)
    except OSError as e:
        return "cannot create a check directory in %s: %s" % (home, e.strerror)
    try:
        for d in ("l1/d", "l1/d1", "l2/d"):
            os.makedirs(os.path.join(td, d), 0o755)
        for d in ("l3", "work", "merged"):
            os.mkdir(os.path.join(td, d), 0o755)
        try:
            os.setxattr(os.path.join(td, "l2", "d"), OPAQUE_XATTR, b"y",
                        follow_symlinks=False)
        except OSError as e:
            return "failed to set opaque flag on middle layer: %s" % e.strerror
        merged = os.path.join(td, "merged")
        opts = "lowerdir=%s:%s,upperdir=%s,workdir=%s" % (
            os.path.join(td, "l2"), os.path.join(td, "l1"),
            os.path.join(td, "l3"), os.path.join(td, "work"))
        try:
            mount("overlay", merged, "overlay", 0, opts)
        except MountError as e:
            return "failed to mount overlay: %s" % os.strerror(e.errno)
        try:
            with open(os.path.join(merged, "d", "f"), "wb"):
                pass
            try:
                opaque = os.getxattr(os.path.join(td, "l3", "d"), OPAQUE_XATTR,
                                     follow_symlinks=False)
            except OSError:
                opaque = b""
            if opaque == b"y":
                return ("opaque flag erroneously copied up, consider update to "
                        "kernel 4.8 or later to fix")
            try:
                os.rename(os.path.join(merged, "d1"), os.path.join(merged, "d2"))
            except OSError as e:
                if e.errno == errno.EXDEV:
                    return None     # no redirect_dir: directories are copied
                return "failed to rename dir in merged directory: %s" % e.strerror
            try:
                redirect = os.getxattr(os.path.join(td, "l3", "d2"), REDIRECT_XATTR,
                                       follow_symlinks=False)
            except OSError:
                redirect = b""
            if redirect == b"d1":
                return "kernel has CONFIG_OVERLAY_FS_REDIRECT_DIR enabled"
            return None
        finally:
            unmount(merged, 0)
    finally:
        shutil.rmtree(td, ignore_errors=True)


def directory_size(path):
    """moby directory.Size: sizes of non-directories, hard links once."""
    total = 0
    seen = set()
    stack = [path]
    while stack:
        top = stack.pop()
        try:
            it = os.scandir(top)
        except FileNotFoundError:
            continue
        with it:
            for entry in it:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    stack.append(entry.path)
                    continue
                if st.st_size == 0 or st.st_ino in seen:
                    continue
                seen.add(st.st_ino)
                total += st.st_size
    return total
