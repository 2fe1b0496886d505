"""btrfs backend: a fresh btrfs on a loop file; the driver home is
``<mount>/btrfs`` as under a /var/lib/docker on btrfs."""

import os

from .backends import backend
from .loop import loop_filesystem


@backend("btrfs")
def btrfs_backend(workdir, size_mb=512):
    with loop_filesystem("btrfs", size_mb=size_mb) as mnt:
        yield os.path.join(mnt, "btrfs"), {}
