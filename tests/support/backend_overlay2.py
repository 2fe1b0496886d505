"""overlay2 backend: a fresh xfs (ftype=1, mounted with ``pquota``) on a loop
file; the home is ``<mount>/overlay2`` as under a /var/lib/docker on xfs.

Why xfs rather than the host's ext4 /var/tmp: it is Docker's documented
overlay2 backing filesystem (``ftype=1`` is what d_type needs), the only one
where overlay2 takes a ``size`` quota (expected, and then required, wherever
the kernel has CONFIG_XFS_QUOTA: see backend_vfs.xfs_pquota),
and Docker writes its ``backingFsBlockDev`` there, so the layout under test
is the full one. A private filesystem also keeps 128-layer runs off the host.
"""

import os
import subprocess

from .backend_vfs import xfs_pquota, xfs_quota_missing
from .backends import Unavailable, backend


def _overlay_in_kernel():
    with open("/proc/filesystems") as f:
        return any(line.split()[-1:] == ["overlay"] for line in f)


@backend("overlay2", quota=xfs_quota_missing)
def overlay2_backend(workdir, size_mb=400):
    if not _overlay_in_kernel():
        subprocess.run(["modprobe", "overlay"], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not _overlay_in_kernel():
            raise Unavailable("the overlay filesystem is not in this kernel")
    with xfs_pquota(size_mb) as mnt:
        yield os.path.join(mnt, "overlay2"), {}
