"""vfs backend: a fresh xfs (ftype=1, mounted with ``pquota``) on a loop file.

Why xfs rather than the host's ext4: it is the only filesystem where Docker's
vfs enforces a ``size`` quota (project quota), and mkfs.xfs makes reflink=1
filesystems, so a child layer's copy goes through the FICLONE fast path as
on a real xfs host.

Quota is expected wherever the kernel has CONFIG_XFS_QUOTA: there the
``pquota`` mount must work and SetQuota must pass (a failed mount is an
error, never a quiet mount without quota). Only a kernel built without it
(``xfs_quota_missing`` says so, and why) gets the xfs without ``pquota``,
and the quota tests skip with that reason; test_xfs_vm.py then runs them
under Debian's kernel in a VM.
"""

import contextlib
import os
import shutil
import subprocess

from .backends import Unavailable, backend
from .loop import loop_filesystem


class QuotaMountFailed(Exception):
    """Project quota is expected here and the ``pquota`` mount failed."""


@contextlib.contextmanager
def xfs_pquota(size_mb):
    """A mounted xfs with project quota, or without it only where
    ``xfs_quota_missing()`` says the kernel cannot have it; Unavailable
    saying why if there can be no xfs at all, QuotaMountFailed (an error,
    not a skip) if the kernel has quota and the mount still refuses it.

    Only making the filesystem is turned into Unavailable: an error in the
    test body is the test's.
    """
    if not shutil.which("mkfs.xfs"):
        raise Unavailable("mkfs.xfs is not installed (xfsprogs)")
    if not os.path.exists("/dev/loop-control"):
        raise Unavailable("no loop devices here (/dev/loop-control missing)")
    quota = xfs_quota_missing() is None
    with contextlib.ExitStack() as stack:
        try:
            mnt = stack.enter_context(loop_filesystem(
                "xfs", size_mb=size_mb, options="pquota" if quota else None))
        except subprocess.CalledProcessError as e:
            detail = (e.stderr or "").strip() or str(e)
            if quota and e.cmd[0] == "mount":
                raise QuotaMountFailed("mount -o pquota of a fresh xfs failed although this "
                                       "kernel has CONFIG_XFS_QUOTA: %s" % detail)
            raise Unavailable("cannot make an xfs loop filesystem: %s" % detail)
        yield mnt


def xfs_quota_missing():
    """None when this kernel's xfs has project quota, else why not: the
    kernel config says CONFIG_XFS_QUOTA is not set (then mount -o pquota
    fails, and the kernel logs "quota support not available in this
    kernel")."""
    import gzip
    release = os.uname().release
    for path in ("/proc/config.gz", "/boot/config-%s" % release):
        try:
            opener = gzip.open if path.endswith(".gz") else open
            with opener(path, "rt") as f:
                if "# CONFIG_XFS_QUOTA is not set" in f.read():
                    return ("kernel %s is built without CONFIG_XFS_QUOTA (%s): xfs refuses "
                            "the pquota mount option" % (release, path))
                return None
        except OSError:
            continue
    return None


@backend("vfs", quota=xfs_quota_missing)
def vfs_backend(workdir, size_mb=320):
    with xfs_pquota(size_mb) as mnt:
        yield os.path.join(mnt, "vfs"), {}
