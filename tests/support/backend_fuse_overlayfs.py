"""fuse-overlayfs backend: a directory in the test's own work dir on the host
filesystem, since the driver needs nothing of its backing filesystem (no
d_type probe, no quota) but the ``fuse-overlayfs`` program and /dev/fuse."""

import os
import shutil

from .backends import Unavailable, backend


@backend("fuse-overlayfs")
def fuse_overlayfs_backend(workdir):
    if not shutil.which("fuse-overlayfs"):
        raise Unavailable("the fuse-overlayfs program is not installed")
    if not (shutil.which("fusermount3") or shutil.which("fusermount")):
        raise Unavailable("neither fusermount3 nor fusermount is installed")
    if not os.path.exists("/dev/fuse"):
        raise Unavailable("/dev/fuse is missing (no FUSE in this kernel or container)")
    yield os.path.join(str(workdir), "fuse-overlayfs"), {}
