"""XFS project quotas, as Docker sets them for overlay2 and vfs layers.

moby daemon/internal/quota/projectquota.go: a block-device node
``<home>/backingFsBlockDev`` is made for quotactl(2) (part of Docker's home
layout on xfs), Q_XGETQSTAT tells whether project quota is accounted and
enforced (mount option ``pquota``/``prjquota``), each layer directory gets a
project id with FS_XFLAG_PROJINHERIT and a hard block limit.

Docker keeps the next free project id in memory; every Ansible task is a new
process, so ours is found again under a lock by scanning the home the way
Docker's findNextProjectID does at start-up.
"""

import ctypes
import ctypes.util
import errno
import fcntl
import hashlib
import os
import stat
import struct

from .errors import QuotaError
from .fileutil import locked
from . import refcount

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.quotactl.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p]

PRJQUOTA = 2


def _xqm_cmd(x):
    return (ord("X") << 8) + x


def _qcmd(cmd, qtype):
    return (cmd << 8) | (qtype & 0xFF)


Q_XGETQUOTA = _xqm_cmd(3)
Q_XSETQLIM = _xqm_cmd(4)
Q_XGETQSTAT = _xqm_cmd(5)
FS_QUOTA_PDQ_ACCT = 1 << 4
FS_QUOTA_PDQ_ENFD = 1 << 5
FS_DQUOT_VERSION = 1
FS_PROJ_QUOTA = 2
FS_DQ_BSOFT = 1 << 2
FS_DQ_BHARD = 1 << 3

# struct fsxattr is 28 bytes: _IOR/_IOW('X', 31/32, struct fsxattr)
_FSXATTR = struct.Struct("=IIIII8s")
FS_IOC_FSGETXATTR = (2 << 30) | (_FSXATTR.size << 16) | (ord("X") << 8) | 31
FS_IOC_FSSETXATTR = (1 << 30) | (_FSXATTR.size << 16) | (ord("X") << 8) | 32
FS_XFLAG_PROJINHERIT = 0x200

# struct fs_disk_quota (linux/dqblk_xfs.h), 112 bytes.
_DISK_QUOTA = struct.Struct("=bbHIQQQQQQiiHHbbbbQQQiHh8s")

BACKING_DEV_NAME = "backingFsBlockDev"


class QuotaNotSupported(QuotaError):
    """Docker's quota.ErrQuotaNotSupported."""

    def __init__(self, detail=""):
        msg = "Filesystem does not support, or has not enabled quotas"
        super().__init__(msg + (" (%s)" % detail if detail else ""))


def _quotactl(cmd, dev, qid, buf):
    if _libc.quotactl(cmd, os.fsencode(dev), qid, buf) != 0:
        return ctypes.get_errno()
    return 0


