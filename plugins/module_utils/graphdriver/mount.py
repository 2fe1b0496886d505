"""mount(2) and umount2(2) through ctypes, and the mount table.

Python has no binding for either syscall; Docker calls them directly (not
the mount(8) tool), and so do we, so that option strings are exactly what
the kernel sees.
"""

import ctypes
import ctypes.util
import errno
import os

from .errors import GraphDriverError

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_REMOUNT = 32
MS_BIND = 4096
MS_PRIVATE = 1 << 18
MNT_FORCE = 1
MNT_DETACH = 2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                        ctypes.c_ulong, ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def _b(s):
    return s.encode() if isinstance(s, str) else s


class MountError(GraphDriverError):
    def __init__(self, op, target, err, detail=""):
        self.errno = err
        super().__init__("%s %s: %s%s" % (op, target, os.strerror(err),
                                          (" (" + detail + ")") if detail else ""))


def mount(source, target, fstype, flags=0, data=""):
    data_b = _b(data) if data else None
    if _libc.mount(_b(source), _b(target), _b(fstype), flags,
                   ctypes.c_char_p(data_b) if data_b else None) != 0:
        err = ctypes.get_errno()
        raise MountError("mount", target, err, "type %s, data %s" % (fstype, data))


def unmount(target, flags=MNT_DETACH):
    """umount2; a target that is not mounted is not an error (idempotence)."""
    if _libc.umount2(_b(target), flags) != 0:
        err = ctypes.get_errno()
        if err in (errno.EINVAL, errno.ENOENT):
            return False
        raise MountError("umount", target, err)
    return True


def _unescape(field):
    # /proc/self/mountinfo escapes space, tab, newline and backslash as \ooo.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) + 0 and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


class MountEntry(object):
    __slots__ = ("mountpoint", "fstype", "source", "options", "super_options")

    def __init__(self, mountpoint, fstype, source, options, super_options):
        self.mountpoint = mountpoint
        self.fstype = fstype
        self.source = source
        self.options = options
        self.super_options = super_options

    def __repr__(self):
        return "MountEntry(%r, %r, %r)" % (self.mountpoint, self.fstype, self.source)


def mounts():
    """Entries of /proc/self/mountinfo, in mount order."""
    result = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, sep, right = line.rstrip("\n").partition(" - ")
            lf = left.split(" ")
            rf = right.split(" ")
            result.append(MountEntry(_unescape(lf[4]), rf[0], _unescape(rf[1]),
                                     lf[5], rf[2] if len(rf) > 2 else ""))
    return result


def is_mountpoint(path):
    path = os.path.realpath(path)
    return any(m.mountpoint == path for m in mounts())


def mount_of(path):
    """The mount entry holding ``path`` (longest mountpoint prefix)."""
    path = os.path.realpath(path)
    best = None
    for m in mounts():
        mp = m.mountpoint
        if path == mp or path.startswith(mp.rstrip("/") + "/"):
            if best is None or len(mp) >= len(best.mountpoint):
                best = m
    return best


def mounts_under(path):
    """Mountpoints at or below ``path``, deepest first (the unmount order)."""
    path = os.path.realpath(path).rstrip("/")
    found = [m.mountpoint for m in mounts()
             if m.mountpoint == path or m.mountpoint.startswith(path + "/")]
    return sorted(set(found), key=lambda p: -p.count("/"))
