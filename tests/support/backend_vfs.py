"""vfs backend: a fresh xfs (ftype=1, mounted with ``pquota``) on a loop file.

Why xfs rather than the host's ext4: it is the only filesystem where Docker's
vfs enforces a ``size`` quota (project quota), so the SetQuota test runs
where the kernel has CONFIG_XFS_QUOTA (else it skips, saying so), and mkfs.xfs makes reflink=1 filesystems, so a child
layer's copy goes through the FICLONE fast path as on a real xfs host.
"""

import contextlib
import os
import shutil
import subprocess

from .backends import Unavailable, backend
from .loop import loop_filesystem


@contextlib.contextmanager
def xfs_pquota(size_mb):
    """A mounted xfs, with project quota where the kernel has it (else
    without); Unavailable saying why if there can be no xfs at all.

    Only making the filesystem is turned into Unavailable: an error in the
    test body is the test's.
    """
    if not shutil.which("mkfs.xfs"):
        raise Unavailable("mkfs.xfs is not installed (xfsprogs)")
    if not os.path.exists("/dev/loop-control"):
        raise Unavailable("no loop devices here (/dev/loop-control missing)")
    with contextlib.ExitStack() as stack:
        mnt = None
        if xfs_quota_in_kernel():
            try:
                mnt = stack.enter_context(loop_filesystem("xfs", size_mb=size_mb,
                                                          options="pquota"))
            except subprocess.CalledProcessError:
                mnt = None
        if mnt is None:
            # No project quota here: the quota tests skip, saying so.
            try:
                mnt = stack.enter_context(loop_filesystem("xfs", size_mb=size_mb))
            except subprocess.CalledProcessError as e:
                raise Unavailable("cannot make an xfs loop filesystem: %s"
                                  % ((e.stderr or "").strip() or e))
        yield mnt


def xfs_quota_in_kernel():
    """False when the kernel config says CONFIG_XFS_QUOTA is not set (then
    mount -o pquota fails with "quota support not available")."""
    import gzip
    for path in ("/proc/config.gz", "/boot/config-%s" % os.uname().release):
        try:
            opener = gzip.open if path.endswith(".gz") else open
            with opener(path, "rt") as f:
                return "# CONFIG_XFS_QUOTA is not set" not in f.read()
        except OSError:
            continue
    return True


@backend("vfs")
def vfs_backend(workdir, size_mb=320):
    with xfs_pquota(size_mb) as mnt:
        yield os.path.join(mnt, "vfs"), {}
