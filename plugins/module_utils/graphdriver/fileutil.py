"""Files written atomically, directories with explicit modes, file locks.

Every state file the library owns goes through ``atomic_write`` (temp, fsync,
rename, fsync of the directory), so a crash leaves the old or the new
content, never half of one.
"""

import contextlib
import errno
import fcntl
import os
import tempfile

from .errors import GraphDriverError


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path, data, mode=0o644):
    """Replace ``path`` with ``data`` (bytes or str) atomically."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


def read_text(path, default=None):
    try:
        with open(path, "r") as f:
            return f.read()
    except FileNotFoundError:
        if default is not None:
            return default
        raise


def mkdir(path, mode=0o755, uid=0, gid=0, exist_ok=True):
    """mkdir with the mode set explicitly: the caller's umask must not matter."""
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        if not exist_ok:
            raise
    os.chmod(path, mode)
    if (uid, gid) != (0, 0) or os.getuid() == 0:
        os.lchown(path, uid, gid)


def makedirs(path, mode=0o755):
    """Create ``path`` and missing parents, each with ``mode``."""
    parent = os.path.dirname(path.rstrip("/"))
    if parent and not os.path.isdir(parent):
        makedirs(parent, mode)
    if not os.path.isdir(path):
        try:
            os.mkdir(path, mode)
            os.chmod(path, mode)
        except FileExistsError:
            pass


@contextlib.contextmanager
def locked(path, shared=False):
    """Hold an flock on ``path`` (created if needed) for the block."""
    makedirs(os.path.dirname(path), 0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)


def remove_tree(path):
    """rm -rf that also clears immutable-free read-only dirs; missing is fine."""
    import shutil

    def onerror(func, p, exc_info):
        err = exc_info[1]
        if isinstance(err, FileNotFoundError):
            return
        if isinstance(err, PermissionError) or getattr(err, "errno", None) == errno.EACCES:
            os.chmod(os.path.dirname(p), 0o700)
            func(p)
            return
        raise GraphDriverError("cannot remove %s: %s" % (p, err))

    if os.path.lexists(path):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, onerror=onerror)
        else:
            os.unlink(path)


def entry_names(path, skip=()):
    """The names in directory ``path`` but hidden ones and ``skip``; an empty
    set when it does not exist."""
    try:
        return {n for n in os.listdir(path) if n not in skip and not n.startswith(".")}
    except FileNotFoundError:
        return set()
