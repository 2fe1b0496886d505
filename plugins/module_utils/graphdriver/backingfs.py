"""What filesystem a path lives on, the way Docker asks: statfs(2).f_type."""

import ctypes
import ctypes.util
import os

from .errors import GraphDriverError

MAGIC = {
    0x9123683E: "btrfs",
    0x58465342: "xfs",
    0xEF53: "extfs",
    0x2FC12FC1: "zfs",
    0x794C7630: "overlayfs",
    0x61756673: "aufs",
    0x01021994: "tmpfs",
    0x6969: "nfs",
    0xF15F: "ecryptfs",
    0x65735546: "fuse",
    0x858458F6: "ramfs",
    0x73717368: "squashfs",
    0x52654973: "reiserfs",
    0x4D44: "msdos",
    0x5346544E: "ntfs",
}
NAME_TO_MAGIC = {v: k for k, v in MAGIC.items()}

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class _Statfs(ctypes.Structure):
    # struct statfs on 64-bit Linux: every field is a machine word but f_fsid.
    _fields_ = [("f_type", ctypes.c_long), ("f_bsize", ctypes.c_long),
                ("f_blocks", ctypes.c_ulong), ("f_bfree", ctypes.c_ulong),
                ("f_bavail", ctypes.c_ulong), ("f_files", ctypes.c_ulong),
                ("f_ffree", ctypes.c_ulong), ("f_fsid", ctypes.c_int * 2),
                ("f_namelen", ctypes.c_long), ("f_frsize", ctypes.c_long),
                ("f_flags", ctypes.c_long), ("f_spare", ctypes.c_long * 4)]


def fs_magic(path):
    buf = _Statfs()
    if _libc.statfs(os.fsencode(path), ctypes.byref(buf)) != 0:
        err = ctypes.get_errno()
        raise GraphDriverError("statfs %s: %s" % (path, os.strerror(err)))
    return buf.f_type & 0xFFFFFFFF


def fs_name(path):
    """Docker's name for the backing filesystem of ``path`` ('extfs', 'xfs' …)."""
    magic = fs_magic(path)
    return MAGIC.get(magic, "<unknown 0x%x>" % magic)


def nearest_existing(path):
    """The closest existing ancestor: a driver home may not exist yet."""
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path