def get_project_id(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        buf = bytearray(_FSXATTR.size)
        fcntl.ioctl(fd, FS_IOC_FSGETXATTR, buf)
        return _FSXATTR.unpack(bytes(buf))[3]
    finally:
        os.close(fd)


def set_project_id(path, project_id):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        buf = bytearray(_FSXATTR.size)
        fcntl.ioctl(fd, FS_IOC_FSGETXATTR, buf)
        xflags, extsize, nextents, old_project_id, cow, pad = _FSXATTR.unpack(bytes(buf))
        new = _FSXATTR.pack(xflags | FS_XFLAG_PROJINHERIT, extsize, nextents,
                            project_id, cow, pad)
        fcntl.ioctl(fd, FS_IOC_FSSETXATTR, bytearray(new))
    finally:
        os.close(fd)


def _make_backing_dev(home):
    st = os.stat(home)
    dev = os.path.join(home, BACKING_DEV_NAME)
    # Re-made every time: the home may have been copied to another device.
    try:
        os.unlink(dev)
    except FileNotFoundError:
        pass
    try:
        os.mknod(dev, stat.S_IFBLK | 0o600, st.st_dev)
    except OSError as e:
        if e.errno in (errno.ENOSYS, errno.EPERM):
            raise QuotaNotSupported("mknod %s: %s" % (dev, e.strerror))
        raise QuotaError("failed to mknod %s: %s" % (dev, e.strerror))
    return dev


def _has_quota_support(dev):
    buf = ctypes.create_string_buffer(256)
    err = _quotactl(_qcmd(Q_XGETQSTAT, PRJQUOTA), dev, 0, buf)
    if err == 0:
        flags = struct.unpack_from("=H", buf.raw, 2)[0]
        return bool(flags & FS_QUOTA_PDQ_ENFD and flags & FS_QUOTA_PDQ_ACCT)
    if err in (errno.EFAULT, errno.ENOENT, errno.ENOTBLK, errno.EPERM):
        raise QuotaError("quotactl on %s: %s" % (dev, os.strerror(err)))
    return False


def _set_limit(dev, project_id, size):
    blocks = size // 512
    data = _DISK_QUOTA.pack(FS_DQUOT_VERSION, FS_PROJ_QUOTA, FS_DQ_BHARD | FS_DQ_BSOFT,
                            project_id, blocks, blocks, *([0] * 18), b"")
    buf = ctypes.create_string_buffer(data, len(data))
    err = _quotactl(_qcmd(Q_XSETQLIM, PRJQUOTA), dev, project_id, buf)
    if err:
        raise QuotaError("failed to set quota limit for projid %d on %s: %s"
                         % (project_id, dev, os.strerror(err)))


class QuotaControl(object):
    """Docker's quota.Control over one driver home."""

    def __init__(self, home):
        self.home = os.path.abspath(home)
        self.dev = _make_backing_dev(self.home)
        if not _has_quota_support(self.dev):
            raise QuotaNotSupported("no enforced project quota on %s" % self.home)
        self.base_id = get_project_id(self.home)
        # Docker probes by setting a zero limit on the first free id.
        _set_limit(self.dev, self.base_id + 1, 0)
        key = hashlib.sha256(self.home.encode()).hexdigest()[:16]
        self._lock = os.path.join(refcount.RUN_DIR, "projectquota-%s.lock" % key)

    def _used_ids(self):
        """Project ids in use: Docker's findNextProjectID scan."""
        used = set()
        for name in os.listdir(self.home):
            path = os.path.join(self.home, name)
            if os.path.islink(path) or not os.path.isdir(path):
                continue
            pid = get_project_id(path)
            used.add(pid)
            if pid > 0 and pid != self.base_id:
                continue
            for sub in os.listdir(path):
                subpath = os.path.join(path, sub)
                if os.path.isdir(subpath) and not os.path.islink(subpath):
                    used.add(get_project_id(subpath))
        return used

    def set_quota(self, path, size):
        """Give ``path`` its own project id (kept if it has one) and limit it."""
        with locked(self._lock):
            pid = get_project_id(path)
            if pid <= self.base_id:
                pid = max(self._used_ids() | {self.base_id}) + 1
                set_project_id(path, pid)
            _set_limit(self.dev, pid, int(size))

    def get_quota(self, path):
        pid = get_project_id(path)
        buf = ctypes.create_string_buffer(_DISK_QUOTA.size)
        err = _quotactl(_qcmd(Q_XGETQUOTA, PRJQUOTA), self.dev, pid, buf)
        if err:
            raise QuotaError("failed to get quota limit for projid %d on %s: %s"
                             % (pid, self.dev, os.strerror(err)))
        return _DISK_QUOTA.unpack(buf.raw)[4] * 512


def supported(path):
    """Whether the filesystem holding ``path`` enforces project quota, asked
    without writing (no backingFsBlockDev node): quotactl on the device
    node sysfs names for its st_dev."""
    st = os.stat(path)
    try:
        with open("/sys/dev/block/%d:%d/uevent" % (os.major(st.st_dev), os.minor(st.st_dev))) as f:
            fields = dict(line.strip().split("=", 1) for line in f if "=" in line)
    except OSError:
        return False     # no block device behind it (tmpfs, fuse): no quota
    dev = "/dev/" + fields.get("DEVNAME", "")
    try:
        return _has_quota_support(dev)
    except QuotaError:
        return False


def new_control(home):
    """A QuotaControl, or None when the filesystem has no project quota
    (Docker logs other errors and goes on without quota, too)."""
    try:
        return QuotaControl(home)
    except QuotaError:
        return None
    except OSError:
        return None


def parse_size(value):
    """go-units RAMInBytes: '50M', '1.5g', '1024', '10MiB' -> bytes (binary)."""
    s = str(value).strip()
    num = s.rstrip("bBiI")
    suffix = ""
    while num and num[-1].isalpha():
        suffix = num[-1] + suffix
        num = num[:-1]
    mult = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
    try:
        return int(float(num) * mult[suffix.lower()])
    except (KeyError, ValueError):
        raise QuotaError("invalid size: %r" % (value,))
